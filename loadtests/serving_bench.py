"""The side-by-side serving benchmark: `python -m loadtests.serving_bench` (`make bench-serving`).

Servers on the same engine settings (SmolLM2-135M-Instruct, one vLLM engine, eager, bf16, a
512 MiB KV cache, 2,048 tokens of context), one after the other on 127.0.0.1 (`SYSTEMS`):

- (a) `vllm`: the vLLM OpenAI server itself (`python -m vllm.entrypoints.openai.api_server`);
- (b) Ray Serve LLM's own `build_openai_app` over one `LLMServer`: with Ray Serve's defaults
  (`ray-serve-llm`, its Python HTTP proxy), in Ray Serve's high-throughput mode
  (`ray-serve-llm-ht`: HAProxy, gRPC between replicas) and with its experimental direct streaming
  (`ray-serve-llm-direct`: HAProxy straight to vLLM's own app in the replica; one model only);
- (c) `arena-serve`: this gateway as `make serve` runs it, the requests naming an A/B experiment
  whose two arms are variants sharing that one engine (users spread over both arms), outcome log
  on, no scorer; also with 100 ms stream batches (`arena-serve-100ms`), with Ray Serve's
  defaults (`arena-serve-proxy`), to show what each setting buys, and with every answer scored
  by the default config's reward model (`arena-serve-scored`, as `make serve` runs by default):
  on a CPU the scorer's forwards share the engine's cores, and the table says what that costs
  and how many answers got their score.

Each is driven by the same streamed chat requests (fixed prompts, 64 tokens each with
`ignore_eos`, temperature 0) at concurrency 1, 8 and 32, after a warm-up at that concurrency.
The table reports throughput (tokens/s, requests/s), time to first token p50/p99, mean
inter-token latency and end-to-end latency p50/p99, each also as a ratio to (a), then the
targets. Prints markdown with the machine and command; `make bench-serving` records it in
docs/benchmarks.md. Nothing of one server outlives it into the next one's run (`stop`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import re
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import httpx

from loadtests.processes import start, stop
from serve.config import STREAM_INTERVAL_MS, cpu_engine_dtype
from serve.deploy import THROUGHPUT_MODE, free_port, use_throughput_mode
from serve.priority import REQUEST_PATH, WORKER_NICENESS

ROOT = Path(__file__).resolve().parent.parent
MODEL = ROOT / "models" / "smollm2-135m-instruct"
REWARD_MODEL = ROOT / "models" / "smollm2-reward"
MODEL_ID = "smollm2"
KV_CACHE = 512 * 1024**2
MAX_MODEL_LEN = 2048
MAX_TOKENS = 64
LEVELS = {1: 12, 8: 48, 32: 160}  # concurrency -> requests
REPEATS = 2  # each level runs this many times per system; the figures are the medians
PROMPTS = [
    "Explain why the sky is blue.",
    "Write a short poem about autumn leaves.",
    "What are three tips for learning a new language?",
    "Summarize the plot of a heist movie in a few sentences.",
    "How does a refrigerator keep food cold?",
    "Give me a recipe idea that uses lentils.",
    "What is the difference between weather and climate?",
    "Describe a good morning routine.",
]
RAY_DEFAULTS = {name: "0" for name in THROUGHPUT_MODE}
# What a `yields` system keeps at its workers' niceness: arena-serve's request path, and Ray
# Serve LLM's own replicas in place of the gateway's and the variants'.
RAY_LLM_REQUEST_PATH = re.compile(
    REQUEST_PATH.pattern + r"|ray::ServeReplica:[^:\s]+:(OpenAiIngress|LLMServer)\b"
)
STORE_ENV = "ARENA_BENCH_STORE"  # where an arena-serve system keeps its outcome store
# An arena-serve system's stream batching interval in ms, in place of its own (so that
# `bench_quick --also ARENA_BENCH_STREAM_INTERVAL_MS=…` measures another side by side).
INTERVAL_ENV = "ARENA_BENCH_STREAM_INTERVAL_MS"


@dataclass(frozen=True)
class System:
    server: Literal["vllm", "ray-serve-llm", "arena-serve"]
    what: str
    env: dict[str, str] = field(default_factory=dict)
    # arena-serve: its variant's setting; Ray Serve LLM: its `stream_batching_interval_ms`
    stream_interval_ms: float | None = None
    limits: dict[str, int] | None = None  # arena-serve: the gateway's request limits
    scored: bool = False  # arena-serve: every answer scored by REWARD_MODEL
    # Ray Serve LLM: Ray's own processes lowered as `make serve` lowers them (`serve.priority`)
    yields: bool = False


SYSTEMS = {
    "vllm": System("vllm", "the vLLM OpenAI server"),
    "ray-serve-llm": System(
        "ray-serve-llm", "Ray Serve LLM `build_openai_app`, Ray Serve defaults", RAY_DEFAULTS
    ),
    "ray-serve-llm-ht": System(
        "ray-serve-llm", "the same in Ray Serve's high-throughput mode", THROUGHPUT_MODE
    ),
    "ray-serve-llm-direct": System(
        "ray-serve-llm",
        "the same with direct streaming (experimental)",
        THROUGHPUT_MODE | {"RAY_SERVE_LLM_ENABLE_DIRECT_STREAMING": "1"},
    ),
    "arena-serve": System("arena-serve", "this gateway, as `make serve` runs it", THROUGHPUT_MODE),
    "arena-serve-100ms": System(
        "arena-serve", "the same with 100 ms stream batches", THROUGHPUT_MODE, 100.0
    ),
    "arena-serve-proxy": System("arena-serve", "the same on Ray Serve defaults", RAY_DEFAULTS),
    "arena-serve-scored": System(
        "arena-serve",
        "the same with every answer scored by the demo reward model, as the default config has it",
        THROUGHPUT_MODE,
        scored=True,
    ),
}
# Servers other benchmarks start the same way (not part of this one's table).
OTHER_SYSTEMS = {
    # Ray Serve LLM on the node settings `make serve` gives arena-serve (`bench_quick --against`
    # measures the gateway beside them): the same two replicas and hop, and without the hop.
    "ray-serve-llm-ht-matched": System(
        "ray-serve-llm",
        "Ray Serve LLM in high-throughput mode with arena-serve's stream batches and priorities",
        THROUGHPUT_MODE,
        STREAM_INTERVAL_MS,
        yields=True,
    ),
    "ray-serve-llm-direct-matched": System(
        "ray-serve-llm",
        "Ray Serve LLM's direct streaming with arena-serve's priorities",
        THROUGHPUT_MODE | {"RAY_SERVE_LLM_ENABLE_DIRECT_STREAMING": "1"},
        yields=True,
    ),
    "arena-serve-soak": System(
        "arena-serve",
        "this gateway, each replica admitting 64 requests at once (`make soak`)",
        THROUGHPUT_MODE,
        limits={"max_in_flight": 64},
    ),
}
KNOWN_SYSTEMS = SYSTEMS | OTHER_SYSTEMS


def engine_kwargs() -> dict[str, object]:
    return {
        "enforce_eager": True,
        "kv_cache_memory_bytes": KV_CACHE,
        "max_model_len": MAX_MODEL_LEN,
        "dtype": cpu_engine_dtype(),
    }


# The servers: each runs in a child process (`python -m loadtests.serving_bench serve SYSTEM`).


def vllm_command(port: int) -> list[str]:
    """vLLM's own OpenAI server on the benchmark's model and engine settings."""
    return [
        sys.executable,
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        str(MODEL),
        "--served-model-name",
        MODEL_ID,
        "--enforce-eager",
        "--kv-cache-memory-bytes",
        str(KV_CACHE),
        "--max-model-len",
        str(MAX_MODEL_LEN),
        "--dtype",
        cpu_engine_dtype(),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--disable-uvicorn-access-log",
    ]


def serve_vllm(port: int, _: System) -> int:
    command = vllm_command(port)
    os.execv(sys.executable, command)
    return 1  # not reached


def _serve_until_stopped() -> int:
    """Block until SIGTERM, then shut Serve down gracefully: its engines exit with it (a Ray
    that is only killed leaves vLLM's engine processes behind, spinning)."""
    import ray
    from ray import serve

    stop = False

    def _stop(*_: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, _stop)
    while not stop:
        time.sleep(0.5)
    serve.shutdown()
    ray.shutdown()
    return 0


def serve_ray_llm(port: int, system: System) -> int:
    import ray
    from ray import serve
    from ray.serve.llm import LLMConfig, build_openai_app

    from serve.priority import yield_to_engines

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    interval = system.stream_interval_ms
    config = LLMConfig(
        model_loading_config={"model_id": MODEL_ID, "model_source": str(MODEL)},
        engine_kwargs=engine_kwargs(),
        deployment_config={"num_replicas": 1, "ray_actor_options": {"num_cpus": 0}},
        placement_group_config={"bundles": [{"CPU": 1}]},
        experimental_configs={} if interval is None else {"stream_batching_interval_ms": interval},
    )
    serve.run(build_openai_app({"llm_configs": [config]}), name="llm", route_prefix="/")
    if system.yields:
        yield_to_engines(keep=RAY_LLM_REQUEST_PATH)
    return _serve_until_stopped()


def arena_document(
    port: int,
    store: Path,
    stream_interval_ms: float | None = None,
    limits: dict[str, int] | None = None,
    scored: bool = False,
) -> dict:
    engine: dict[str, object] = {"engine_kwargs": engine_kwargs()}
    if stream_interval_ms is not None:
        engine["stream_interval_ms"] = stream_interval_ms
    variants = [
        {"name": MODEL_ID, "model": str(MODEL), **engine},
        {"name": f"{MODEL_ID}-b", "engine": MODEL_ID},
    ]
    experiment = {"name": "bench-ab", "arms": [{"variant": MODEL_ID}, {"variant": f"{MODEL_ID}-b"}]}
    gateway: dict[str, object] = {"experiments": [experiment]}
    if limits is not None:
        gateway["limits"] = limits
    args: dict[str, object] = {"store_path": str(store), "variants": variants}
    if scored:
        args["scorer"] = {"model": str(REWARD_MODEL), "sample_rate": 1.0}
    return {
        "proxy_location": "HeadOnly",
        "http_options": {"host": "127.0.0.1", "port": port},
        "applications": [
            {
                "name": "arena",
                "route_prefix": "/",
                "import_path": "serve.app:build_app",
                "args": args,
                "deployments": [{"name": "gateway", "user_config": gateway}],
            }
        ],
    }


def stream_interval(system: System, env: Mapping[str, str] = os.environ) -> float | None:
    """An arena-serve system's stream interval: `INTERVAL_ENV`'s where set, else its own (None:
    the variant's default); a `ValueError` naming the variable where it is not a number of
    milliseconds."""
    value = env.get(INTERVAL_ENV)
    if not value:
        return system.stream_interval_ms
    try:
        interval = float(value)
    except ValueError:
        interval = math.nan
    if not 0 <= interval < math.inf:
        raise ValueError(f"{INTERVAL_ENV}={value!r}: not a number of ms (0 or more)")
    return interval


def serve_arena(port: int, system: System) -> int:
    import ray

    from serve.config import AppConfig
    from serve.deploy import apply, start_serve
    from serve.priority import yield_to_engines

    store = Path(os.environ.get(STORE_ENV) or Path(tempfile.mkdtemp(prefix="bench-")) / "out.db")
    interval_ms = stream_interval(system)
    document = arena_document(port, store, interval_ms, system.limits, system.scored)
    app = AppConfig.from_args(document["applications"][0]["args"])
    cpus = max(2, math.ceil(app.logical_cpus_needed))  # as `make serve` asks (serve.cli)
    ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    apply(start_serve(document), document)
    yield_to_engines()  # as `make serve` does
    return _serve_until_stopped()


SERVERS = {"vllm": serve_vllm, "ray-serve-llm": serve_ray_llm, "arena-serve": serve_arena}


def model_of(system: str) -> str:
    return "bench-ab" if KNOWN_SYSTEMS[system].server == "arena-serve" else MODEL_ID


def answers(base: str, model: str) -> bool:
    """Whether the server answers a one-token chat (a gateway answers `/v1/models` before its
    engines are up, so nothing less shows that a system is ready)."""
    body = {
        "model": model,
        "messages": [{"role": "user", "content": "Hi"}],
        "max_tokens": 1,
        "user": "ready-check",
    }
    try:
        return httpx.post(f"{base}/v1/chat/completions", json=body, timeout=10).status_code == 200
    except httpx.HTTPError:
        return False


@contextmanager
def running(system: str, log: Path, own_session: bool = False) -> Iterator[str]:
    """Start `system` in a child process; yield its base URL once it answers a chat.

    Ray starts its workers at niceness 15 (below the load generator, which runs on the same
    cores here); the benchmark runs them at 0, as the vLLM server and `make serve` run, so that
    every system's engine competes with the client on equal terms (a `RAY_worker_niceness` in
    this process's environment wins: `bench_quick --also RAY_worker_niceness=15` measures Ray's
    default). For the same reason the server stays in the client's session: with Linux's
    autogroup scheduling a server in a session of its own is one scheduling group against the
    client's, which halves the Ray-based systems' throughput here and leaves vLLM's own server
    unchanged (`--own-session` measures that; docs/benchmarks.md). Ray's side ports are free
    ones.
    """
    port = free_port()
    env = {**WORKER_NICENESS, **os.environ, **KNOWN_SYSTEMS[system].env}
    if KNOWN_SYSTEMS[system].server == "arena-serve":
        try:
            stream_interval(KNOWN_SYSTEMS[system], env)  # refused here, not in the server's log
        except ValueError as error:
            raise RuntimeError(f"{system} not started: {error}") from None
    if KNOWN_SYSTEMS[system].server != "vllm":
        use_throughput_mode(env, side_ports=True)  # only the ports: the mode is set above
    with log.open("w") as out:
        child = start(
            [sys.executable, "-m", "loadtests.serving_bench", "serve", system, str(port)],
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=own_session,
            env=env,
            stdin=subprocess.DEVNULL,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 600
        while True:
            if child.poll() is not None:
                raise RuntimeError(f"{system} exited with {child.returncode}; see {log}")
            if answers(base, model_of(system)):
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"{system} not ready after 600 s; see {log}")
            time.sleep(1)
        yield base
    finally:
        stop(child)


# The load.


@dataclass
class Result:
    ttft: float
    e2e: float
    tokens: int
    itl: float | None


async def one_request(client: httpx.AsyncClient, base: str, model: str, prompt: str) -> Result:
    body = {
        "model": model,
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": MAX_TOKENS,
        "temperature": 0.0,
        "ignore_eos": True,
        "stream": True,
        "stream_options": {"include_usage": True},
        "user": f"user-{uuid.uuid4().hex[:12]}",
    }
    started = time.perf_counter()
    first = last = None
    tokens = 0
    async with client.stream("POST", f"{base}/v1/chat/completions", json=body) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if not line.startswith("data: {"):
                continue
            chunk = json.loads(line[6:])
            now = time.perf_counter()
            if chunk.get("choices") and chunk["choices"][0].get("delta", {}).get("content"):
                first = first or now
                last = now
            if chunk.get("usage"):
                tokens = chunk["usage"]["completion_tokens"]
    end = time.perf_counter()
    first = first or end
    itl = (last - first) / (tokens - 1) if last is not None and tokens > 1 else None
    return Result(first - started, end - started, tokens, itl)


def percentile(values: list[float], q: float) -> float:
    """The nearest-rank quantile `q` of `values`: the smallest value with at least a fraction
    `q` of them at or below it (NaN when there are none)."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


async def run_level(
    base: str, model: str, concurrency: int, requests: int, warm_up: bool = True
) -> dict[str, float]:
    """`requests` streamed chats, `concurrency` at a time; first (`warm_up`) a warm-up at the
    level's own concurrency (the engine's batch shapes, connections), not counted."""
    limits = httpx.Limits(max_connections=concurrency + 4)
    async with httpx.AsyncClient(timeout=300, limits=limits) as client:
        gate = asyncio.Semaphore(concurrency)
        if warm_up:
            prompts = (PROMPTS * concurrency)[: max(2, concurrency)]
            await asyncio.gather(*(one_request(client, base, model, p) for p in prompts))

        async def bounded(i: int) -> Result:
            async with gate:
                return await one_request(client, base, model, PROMPTS[i % len(PROMPTS)])

        started = time.perf_counter()
        results = await asyncio.gather(*(bounded(i) for i in range(requests)))
        wall = time.perf_counter() - started
    ttft = [r.ttft for r in results]
    e2e = [r.e2e for r in results]
    itl = [r.itl for r in results if r.itl is not None]
    return {
        "tokens_per_s": sum(r.tokens for r in results) / wall,
        "requests_per_s": len(results) / wall,
        "ttft_p50": percentile(ttft, 0.5),
        "ttft_p99": percentile(ttft, 0.99),
        "itl_mean": statistics.fmean(itl) if itl else float("nan"),
        "e2e_p50": percentile(e2e, 0.5),
        "e2e_p99": percentile(e2e, 0.99),
    }


def table(results: dict[str, dict[int, dict[str, float]]]) -> str:
    lines = [
        "| concurrency | system | tokens/s | req/s | TTFT p50 ms | TTFT p99 ms | ITL ms | "
        "E2E p50 s | E2E p99 s | throughput vs vLLM | TTFT p50 vs vLLM |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for level in LEVELS:
        base = results.get("vllm", {}).get(level)
        for system in SYSTEMS:
            r = results.get(system, {}).get(level)
            if r is None:
                continue
            ratio = f"{r['tokens_per_s'] / base['tokens_per_s']:.3f}×" if base else "—"
            ttft = f"{1e3 * (r['ttft_p50'] - base['ttft_p50']):+.1f} ms" if base else "—"
            lines.append(
                f"| {level} | {system} | {r['tokens_per_s']:.1f} | {r['requests_per_s']:.2f} | "
                f"{1e3 * r['ttft_p50']:.0f} | {1e3 * r['ttft_p99']:.0f} | "
                f"{1e3 * r['itl_mean']:.1f} | {r['e2e_p50']:.2f} | {r['e2e_p99']:.2f} | "
                f"{ratio} | {ttft} |"
            )
    return "\n".join(lines)


def targets(results: dict[str, dict[int, dict[str, float]]]) -> str:
    """The issue's targets, met or not, from the figures of this run."""

    def throughput(system: str) -> float | None:
        return results.get(system, {}).get(32, {}).get("tokens_per_s")

    ours, lines = throughput("arena-serve"), []
    checks = [
        ("vllm", 0.95, "direct vLLM"),
        ("ray-serve-llm", 1.1, "Ray Serve LLM (defaults)"),
        ("ray-serve-llm-ht", 1.1, "Ray Serve LLM (high-throughput mode)"),
        ("ray-serve-llm-direct", 1.1, "Ray Serve LLM (direct streaming)"),
    ]
    for other, target, name in checks:
        theirs = throughput(other)
        if ours and theirs:
            ratio = ours / theirs
            verdict = "met" if ratio >= target else "missed"
            lines.append(
                f"- throughput at concurrency 32, arena-serve / {name}: {ratio:.3f}× "
                f"(target ≥ {target}×: {verdict})"
            )
    one, base = results.get("arena-serve", {}).get(1), results.get("vllm", {}).get(1)
    if one and base:
        overhead = 1e3 * (one["ttft_p50"] - base["ttft_p50"])
        verdict = "met" if overhead <= 5 else "missed"
        lines.append(
            f"- TTFT p50 at concurrency 1, arena-serve over direct vLLM: "
            f"{overhead:+.1f} ms (target ≤ 5 ms: {verdict})"
        )
    return "\n".join(lines)


def scoring(store: Path, settle_s: float = 60.0) -> dict[str, float]:
    """What the scorer did for the answers in `store`, once no new score has landed for 3 s (or
    `settle_s` passed): answers, scores, and the delay from an answer's end to its score."""
    deadline, last, stable_since = time.monotonic() + settle_s, -1, time.monotonic()
    while True:
        db = sqlite3.connect(store)
        try:
            # Only successful answers are scored: a failed or abandoned one is not the scorer's.
            answered = db.execute("SELECT COUNT(*) FROM completions WHERE status = 200").fetchone()[
                0
            ]
            delays = [row[0] for row in db.execute("SELECT latency_s FROM scores")]
        finally:
            db.close()
        if len(delays) != last:
            last, stable_since = len(delays), time.monotonic()
        if time.monotonic() - stable_since >= 3 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    return {
        "answered": answered,
        "scored": len(delays),
        "delay_p50": percentile(delays, 0.5),
        "delay_p99": percentile(delays, 0.99),
    }


def scoring_lines(results: dict[str, dict[int, dict[str, float]]], scored: dict) -> str:
    """The cost of scoring every answer, as a ratio to the same gateway without a scorer."""
    lines = []
    for level in LEVELS:
        plain = results.get("arena-serve", {}).get(level)
        with_scores = results.get("arena-serve-scored", {}).get(level)
        if plain and with_scores:
            ratio = with_scores["tokens_per_s"] / plain["tokens_per_s"]
            ttft = 1e3 * (with_scores["ttft_p50"] - plain["ttft_p50"])
            lines.append(
                f"- concurrency {level}: arena-serve-scored / arena-serve throughput "
                f"{ratio:.3f}×, TTFT p50 {ttft:+.1f} ms"
            )
    if scored:
        unscored = scored["answered"] - scored["scored"]
        rest = (
            f"; {unscored} went unscored (shed at the gateway's `scorer.max_in_flight`, or "
            "still queued when the count settled)"
            if unscored
            else ""
        )
        lines.append(
            f"- answers scored: {scored['scored']} of {scored['answered']} "
            f"({100 * scored['scored'] / max(1, scored['answered']):.0f} %), each "
            f"{scored['delay_p50']:.2f} s (p50) / {scored['delay_p99']:.2f} s (p99) after it "
            f"ended{rest}; no answer waits for its score"
        )
    return "\n".join(lines)


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo), or the architecture where there is none."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.machine()


def machine() -> str:
    return f"{cpu_model()}, {os.cpu_count()} cores"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m loadtests.serving_bench", description=__doc__)
    commands = parser.add_subparsers(dest="command")
    child = commands.add_parser("serve", help="(internal) run one server in the foreground")
    child.add_argument("system", choices=list(KNOWN_SYSTEMS))
    child.add_argument("port", type=int)
    parser.add_argument("--systems", nargs="*", choices=list(SYSTEMS), default=list(SYSTEMS))
    parser.add_argument("--logs", type=Path, default=ROOT / "data" / "bench" / "serving")
    parser.add_argument("--levels", nargs="*", type=int, choices=list(LEVELS), default=list(LEVELS))
    parser.add_argument("--repeats", type=int, default=REPEATS)
    parser.add_argument(
        "--own-session", action="store_true", help="each server in a session of its own (setsid)"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "serve":
        system = KNOWN_SYSTEMS[args.system]
        return SERVERS[system.server](args.port, system)
    args.logs.mkdir(parents=True, exist_ok=True)
    results: dict[str, dict[int, dict[str, float]]] = {}
    scored: dict[str, float] = {}
    for system in args.systems:
        model = model_of(system)
        print(f"[bench-serving] {system}: starting", file=sys.stderr, flush=True)
        store = Path(tempfile.mkdtemp(prefix="bench-")) / "outcomes.db"
        os.environ[STORE_ENV] = str(store)  # the child's outcome store, read back below
        with running(system, args.logs / f"{system}.log", args.own_session) as base:
            results[system] = {}
            for concurrency in args.levels:
                runs = [
                    asyncio.run(run_level(base, model, concurrency, LEVELS[concurrency]))
                    for _ in range(args.repeats)
                ]
                results[system][concurrency] = {
                    key: statistics.median(run[key] for run in runs) for key in runs[0]
                }
                tokens = results[system][concurrency]["tokens_per_s"]
                print(
                    f"[bench-serving] {system} c={concurrency}: {tokens:.0f} tok/s",
                    file=sys.stderr,
                    flush=True,
                )
            if KNOWN_SYSTEMS[system].scored:
                scored = scoring(store)
    systems = "; ".join(f"`{name}`: {SYSTEMS[name].what}" for name in args.systems)
    print(
        f"Machine: {machine()}. Command: `make bench-serving` (`python -m "
        f"loadtests.serving_bench`). The systems run one after another on the same engine "
        f"settings ({systems}); streamed chat, {MAX_TOKENS} tokens per answer (ignore_eos), "
        f"temperature 0; requests per level: "
        f"{', '.join(f'{LEVELS[c]} at concurrency {c}' for c in args.levels)}, after a warm-up "
        f"at that concurrency, each level run {args.repeats} times (medians); Ray workers at "
        f"niceness 0 like the vLLM server; client on the same cores"
        f"{', each server in a session of its own' if args.own_session else ', in its session'}."
        f"\n\n{table(results)}\n\n"
        f"{targets(results)}"
        + (
            f"\n\nScoring every answer on these cores:\n\n{lines}"
            if (lines := scoring_lines(results, scored))
            else ""
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
