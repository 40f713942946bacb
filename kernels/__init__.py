"""Triton ops, each kernel beside its PyTorch reference, and the patch that applies them.

The kernels (`rms_norm`, `swiglu`, `rope`, `reward_head`) share launch settings and exact
rounding (`_launch`); `patch.apply_kernels` swaps the first three into a loaded Hugging Face
model. Nothing here loads or serves a model: the reward model's runtime, which runs them, is
`reward/`.
"""
