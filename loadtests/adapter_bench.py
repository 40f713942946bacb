"""Adapters against engines: `python -m loadtests.adapter_bench` (`make bench-adapters`).

What k variants cost when each is a LoRA adapter on one engine, against k engines of their own,
for k = 1, 2 and 4, and what enabling LoRA costs requests to the base model. Every system is
vLLM's own OpenAI server (`python -m vllm.entrypoints.openai.api_server`) on SmolLM2-135M with
the engine settings of the serving benchmark (eager, the CPU's dtype, a 512 MiB KV cache), so the
figures are the engine's, without the gateway:

- `base`: one engine, no LoRA, the base model;
- `base, LoRA on`: one engine with LoRA enabled and the "Ahoy!" adapter loaded
  (`models/smollm2-ahoy-lora`, rank 8 on every projection), requests to the base model;
- `k adapters`: one engine with k adapters (the same weights under k names, so k slots), the
  requests spread over the k names;
- `k engines`: k servers of the base model (the cost of k variants with weights of their own),
  the requests spread over them. On 2 cores their engines share the cores.

Each is driven by the serving benchmark's streamed chats (64 tokens each with `ignore_eos`,
temperature 0) at concurrency 8 and 32, after a warm-up. Memory is the proportional set size
(PSS: shared pages split between the processes sharing them) of every process of the system,
summed, read after the load. Prints markdown with the machine and command.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil

from loadtests.processes import start, stop
from loadtests.serving_bench import (
    MODEL,
    MODEL_ID,
    PROMPTS,
    machine,
    one_request,
    percentile,
    vllm_command,
)
from serve.config import cpu_engine_dtype
from serve.deploy import free_port
from serve.models import SMOLLM2_AHOY, prepare

ADAPTER = MODEL.parent / SMOLLM2_AHOY
BASE_NAME = MODEL_ID  # the name vllm_command serves the base model as
LEVELS = {8: 48, 32: 128}  # concurrency -> requests
KS = (1, 2, 4)


@dataclass(frozen=True)
class Setup:
    """One system: `engines` servers, each with `adapters` adapters (LoRA on where > 0, or where
    `lora_on`), the requests spread over `models` (on every server)."""

    label: str
    engines: int
    adapters: int
    lora_on: bool = False

    @property
    def models(self) -> list[str]:
        return [f"ahoy-{i}" for i in range(self.adapters)] or [BASE_NAME]


SETUPS = [
    Setup("base", 1, 0),
    Setup("base, LoRA on", 1, 0, lora_on=True),
    *[Setup(f"{k} adapter{'s' * (k > 1)}", 1, k) for k in KS],
    *[Setup(f"{k} engine{'s' * (k > 1)}", k, 0) for k in KS if k > 1],
]


def server_command(port: int, setup: Setup) -> list[str]:
    command = vllm_command(port)
    if setup.adapters or setup.lora_on:
        loaded = max(setup.adapters, 1)
        modules = [f"ahoy-{i}={ADAPTER}" for i in range(loaded)]
        command += ["--enable-lora", "--max-loras", str(loaded), "--max-lora-rank", "8"]
        command += ["--lora-modules", *modules]
    return command


def ready(base: str, model: str) -> bool:
    body = {"model": model, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1}
    try:
        return httpx.post(f"{base}/v1/chat/completions", json=body, timeout=10).status_code == 200
    except httpx.HTTPError:
        return False


@contextlib.contextmanager
def running(setup: Setup, logs: Path) -> Iterator[tuple[list[str], list[subprocess.Popen]]]:
    """Start the setup's servers (at once); yield their base URLs once each answers a chat."""
    children, bases = [], []
    try:
        for i in range(setup.engines):
            port = free_port()
            log = (logs / f"{setup.label.replace(' ', '-').replace(',', '')}-{i}.log").open("w")
            children.append(
                start(server_command(port, setup), stdout=log, stderr=subprocess.STDOUT)
            )
            bases.append(f"http://127.0.0.1:{port}")
        deadline = time.monotonic() + 900
        for child, base in zip(children, bases, strict=True):
            while not ready(base, setup.models[0]):
                if child.poll() is not None:
                    raise RuntimeError(f"{setup.label}: a server exited; see {logs}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{setup.label}: not ready after 900 s; see {logs}")
                time.sleep(1)
        yield bases, children
    finally:
        for child in children:
            stop(child)


def pss_mib(children: list[subprocess.Popen]) -> float:
    """Summed PSS of the servers and every process under them."""
    total = 0
    for child in children:
        with contextlib.suppress(psutil.Error):
            parent = psutil.Process(child.pid)
            for process in [parent, *parent.children(recursive=True)]:
                with contextlib.suppress(psutil.Error):
                    total += process.memory_full_info().pss
    return total / 1024**2


async def run_level(targets: list[tuple[str, str]], concurrency: int, requests: int) -> dict:
    """`requests` streamed chats, `concurrency` at a time, request i to target i mod k."""
    limits = httpx.Limits(max_connections=concurrency + 4)
    async with httpx.AsyncClient(timeout=600, limits=limits) as client:
        gate = asyncio.Semaphore(concurrency)

        async def bounded(i: int):
            base, model = targets[i % len(targets)]
            async with gate:
                return await one_request(client, base, model, PROMPTS[i % len(PROMPTS)])

        await asyncio.gather(*(bounded(i) for i in range(concurrency)))  # warm-up
        started = time.perf_counter()
        results = await asyncio.gather(*(bounded(i) for i in range(requests)))
        wall = time.perf_counter() - started
    return {
        "tokens_per_s": sum(r.tokens for r in results) / wall,
        "ttft_p50": percentile([r.ttft for r in results], 0.5),
    }


def measure(setup: Setup, logs: Path) -> dict:
    with running(setup, logs) as (bases, children):
        targets = [(base, model) for model in setup.models for base in bases]
        figures = {c: asyncio.run(run_level(targets, c, n)) for c, n in LEVELS.items()}
        figures["pss_mib"] = pss_mib(children)
    return figures


def table(results: dict[str, dict]) -> str:
    base = results["base"]
    lines = [
        "| system | memory (PSS) | tokens/s, c=8 | × base | tokens/s, c=32 | × base "
        "| TTFT p50 c=32 |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for label, r in results.items():
        eight, many = r[8]["tokens_per_s"], r[32]["tokens_per_s"]
        lines.append(
            f"| {label} | {r['pss_mib']:,.0f} MiB | {eight:.1f} | "
            f"{eight / base[8]['tokens_per_s']:.2f}× | {many:.1f} | "
            f"{many / base[32]['tokens_per_s']:.2f}× | {r[32]['ttft_p50'] * 1000:.0f} ms |"
        )
    return "\n".join(lines)


def targets(results: dict[str, dict]) -> str:
    base, lora_on, one = results["base"], results["base, LoRA on"], results["1 adapter"]
    lines = ["", "Targets on CPU:", ""]
    for c in LEVELS:
        ratio = one[c]["tokens_per_s"] / base[c]["tokens_per_s"]
        cost = 1 - lora_on[c]["tokens_per_s"] / base[c]["tokens_per_s"]
        lines.append(
            f"- c={c}: an adapter variant's throughput {ratio:.2f}× the base engine's (target "
            f"≥ 0.5: {'met' if ratio >= 0.5 else 'missed'}); enabling LoRA costs base requests "
            f"{cost:+.1%} (target ≤ 10 %: {'met' if cost <= 0.10 else 'missed'})"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtests.adapter_bench", description=__doc__)
    parser.add_argument("--only", nargs="*", help="only these systems (labels)")
    args = parser.parse_args(argv)
    prepare([MODEL.name, SMOLLM2_AHOY])
    logs = Path(tempfile.mkdtemp(prefix="adapter-bench-"))
    results = {}
    started = time.perf_counter()
    for setup in SETUPS:
        if args.only and setup.label not in args.only and setup.label != "base":
            continue
        print(f"[adapter-bench] {setup.label}", file=sys.stderr, flush=True)
        results[setup.label] = measure(setup, logs)
    load = ", ".join(f"{n} requests at c={c}" for c, n in LEVELS.items())
    print(
        f"Machine: {machine()}, engines in {cpu_engine_dtype()}. Command: `python -m "
        f"loadtests.adapter_bench`; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}. "
        f"vLLM's own server, SmolLM2-135M, {load} (64 tokens each), one run; the adapter is "
        "rank 8 on every projection. "
        f"Took {time.perf_counter() - started:.0f} s.\n"
    )
    print(table(results))
    if {"base", "base, LoRA on", "1 adapter"} <= results.keys():
        print(targets(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
