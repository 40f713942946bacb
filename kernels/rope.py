"""Rotary position embedding (Llama's `apply_rotary_pos_emb`): a Triton kernel, its launcher and
the reference."""

import torch
import triton
import triton.language as tl

from kernels._launch import cast_to, check_float, round_to


@triton.jit
def _rotate_heads(
    x_ptr,
    out_ptr,
    batch,
    pos,
    x_stride_b,
    x_stride_h,
    x_stride_t,
    out_stride_b,
    out_stride_h,
    out_stride_t,
    cos1,
    cos2,
    sin1,
    sin2,
    n_heads,
    half_dim,
    BLOCK_HEADS: tl.constexpr,
    BLOCK_HALF: tl.constexpr,
):
    """Rotate every head of x[batch, :, pos, :] into out, rounding each op like PyTorch does."""
    # int64: a head's offset (head × T × D in the [B, H, T, D] output) passes 2**31 at long T.
    heads = tl.arange(0, BLOCK_HEADS).to(tl.int64)[:, None]
    cols = tl.arange(0, BLOCK_HALF)[None, :]
    mask = (heads < n_heads) & (cols < half_dim)
    x_row = x_ptr + batch * x_stride_b + pos * x_stride_t + heads * x_stride_h + cols
    x1 = tl.load(x_row, mask=mask, other=0.0).to(tl.float32)
    x2 = tl.load(x_row + half_dim, mask=mask, other=0.0).to(tl.float32)
    dtype = out_ptr.dtype.element_ty
    # x * cos + rotate_half(x) * sin with rotate_half(x) = cat(-x2, x1), three roundings per half.
    y1 = cast_to(round_to(x1 * cos1, dtype) - round_to(x2 * sin1, dtype), dtype)
    y2 = cast_to(round_to(x2 * cos2, dtype) + round_to(x1 * sin2, dtype), dtype)
    out_row = out_ptr + batch * out_stride_b + pos * out_stride_t + heads * out_stride_h + cols
    tl.store(out_row, y1, mask=mask)
    tl.store(out_row + half_dim, y2, mask=mask)


@triton.jit
def _rope_kernel(
    q_ptr,
    k_ptr,
    cos_ptr,
    sin_ptr,
    q_out_ptr,
    k_out_ptr,
    q_stride_b,
    q_stride_h,
    q_stride_t,
    k_stride_b,
    k_stride_h,
    k_stride_t,
    q_out_stride_b,
    q_out_stride_h,
    q_out_stride_t,
    k_out_stride_b,
    k_out_stride_h,
    k_out_stride_t,
    cos_stride_b,
    cos_stride_t,
    sin_stride_b,
    sin_stride_t,
    n_q_heads,
    n_k_heads,
    half_dim,
    BLOCK_Q_HEADS: tl.constexpr,
    BLOCK_K_HEADS: tl.constexpr,
    BLOCK_HALF: tl.constexpr,
):
    """One program per (position, batch) rotates all query and key heads at that position."""
    pos = tl.program_id(0).to(tl.int64)
    batch = tl.program_id(1).to(tl.int64)
    cols = tl.arange(0, BLOCK_HALF)[None, :]
    mask = cols < half_dim
    cos_row = cos_ptr + batch * cos_stride_b + pos * cos_stride_t + cols
    sin_row = sin_ptr + batch * sin_stride_b + pos * sin_stride_t + cols
    cos1 = tl.load(cos_row, mask=mask, other=0.0).to(tl.float32)
    cos2 = tl.load(cos_row + half_dim, mask=mask, other=0.0).to(tl.float32)
    sin1 = tl.load(sin_row, mask=mask, other=0.0).to(tl.float32)
    sin2 = tl.load(sin_row + half_dim, mask=mask, other=0.0).to(tl.float32)
    _rotate_heads(
        q_ptr,
        q_out_ptr,
        batch,
        pos,
        q_stride_b,
        q_stride_h,
        q_stride_t,
        q_out_stride_b,
        q_out_stride_h,
        q_out_stride_t,
        cos1,
        cos2,
        sin1,
        sin2,
        n_q_heads,
        half_dim,
        BLOCK_Q_HEADS,
        BLOCK_HALF,
    )
    _rotate_heads(
        k_ptr,
        k_out_ptr,
        batch,
        pos,
        k_stride_b,
        k_stride_h,
        k_stride_t,
        k_out_stride_b,
        k_out_stride_h,
        k_out_stride_t,
        cos1,
        cos2,
        sin1,
        sin2,
        n_k_heads,
        half_dim,
        BLOCK_K_HEADS,
        BLOCK_HALF,
    )


def _heads_first(x: torch.Tensor, unsqueeze_dim: int) -> torch.Tensor:
    """View of a [B, H, T, D] (unsqueeze_dim 1) or [B, T, H, D] (2) tensor as [B, H, T, D]."""
    return x if unsqueeze_dim == 1 else x.transpose(1, 2)


def apply_rotary(
    q: torch.Tensor,
    k: torch.Tensor,
    cos: torch.Tensor,
    sin: torch.Tensor,
    unsqueeze_dim: int = 1,
) -> tuple[torch.Tensor, torch.Tensor]:
    """HF `apply_rotary_pos_emb` in one kernel: returns new (q_embed, k_embed), inputs untouched.

    q is [B, Hq, T, D] and k [B, Hk, T, D] (Hk may differ from Hq) for unsqueeze_dim 1, or
    [B, T, H, D] for unsqueeze_dim 2; cos and sin are [B, T, D] or [1, T, D] (as
    `LlamaRotaryEmbedding` returns them) and share a dtype; D is even. Outputs are contiguous,
    shaped like q and k, in the promotion of their dtype and cos's, and bit-identical to
    `apply_rotary_reference`: every multiply and add is rounded where PyTorch rounds it.
    """
    if unsqueeze_dim not in (1, 2, -3, -2):
        raise ValueError(
            f"unsqueeze_dim must be 1 ([B, H, T, D]) or 2 ([B, T, H, D]), got {unsqueeze_dim}"
        )
    unsqueeze_dim %= 4  # -3 and -2 name the same dims of the unsqueezed [B, T, D]
    for name, tensor in (("q", q), ("k", k), ("cos", cos), ("sin", sin)):
        check_float(name, tensor)
    if q.dim() != 4 or k.dim() != 4:
        raise ValueError(f"q and k must be 4-D; got {tuple(q.shape)} and {tuple(k.shape)}")
    if cos.dim() != 3 or cos.shape != sin.shape or cos.dtype != sin.dtype:
        raise ValueError(
            f"cos and sin must be [B, T, D] of one dtype; got {tuple(cos.shape)} {cos.dtype} "
            f"and {tuple(sin.shape)} {sin.dtype}"
        )
    q_view, k_view = _heads_first(q, unsqueeze_dim), _heads_first(k, unsqueeze_dim)
    batch, n_q_heads, seq_len, head_dim = q_view.shape
    if k_view.shape[0] != batch or k_view.shape[2:] != (seq_len, head_dim):
        raise ValueError(
            f"k must match q in batch, sequence and head dim; got q {tuple(q.shape)} "
            f"and k {tuple(k.shape)} for unsqueeze_dim={unsqueeze_dim}"
        )
    if cos.shape[0] not in (1, batch) or cos.shape[1:] != (seq_len, head_dim):
        raise ValueError(
            f"cos/sin {tuple(cos.shape)} do not broadcast to batch {batch}, sequence {seq_len}, "
            f"head dim {head_dim}"
        )
    if head_dim % 2:
        raise ValueError(f"head dim must be even, got {head_dim}")

    q_out = torch.empty(q.shape, dtype=torch.promote_types(q.dtype, cos.dtype), device=q.device)
    k_out = torch.empty(k.shape, dtype=torch.promote_types(k.dtype, cos.dtype), device=k.device)
    if q_out.numel() == 0 and k_out.numel() == 0:
        return q_out, k_out
    q_view = q_view if q_view.stride(-1) == 1 else q_view.contiguous()
    k_view = k_view if k_view.stride(-1) == 1 else k_view.contiguous()
    cos = (cos if cos.stride(-1) == 1 else cos.contiguous()).expand(batch, seq_len, head_dim)
    sin = (sin if sin.stride(-1) == 1 else sin.contiguous()).expand(batch, seq_len, head_dim)
    q_out_view, k_out_view = _heads_first(q_out, unsqueeze_dim), _heads_first(k_out, unsqueeze_dim)
    n_k_heads = k_view.shape[1]
    _rope_kernel[(seq_len, batch)](
        q_view,
        k_view,
        cos,
        sin,
        q_out_view,
        k_out_view,
        *q_view.stride()[:3],
        *k_view.stride()[:3],
        *q_out_view.stride()[:3],
        *k_out_view.stride()[:3],
        *cos.stride()[:2],
        *sin.stride()[:2],
        n_q_heads,
        n_k_heads,
        head_dim // 2,
        BLOCK_Q_HEADS=triton.next_power_of_2(max(n_q_heads, 1)),
        BLOCK_K_HEADS=triton.next_power_of_2(max(n_k_heads, 1)),
        BLOCK_HALF=triton.next_power_of_2(head_dim // 2),
        num_warps=4,
        enable_fp_fusion=False,  # PyTorch multiplies and adds in separate roundings
    )
    return q_out, k_out


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1 = x[..., : x.shape[-1] // 2]
    x2 = x[..., x.shape[-1] // 2 :]
    return torch.cat((-x2, x1), dim=-1)


def apply_rotary_reference(
    q: torch.Tensor,
    k: torch.Tensor,
    cos: torch.Tensor,
    sin: torch.Tensor,
    unsqueeze_dim: int = 1,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Hugging Face `apply_rotary_pos_emb` (with `rotate_half`), verbatim."""
    cos = cos.unsqueeze(unsqueeze_dim)
    sin = sin.unsqueeze(unsqueeze_dim)
    q_embed = (q * cos) + (_rotate_half(q) * sin)
    k_embed = (k * cos) + (_rotate_half(k) * sin)
    return q_embed, k_embed
