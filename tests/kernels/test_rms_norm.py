"""rms_norm against HF's LlamaRMSNorm (`rms_norm_reference`)."""

import pytest
import torch

from kernels.rms_norm import rms_norm, rms_norm_reference
from tests.kernels import DTYPES, assert_matches

EPS = 1e-5


@pytest.mark.parametrize(
    "shape",
    [
        pytest.param((1, 100), id="one-row-h100"),
        pytest.param((2, 3, 576), id="batch-seq-h576"),
        pytest.param((1, 1024, 1000), id="long-seq-t1024-h1000"),
        pytest.param((2, 1, 3, 64), id="four-dims-h64"),
    ],
)
@pytest.mark.parametrize("dtype, atol, rtol", DTYPES)
def test_matches_reference(
    shape: tuple[int, ...], dtype: torch.dtype, atol: float, rtol: float, device: str
) -> None:
    torch.manual_seed(0)
    x = torch.randn(shape, dtype=dtype, device=device) * 3
    weight = torch.randn(shape[-1], dtype=dtype, device=device)
    assert_matches(rms_norm(x, weight, EPS), rms_norm_reference(x, weight, EPS), atol, rtol)


def _strided(layout: str, dtype: torch.dtype, device: str) -> torch.Tensor:
    """A [3, 5, 100] view that is not contiguous, in one of three ways."""
    if layout == "transposed":
        return torch.randn(5, 3, 100, dtype=dtype, device=device).transpose(0, 1)
    if layout == "sliced":
        return torch.randn(3, 5, 200, dtype=dtype, device=device)[..., 50:150]
    return torch.randn(3, 100, 5, dtype=dtype, device=device).transpose(1, 2)


@pytest.mark.parametrize("layout", ["transposed", "sliced", "strided-last-dim"])
@pytest.mark.parametrize("dtype, atol, rtol", DTYPES)
def test_non_contiguous_input(
    layout: str, dtype: torch.dtype, atol: float, rtol: float, device: str
) -> None:
    torch.manual_seed(1)
    x = _strided(layout, dtype, device)
    assert not x.is_contiguous()
    weight = torch.randn(100, dtype=dtype, device=device)[::1]
    out = rms_norm(x, weight, EPS)
    assert out.is_contiguous()
    assert_matches(out, rms_norm_reference(x, weight, EPS), atol, rtol)


def test_eps_dominates_tiny_rows(device: str) -> None:
    torch.manual_seed(2)
    x = torch.randn(4, 576, device=device) * 1e-3
    weight = torch.randn(576, device=device)
    out = rms_norm(x, weight, 1e-2)
    torch.testing.assert_close(out, rms_norm_reference(x, weight, 1e-2))
    assert out.abs().max() < 0.1


@pytest.mark.parametrize(
    "x_dtype, weight_dtype",
    [
        (torch.bfloat16, torch.float32),
        (torch.float32, torch.bfloat16),
        (torch.float16, torch.bfloat16),
    ],
)
def test_output_dtype_is_the_promotion(
    x_dtype: torch.dtype, weight_dtype: torch.dtype, device: str
) -> None:
    torch.manual_seed(3)
    x = torch.randn(3, 576, dtype=x_dtype, device=device)
    weight = torch.randn(576, dtype=weight_dtype, device=device)
    out, expected = rms_norm(x, weight, EPS), rms_norm_reference(x, weight, EPS)
    assert out.dtype == expected.dtype == torch.float32
    torch.testing.assert_close(out, expected, atol=1e-2, rtol=1.6e-2)


def test_rejects_bad_inputs(device: str) -> None:
    x = torch.randn(2, 100, device=device)
    with pytest.raises(ValueError, match="weight must have shape"):
        rms_norm(x, torch.ones(99, device=device), EPS)
    with pytest.raises(TypeError, match="x must be float32"):
        rms_norm(x.to(torch.int32), torch.ones(100, device=device), EPS)
