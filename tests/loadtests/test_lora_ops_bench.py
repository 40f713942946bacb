"""`python -m loadtests.lora_ops_bench` runs end to end on a tiny step, and both sides of it do
the same LoRA work: the figures compare like with like."""

from __future__ import annotations

import torch

from loadtests import lora_ops_bench
from loadtests.lora_ops_bench import MIXES, Case, layer_weights, our_step, own_ops, vllm_step


def test_vllms_step_and_ours_add_the_same_deltas_where_no_token_is_a_base_token() -> None:
    """(vLLM's own ops give base tokens the last adapter: mixes with base tokens differ there by
    design, `tests/serve/test_vllm_fixes.py`.)"""
    torch.manual_seed(0)
    weights = layer_weights(torch.float32)
    inputs = {w: torch.randn(4, w) for w in (lora_ops_bench.HIDDEN, lora_ops_bench.INTERMEDIATE)}
    for mix in ("all one adapter", "four adapters"):
        indices = torch.tensor(MIXES[mix](4))
        cases = [
            Case(
                weights,
                inputs,
                [torch.zeros(4, sum(s)) for _, s in lora_ops_bench.LINEARS],
                indices,
            )
            for _ in range(2)
        ]
        vllm_step(own_ops(), cases[0])
        our_step(cases[1])
        for theirs, ours in zip(cases[0].outputs, cases[1].outputs, strict=True):
            assert torch.allclose(theirs, ours, atol=1e-4)
            assert theirs.abs().sum() > 0


def test_the_benchmark_prints_a_row_per_batch_and_mix() -> None:
    rows = lora_ops_bench.run([2], repeats=1)
    assert [(r["tokens"], r["mix"]) for r in rows] == [(2, mix) for mix in MIXES]
    text = lora_ops_bench.markdown(rows, "python -m loadtests.lora_ops_bench", 1)
    assert text.count("\n| 2 | ") == len(MIXES)
