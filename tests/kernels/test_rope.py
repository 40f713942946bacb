"""apply_rotary against HF's apply_rotary_pos_emb (`apply_rotary_reference`)."""

import pytest
import torch
from transformers import LlamaConfig
from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding, apply_rotary_pos_emb

from kernels.rope import apply_rotary, apply_rotary_reference
from tests.kernels import DTYPES, assert_matches


def _assert_pair_matches(actual: tuple, expected: tuple, atol: float, rtol: float) -> None:
    for got, want in zip(actual, expected, strict=True):
        assert_matches(got, want, atol, rtol)


@pytest.mark.parametrize(
    "batch, q_heads, k_heads, seq_len, head_dim",
    [
        pytest.param(1, 4, 4, 7, 64, id="batch1-mha-t7-d64"),
        pytest.param(2, 6, 2, 33, 128, id="gqa-t33-d128"),
        pytest.param(3, 9, 1, 5, 64, id="mqa-9-heads-t5-d64"),
    ],
)
@pytest.mark.parametrize("dtype, atol, rtol", DTYPES)
def test_matches_reference(
    batch: int,
    q_heads: int,
    k_heads: int,
    seq_len: int,
    head_dim: int,
    dtype: torch.dtype,
    atol: float,
    rtol: float,
    device: str,
) -> None:
    torch.manual_seed(0)
    q = torch.randn(batch, q_heads, seq_len, head_dim, dtype=dtype, device=device)
    k = torch.randn(batch, k_heads, seq_len, head_dim, dtype=dtype, device=device)
    # Unrelated halves, unlike real cos/sin, so a kernel that reads the wrong half fails.
    cos = torch.randn(batch, seq_len, head_dim, dtype=dtype, device=device)
    sin = torch.randn(batch, seq_len, head_dim, dtype=dtype, device=device)
    _assert_pair_matches(
        apply_rotary(q, k, cos, sin), apply_rotary_reference(q, k, cos, sin), atol, rtol
    )


@pytest.mark.parametrize("head_dim", [64, 128])
@pytest.mark.parametrize("dtype, atol, rtol", DTYPES)
def test_matches_hf_with_llama_rotary_embedding(
    head_dim: int, dtype: torch.dtype, atol: float, rtol: float, device: str
) -> None:
    torch.manual_seed(1)
    batch, q_heads, k_heads, seq_len = 2, 4, 2, 9
    config = LlamaConfig(
        hidden_size=q_heads * head_dim,
        num_attention_heads=q_heads,
        num_key_value_heads=k_heads,
        head_dim=head_dim,
        max_position_embeddings=4096,
    )
    q = torch.randn(batch, q_heads, seq_len, head_dim, dtype=dtype, device=device)
    k = torch.randn(batch, k_heads, seq_len, head_dim, dtype=dtype, device=device)
    offsets = torch.tensor([[0], [1000]], device=device)
    position_ids = torch.arange(seq_len, device=device)[None, :] + offsets
    cos, sin = LlamaRotaryEmbedding(config).to(device)(q, position_ids)
    expected = apply_rotary_pos_emb(q, k, cos, sin)
    reference = apply_rotary_reference(q, k, cos, sin)
    for ref, hf in zip(reference, expected, strict=True):
        assert torch.equal(ref, hf)
    _assert_pair_matches(apply_rotary(q, k, cos, sin), expected, atol, rtol)


@pytest.mark.parametrize("dtype, atol, rtol", DTYPES)
def test_sequence_major_layout(dtype: torch.dtype, atol: float, rtol: float, device: str) -> None:
    torch.manual_seed(2)
    q = torch.randn(2, 11, 4, 64, dtype=dtype, device=device)  # [B, T, H, D]
    k = torch.randn(2, 11, 2, 64, dtype=dtype, device=device)
    cos = torch.randn(2, 11, 64, dtype=dtype, device=device)
    sin = torch.randn(2, 11, 64, dtype=dtype, device=device)
    out = apply_rotary(q, k, cos, sin, unsqueeze_dim=2)
    assert out[0].shape == q.shape and out[1].shape == k.shape
    _assert_pair_matches(out, apply_rotary_reference(q, k, cos, sin, unsqueeze_dim=2), atol, rtol)


@pytest.mark.parametrize("dtype, atol, rtol", DTYPES)
def test_non_contiguous_inputs_and_broadcast_batch(
    dtype: torch.dtype, atol: float, rtol: float, device: str
) -> None:
    torch.manual_seed(3)
    batch, q_heads, k_heads, seq_len, head_dim = 2, 4, 2, 5, 64
    # As in Llama attention: views of one fused projection, transposed to [B, H, T, D].
    width = (q_heads + 2 * k_heads) * head_dim
    qkv = torch.randn(batch, seq_len, width, dtype=dtype, device=device)
    q = qkv[..., : q_heads * head_dim].view(batch, seq_len, q_heads, head_dim).transpose(1, 2)
    k_columns = qkv[..., q_heads * head_dim : (q_heads + k_heads) * head_dim]
    k = k_columns.view(batch, seq_len, k_heads, head_dim).transpose(1, 2)
    # One cos/sin row set for the whole batch ([1, T, D]); cos also with a strided last dim.
    cos = torch.randn(1, head_dim, seq_len, dtype=dtype, device=device).transpose(1, 2)
    sin = torch.randn(1, seq_len, head_dim, dtype=dtype, device=device)
    assert not (q.is_contiguous() or k.is_contiguous() or cos.is_contiguous())
    out = apply_rotary(q, k, cos, sin)
    assert all(tensor.is_contiguous() for tensor in out)
    _assert_pair_matches(out, apply_rotary_reference(q, k, cos, sin), atol, rtol)


def test_returns_new_tensors_and_leaves_inputs(device: str) -> None:
    torch.manual_seed(4)
    tensors = [torch.randn(shape, device=device) for shape in [(1, 2, 3, 64), (1, 1, 3, 64)]]
    cos, sin = torch.randn(2, 1, 3, 64, device=device).unbind(0)
    before = [tensor.clone() for tensor in (*tensors, cos, sin)]
    q_out, k_out = apply_rotary(*tensors, cos, sin)
    for tensor, copy in zip((*tensors, cos, sin), before, strict=True):
        assert torch.equal(tensor, copy)
    assert q_out.data_ptr() != tensors[0].data_ptr() and k_out.data_ptr() != tensors[1].data_ptr()
    assert not torch.equal(q_out, tensors[0])


@pytest.mark.parametrize(
    "q_shape, k_shape, cos_shape, unsqueeze_dim, message",
    [
        ((1, 2, 3, 63), (1, 2, 3, 63), (1, 3, 63), 1, "head dim must be even"),
        ((1, 2, 3, 64), (1, 2, 3, 64), (1, 3, 64), 3, "unsqueeze_dim must be 1"),
        ((1, 2, 3, 64), (1, 2, 4, 64), (1, 3, 64), 1, "k must match q"),
        ((2, 2, 3, 64), (2, 2, 3, 64), (3, 3, 64), 1, "do not broadcast"),
        ((1, 2, 3, 64), (1, 2, 3, 64), (3, 64), 1, "cos and sin must be"),
    ],
    ids=["odd-head-dim", "bad-unsqueeze-dim", "k-seq-mismatch", "cos-batch", "cos-2d"],
)
def test_rejects_bad_inputs(
    q_shape: tuple[int, ...],
    k_shape: tuple[int, ...],
    cos_shape: tuple[int, ...],
    unsqueeze_dim: int,
    message: str,
    device: str,
) -> None:
    q, k = torch.randn(q_shape, device=device), torch.randn(k_shape, device=device)
    cos = torch.randn(cos_shape, device=device)
    with pytest.raises(ValueError, match=message):
        apply_rotary(q, k, cos, cos.clone(), unsqueeze_dim=unsqueeze_dim)
