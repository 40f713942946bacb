"""Reward-model scoring on custom Triton kernels, each beside its PyTorch reference.

`kernels.scorer.RewardScorer` is what `serve/` uses (the RewardScorer deployment); the kernels
(`rms_norm`, `swiglu`, `rope`, `reward_head`) and `patch.apply_kernels` are its GPU path, and
`bench` times them (`make bench-kernels`).
"""
