"""reward_head and pairwise_preference against their references and a real
LlamaForSequenceClassification."""

import pytest
import torch
from transformers import LlamaConfig, LlamaForSequenceClassification

from kernels.reward_head import (
    pairwise_preference,
    pairwise_preference_reference,
    reward_head,
    reward_head_reference,
)
from tests.kernels import DTYPES

EPS = 1e-5


def _head(hidden_size: int, dtype: torch.dtype, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    """A norm weight around 1 and a score head giving scores of order 1."""
    norm_weight = 1 + 0.5 * torch.randn(hidden_size, dtype=dtype, device=device)
    head_weight = torch.randn(1, hidden_size, dtype=dtype, device=device) * hidden_size**-0.5
    return norm_weight, head_weight


@pytest.mark.parametrize(
    "batch, seq_len, hidden_size, last_index, head_bias",
    [
        pytest.param(1, 1, 100, [0], None, id="one-token-h100"),
        pytest.param(4, 9, 576, [0, 8, 3, 8], 0.25, id="ragged-h576-float-bias"),
        pytest.param(3, 16, 1000, [15, 0, 7], "tensor", id="ragged-h1000-tensor-bias"),
    ],
)
@pytest.mark.parametrize("dtype, atol, rtol", DTYPES)
def test_matches_reference(
    batch: int,
    seq_len: int,
    hidden_size: int,
    last_index: list[int],
    head_bias: float | str | None,
    dtype: torch.dtype,
    atol: float,
    rtol: float,
    device: str,
) -> None:
    torch.manual_seed(0)
    hidden = torch.randn(batch, seq_len, hidden_size, dtype=dtype, device=device) * 2
    index = torch.tensor(last_index, device=device)
    norm_weight, head_weight = _head(hidden_size, dtype, device)
    bias = torch.tensor([-0.75], dtype=dtype, device=device) if head_bias == "tensor" else head_bias
    args = (hidden, index, norm_weight, EPS, head_weight, bias)
    scores = reward_head(*args)
    assert scores.dtype == torch.float32 and scores.shape == (batch,)
    torch.testing.assert_close(scores, reward_head_reference(*args), atol=atol, rtol=rtol)


@pytest.mark.parametrize("dtype, atol, rtol", DTYPES)
def test_matches_llama_for_sequence_classification(
    dtype: torch.dtype, atol: float, rtol: float, device: str
) -> None:
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=100,
        hidden_size=576,
        intermediate_size=128,
        num_hidden_layers=1,
        num_attention_heads=9,
        num_key_value_heads=3,
        head_dim=64,
        rms_norm_eps=EPS,
        num_labels=1,
        pad_token_id=0,
    )
    config._attn_implementation = "eager"
    model = LlamaForSequenceClassification(config).to(device=device, dtype=dtype).eval()
    with torch.no_grad():
        model.model.norm.weight.normal_(1.0, 0.5)
        model.score.weight.normal_(0.0, config.hidden_size**-0.5)

    # Right padding, pad tokens only in the padding: HF pools the last real token, as we do.
    lengths = torch.tensor([8, 1, 5], device=device)
    seq_len = int(lengths.max())
    real = torch.arange(seq_len, device=device)[None, :] < lengths[:, None]
    input_ids = torch.randint(1, config.vocab_size, real.shape, device=device).masked_fill(~real, 0)

    captured: list[torch.Tensor] = []
    hook = model.model.norm.register_forward_pre_hook(lambda _, args: captured.append(args[0]))
    with torch.no_grad():
        logits = model(input_ids=input_ids, attention_mask=real.long()).logits
    hook.remove()
    (hidden,) = captured  # the backbone output before the final norm

    last_index = lengths - 1
    args = (hidden, last_index, model.model.norm.weight, EPS, model.score.weight)
    expected = logits[:, 0].float()
    assert torch.equal(reward_head_reference(*args), expected)
    torch.testing.assert_close(reward_head(*args), expected, atol=atol, rtol=rtol)


@pytest.mark.parametrize("dtype, atol, rtol", DTYPES)
def test_pairwise_preference(dtype: torch.dtype, atol: float, rtol: float, device: str) -> None:
    torch.manual_seed(1)
    hidden = torch.randn(4, 6, 576, dtype=dtype, device=device)
    last_index = torch.tensor([5, 0, 2, 5], device=device)
    norm_weight, head_weight = _head(576, dtype, device)
    pairs = torch.tensor([[0, 1], [1, 0], [2, 2], [3, 0], [1, 3], [2, 1]], device=device)
    args = (hidden, last_index, norm_weight, EPS, head_weight, 0.5, pairs)
    probs = pairwise_preference(*args)
    assert probs.dtype == torch.float32 and probs.shape == (6,)
    torch.testing.assert_close(probs, pairwise_preference_reference(*args), atol=atol, rtol=rtol)
    assert probs[2] == 0.5
    torch.testing.assert_close(probs[0] + probs[1], torch.tensor(1.0, device=device))


@pytest.mark.parametrize("dtype, atol, rtol", DTYPES)
def test_rounds_like_hf_over_many_rows(
    dtype: torch.dtype, atol: float, rtol: float, device: str
) -> None:
    torch.manual_seed(3)
    hidden = torch.randn(64, 4, 576, dtype=dtype, device=device) * 2
    last_index = torch.randint(0, 4, (64,), device=device)
    norm_weight, head_weight = _head(576, dtype, device)
    args = (hidden, last_index, norm_weight, EPS, head_weight, 0.5)
    scores, expected = reward_head(*args), reward_head_reference(*args)
    torch.testing.assert_close(scores, expected, atol=atol, rtol=rtol)
    if dtype != torch.float32:
        # The normed row and the logit are rounded to the model dtype as in HF, so scores are
        # bit-identical but for rare fp32 summation-order ties; skipping either rounding leaves
        # about 60% identical.
        assert (scores == expected).float().mean().item() >= 0.9


@pytest.mark.parametrize("layout", ["transposed-sliced", "strided-last-dim"])
@pytest.mark.parametrize("dtype, atol, rtol", DTYPES)
def test_non_contiguous_inputs_and_flat_head(
    layout: str, dtype: torch.dtype, atol: float, rtol: float, device: str
) -> None:
    torch.manual_seed(2)
    base = torch.randn(10, 3, 2 * 576, dtype=dtype, device=device).transpose(0, 1)
    hidden = base[..., 576:] if layout == "transposed-sliced" else base[..., ::2]
    last_index = torch.tensor([6, 0, 0, 3, 9, 2], dtype=torch.int32, device=device)[::2]
    assert not (hidden.is_contiguous() or last_index.is_contiguous())
    norm_weight, head_weight = _head(576, dtype, device)
    flat_head = head_weight.reshape(-1)
    scores = reward_head(hidden, last_index, norm_weight, EPS, flat_head)
    expected = reward_head_reference(hidden, last_index, norm_weight, EPS, head_weight)
    torch.testing.assert_close(scores, expected, atol=atol, rtol=rtol)


def _bad_args(case: str, device: str) -> tuple:
    hidden = torch.randn(2, 4, 8, device=device)
    last_index = torch.tensor([3, 0], device=device)
    norm_weight, head_weight = torch.ones(8, device=device), torch.ones(1, 8, device=device)
    bias, pairs = None, torch.tensor([[0, 1]], device=device)
    if case == "last-index-past-end":
        last_index = torch.tensor([4, 0], device=device)
    elif case == "last-index-negative":
        last_index = torch.tensor([-1, 0], device=device)
    elif case == "last-index-wrong-length":
        last_index = torch.tensor([0, 1, 2], device=device)
    elif case == "last-index-float":
        last_index = last_index.float()
    elif case == "two-labels":
        head_weight = torch.ones(2, 8, device=device)
    elif case == "head-wrong-size":
        head_weight = torch.ones(9, device=device)
    elif case == "norm-wrong-size":
        norm_weight = torch.ones(1, 8, device=device)
    elif case == "hidden-2d":
        hidden = hidden[0]
    elif case == "bias-two-values":
        bias = torch.ones(2, device=device)
    elif case == "pair-out-of-range":
        pairs = torch.tensor([[0, 2]], device=device)
    elif case == "pairs-wrong-shape":
        pairs = torch.tensor([[0, 1, 1]], device=device)
    return (hidden, last_index, norm_weight, EPS, head_weight, bias), pairs


@pytest.mark.parametrize(
    "case, error, message",
    [
        ("last-index-past-end", ValueError, r"last_index values must lie in \[0, 4\)"),
        ("last-index-negative", ValueError, r"last_index values must lie in \[0, 4\)"),
        ("last-index-wrong-length", ValueError, r"last_index must have shape \[2\]"),
        ("last-index-float", TypeError, "last_index must be an integer tensor"),
        ("two-labels", ValueError, "head_weight has 2 labels"),
        ("head-wrong-size", ValueError, r"head_weight must have shape \[8\] or \[1, 8\]"),
        ("norm-wrong-size", ValueError, r"norm_weight must have shape \[8\]"),
        ("hidden-2d", ValueError, "hidden must be"),
        ("bias-two-values", ValueError, "head_bias must hold one value"),
        ("pair-out-of-range", ValueError, r"pairs values must lie in \[0, 2\)"),
        ("pairs-wrong-shape", ValueError, r"pairs must have shape \[P, 2\]"),
    ],
)
def test_rejects_bad_inputs(case: str, error: type, message: str, device: str) -> None:
    args, pairs = _bad_args(case, device)
    with pytest.raises(error, match=message):
        if case.startswith("pair"):
            pairwise_preference(*args, pairs)
        else:
            reward_head(*args)
