"""How much a streamed battle's timing tells a voter: `python -m loadtests.arena_timing`.

The arena answer names no variant (README, "Blind arenas"), but a stream shows when each side's
text arrives. This plays voters who watch the clock: for each battle it streams both answers
(the same `max_tokens` for both sides, so lengths say as little as they can), notes what a
client sees, votes, and learns from the reveal which variant was side a. Then it scores three
predictors of "side a is variant X", each with the better of its two readings (as a voter who
knew the variants' speeds would):

- **first write**: the side with more text in the stream's first write (both sides' first
  chunks are released together, side a's first, so only how much each had counts);
- **first done**: the side whose finishing chunk arrived first;
- **faster**: the side whose text arrived at the higher rate after the first write;
- and, for reference, **shorter**: the side whose whole answer is shorter, which a voter sees
  in the text itself, timing or not: a timing predictor right about as often as this one adds
  little to what the answers already show.

An honest coin is right half the time; the table gives each predictor's share right with a 95 %
Wilson interval, for two configs served one after another on this machine:

- `default`: deploy/config.yaml as is (both arena variants on one SmolLM2 engine);
- `mixed`: the same arena between SmolLM2 and the tiny random test model on an engine of its
  own (much faster): what timing gives away when the variants' engines differ in speed.

Prints markdown with the machine and command (`make bench-arena-timing` records it in
docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import httpx
import yaml

from loadtests.processes import start, stop
from serve.deploy import free_port, use_throughput_mode

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "deploy" / "config.yaml"
ARENA = "smollm2-arena"
QUESTIONS = [
    "What is the capital of France?",
    "Name three colours.",
    "Write one sentence about the sea.",
    "How many legs does a spider have?",
    "Give me a tip for sleeping well.",
]


@dataclass
class Seen:
    """What the voter saw of one battle, and the truth its vote revealed."""

    first_write: tuple[int, int]  # characters of choices 0 and 1 in the first write
    done_at: tuple[float, float]  # seconds from the request to each choice's finish
    rate: tuple[float, float]  # characters per second after the first write
    side_a: str  # the variant shown as choice 0
    length: tuple[int, int] = (0, 0)  # characters of each whole answer


def config(name: str, folder: Path) -> Path:
    document = copy.deepcopy(yaml.safe_load(CONFIG.read_text()))
    args = document["applications"][0]["args"]
    args["store_path"] = str(folder / "outcomes.db")
    if name == "mixed":
        from serve.models import TINY_LLAMA, prepare

        [tiny] = prepare([TINY_LLAMA])
        args["variants"][2] = {  # smollm2-friendly, now the tiny model on its own engine
            "name": "smollm2-friendly",
            "model": str(tiny),
            "engine_kwargs": {"kv_cache_memory_bytes": 128 * 1024**2, "max_model_len": 512},
            "sampling": {"temperature": 0.7},
        }
        args["scorer"]["cpus_per_replica"] = 0  # two engines and the scorer on a small machine
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


def battle(client: httpx.Client, max_tokens: int) -> Seen | None:
    user = f"timing-{uuid.uuid4().hex[:12]}"
    question = QUESTIONS[hash(user) % len(QUESTIONS)]
    body = {
        "model": ARENA,
        "user": user,
        "stream": True,
        "max_tokens": max_tokens,
        "messages": [{"role": "user", "content": question}],
    }
    started = time.perf_counter()
    first: list[int] | None = None
    text_at: dict[int, list[tuple[float, int]]] = {0: [], 1: []}
    done = [math.inf, math.inf]
    battle_id = None
    with client.stream("POST", "/v1/chat/completions", json=body) as response:
        if response.status_code != 200:
            return None
        for raw in response.iter_raw():  # one network write of the gateway at a time
            now = time.perf_counter() - started
            sizes = [0, 0]
            for event in raw.decode(errors="replace").split("\n\n"):
                if not event.startswith("data: {"):
                    continue
                chunk = json.loads(event[6:])
                battle_id = chunk.get("id", battle_id)
                for choice in chunk.get("choices", []):
                    index = choice["index"]
                    sizes[index] += len((choice.get("delta") or {}).get("content") or "")
                    if choice.get("finish_reason") is not None:
                        done[index] = min(done[index], now)
            if first is None:
                first = sizes
            for index in (0, 1):
                if sizes[index]:
                    text_at[index].append((now, sizes[index]))
    vote = client.post(
        "/v1/feedback",
        json={
            "battle_id": battle_id,
            "kind": "vote",
            "value": "tie",
            "user": user,
            "idempotency_key": f"timing-{uuid.uuid4()}",
        },
    )
    if vote.status_code != 201 or first is None:
        return None
    rates = []
    for index in (0, 1):
        later = text_at[index][1:]
        span = later[-1][0] - text_at[index][0][0] if later else 0.0
        rates.append(sum(size for _, size in later) / span if span > 0 else 0.0)
    length = tuple(sum(size for _, size in text_at[index]) for index in (0, 1))
    return Seen(
        (first[0], first[1]),
        (done[0], done[1]),
        (rates[0], rates[1]),
        vote.json()["reveal"]["a"],
        (length[0], length[1]),
    )


def wilson(right: int, n: int) -> tuple[float, float]:
    if n == 0:
        return math.nan, math.nan
    p, z = right / n, 1.96
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def score(seen: list[Seen]) -> dict[str, tuple[int, int]]:
    """(right, n) of each predictor in its better reading; battles it cannot call are left out."""
    variants = sorted({s.side_a for s in seen})
    truth = [s.side_a == variants[0] for s in seen]
    calls = {
        "first write": [
            None if s.first_write[0] == s.first_write[1] else s.first_write[0] > s.first_write[1]
            for s in seen
        ],
        "first done": [
            None if s.done_at[0] == s.done_at[1] else s.done_at[0] < s.done_at[1] for s in seen
        ],
        "faster": [None if s.rate[0] == s.rate[1] else s.rate[0] > s.rate[1] for s in seen],
        "shorter (the text itself)": [
            None if s.length[0] == s.length[1] else s.length[0] < s.length[1] for s in seen
        ],
    }
    out = {}
    for name, guesses in calls.items():
        pairs = [(g, t) for g, t in zip(guesses, truth, strict=True) if g is not None]
        same = sum(g == t for g, t in pairs)
        out[name] = (max(same, len(pairs) - same), len(pairs))
    return out


def serve_and_play(name: str, battles: int, max_tokens: int, folder: Path) -> list[Seen]:
    port = free_port()
    env = dict(os.environ)
    use_throughput_mode(env, side_ports=True)
    log = (folder / f"{name}.log").open("w")
    server = start(
        [
            sys.executable,
            "-m",
            "serve.cli",
            "serve",
            str(config(name, folder)),
            "--port",
            str(port),
        ],
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env=env,
    )
    try:
        deadline = time.monotonic() + 900
        while "[serve] ready in" not in (folder / f"{name}.log").read_text(errors="replace"):
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{name}: the server did not start; see {folder}")
            time.sleep(2)
        seen = []
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=120) as client:
            for _ in range(3):  # warm-up
                battle(client, max_tokens)
            while len(seen) < battles:
                answer = battle(client, max_tokens)
                if answer is not None:
                    seen.append(answer)
        return seen
    finally:
        stop(server)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtests.arena_timing", description=__doc__)
    parser.add_argument("--battles", type=int, default=200)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--configs", default="default,mixed")
    args = parser.parse_args(argv)
    names = [n for n in args.configs.split(",") if n]
    rows = []
    with tempfile.TemporaryDirectory(prefix="arena-timing-") as tmp:
        for name in names:
            print(f"[timing] {name}: {args.battles} streamed battles", file=sys.stderr)
            for predictor, (right, n) in score(
                serve_and_play(name, args.battles, args.max_tokens, Path(tmp))
            ).items():
                low, high = wilson(right, n)
                rows.append(
                    f"| {name} | {predictor} | {right} / {n} = {right / n:.0%} | "
                    f"{low:.0%}–{high:.0%} |"
                )
    command = f"python -m loadtests.arena_timing --battles {args.battles} --configs {args.configs}"
    print(
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores. "
        f"Command: `{command}` ({args.max_tokens} tokens at most per side, one battle at a "
        "time). Share of battles in which the predictor named side a's variant (its better "
        "reading); a coin gets 50 %.\n"
    )
    print("| config | predictor | right | 95 % interval |\n|---|---|---:|---|")
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
