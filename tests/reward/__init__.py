"""Reward model tests: the scorer, its benchmark's helpers, and the trainer.

The scorer runs the Triton kernels, so these tests run where tests/kernels do: on CUDA, or
under the Triton interpreter in a process that starts no vLLM engine.
"""
