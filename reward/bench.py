"""Reward-model kernel and scorer benchmarks: `python -m reward.bench` (`make bench-kernels`).

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
import shutil
import statistics
import sys
import tempfile
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
from reward.scorer import RewardScorer, retain_freed_memory

MODELS = Path(__file__).resolve().parent.parent / "models"
# Peak HBM bandwidth by device name (vendor figures, bytes/s), for "% of peak".
PEAK_BANDWIDTH = {
    "H200": 4.8e12,
    "H100 SXM": 3.35e12,
    "H100 PCIe": 2.0e12,
    "H100": 3.35e12,
    "A100-SXM4-80GB": 2.04e12,
    "A100": 1.56e12,
    "L4": 0.3e12,
}


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


Make = Callable[[tuple[int, ...]], torch.Tensor]


def cases(device: torch.device, dtype: torch.dtype, small: bool) -> list[Case]:
    """The sweep: SmolLM2-135M shapes, and a 7B-class hidden size where memory allows."""
    element = torch.empty((), dtype=dtype).element_size()

    def make(shape: tuple[int, ...]) -> torch.Tensor:
        return torch.randn(shape, device=device, dtype=dtype)

    return [
        *_norm_cases(make, element, small),
        *_swiglu_cases(make, element, small),
        *_rope_cases(make, element, small),
        *_head_cases(make, element, small, device),
    ]


def _norm_cases(make: Make, element: int, small: bool) -> list[Case]:
    compiled = _compiled(rms_norm_reference)
    out = []
    for n, h in (
        [(2048, 576), (4096, 4096)] if small else [(4096, 576), (16384, 4096), (32768, 8192)]
    ):
        x, w = make((n, h)), make((h,))
        out.append(
            Case(
                "RMSNorm",
                f"{n}×{h}",
                lambda x=x, w=w: rms_norm(x, w, 1e-5),
                lambda x=x, w=w: rms_norm_reference(x, w, 1e-5),
                lambda x=x, w=w: compiled(x, w, 1e-5),
                (2 * n * h + h) * element,
            )
        )
    return out


def _swiglu_cases(make: Make, element: int, small: bool) -> list[Case]:
    compiled = _compiled(swiglu_reference)
    out = []
    for n, h in [(2048, 1536), (2048, 11008)] if small else [(4096, 1536), (16384, 11008)]:
        g, u = make((n, h)), make((n, h))
        out.append(
            Case(
                "SwiGLU",
                f"{n}×{h}",
                lambda g=g, u=u: swiglu(g, u),
                lambda g=g, u=u: swiglu_reference(g, u),
                lambda g=g, u=u: compiled(g, u),
                3 * n * h * element,
            )
        )
    return out


def _rope_cases(make: Make, element: int, small: bool) -> list[Case]:
    compiled = _compiled(apply_rotary_reference)
    sizes = [(1, 9, 3, 1024, 64)] if small else [(4, 9, 3, 2048, 64), (4, 32, 8, 4096, 128)]
    out = []
    for b, hq, hk, t, d in sizes:
        q, k = make((b, hq, t, d)), make((b, hk, t, d))
        cos, sin = make((b, t, d)), make((b, t, d))
        moved = (2 * (q.numel() + k.numel()) + cos.numel() + sin.numel()) * element
        out.append(
            Case(
                "RoPE",
                f"B{b} H{hq}/{hk} T{t} D{d}",
                lambda q=q, k=k, c=cos, s=sin: apply_rotary(q, k, c, s),
                lambda q=q, k=k, c=cos, s=sin: apply_rotary_reference(q, k, c, s),
                lambda q=q, k=k, c=cos, s=sin: compiled(q, k, c, s),
                moved,
            )
        )
    return out


def _head_cases(make: Make, element: int, small: bool, device: torch.device) -> list[Case]:
    compiled = _compiled(reward_head_reference)
    out = []
    for b, t, h in [(64, 256, 576)] if small else [(64, 512, 576), (256, 1024, 4096)]:
        hidden, nw, hw = make((b, t, h)), make((h,)), make((1, h))
        last = torch.randint(0, t, (b,), device=device)
        out.append(
            Case(
                "reward head",
                f"B{b} T{t} H{h}",
                lambda x=hidden, i=last, n=nw, w=hw: reward_head(x, i, n, 1e-5, w, None),
                lambda x=hidden, i=last, n=nw, w=hw: reward_head_reference(x, i, n, 1e-5, w),
                lambda x=hidden, i=last, n=nw, w=hw: compiled(x, i, n, 1e-5, w),
                (b * h + 2 * h) * element + 4 * b,
            )
        )
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


def _figure(value: float) -> str:
    """One decimal from 1 up, two significant digits below (a latency-bound kernel's GB/s)."""
    return f"{value:.1f}" if value >= 1 else f"{value:.2g}"


def kernel_table(device: torch.device, dtype: torch.dtype, small: bool, peak: float) -> str:
    on_gpu = device.type == "cuda"
    lines = [
        "| kernel | size | path | µs per call | GB/s | % of peak | vs eager |",
        "|---|---|---|---:|---:|---:|---:|",
    ]
    for case in cases(device, dtype, small):
        paths = [("eager", case.reference), ("torch.compile", case.compiled)]
        if on_gpu:
            paths.append(("Triton", case.triton))
        eager = None
        for path, fn in paths:
            seconds = _time(fn, device)
            eager = eager or seconds
            bandwidth = case.bytes_moved / seconds
            lines.append(
                f"| {case.kernel} | {case.size} | {path} | {seconds * 1e6:.1f} | "
                f"{_figure(bandwidth / 1e9)} | {_figure(100 * bandwidth / peak)} % | "
                f"{eager / seconds:.2f}× |"
            )
    return "\n".join(lines)


Pair = tuple[list[dict[str, str]], str]


def workloads(sequences: int) -> dict[str, list[Pair]]:
    """Conversations to score: chat answers of 1 to 32 short sentences, and one-line answers."""
    prompts = [
        [{"role": "user", "content": f"Question {i}: how do I plan a trip to town {i}?"}]
        for i in range(sequences)
    ]
    chat = [
        " ".join(f"Step {j + 1} costs {i + j} coins." for j in range(1 + (13 * i) % 32))
        for i in range(sequences)
    ]
    short = [f"It costs {2 * i} coins." for i in range(sequences)]
    return {
        "chat answers": list(zip(prompts, chat, strict=True)),
        "one-line answers": list(zip(prompts, short, strict=True)),
    }


def bench_model(path: Path, workdir: Path) -> tuple[Path, str]:
    """The reward model to time and its name: its own weights, or random weights of its shape
    when only its config and tokenizer came along (a lent GPU machine takes 64 MiB of files;
    the speed of a forward does not depend on the weights' values)."""
    if any(path.glob("*.safetensors")):
        return path, path.name
    from transformers import AutoConfig, AutoModelForSequenceClassification

    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_config(AutoConfig.from_pretrained(path))
    model.save_pretrained(workdir)
    for file in path.iterdir():
        if file.name.startswith(("tokenizer", "special_tokens")) or file.suffix == ".jinja":
            shutil.copy(file, workdir / file.name)
    return workdir, f"{path.name} with random weights of its shape"


def gemm_rate(device: torch.device, dtype: torch.dtype, hidden: int, intermediate: int) -> float:
    """FLOP/s of the model's widest linear layer on 1,024 tokens: the most a forward can reach."""
    x = torch.randn(1024, hidden, device=device, dtype=dtype)
    w = torch.randn(intermediate, hidden, device=device, dtype=dtype)
    seconds = _time(lambda: torch.nn.functional.linear(x, w), device)
    return 2 * x.shape[0] * hidden * intermediate / seconds


def scorer_table(device: torch.device, sequences: int, model: Path, name: str) -> str:
    """Sequences/s per workload and backend, one at a time against token-budget batches; on a
    CPU, also the most batching could gain there (the linear layers' FLOPs at the GEMM rate)."""
    backends = [("transformers eager", False)] + (
        [("patched (Triton)", True)] if device.type == "cuda" else []
    )
    scorers = [(label, RewardScorer(model, device=device.type, kernels=k)) for label, k in backends]
    reference = scorers[0][1]
    dtype_name = str(reference.dtype).removeprefix("torch.")
    if device.type == "cpu":  # the floor of a forward: its linear layers at the GEMM rate
        config = reference.model.config
        gemm = gemm_rate(device, reference.dtype, config.hidden_size, config.intermediate_size)
        linear = sum(
            m.weight.numel() for m in reference.model.modules() if isinstance(m, torch.nn.Linear)
        )
    lines = [
        "| workload | tokens (min / mean / max) | scorer | batching | sequences/s "
        "| vs one at a time | vs transformers eager |",
        "|---|---|---|---|---:|---:|---:|",
    ]
    bounds = []
    for workload, pairs in workloads(sequences).items():
        lengths = [len(ids) for ids in reference.encode([reference.render(*p) for p in pairs])]
        tokens = f"{min(lengths)} / {sum(lengths) / len(lengths):.0f} / {max(lengths)}"
        eager: dict[str, float] = {}
        for label, scorer in scorers:
            scorer.score(pairs[:4])  # warm-up
            started = time.perf_counter()
            for pair in pairs:
                scorer.score([pair])
            one = len(pairs) / (time.perf_counter() - started)
            started = time.perf_counter()
            scorer.score(pairs)
            batched = len(pairs) / (time.perf_counter() - started)
            budget = f"batches of ≤ {scorer.token_budget:,} padded tokens"
            for batching, rate in (("one at a time", one), (budget, batched)):
                base = eager.setdefault(batching, rate)
                lines.append(
                    f"| {workload} | {tokens} | {label} | {batching} | {rate:.1f} | "
                    f"{rate / one:.1f}× | {rate / base:.2f}× |"
                )
            if device.type == "cpu":
                floor_s = 2 * linear * sum(lengths) / len(lengths) / gemm
                bounds.append(
                    f"- {workload}: the linear layers alone take {floor_s * 1e3:.1f} ms per "
                    f"sequence at this CPU's {dtype_name} GEMM rate "
                    f"({gemm / 1e9:.0f} GFLOP/s on 1,024 tokens); one at a time takes "
                    f"{1e3 / one:.1f} ms, so no batching can exceed {1 / one / floor_s:.1f}× here."
                )
    head = f"Scorer ({name}, {dtype_name}), {sequences} conversations per workload:\n\n"
    tail = "\n\nWhat batching can gain on this CPU:\n\n" + "\n".join(bounds) if bounds else ""
    return head + "\n".join(lines) + tail


def machine(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)}, torch {torch.__version__}"
    threads = torch.get_num_threads()
    return (
        f"{cpu_model()}, {os.cpu_count()} cores ({threads} torch threads), "
        f"torch {torch.__version__}"
    )


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo), or the architecture where there is none."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.machine()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m reward.bench", description=__doc__)
    parser.add_argument(
        "--dtype",
        default="bfloat16",
        choices=["float32", "bfloat16", "float16"],
        help="the kernel table's dtype; the scorer table runs the scorer's own (bf16 where the "
        "hardware computes it, else fp32), as served",
    )
    parser.add_argument(
        "--sequences", type=int, help="per workload (default: 64 on a CPU, 512 on a GPU)"
    )
    parser.add_argument(
        "--model",
        type=Path,
        help="the reward model of the scorer table (default: models/smollm2-reward), e.g. a "
        "judge from train-reward",
    )
    parser.add_argument(
        "--scorer-only", action="store_true", help="the scorer table alone, no kernel table"
    )
    args = parser.parse_args(argv)
    if os.environ.get("TRITON_INTERPRET") == "1":
        print("reward.bench times real kernels: unset TRITON_INTERPRET", file=sys.stderr)
        return 2
    warnings.filterwarnings("ignore")
    torch._logging.set_logs(dynamo=logging.ERROR)  # graph-break notes of the references
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = getattr(torch, args.dtype)
    if device.type == "cpu":  # as the CPU scorer runs: without it, eager times swing 10×
        retain_freed_memory()
    sequences = args.sequences or (512 if device.type == "cuda" else 64)
    reward_model = args.model or MODELS / "smollm2-reward"
    if args.model is None and not (reward_model / "config.json").is_file():
        reward_model = MODELS / "tiny-reward"
    peak, peak_text = peak_bandwidth(device)
    note = (
        ""
        if device.type == "cuda"
        else (
            " No GPU: Triton rows need one; the PyTorch paths are what the CPU scorer runs, "
            "with glibc keeping freed memory as the scorer has it do."
        )
    )
    command = " ".join(["python -m reward.bench", *(argv if argv is not None else sys.argv[1:])])
    print(f"Machine: {machine(device)}; {peak_text}. Command: `{command}`.{note}\n", flush=True)
    if not args.scorer_only:
        print(
            f"{kernel_table(device, dtype, small=device.type != 'cuda', peak=peak)}\n\n"
            "GB/s counts the bytes a fused kernel must move (inputs read once, outputs written "
            "once), for every path alike. The reward head reads only each sequence's last real "
            'row, so it is bound by launch latency, not bandwidth: read its time and "vs eager" '
            "(eager normalizes every token, then gathers).\n",
            flush=True,
        )
    with tempfile.TemporaryDirectory() as workdir:
        model, name = bench_model(reward_model, Path(workdir))
        print(scorer_table(device, sequences, model, name))
    return 0


if __name__ == "__main__":
    sys.exit(main())
