"""swiglu against `silu(gate) * up` (`swiglu_reference`)."""

import pytest
import torch

from kernels.swiglu import swiglu, swiglu_reference
from tests.kernels import DTYPES, assert_matches


@pytest.mark.parametrize(
    "shape",
    [
        pytest.param((1, 7), id="smaller-than-a-block"),
        pytest.param((4097,), id="one-dim-block-plus-one"),
        pytest.param((3, 1000), id="rows-h1000"),
        pytest.param((2, 5, 1536), id="batch-seq-smollm2-mlp"),
    ],
)
@pytest.mark.parametrize("dtype, atol, rtol", DTYPES)
def test_matches_reference(
    shape: tuple[int, ...], dtype: torch.dtype, atol: float, rtol: float, device: str
) -> None:
    torch.manual_seed(0)
    gate = torch.randn(shape, dtype=dtype, device=device) * 4
    up = torch.randn(shape, dtype=dtype, device=device)
    assert_matches(swiglu(gate, up), swiglu_reference(gate, up), atol, rtol)


@pytest.mark.filterwarnings("ignore:overflow encountered in exp:RuntimeWarning")
@pytest.mark.parametrize("dtype, atol, rtol", DTYPES)
def test_saturated_gates(dtype: torch.dtype, atol: float, rtol: float, device: str) -> None:
    gate = torch.tensor([-100.0, -30.0, -5.0, 0.0, 5.0, 30.0, 100.0], device=device).to(dtype)
    up = torch.full_like(gate, 1.5)
    out = swiglu(gate, up)
    assert torch.isfinite(out).all()
    assert_matches(out, swiglu_reference(gate, up), atol, rtol)


@pytest.mark.parametrize("layout", ["chunked-fused-projection", "transposed"])
@pytest.mark.parametrize("dtype, atol, rtol", DTYPES)
def test_non_contiguous_inputs(
    layout: str, dtype: torch.dtype, atol: float, rtol: float, device: str
) -> None:
    torch.manual_seed(1)
    if layout == "chunked-fused-projection":
        gate, up = torch.randn(3, 5, 2 * 576, dtype=dtype, device=device).chunk(2, dim=-1)
    else:
        gate, up = torch.randn(2, 576, 3, 5, dtype=dtype, device=device).transpose(1, 3).unbind(0)
    assert not gate.is_contiguous() and not up.is_contiguous()
    out = swiglu(gate, up)
    assert out.shape == gate.shape and out.is_contiguous()
    assert_matches(out, swiglu_reference(gate, up), atol, rtol)


def test_rejects_mismatched_inputs(device: str) -> None:
    gate = torch.randn(2, 8, device=device)
    with pytest.raises(ValueError, match="share shape and dtype"):
        swiglu(gate, torch.randn(2, 9, device=device))
    with pytest.raises(ValueError, match="share shape and dtype"):
        swiglu(gate, gate.to(torch.bfloat16))
    with pytest.raises(TypeError, match="gate must be float32"):
        swiglu(gate.to(torch.int64), gate)
