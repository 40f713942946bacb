"""Where a LoRA decode step's time goes on CPU: `python -m loadtests.lora_ops_bench`.

Times the LoRA work of one decode step of SmolLM2-135M (30 layers; the packed q/k/v, o,
gate/up and down projections; rank 8; the engine's dtype), as vLLM's CPU Punica wrapper does it
(`add_lora_linear`: a shrink into a float32 buffer and an expand per output slice), with:

- **vLLM's own ops** (`vllm.lora.ops.torch_ops`, read fresh from the installed source): a copy
  of each token's whole LoRA weight (`lora_weights[indices]`), then a per-token product;
- **arena-serve's** `add_lora_linear` (`serve.vllm_fixes`, what its engines load): the tokens
  grouped by adapter once per step, one float32 product pair per adapter and slice over its
  tokens, and nothing where no token has an adapter.

Beside them, the base model's own projections for the same tokens (one matrix product per
projection), the yardstick: a LoRA that costs as much as the projections halves the step's
linear-layer throughput. Batches of 8 and 32 tokens (one per request in flight), four mixes of
requests: none with an adapter, all with one, half with one, and four adapters. The median of
`--repeats` timed steps after warm-up; the spread (min to max over repeats) says how noisy.
"""

from __future__ import annotations

import argparse
import importlib
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

from loadtests import serving_bench
from serve import vllm_fixes
from serve.config import cpu_engine_dtype

LAYERS, HIDDEN, KV, INTERMEDIATE, RANK, SLOTS = 30, 576, 192, 1536, 8, 4
# Each LoRA linear of a layer: its input width and its output slices (vLLM packs q/k/v and
# gate/up into one layer each).
LINEARS = (
    (HIDDEN, (HIDDEN, KV, KV)),
    (HIDDEN, (HIDDEN,)),
    (HIDDEN, (INTERMEDIATE, INTERMEDIATE)),
    (INTERMEDIATE, (HIDDEN,)),
)
MIXES: dict[str, Callable[[int], list[int]]] = {
    "no adapter": lambda n: [-1] * n,
    "all one adapter": lambda n: [0] * n,
    "half one adapter": lambda n: [0 if i % 2 else -1 for i in range(n)],
    "four adapters": lambda n: [i % 4 for i in range(n)],
}


def own_ops() -> tuple[Callable[..., None], Callable[..., None]]:
    """vLLM's own shrink and expand-slice, from its source (the fix patches the module)."""
    from vllm.lora.ops.torch_ops import lora_ops

    fresh = importlib.reload(lora_ops)
    shrink, expand_slice = fresh.bgmv_shrink, fresh.bgmv_expand_slice
    vllm_fixes.fix_cpu_lora_ops()  # put the fix back for anything else in this process
    return shrink, expand_slice


def layer_weights(dtype: Any) -> list[tuple[Any, Any, tuple[int, ...]]]:
    import torch

    found = []
    for width, slices in LINEARS:
        a = tuple(torch.randn(SLOTS, 1, RANK, width, dtype=dtype) * 0.02 for _ in slices)
        b = tuple(torch.randn(SLOTS, 1, out, RANK, dtype=dtype) * 0.02 for out in slices)
        found.append((a, b, slices))
    return found


def vllm_step(ops: tuple[Callable[..., None], Callable[..., None]], case: Case) -> None:
    """One decode step's LoRA work as vLLM's CPU wrapper does it (`add_lora_linear`, decode
    path): per output slice, a shrink into a float32 buffer, then an expand into the output."""
    import torch

    shrink, expand_slice = ops
    for _ in range(LAYERS):
        for (a, b, slices), y in zip(case.weights, case.outputs, strict=True):
            x = case.inputs[a[0].shape[-1]]
            buffers = [torch.zeros((x.shape[0], RANK), dtype=torch.float32) for _ in slices]
            for buffer, a_slice in zip(buffers, a, strict=True):
                shrink(x, a_slice, buffer, case.indices, 1.0)
            offset = 0
            for buffer, b_slice, size in zip(buffers, b, slices, strict=True):
                expand_slice(buffer, b_slice, y, case.indices, offset, size, True)
                offset += size


def our_step(case: Case) -> None:
    """The same step through arena-serve's `add_lora_linear`, its tokens grouped once."""
    wrapper = SimpleNamespace(_arena_batch=None, token_lora_indices=case.indices)
    for _ in range(LAYERS):
        for (a, b, slices), y in zip(case.weights, case.outputs, strict=True):
            x = case.inputs[a[0].shape[-1]]
            vllm_fixes.add_lora_linear(wrapper, y, x, a, b, 1.0, slices)


def base_step(projections: list[Any], inputs: dict[int, Any]) -> None:
    """The base model's own projections for the same tokens: the yardstick."""
    for _ in range(LAYERS):
        for weight in projections:
            inputs[weight.shape[1]] @ weight.T


@dataclass
class Case:
    weights: list
    inputs: dict[int, Any]
    outputs: list[Any]
    indices: Any


def timed(step: Callable[[], None], repeats: int) -> tuple[float, float, float]:
    """(median, min, max) milliseconds per step, after two untimed steps."""
    for _ in range(2):
        step()
    times = []
    for _ in range(repeats):
        began = time.perf_counter()
        step()
        times.append(1000 * (time.perf_counter() - began))
    return statistics.median(times), min(times), max(times)


def run(tokens: list[int], repeats: int) -> list[dict[str, Any]]:
    import torch

    torch.manual_seed(0)
    dtype = getattr(torch, cpu_engine_dtype())
    weights = layer_weights(dtype)
    projections = [torch.randn(sum(slices), width, dtype=dtype) for width, slices in LINEARS]
    own = own_ops()
    rows = []
    for n in tokens:
        inputs = {w: torch.randn(n, w, dtype=dtype) for w in (HIDDEN, INTERMEDIATE)}
        outputs = [torch.zeros(n, sum(slices), dtype=dtype) for _, slices in LINEARS]
        base = timed(lambda: base_step(projections, inputs), repeats)  # noqa: B023
        for mix, make in MIXES.items():
            case = Case(weights, inputs, outputs, torch.tensor(make(n)))
            theirs = timed(lambda: vllm_step(own, case), repeats)  # noqa: B023
            mine = timed(lambda: our_step(case), repeats)  # noqa: B023
            rows.append({"tokens": n, "mix": mix, "base": base, "vllm": theirs, "ours": mine})
            print(f"[lora-ops] {n} tokens, {mix}: done", file=sys.stderr, flush=True)
    return rows


def _ms(entry: tuple[float, float, float]) -> str:
    median, low, high = entry
    return f"{median:.1f} ({low:.1f}–{high:.1f})"


def markdown(rows: list[dict[str, Any]], command: str, repeats: int) -> str:
    lines = [
        f"Machine: {serving_bench.machine()}, {cpu_engine_dtype()}. Command: `{command}`. "
        f"Milliseconds per decode step (30 layers, rank {RANK}, {SLOTS} adapter slots), median "
        f"of {repeats} (min–max).",
        "",
        "| tokens | requests | base projections | LoRA, vLLM's ops | LoRA, arena-serve's ops "
        "| vLLM's / base | arena-serve's / base |",
        "|---:|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        base = r["base"][0]
        lines.append(
            f"| {r['tokens']} | {r['mix']} | {_ms(r['base'])} | {_ms(r['vllm'])} | "
            f"{_ms(r['ours'])} | {r['vllm'][0] / base:.2f}× | {r['ours'][0] / base:.2f}× |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtests.lora_ops_bench", description=__doc__)
    parser.add_argument("--tokens", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args(argv)
    rows = run(args.tokens, args.repeats)
    command = " ".join(["python -m loadtests.lora_ops_bench", *(argv or sys.argv[1:])])
    print(markdown(rows, command.strip(), args.repeats), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
