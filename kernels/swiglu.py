"""SwiGLU forward (`silu(gate) * up`, as in Llama's MLP): a Triton kernel, launcher, reference."""

import torch
import triton
import triton.language as tl

from kernels._launch import cast_to, check_float, round_to

BLOCK_SIZE = 1024


@triton.jit
def _swiglu_kernel(out_ptr, gate_ptr, up_ptr, n_elements, BLOCK_SIZE: tl.constexpr):
    """out = round(round(silu(gate)) * up), a flat 1-D grid of BLOCK_SIZE elements per program."""
    offsets = tl.program_id(0).to(tl.int64) * BLOCK_SIZE + tl.arange(0, BLOCK_SIZE)
    mask = offsets < n_elements
    gate = tl.load(gate_ptr + offsets, mask=mask, other=0.0).to(tl.float32)
    up = tl.load(up_ptr + offsets, mask=mask, other=0.0).to(tl.float32)
    dtype = out_ptr.dtype.element_ty
    # PyTorch rounds silu's result to the input dtype before the multiply; so do we.
    silu = round_to(gate / (1.0 + tl.exp(-gate)), dtype)
    tl.store(out_ptr + offsets, cast_to(silu * up, dtype), mask=mask)


def swiglu(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """`silu(gate) * up` for same-shape, same-dtype inputs of any layout.

    Returns a new contiguous tensor in the inputs' dtype, equal to `swiglu_reference` up to the
    last-bit difference between the backend's fp32 `exp` and PyTorch's.
    """
    check_float("gate", gate)
    check_float("up", up)
    if gate.shape != up.shape or gate.dtype != up.dtype:
        raise ValueError(
            f"gate and up must share shape and dtype; got {tuple(gate.shape)} {gate.dtype} "
            f"and {tuple(up.shape)} {up.dtype}"
        )
    out = torch.empty(gate.shape, dtype=gate.dtype, device=gate.device)
    n_elements = out.numel()
    if n_elements == 0:
        return out
    _swiglu_kernel[(triton.cdiv(n_elements, BLOCK_SIZE),)](
        out, gate.contiguous(), up.contiguous(), n_elements, BLOCK_SIZE=BLOCK_SIZE, num_warps=4
    )
    return out


def swiglu_reference(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """What Llama's MLP computes between its projections: `silu(gate) * up`."""
    return torch.nn.functional.silu(gate) * up
