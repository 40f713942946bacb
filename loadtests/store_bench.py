"""Sustained write rate of each outcome store: `make bench-store`.

`python -m loadtests.store_bench [--seconds S] [--rounds N]`.

What runs: the outcome log's own writer (`serve.outcome_log.OutcomeWriter`: its queue and group
commit, each batch one transaction) fed by many concurrent senders, as gateway replicas feed it.
A request is four events, as the gateway writes them: its unit's exposure (a new unit every
fourth request, else a repeat the store deduplicates), its completion, a reward score, and a
thumbs feedback, which waits for its commit as `POST /v1/feedback` does. Each sender sends
requests one after another for `--seconds`; the figure is committed events per second over the
run. Durable both ways: SQLite in WAL mode with `synchronous=FULL`, PostgreSQL with its
defaults (fsync, `synchronous_commit=on`), on a server this command starts in a temporary folder
(the distribution's binaries: `scripts/setup_postgres.sh`), as the tests do.

Configurations, side by side in one run, each twice in alternation (the spread is its noise):
SQLite with one writer; PostgreSQL with one writer; PostgreSQL with two writers (two log
replicas, each its own connection, taking the senders in turn).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

from router.bench import machine
from router.events import Completion, Event, Exposure, Feedback, Score
from serve.outcome_log import OutcomeWriter
from tests.pg import PgServer, start_server

SENDERS = 64


def _request(sender: int, i: int, now: float) -> tuple[list[Event], Feedback]:
    unit = f"u{sender}-{i // 4}"
    cid = f"c{sender}-{i}-{now}"
    events: list[Event] = [
        Exposure(
            ts=now,
            request_id=f"r{cid}",
            experiment="bench",
            unit_type="user",
            unit=unit,
            variant="a" if sender % 2 else "b",
            reason="arm",
            exposed=True,
        ),
        Completion(
            ts=now,
            completion_id=cid,
            request_id=f"r{cid}",
            experiment="bench",
            variant="a" if sender % 2 else "b",
            unit=unit,
            endpoint="chat",
            stream=True,
            status=200,
            ttft_s=0.05,
            latency_s=0.8,
            prompt_tokens=40,
            completion_tokens=120,
        ),
        Score(
            ts=now,
            completion_id=cid,
            model="judge",
            experiment="bench",
            variant="a",
            score=0.3,
            latency_s=0.2,
        ),
    ]
    thumbs = Feedback(
        ts=now, kind="thumbs", idempotency_key=f"k{cid}", completion_id=cid, value="up"
    )
    return events, thumbs


async def _rate(locations: list[str], seconds: float) -> float:
    """Committed events per second with one writer per location (the same store or not)."""
    writers = [OutcomeWriter(location) for location in locations]
    done = 0
    deadline = time.monotonic() + seconds

    async def sender(k: int) -> None:
        nonlocal done
        writer = writers[k % len(writers)]
        i = 0
        while time.monotonic() < deadline:
            events, thumbs = _request(k, i, time.time())
            await writer.record(events)
            result = await writer.record_feedback(thumbs)
            assert result.status == "recorded", result
            done += len(events) + 1
            i += 1

    started = time.monotonic()
    await asyncio.gather(*(sender(k) for k in range(SENDERS)))
    await asyncio.gather(*(w.flush() for w in writers))
    elapsed = time.monotonic() - started
    for writer in writers:
        writer._store.close()
    return done / elapsed


def run(seconds: float, rounds: int) -> dict[str, list[float]]:
    server: PgServer = start_server()
    folder = Path(tempfile.mkdtemp(prefix="store-bench-"))
    found: dict[str, list[float]] = {}
    try:
        for r in range(rounds):
            configs = {
                "SQLite, 1 writer": [str(folder / f"outcomes-{r}.db")],
                "PostgreSQL, 1 writer": [server.create_database()],
            }
            pg = server.create_database()
            configs["PostgreSQL, 2 writers (log replicas)"] = [pg, pg]
            for name, locations in configs.items():
                rate = asyncio.run(_rate(locations, seconds))
                found.setdefault(name, []).append(rate)
                print(f"round {r + 1}: {name}: {rate:,.0f} events/s", file=sys.stderr)
    finally:
        server.stop("immediate")
    return found


def report_scale(units: int, chunk: int = 100_000) -> str:
    """Seconds to build an A/B report over a log of `units` users (about 10 events each: 10 M
    at a million), on SQLite and on the same log copied to PostgreSQL. The SQLite log is made
    once under data/bench/ (by `chunk` users at a time, to bound memory) and reused."""
    from router.analysis import build_report
    from router.analysis.simulate import Arm, Traffic, simulate_ab
    from router.experiment import Experiment
    from router.store import TABLES, OutcomeStore, copy_store

    experiment = Experiment.model_validate(
        {
            "name": "bench-ab",
            "arms": [{"variant": "a"}, {"variant": "b"}],
            "guardrails": [
                {"metric": "reward_score", "max_decrease": 0.1},
                {"metric": "ttft_p95_s", "max_increase": 0.1, "relative": True},
            ],
        }
    )
    folder = Path(__file__).resolve().parent.parent / "data" / "bench"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"ab-{units}-users.db"
    if not path.exists():
        partial = path.with_suffix(".partial")
        partial.unlink(missing_ok=True)
        for seed in range(0, units // chunk):
            traffic = Traffic(units=chunk, arms={"b": Arm(thumbs_up=0.21)}, seed=seed)
            simulate_ab(partial, experiment, traffic)
            print(f"log: {(seed + 1) * chunk:,} users written", file=sys.stderr)
        partial.rename(path)
    store = OutcomeStore(path)
    events = sum(store.count(table) for table in TABLES if table not in ("assignments",))
    store.close()
    lines = ["| store | events | copy seconds | report seconds |", "|---|---:|---:|---:|"]
    started = time.perf_counter()
    build_report(path, experiment)
    lines.append(f"| SQLite | {events:,} | | {time.perf_counter() - started:.0f} |")
    print(lines[-1], file=sys.stderr)
    server = start_server()
    try:
        dsn = server.create_database()
        started = time.perf_counter()
        copy_store(path, dsn)
        copied = time.perf_counter() - started
        started = time.perf_counter()
        build_report(dsn, experiment)
        reported = time.perf_counter() - started
        lines.append(f"| PostgreSQL | {events:,} | {copied:.0f} | {reported:.0f} |")
    finally:
        server.stop("immediate")
    return "\n".join(lines)


def markdown(found: dict[str, list[float]], seconds: float, command: str) -> str:
    lines = [
        f"Machine: {machine()}. Command: `{command}`. {SENDERS} concurrent senders, "
        f"{seconds:g} s per configuration and round, the rounds alternating; a request is "
        "4 events (exposure, completion, score, and a thumbs that waits for its commit).",
        "",
        "| store | events/s (median) | rounds | spread |",
        "|---|---:|---|---:|",
    ]
    base = statistics.median(found["SQLite, 1 writer"])
    for name, rates in found.items():
        median = statistics.median(rates)
        spread = (max(rates) - min(rates)) / median
        each = ", ".join(f"{r:,.0f}" for r in rates)
        lines.append(
            f"| {name} | {median:,.0f} ({median / base:.2f}× SQLite) | {each} | ±{spread / 2:.0%} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtests.store_bench", description=__doc__)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument(
        "--report-users",
        type=int,
        default=0,
        help="instead: time a report over a log of this many users (1000000: 10 M events)",
    )
    args = parser.parse_args(argv)
    if args.report_users:
        table = report_scale(args.report_users)
        print(
            f"Machine: {machine()}. Command: `python -m loadtests.store_bench --report-users "
            f"{args.report_users}`; `build_report` with 200 bootstrap replicates, the "
            "PostgreSQL copy made by `copy_store` (`arena-serve store migrate`).\n\n" + table
        )
        return 0
    found = run(args.seconds, args.rounds)
    command = "python -m loadtests.store_bench"
    print(markdown(found, args.seconds, command))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
