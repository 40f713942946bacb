"""Reward-model scoring on custom Triton kernels (issue 5), each beside its PyTorch reference.

Nothing here yet; `serve/` does not import this package until the scorer lands.
"""
