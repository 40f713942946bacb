"""The fused reward-model head: gather each sequence's last token, final RMSNorm, one-label score.

`reward_head` scores sequences; `pairwise_preference` turns pairs of them into Bradley–Terry
probabilities. Both take the backbone output *before* the final norm and reproduce what
`LlamaForSequenceClassification` computes on those rows, each beside its PyTorch reference.
"""

import torch
import triton
import triton.language as tl

from kernels._launch import TRITON_DTYPES, check_float, round_to, row_settings
from kernels.rms_norm import rms_norm_reference

INDEX_DTYPES = (torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8)


@triton.jit
def _score_row(
    hidden_ptr,
    last_index_ptr,
    bias_ptr,
    row,
    norm_w,
    head_w,
    stride_b,
    stride_t,
    n_cols,
    eps,
    cols,
    mask,
    HAS_BIAS: tl.constexpr,
    MODEL_DTYPE: tl.constexpr,
):
    """Score of hidden[row, last_index[row]], the normed row and logit rounded to MODEL_DTYPE."""
    pos = tl.load(last_index_ptr + row).to(tl.int64)
    x_ptrs = hidden_ptr + row * stride_b + pos * stride_t + cols
    x = tl.load(x_ptrs, mask=mask, other=0.0).to(tl.float32)
    inv_rms = tl.math.rsqrt(tl.sum(x * x, axis=0) / n_cols + eps)
    x_hat = round_to(x * inv_rms, hidden_ptr.dtype.element_ty)
    normed = round_to(norm_w * x_hat, MODEL_DTYPE)
    score = tl.sum(normed * head_w, axis=0)
    if HAS_BIAS:
        score += tl.load(bias_ptr).to(tl.float32)
    return round_to(score, MODEL_DTYPE)


@triton.jit
def _reward_head_kernel(
    out_ptr,
    hidden_ptr,
    last_index_ptr,
    norm_w_ptr,
    head_w_ptr,
    bias_ptr,
    stride_b,
    stride_t,
    n_cols,
    eps,
    BLOCK_SIZE: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    MODEL_DTYPE: tl.constexpr,
):
    """One program per sequence: out[b] = score of its last token, as fp32."""
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK_SIZE)
    mask = cols < n_cols
    norm_w = tl.load(norm_w_ptr + cols, mask=mask, other=0.0).to(tl.float32)
    head_w = tl.load(head_w_ptr + cols, mask=mask, other=0.0).to(tl.float32)
    score = _score_row(
        hidden_ptr,
        last_index_ptr,
        bias_ptr,
        row,
        norm_w,
        head_w,
        stride_b,
        stride_t,
        n_cols,
        eps,
        cols,
        mask,
        HAS_BIAS,
        MODEL_DTYPE,
    )
    tl.store(out_ptr + row, score)


@triton.jit
def _pairwise_preference_kernel(
    out_ptr,
    pairs_ptr,
    hidden_ptr,
    last_index_ptr,
    norm_w_ptr,
    head_w_ptr,
    bias_ptr,
    stride_b,
    stride_t,
    n_cols,
    eps,
    BLOCK_SIZE: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    MODEL_DTYPE: tl.constexpr,
):
    """One program per pair (a, b): out = sigmoid(score_a - score_b), as fp32."""
    pair = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK_SIZE)
    mask = cols < n_cols
    norm_w = tl.load(norm_w_ptr + cols, mask=mask, other=0.0).to(tl.float32)
    head_w = tl.load(head_w_ptr + cols, mask=mask, other=0.0).to(tl.float32)
    row_a = tl.load(pairs_ptr + 2 * pair).to(tl.int64)
    row_b = tl.load(pairs_ptr + 2 * pair + 1).to(tl.int64)
    score_a = _score_row(
        hidden_ptr,
        last_index_ptr,
        bias_ptr,
        row_a,
        norm_w,
        head_w,
        stride_b,
        stride_t,
        n_cols,
        eps,
        cols,
        mask,
        HAS_BIAS,
        MODEL_DTYPE,
    )
    score_b = _score_row(
        hidden_ptr,
        last_index_ptr,
        bias_ptr,
        row_b,
        norm_w,
        head_w,
        stride_b,
        stride_t,
        n_cols,
        eps,
        cols,
        mask,
        HAS_BIAS,
        MODEL_DTYPE,
    )
    tl.store(out_ptr + pair, tl.sigmoid(score_a - score_b))


def _check_indices(name: str, index: torch.Tensor, shape: tuple[int, ...], bound: int) -> None:
    """Raise unless `index` is an integer tensor of `shape` with every value in [0, bound)."""
    if index.dtype not in INDEX_DTYPES:
        raise TypeError(f"{name} must be an integer tensor, got {index.dtype}")
    if tuple(index.shape) != shape:
        raise ValueError(f"{name} must have shape {list(shape)}, got {list(index.shape)}")
    if index.numel() and (int(index.min()) < 0 or int(index.max()) >= bound):
        raise ValueError(
            f"{name} values must lie in [0, {bound}); got min {int(index.min())}, "
            f"max {int(index.max())}"
        )


def _check_pairs(pairs: torch.Tensor, batch: int) -> None:
    """Raise unless `pairs` is an integer [P, 2] tensor of row indices into a batch of `batch`."""
    if pairs.dim() != 2 or pairs.shape[1] != 2:
        raise ValueError(f"pairs must have shape [P, 2], got {list(pairs.shape)}")
    _check_indices("pairs", pairs, tuple(pairs.shape), batch)


def _check_head(
    hidden: torch.Tensor,
    last_index: torch.Tensor,
    norm_weight: torch.Tensor,
    head_weight: torch.Tensor,
    head_bias: float | torch.Tensor | None,
) -> tuple[torch.dtype, torch.Tensor, torch.Tensor | None]:
    """Validate the head's inputs; return the model dtype and the head weight [H] and bias [1]
    (or None) cast to it, as `nn.Linear` in that dtype would hold them."""
    for name, tensor in (
        ("hidden", hidden),
        ("norm_weight", norm_weight),
        ("head_weight", head_weight),
    ):
        check_float(name, tensor)
    if hidden.dim() != 3:
        raise ValueError(f"hidden must be [batch, seq, hidden], got {list(hidden.shape)}")
    batch, seq_len, hidden_size = hidden.shape
    if norm_weight.shape != (hidden_size,):
        raise ValueError(
            f"norm_weight must have shape [{hidden_size}], got {list(norm_weight.shape)}"
        )
    if head_weight.dim() == 2 and head_weight.shape[0] != 1:
        raise ValueError(
            f"head_weight has {head_weight.shape[0]} labels; the reward head needs a one-label "
            f"score head of shape [{hidden_size}] or [1, {hidden_size}]"
        )
    if head_weight.dim() not in (1, 2) or head_weight.shape[-1] != hidden_size:
        raise ValueError(
            f"head_weight must have shape [{hidden_size}] or [1, {hidden_size}], "
            f"got {list(head_weight.shape)}"
        )
    _check_indices("last_index", last_index, (batch,), seq_len)

    model_dtype = torch.promote_types(hidden.dtype, norm_weight.dtype)
    head_weight = head_weight.reshape(hidden_size).to(model_dtype)
    if head_bias is None:
        return model_dtype, head_weight, None
    if isinstance(head_bias, torch.Tensor):
        if head_bias.numel() != 1:
            raise ValueError(f"head_bias must hold one value, got shape {list(head_bias.shape)}")
        bias = head_bias.reshape(1).to(device=hidden.device, dtype=model_dtype)
    else:
        bias = torch.full((1,), float(head_bias), dtype=model_dtype, device=hidden.device)
    return model_dtype, head_weight, bias


def _launch_args(
    hidden: torch.Tensor,
    last_index: torch.Tensor,
    norm_weight: torch.Tensor,
    eps: float,
    head_weight: torch.Tensor,
    head_bias: float | torch.Tensor | None,
) -> tuple[tuple, dict]:
    """Positional arguments after the kernel's own, and the constexpr/warps keywords."""
    model_dtype, head_w, bias = _check_head(hidden, last_index, norm_weight, head_weight, head_bias)
    if hidden.stride(-1) != 1:
        hidden = hidden.contiguous()
    block_size, num_warps = row_settings(hidden.shape[-1])
    args = (
        hidden,
        last_index.to(hidden.device).contiguous(),
        norm_weight.contiguous(),
        head_w.contiguous(),
        head_w if bias is None else bias,
        hidden.stride(0),
        hidden.stride(1),
        hidden.shape[-1],
        float(eps),
    )
    meta = {
        "BLOCK_SIZE": block_size,
        "HAS_BIAS": bias is not None,
        "MODEL_DTYPE": TRITON_DTYPES[model_dtype],
        "num_warps": num_warps,
    }
    return args, meta


def reward_head(
    hidden: torch.Tensor,
    last_index: torch.Tensor,
    norm_weight: torch.Tensor,
    eps: float,
    head_weight: torch.Tensor,
    head_bias: float | torch.Tensor | None = None,
) -> torch.Tensor:
    """Score per sequence, float32 [B]: RMSNorm(hidden[b, last_index[b]]) · head_weight + bias.

    hidden [B, T, H] is the backbone output before the final norm, last_index [B] the position of
    each sequence's last real token (0 <= i < T; checked, which syncs a GPU), head_weight [H] or
    [1, H], head_bias None, a float or a one-element tensor. The model dtype is the promotion of
    hidden's and norm_weight's; the head weight and bias are cast to it and the normed row and the
    logit are rounded to it as in HF, so the result equals `reward_head_reference` up to fp32
    summation order (at most one unit in the last place of the model dtype).
    """
    args, meta = _launch_args(hidden, last_index, norm_weight, eps, head_weight, head_bias)
    out = torch.empty(hidden.shape[0], dtype=torch.float32, device=hidden.device)
    if out.numel():
        _reward_head_kernel[(out.numel(),)](out, *args, **meta)
    return out


def pairwise_preference(
    hidden: torch.Tensor,
    last_index: torch.Tensor,
    norm_weight: torch.Tensor,
    eps: float,
    head_weight: torch.Tensor,
    head_bias: float | torch.Tensor | None,
    pairs: torch.Tensor,
) -> torch.Tensor:
    """Bradley–Terry P(a preferred over b) = sigmoid(score_a - score_b), float32 [P].

    pairs [P, 2] holds row indices (a, b) into the batch; each pair's two scores are computed as in
    `reward_head`, in one program per pair. Equals `pairwise_preference_reference` up to the
    scores' tolerance.
    """
    args, meta = _launch_args(hidden, last_index, norm_weight, eps, head_weight, head_bias)
    _check_pairs(pairs, hidden.shape[0])
    out = torch.empty(pairs.shape[0], dtype=torch.float32, device=hidden.device)
    if out.numel():
        pairs = pairs.to(hidden.device).contiguous()
        _pairwise_preference_kernel[(out.numel(),)](out, pairs, *args, **meta)
    return out


def reward_head_reference(
    hidden: torch.Tensor,
    last_index: torch.Tensor,
    norm_weight: torch.Tensor,
    eps: float,
    head_weight: torch.Tensor,
    head_bias: float | torch.Tensor | None = None,
) -> torch.Tensor:
    """What `LlamaForSequenceClassification` does after its backbone: final norm, `nn.Linear` score
    head in the model dtype over every position, pooled at last_index, then `.float()`."""
    _, head_w, bias = _check_head(hidden, last_index, norm_weight, head_weight, head_bias)
    normed = rms_norm_reference(hidden, norm_weight, eps)
    logits = torch.nn.functional.linear(normed, head_w.reshape(1, -1), bias)
    batch = torch.arange(hidden.shape[0], device=hidden.device)
    return logits[batch, last_index.long(), 0].float()


def pairwise_preference_reference(
    hidden: torch.Tensor,
    last_index: torch.Tensor,
    norm_weight: torch.Tensor,
    eps: float,
    head_weight: torch.Tensor,
    head_bias: float | torch.Tensor | None,
    pairs: torch.Tensor,
) -> torch.Tensor:
    """sigmoid(score_a - score_b) over `reward_head_reference` scores."""
    _check_pairs(pairs, hidden.shape[0])
    scores = reward_head_reference(hidden, last_index, norm_weight, eps, head_weight, head_bias)
    pairs = pairs.long()
    return torch.sigmoid(scores[pairs[:, 0]] - scores[pairs[:, 1]])
