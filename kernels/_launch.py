"""Launch settings, input checks and exact rounding shared by the kernels in this package.

Rounding: the kernels compute in fp32 and round where PyTorch rounds, so their outputs match the
Hugging Face code bit for bit apart from fp32 reduction order. `round_to` and `cast_to` round to
nearest-even with integer bit operations instead of relying on the backend's conversion, because
the Triton interpreter (`TRITON_INTERPRET=1`) truncates fp32 -> bf16 and flushes bf16 subnormals.
On a GPU they give exactly what a native round-to-nearest-even conversion gives.
"""

import torch
import triton
import triton.language as tl

FLOAT_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
TRITON_DTYPES = {torch.float32: tl.float32, torch.bfloat16: tl.bfloat16, torch.float16: tl.float16}
MAX_FUSED_SIZE = 65536


def row_settings(n_cols: int) -> tuple[int, int]:
    """Block size (next power of two of `n_cols`) and warp count for one program per row."""
    block_size = triton.next_power_of_2(n_cols)
    if block_size > MAX_FUSED_SIZE:
        raise ValueError(f"rows of {n_cols} elements exceed the fused limit of {MAX_FUSED_SIZE}")
    if block_size >= 32768:
        return block_size, 32
    if block_size >= 8192:
        return block_size, 16
    if block_size >= 2048:
        return block_size, 8
    return block_size, 4


def check_float(name: str, tensor: torch.Tensor) -> None:
    """Raise TypeError unless `tensor` is float32, bfloat16 or float16."""
    if tensor.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name} must be float32, bfloat16 or float16, got {tensor.dtype}")


def as_rows(x: torch.Tensor) -> torch.Tensor:
    """`x` as a 2-D [rows, last dim] view with unit column stride, copying only if it must."""
    rows = x.reshape(-1, x.shape[-1])
    return rows if rows.stride(-1) == 1 or rows.shape[-1] == 1 else rows.contiguous()


@triton.jit
def round_to(x, dtype: tl.constexpr):
    """fp32 `x` rounded to nearest-even in `dtype`, still held as fp32 (exact in `dtype`)."""
    if dtype == tl.bfloat16:
        bits = x.to(tl.uint32, bitcast=True)
        bits = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
        return tl.where(x != x, x, bits.to(tl.float32, bitcast=True))
    elif dtype == tl.float16:
        return x.to(tl.float16).to(tl.float32)
    else:
        return x


@triton.jit
def cast_to(x, dtype: tl.constexpr):
    """fp32 `x` converted to `dtype`, rounding to nearest-even on every backend."""
    if dtype == tl.bfloat16:
        bits = x.to(tl.uint32, bitcast=True)
        rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16
        bits = tl.where(x != x, bits >> 16, rounded)
        return bits.to(tl.uint16).to(tl.bfloat16, bitcast=True)
    else:
        return x.to(dtype)
