"""vLLM's CPU LoRA ops applied the last adapter to base-model tokens (index -1) of a mixed batch;
the fix arena-serve loads into every vLLM process skips them, and changes nothing else."""

from __future__ import annotations

import importlib
import importlib.metadata

import pytest
import torch

from serve import vllm_fixes

TOKENS, D_IN, D_OUT, RANK, SLOTS = 6, 16, 12, 4, 2
# A mixed batch: base-model tokens (-1) between tokens of adapters 0 and 1.
INDICES = torch.tensor([-1, 0, 1, -1, 1, 0])


def reference(inputs: torch.Tensor, weights: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """Token by token: its adapter's product, or nothing for a token without one."""
    rows = [
        torch.zeros(weights.shape[-2]) if i < 0 else weights[i, 0] @ x
        for x, i in zip(inputs, indices.tolist(), strict=True)
    ]
    return torch.stack(rows)


@pytest.fixture
def shrink_case() -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    return torch.randn(TOKENS, D_IN), torch.randn(SLOTS, 1, RANK, D_IN)


def unpatched_ops():
    """vLLM's own torch ops, read fresh from their source (the fix may already be applied)."""
    from vllm.lora.ops.torch_ops import lora_ops

    return importlib.reload(lora_ops)


def test_vllms_own_cpu_ops_give_base_tokens_the_last_adapter(shrink_case) -> None:
    """The defect, shown on the installed vLLM's ops (fails once vLLM fixes it upstream: then
    the fix here can go)."""
    inputs, weights = shrink_case
    out = torch.zeros(TOKENS, RANK)
    try:
        unpatched_ops().bgmv_shrink(inputs, weights, out, INDICES, 1.0)
    finally:
        vllm_fixes.fix_cpu_lora_ops()  # the reload dropped the fix from the module
    base_rows = INDICES < 0
    assert torch.allclose(out[base_rows], (inputs[base_rows] @ weights[-1, 0].T), atol=1e-5)


def test_the_fixed_shrink_skips_base_tokens_and_keeps_adapter_tokens(shrink_case) -> None:
    inputs, weights = shrink_case
    out = torch.full((TOKENS, RANK), 7.0)
    vllm_fixes.bgmv_shrink(inputs, weights, out, INDICES, 0.5)
    assert torch.allclose(out, 0.5 * reference(inputs, weights, INDICES), atol=1e-5)


@pytest.mark.parametrize("add_inputs", [True, False])
def test_the_fixed_expands_add_nothing_to_base_tokens(add_inputs: bool) -> None:
    torch.manual_seed(1)
    inputs, weights = torch.randn(TOKENS, RANK), torch.randn(SLOTS, 1, D_OUT, RANK)
    before = torch.randn(TOKENS, D_OUT)
    delta = reference(inputs, weights, INDICES)
    out = before.clone()
    vllm_fixes.bgmv_expand(inputs, weights, out, INDICES, add_inputs)
    assert torch.allclose(out, before + delta if add_inputs else delta, atol=1e-5)
    wide = torch.randn(TOKENS, D_OUT + 8)
    out = wide.clone()
    vllm_fixes.bgmv_expand_slice(inputs, weights, out, INDICES, 4, D_OUT, add_inputs)
    expected = wide.clone()
    expected[:, 4 : 4 + D_OUT] = (wide[:, 4 : 4 + D_OUT] if add_inputs else 0) + delta
    assert torch.allclose(out, expected, atol=1e-5)


def test_the_fix_reaches_every_caller_of_the_ops(shrink_case) -> None:
    from vllm.lora.ops import torch_ops
    from vllm.lora.ops.torch_ops import lora_ops
    from vllm.lora.punica_wrapper import punica_cpu

    assert vllm_fixes.fix_cpu_lora_ops() and vllm_fixes.fix_cpu_lora_ops()  # idempotent
    for module in (lora_ops, torch_ops, punica_cpu):
        assert module.bgmv_shrink is vllm_fixes.bgmv_shrink
        assert module.bgmv_expand is vllm_fixes.bgmv_expand
        assert module.bgmv_expand_slice is vllm_fixes.bgmv_expand_slice
    # The prefill ops (one LoRA index per sequence) reach the fix through the module.
    inputs, weights = shrink_case
    out = torch.zeros(TOKENS, RANK)
    lengths, per_sequence = torch.tensor([2, 4]), torch.tensor([-1, 1])
    lora_ops.sgmv_shrink(inputs, weights, out, None, lengths, per_sequence, 2, 4, TOKENS, 1.0)
    exploded = torch.repeat_interleave(per_sequence, lengths)
    assert torch.allclose(out, reference(inputs, weights, exploded), atol=1e-5)


def test_vllm_loads_the_fix_as_a_general_plugin() -> None:
    plugins = importlib.metadata.entry_points(group="vllm.general_plugins")
    [plugin] = [p for p in plugins if p.name == "arena_serve_fixes"]
    assert plugin.load() is vllm_fixes.register
