"""The reward model: its runtime, and its training from the arena's judgements.

`reward.scorer.RewardScorer` loads a local one-label sequence classifier and scores
(conversation, response) pairs in token-budget batches, on the Triton kernels of `kernels/`
(CUDA) or on transformers' own PyTorch path (CPU); `serve/` wraps it in the RewardScorer
deployment. `reward.train` (`arena-serve train-reward`) trains such a model, beside the runtime
it feeds, from the pairs of `export-preferences`: `reward.pairs` reads them, `reward.base_model`
loads the base, `reward.features` caches its frozen layers, `reward.bradley_terry` fits the
top, `reward.pairwise` and `reward.model_card` say how well it ranks held-out pairs.
"""
