"""Kernel and scorer benchmarks: `python -m kernels.bench` (`make bench-kernels`).

For each kernel, over a sweep of sizes: the Triton kernel (CUDA only), PyTorch eager and
`torch.compile` of the PyTorch reference, as time per call, effective bandwidth (bytes a fused
kernel must move: inputs read once, outputs written once) and that bandwidth as a share of the
device's peak. Then the reward scorer's sequences per second: one sequence per forward against
token-budget batches and, on CUDA, the patched (Triton) model against transformers eager.

On a CPU there is no Triton to time (the interpreter is a correctness tool): the table shows the
reference paths, and "peak" is the machine's measured large-copy bandwidth. Prints markdown with
the machine and the command; `make bench-kernels` records it in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import platform
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from kernels.reward_head import reward_head, reward_head_reference
from kernels.rms_norm import rms_norm, rms_norm_reference
from kernels.rope import apply_rotary, apply_rotary_reference
from kernels.swiglu import swiglu, swiglu_reference

MODELS = Path(__file__).resolve().parent.parent / "models"
# Peak HBM bandwidth by device name (vendor figures, bytes/s), for "% of peak".
PEAK_BANDWIDTH = {"H200": 4.8e12, "H100 SXM": 3.35e12, "H100 PCIe": 2.0e12, "H100": 3.35e12,
                  "A100-SXM4-80GB": 2.04e12, "A100": 1.56e12, "L4": 0.3e12}  # fmt: skip


@dataclass(frozen=True)
class Case:
    """One kernel at one size: callables taking no arguments, and the bytes a fused op moves."""

    kernel: str
    size: str
    triton: Callable[[], object]
    reference: Callable[[], object]
    compiled: Callable[[], object]
    bytes_moved: int


def _time(fn: Callable[[], object], device: torch.device, budget_s: float = 0.5) -> float:
    """Median seconds per call."""
    if device.type == "cuda":
        from triton.testing import do_bench

        return do_bench(fn, warmup=25, rep=100, return_mode="median") / 1e3
    fn()
    samples = []
    deadline = time.perf_counter() + budget_s
    while time.perf_counter() < deadline or len(samples) < 5:
        started = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - started)
    return statistics.median(samples)


def _compiled(fn: Callable[..., object]) -> Callable[..., object]:
    try:
        return torch.compile(fn, dynamic=False)
    except Exception:  # no compiler toolchain: report eager twice rather than fail
        return fn


def cases(device: torch.device, dtype: torch.dtype, small: bool) -> list[Case]:
    """The sweep: SmolLM2-135M shapes, and a 7B-class hidden size where memory allows."""
    element = torch.empty((), dtype=dtype).element_size()
    rows = [(2048, 576), (4096, 4096)] if small else [(4096, 576), (16384, 4096), (32768, 8192)]
    out: list[Case] = []

    def make(shape: tuple[int, ...]) -> torch.Tensor:
        return torch.randn(shape, device=device, dtype=dtype)

    norm_compiled = _compiled(rms_norm_reference)
    for n, h in rows:
        x, w = make((n, h)), make((h,))
        out.append(
            Case("RMSNorm", f"{n}×{h}", lambda x=x, w=w: rms_norm(x, w, 1e-5),
                 lambda x=x, w=w: rms_norm_reference(x, w, 1e-5),
                 lambda x=x, w=w: norm_compiled(x, w, 1e-5), (2 * n * h + h) * element)
        )  # fmt: skip
    swiglu_compiled = _compiled(swiglu_reference)
    for n, h in [(2048, 1536), (2048, 11008)] if small else [(4096, 1536), (16384, 11008)]:
        g, u = make((n, h)), make((n, h))
        out.append(
            Case("SwiGLU", f"{n}×{h}", lambda g=g, u=u: swiglu(g, u),
                 lambda g=g, u=u: swiglu_reference(g, u),
                 lambda g=g, u=u: swiglu_compiled(g, u), 3 * n * h * element)
        )  # fmt: skip
    rope_compiled = _compiled(apply_rotary_reference)
    rope_sizes = [(1, 9, 3, 1024, 64)] if small else [(4, 9, 3, 2048, 64), (4, 32, 8, 4096, 128)]
    for b, hq, hk, t, d in rope_sizes:
        q, k = make((b, hq, t, d)), make((b, hk, t, d))
        cos, sin = make((b, t, d)), make((b, t, d))
        moved = (2 * (q.numel() + k.numel()) + cos.numel() + sin.numel()) * element
        out.append(
            Case("RoPE", f"B{b} H{hq}/{hk} T{t} D{d}",
                 lambda q=q, k=k, c=cos, s=sin: apply_rotary(q, k, c, s),
                 lambda q=q, k=k, c=cos, s=sin: apply_rotary_reference(q, k, c, s),
                 lambda q=q, k=k, c=cos, s=sin: rope_compiled(q, k, c, s), moved)
        )  # fmt: skip
    head_compiled = _compiled(reward_head_reference)
    for b, t, h in [(64, 256, 576)] if small else [(64, 512, 576), (256, 1024, 4096)]:
        hidden, nw, hw = make((b, t, h)), make((h,)), make((1, h))
        last = torch.randint(0, t, (b,), device=device)
        out.append(
            Case("reward head", f"B{b} T{t} H{h}",
                 lambda x=hidden, i=last, n=nw, w=hw: reward_head(x, i, n, 1e-5, w, None),
                 lambda x=hidden, i=last, n=nw, w=hw: reward_head_reference(x, i, n, 1e-5, w),
                 lambda x=hidden, i=last, n=nw, w=hw: head_compiled(x, i, n, 1e-5, w),
                 (b * h + 2 * h) * element + 4 * b)
        )  # fmt: skip
    return out


def copy_bandwidth(device: torch.device) -> float:
    """Measured bandwidth of a large tensor copy (bytes read + written per second)."""
    src = torch.empty(64 * 2**20, dtype=torch.float32, device=device)
    dst = torch.empty_like(src)
    seconds = _time(lambda: dst.copy_(src), device)
    return 2 * src.numel() * 4 / seconds


def peak_bandwidth(device: torch.device) -> tuple[float, str]:
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for key, value in PEAK_BANDWIDTH.items():
            if key in name:
                return value, f"{name}, vendor peak {value / 1e12:.2f} TB/s"
        measured = copy_bandwidth(device)
        return measured, f"{name}, measured copy {measured / 1e9:.0f} GB/s (unknown peak)"
    measured = copy_bandwidth(device)
    return measured, f"CPU, measured large-copy bandwidth {measured / 1e9:.1f} GB/s"


def kernel_table(device: torch.device, dtype: torch.dtype, small: bool) -> str:
    peak, _ = peak_bandwidth(device)
    on_gpu = device.type == "cuda"
    lines = [
        "| kernel | size | path | µs per call | GB/s | % of peak |",
        "|---|---|---|---:|---:|---:|",
    ]
    for case in cases(device, dtype, small):
        paths = [("eager", case.reference), ("torch.compile", case.compiled)]
        if on_gpu:
            paths.insert(0, ("Triton", case.triton))
        for path, fn in paths:
            seconds = _time(fn, device)
            bandwidth = case.bytes_moved / seconds
            lines.append(
                f"| {case.kernel} | {case.size} | {path} | {seconds * 1e6:.1f} | "
                f"{bandwidth / 1e9:.1f} | {100 * bandwidth / peak:.0f} % |"
            )
    return "\n".join(lines)


def scorer_table(device: torch.device, sequences: int, model: Path) -> str:
    from kernels.scorer import RewardScorer

    prompts = [[{"role": "user", "content": f"Question {i}: what is {i} plus {i}?"}]
               for i in range(sequences)]  # fmt: skip
    answers = [f"It is {2 * i}. " * (1 + i % 7) for i in range(sequences)]
    pairs = list(zip(prompts, answers, strict=True))
    backends = [("transformers eager", False)] + (
        [("patched (Triton)", True)] if device.type == "cuda" else []
    )
    lines = [
        "| scorer | dtype | batching | sequences/s | vs one at a time |",
        "|---|---|---|---:|---:|",
    ]
    for label, kernels in backends:
        scorer = RewardScorer(model, device=device.type, kernels=kernels)
        scorer.score(pairs[:4])  # warm-up
        started = time.perf_counter()
        for pair in pairs:
            scorer.score([pair])
        one = sequences / (time.perf_counter() - started)
        started = time.perf_counter()
        scorer.score(pairs)
        batched = sequences / (time.perf_counter() - started)
        dtype = str(scorer.dtype).removeprefix("torch.")
        budget = f"batches of ≤ {scorer.token_budget:,} padded tokens"
        lines.append(f"| {label} | {dtype} | one at a time | {one:.1f} | 1.0× |")
        lines.append(f"| {label} | {dtype} | {budget} | {batched:.1f} | {batched / one:.1f}× |")
    return "\n".join(lines)


def machine(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)}, torch {torch.__version__}"
    cpu = platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    threads = torch.get_num_threads()
    return f"{cpu}, {os.cpu_count()} cores ({threads} torch threads), torch {torch.__version__}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kernels.bench", description=__doc__)
    parser.add_argument("--dtype", default="bfloat16", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--sequences", type=int, default=64)
    args = parser.parse_args(argv)
    if os.environ.get("TRITON_INTERPRET") == "1":
        print("kernels.bench times real kernels: unset TRITON_INTERPRET", file=sys.stderr)
        return 2
    warnings.filterwarnings("ignore")
    torch._logging.set_logs(dynamo=logging.ERROR)  # graph-break notes of the references
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = getattr(torch, args.dtype)
    reward_model = MODELS / "smollm2-reward"
    if not (reward_model / "config.json").is_file():
        reward_model = MODELS / "tiny-reward"
    _, peak = peak_bandwidth(device)
    print(
        f"Machine: {machine(device)}; {peak}. Command: `make bench-kernels` "
        f"(`python -m kernels.bench --dtype {args.dtype}`). "
        + (
            ""
            if device.type == "cuda"
            else "No GPU: Triton rows need one; the PyTorch paths are what the CPU scorer runs."
        )
        + f"\n\n{kernel_table(device, dtype, small=device.type != 'cuda')}\n\n"
        f"Scorer ({reward_model.name}, {args.sequences} conversations of 30 to 230 tokens):\n\n"
        f"{scorer_table(device, args.sequences, reward_model)}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
