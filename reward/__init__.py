"""The reward model: its runtime, and next, its training from votes.

`reward.scorer.RewardScorer` loads a local one-label sequence classifier and scores
(conversation, response) pairs in token-budget batches, on the Triton kernels of `kernels/`
(CUDA) or on transformers' own PyTorch path (CPU); `serve/` wraps it in the RewardScorer
deployment. Training the model from the arena's votes will live here too, beside the runtime it
feeds.
"""
