"""RMSNorm forward (Llama's `LlamaRMSNorm`): a Triton kernel, its launcher and the reference."""

import torch
import triton
import triton.language as tl

from kernels._launch import as_rows, cast_to, check_float, round_to, row_settings


@triton.jit
def _rms_norm_kernel(
    y_ptr,
    x_ptr,
    w_ptr,
    y_row_stride,
    x_row_stride,
    n_cols,
    eps,
    BLOCK_SIZE: tl.constexpr,
):
    """y = w * (x * rsqrt(mean(x^2) + eps)).to(x.dtype), one program per row, math in fp32."""
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK_SIZE)
    mask = cols < n_cols

    x = tl.load(x_ptr + row * x_row_stride + cols, mask=mask, other=0.0).to(tl.float32)
    w = tl.load(w_ptr + cols, mask=mask, other=0.0).to(tl.float32)
    inv_rms = tl.math.rsqrt(tl.sum(x * x, axis=0) / n_cols + eps)
    # HF rounds the normalized row to the input dtype before multiplying by the weight.
    x_hat = round_to(x * inv_rms, x_ptr.dtype.element_ty)
    y = cast_to(w * x_hat, y_ptr.dtype.element_ty)
    tl.store(y_ptr + row * y_row_stride + cols, y, mask=mask)


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """RMSNorm over the last dim of `x` (any leading dims, any strides) with `weight` [H].

    Returns a new contiguous tensor of x's shape in the promotion of weight's and x's dtypes,
    equal to `rms_norm_reference` up to fp32 summation order (the HF roundings are reproduced).
    """
    check_float("x", x)
    check_float("weight", weight)
    if x.dim() == 0 or weight.shape != (x.shape[-1],):
        raise ValueError(
            f"weight must have shape [hidden] matching x's last dim; got weight "
            f"{tuple(weight.shape)} for x {tuple(x.shape)}"
        )
    out_dtype = torch.promote_types(weight.dtype, x.dtype)
    y = torch.empty(x.shape, dtype=out_dtype, device=x.device)
    if x.numel() == 0:
        return y
    rows = as_rows(x)
    y_rows = y.view(-1, x.shape[-1])
    block_size, num_warps = row_settings(rows.shape[1])
    _rms_norm_kernel[(rows.shape[0],)](
        y_rows,
        rows,
        weight.contiguous(),
        y_rows.stride(0),
        rows.stride(0),
        rows.shape[1],
        float(eps),
        BLOCK_SIZE=block_size,
        num_warps=num_warps,
    )
    return y


def rms_norm_reference(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """Hugging Face `LlamaRMSNorm.forward`, verbatim."""
    h = x.to(torch.float32)
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
    return weight * h.to(x.dtype)
