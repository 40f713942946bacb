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


@pytest.mark.parametrize(
    "indices",
    [[0, 1, 1, 0, 1, 0], [1, 1, 1, 1, 1, 1], [0, 0, 0, 0, 0, 0]],
    ids=["two adapters", "one adapter, last slot", "one adapter, first slot"],
)
def test_batches_without_base_tokens_get_what_vllms_own_ops_give(shrink_case, indices) -> None:
    """One product per adapter over its tokens is the per-token product vLLM computed."""
    inputs, weights = shrink_case
    index = torch.tensor(indices)
    theirs = torch.zeros(TOKENS, RANK)
    try:
        unpatched_ops().bgmv_shrink(inputs, weights, theirs, index, 0.5)
    finally:
        vllm_fixes.fix_cpu_lora_ops()
    ours = torch.zeros(TOKENS, RANK)
    vllm_fixes.bgmv_shrink(inputs, weights, ours, index, 0.5)
    assert torch.allclose(ours, theirs, atol=1e-5)


def test_a_batch_of_base_tokens_only_gets_no_delta() -> None:
    torch.manual_seed(2)
    none = torch.full((TOKENS,), -1)
    out = torch.full((TOKENS, RANK + 2), 7.0)
    vllm_fixes.bgmv_shrink(torch.randn(TOKENS, D_IN), torch.randn(SLOTS, 1, RANK, D_IN), out, none)
    assert out[:, :RANK].eq(0).all() and out[:, RANK:].eq(7).all()
    inputs, weights = torch.randn(TOKENS, RANK), torch.randn(SLOTS, 1, D_OUT, RANK)
    before = torch.randn(TOKENS, D_OUT + 8)
    for add_inputs in (True, False):
        out = before.clone()
        vllm_fixes.bgmv_expand_slice(inputs, weights, out, none, 4, D_OUT, add_inputs)
        expected = before.clone()
        if not add_inputs:
            expected[:, 4 : 4 + D_OUT] = 0
        assert torch.equal(out, expected)
        out = before.clone()
        vllm_fixes.bgmv_expand(inputs, weights, out, none, add_inputs)
        expected = before.clone()
        if not add_inputs:
            expected[:, :D_OUT] = 0
        assert torch.equal(out, expected)


def _wrapper_with(lora_ids: list[int], is_prefill: bool):
    """vLLM's CPU Punica wrapper after its own `update_metadata` for a batch whose tokens carry
    these LoRA ids (0: none), with ids 7 and 9 loaded in slots 0 and 1."""
    from vllm.lora.layers import LoRAMapping
    from vllm.lora.punica_wrapper import punica_cpu

    assert vllm_fixes.fix_cpu_lora_ops()
    wrapper = punica_cpu.PunicaWrapperCPU(max_num_batched_tokens=16, max_batches=8, device="cpu")
    mapping = LoRAMapping(tuple(lora_ids), tuple(lora_ids), is_prefill=is_prefill)
    wrapper.update_metadata(mapping, [7, 9], max_loras=SLOTS, vocab_size=32)
    return wrapper


SLICES = (D_OUT, 5, 3)  # a packed layer: three output slices (as q, k, v)


def _per_token(x, a, b, y0, slots: list[int | None], scale: float) -> torch.Tensor:
    """Token by token: each slice of its adapter's `B @ (A @ x) * scale` added to y0."""
    rows = []
    for token, slot in enumerate(slots):
        parts = [
            torch.zeros(size) if slot is None else b_i[slot, 0] @ (a_i[slot, 0] @ x[token]) * scale
            for a_i, b_i, size in zip(a, b, SLICES, strict=True)
        ]
        rows.append(y0[token] + torch.cat(parts))
    return torch.stack(rows)


@pytest.mark.parametrize("is_prefill", [False, True], ids=["decode", "prefill"])
@pytest.mark.parametrize(
    "lora_ids",
    [[0, 0, 9, 0, 0, 0], [7, 9, 0, 9, 7, 0], [9] * 6, [0] * 6],
    ids=["one adapter token", "two adapters and base", "all one adapter", "no adapter"],
)
def test_the_cpu_wrapper_adds_each_tokens_own_adapter(lora_ids, is_prefill, monkeypatch) -> None:
    torch.manual_seed(3)
    x = torch.randn(TOKENS, D_IN)
    a = tuple(torch.randn(SLOTS, 1, RANK, D_IN) for _ in SLICES)
    b = tuple(torch.randn(SLOTS, 1, size, RANK) for size in SLICES)
    y0 = torch.randn(TOKENS, sum(SLICES))
    wrapper = _wrapper_with(lora_ids, is_prefill)
    slots = [{0: None, 7: 0, 9: 1}[i] for i in lora_ids]
    y = y0.clone()
    wrapper.add_lora_linear(y, x, a, b, 0.5, SLICES)
    assert torch.allclose(y, _per_token(x, a, b, y0, slots, 0.5), atol=1e-4)


def test_a_batch_without_adapter_tokens_runs_no_lora_op(monkeypatch) -> None:
    """Base-model requests on a LoRA-enabled engine: nothing but one check per layer."""
    wrapper = _wrapper_with([0] * TOKENS, is_prefill=False)
    monkeypatch.setattr(torch.Tensor, "__matmul__", lambda *_: pytest.fail("a LoRA product ran"))
    y = torch.zeros(TOKENS, sum(SLICES))
    a = tuple(torch.randn(SLOTS, 1, RANK, D_IN) for _ in SLICES)
    b = tuple(torch.randn(SLOTS, 1, size, RANK) for size in SLICES)
    wrapper.add_lora_linear(y, torch.randn(TOKENS, D_IN), a, b, 1.0, SLICES)
    assert y.eq(0).all()


def test_each_step_regroups_its_own_tokens() -> None:
    """The grouping is per batch: a new `update_metadata` replaces the last one's."""
    from vllm.lora.layers import LoRAMapping

    torch.manual_seed(4)
    x = torch.randn(TOKENS, D_IN)
    a = tuple(torch.randn(SLOTS, 1, RANK, D_IN) for _ in SLICES)
    b = tuple(torch.randn(SLOTS, 1, size, RANK) for size in SLICES)
    wrapper = _wrapper_with([0] * TOKENS, is_prefill=False)
    y = torch.zeros(TOKENS, sum(SLICES))
    wrapper.add_lora_linear(y, x, a, b, 1.0, SLICES)
    assert y.eq(0).all()
    ids = [7, 0, 0, 0, 0, 9]
    wrapper.update_metadata(LoRAMapping(tuple(ids), tuple(ids)), [7, 9], SLOTS, 32)
    wrapper.add_lora_linear(y, x, a, b, 1.0, SLICES)
    slots = [0, None, None, None, None, 1]
    assert torch.allclose(y, _per_token(x, a, b, torch.zeros_like(y), slots, 1.0), atol=1e-4)


def test_an_adapter_loaded_into_a_slot_is_used_from_the_next_step() -> None:
    """vLLM writes a newly loaded adapter into its slot of the stacked weights in place: the
    float32 copies made from the old weights must not outlive them."""
    torch.manual_seed(5)
    x = torch.randn(TOKENS, D_IN)
    a = tuple(torch.randn(SLOTS, 1, RANK, D_IN) for _ in SLICES)
    b = tuple(torch.randn(SLOTS, 1, size, RANK) for size in SLICES)
    ids = [9] * TOKENS
    wrapper = _wrapper_with(ids, is_prefill=False)
    y = torch.zeros(TOKENS, sum(SLICES))
    wrapper.add_lora_linear(y, x, a, b, 1.0, SLICES)
    a[1][1].copy_(torch.randn(1, RANK, D_IN))  # another adapter in slot 1, as vLLM loads one
    b[2][1].zero_()
    y = torch.zeros(TOKENS, sum(SLICES))
    wrapper.add_lora_linear(y, x, a, b, 1.0, SLICES)
    expected = _per_token(x, a, b, torch.zeros_like(y), [1] * TOKENS, 1.0)
    assert torch.allclose(y, expected, atol=1e-4)
