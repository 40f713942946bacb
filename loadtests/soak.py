"""The soak benchmark: `python -m loadtests.soak` (`make soak`), loopback only, bounded in time.

Starts this gateway as the serving benchmark does (SmolLM2-135M-Instruct on one vLLM engine, an
A/B experiment over two variants sharing it, the outcome log on), with each gateway replica
admitting `max_in_flight` 64 requests at once. It then

1. measures the saturation rate: requests/s of streamed 64-token chats from 32 closed-loop users;
2. offers twice that rate, open loop (Poisson arrivals, nothing waits for an answer before the
   next one is sent), for `--seconds`; every answered chat is followed by a thumbs-up feedback
   with an idempotency key;
3. reports the admitted requests' latency (TTFT and end to end, p50/p99), the shed fraction
   (503 `overloaded` with `Retry-After`), anything else that came back (must be nothing), and a
   count check: every feedback the gateway acknowledged must be a row in the outcome store.

Exits 1 if any answer was neither admitted nor cleanly shed, or any acknowledged feedback is not
in the store. Prints markdown with the machine and command.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sqlite3
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from loadtests.serving_bench import (
    MAX_TOKENS,
    OTHER_SYSTEMS,
    PROMPTS,
    ROOT,
    STORE_ENV,
    machine,
    model_of,
    percentile,
    run_level,
    running,
)

SYSTEM = "arena-serve-soak"
SATURATION = (32, 96)  # closed-loop users and requests for the saturation rate
SECONDS = 60.0
DRAIN_S = 120.0  # how long admitted requests may take to finish after the last arrival
SHED_CODES = ("overloaded", "variant_overloaded")  # 503s that are load shedding


@dataclass
class Tally:
    admitted_ttft: list[float] = field(default_factory=list)
    admitted_e2e: list[float] = field(default_factory=list)
    shed: int = 0
    other: Counter[str] = field(default_factory=Counter)
    acknowledged: list[str] = field(default_factory=list)
    feedback_refused: int = 0

    @property
    def offered(self) -> int:
        return len(self.admitted_e2e) + self.shed + sum(self.other.values())


async def chat(client: httpx.AsyncClient, model: str, tally: Tally) -> None:
    body = {
        "model": model,
        "messages": [{"role": "user", "content": random.choice(PROMPTS)}],
        "max_tokens": MAX_TOKENS,
        "temperature": 0.0,
        "ignore_eos": True,
        "stream": True,
        "user": f"soak-{uuid.uuid4().hex[:12]}",
    }
    started = time.perf_counter()
    first = None
    completion_id = None
    try:
        async with client.stream("POST", "/v1/chat/completions", json=body) as response:
            if response.status_code != 200:
                text = (await response.aread()).decode(errors="replace")
                try:
                    code = json.loads(text)["error"]["code"]
                except (ValueError, KeyError, TypeError):
                    code = None
                # Shed: the gateway's admission limit or an engine's queue, with Retry-After.
                # Any other 503 (an engine gone, shutting down) is a failure, not shedding.
                shedding = response.status_code == 503 and code in SHED_CODES
                if shedding and "retry-after" in response.headers:
                    tally.shed += 1
                else:
                    tally.other[f"{response.status_code} {code or text[:80]}"] += 1
                return
            async for line in response.aiter_lines():
                if not line.startswith("data: {"):
                    continue
                chunk = json.loads(line[6:])
                if "error" in chunk:
                    tally.other[f"stream error {chunk['error'].get('code')}"] += 1
                    return
                completion_id = completion_id or chunk.get("id")
                if first is None and chunk.get("choices"):
                    first = time.perf_counter()
    except httpx.HTTPError as exc:
        tally.other[type(exc).__name__] += 1
        return
    end = time.perf_counter()
    tally.admitted_ttft.append((first or end) - started)
    tally.admitted_e2e.append(end - started)
    if completion_id is not None:
        await feedback(client, completion_id, tally)


async def feedback(client: httpx.AsyncClient, completion_id: str, tally: Tally) -> None:
    key = f"soak-{uuid.uuid4().hex}"
    vote = {"completion_id": completion_id, "kind": "thumbs", "value": "up", "idempotency_key": key}
    try:
        response = await client.post("/v1/feedback", json=vote)
    except httpx.HTTPError:
        tally.feedback_refused += 1
        return
    if response.status_code in (200, 201):
        tally.acknowledged.append(key)
    elif response.status_code == 503:
        tally.feedback_refused += 1
    else:
        tally.other[f"feedback {response.status_code}"] += 1


async def open_loop(base: str, model: str, rate: float, seconds: float) -> Tally:
    """Poisson arrivals at `rate` per second for `seconds`; then wait for the admitted ones."""
    tally = Tally()
    limits = httpx.Limits(max_connections=4096, max_keepalive_connections=256)
    async with httpx.AsyncClient(base_url=base, timeout=DRAIN_S, limits=limits) as client:
        tasks = []
        started = time.perf_counter()
        next_at = started
        while next_at - started < seconds:
            await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
            tasks.append(asyncio.create_task(chat(client, model, tally)))
            next_at += random.expovariate(rate)
        await asyncio.wait(tasks, timeout=DRAIN_S)
        unfinished = sum(not t.done() for t in tasks)
        if unfinished:
            tally.other[f"unfinished after {DRAIN_S:.0f} s"] += unfinished
            for task in tasks:
                task.cancel()
    return tally


def stored_keys(store: Path, keys: list[str]) -> int:
    db = sqlite3.connect(store)
    try:
        db.execute("CREATE TEMP TABLE acked (key TEXT PRIMARY KEY)")
        db.executemany("INSERT OR IGNORE INTO acked VALUES (?)", [(k,) for k in keys])
        query = "SELECT COUNT(*) FROM acked JOIN feedback ON feedback.idempotency_key = acked.key"
        return db.execute(query).fetchone()[0]
    finally:
        db.close()


def report(saturation: float, rate: float, seconds: float, tally: Tally, stored: int) -> str:
    admitted = len(tally.admitted_e2e)
    lost = len(tally.acknowledged) - stored
    other = ", ".join(f"{n} × {what}" for what, n in tally.other.most_common()) or "none"
    ttft, e2e = (
        f"{percentile(values, 0.5):.2f} / {percentile(values, 0.99):.2f}"
        for values in (tally.admitted_ttft, tally.admitted_e2e)
    )
    shed = tally.shed / max(1, tally.offered)
    return "\n".join(
        [
            f"Machine: {machine()}. Command: `make soak` (`python -m loadtests.soak --seconds "
            f"{seconds:.0f}`). System: {OTHER_SYSTEMS[SYSTEM].what}; streamed chat, "
            f"{MAX_TOKENS} tokens per answer (ignore_eos); saturation measured with "
            f"{SATURATION[0]} closed-loop users, then Poisson arrivals at {rate / saturation:.3g}× "
            f"that rate for {seconds:.0f} s, each answered chat followed by a feedback post.",
            "",
            "| saturation req/s | offered req/s | requests | admitted | shed (503) | shed "
            "fraction | admitted TTFT p50 / p99 s | admitted E2E p50 / p99 s | other answers | "
            "feedback acknowledged | in the store | lost |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|",
            f"| {saturation:.2f} | {rate:.2f} | {tally.offered} | {admitted} | {tally.shed} | "
            f"{shed:.3f} | {ttft} | {e2e} | {other} | {len(tally.acknowledged)} | "
            f"{stored} | {lost} |",
            "",
            f"Feedback refused with 503 (not acknowledged, for the client to retry): "
            f"{tally.feedback_refused}.",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtests.soak", description=__doc__)
    parser.add_argument("--seconds", type=float, default=SECONDS, help="how long load is offered")
    parser.add_argument("--factor", type=float, default=2.0, help="offered rate / saturation")
    parser.add_argument("--logs", type=Path, default=ROOT / "data" / "bench" / "soak")
    args = parser.parse_args(argv)
    args.logs.mkdir(parents=True, exist_ok=True)
    store = Path(tempfile.mkdtemp(prefix="soak-")) / "outcomes.db"
    os.environ[STORE_ENV] = str(store)
    model = model_of(SYSTEM)

    def say(message: str) -> None:
        print(f"[soak] {message}", file=sys.stderr, flush=True)

    say("starting the gateway")
    with running(SYSTEM, args.logs / f"{SYSTEM}.log") as base:
        saturation = asyncio.run(run_level(base, model, *SATURATION))["requests_per_s"]
        rate = args.factor * saturation
        say(f"saturation {saturation:.2f} req/s; offering {rate:.2f} req/s for {args.seconds} s")
        tally = asyncio.run(open_loop(base, model, rate, args.seconds))
        stored = stored_keys(store, tally.acknowledged)
    say(f"{len(tally.admitted_e2e)} admitted, {tally.shed} shed, other {dict(tally.other)}")
    print(report(saturation, rate, args.seconds, tally, stored))
    return 0 if passed(tally, stored) else 1


def passed(tally: Tally, stored: int) -> bool:
    """Every answer admitted or shed cleanly, feedback acknowledged (some, and none refused:
    nothing limits feedback), and every acknowledged one in the store."""
    acknowledged = len(tally.acknowledged)
    return (
        not tally.other
        and acknowledged > 0
        and not tally.feedback_refused
        and (stored == acknowledged)
    )


if __name__ == "__main__":
    sys.exit(main())
