"""Outcome log replicas on one PostgreSQL store (tests/pg.py starts a real server): events sent to
either replica are deduplicated across both, a feedback key replayed at the other replica is
a replay, `/metrics` is exact from either, and a restart of PostgreSQL under load loses nothing
that was acknowledged."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from router.events import Battle, Completion, Event, Exposure, Feedback
from router.store import OutcomeStore
from serve.metrics import OutcomeMetrics
from serve.outcome_log import OutcomeLog
from tests.pg import PgServer


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if not s.name.endswith("_created")
    }


def completion(cid: str, unit: str, battle: str | None = None) -> Completion:
    return Completion(
        ts=1.0,
        completion_id=cid,
        request_id=f"r-{cid}",
        experiment="exp",
        variant="a" if battle is None else "b",
        unit=unit,
        endpoint="chat",
        stream=True,
        status=200,
        ttft_s=0.1,
        latency_s=0.5,
        prompt_tokens=5,
        completion_tokens=9,
        battle_id=battle,
    )


def exposure(unit: str, request: str) -> Exposure:
    return Exposure(
        ts=1.0,
        request_id=request,
        experiment="exp",
        unit_type="user",
        unit=unit,
        variant="a",
        reason="arm",
        exposed=True,
    )


def thumbs(cid: str, key: str) -> Feedback:
    return Feedback(ts=2.0, kind="thumbs", idempotency_key=key, completion_id=cid, value="up")


def replicas(dsn: str, n: int = 2) -> list[Any]:
    return [OutcomeLog.func_or_class(dsn) for _ in range(n)]


def test_two_replicas_deduplicate_and_count_exactly(pg_dsn: str) -> None:
    """Every unit's exposure reaches both replicas (each gateway replica its own cache), each
    completion is delivered twice (a retry to the other replica), each feedback key is sent
    to both at once: the store holds each once, and /metrics from either replica counts
    exactly what a single in-process registry counts of the same events, once."""
    units = [f"u{i}" for i in range(40)]
    battle = Battle(
        ts=1.0,
        battle_id="b1",
        request_id="rb",
        experiment="exp",
        unit="u0",
        variant_a="a",
        variant_b="b",
        completion_a="ca",
        completion_b="cb",
    )

    async def run() -> tuple[str, str, list[Any]]:
        first, second = replicas(pg_dsn)
        sends = []
        for i, unit in enumerate(units):
            events: list[Event] = [exposure(unit, f"r{i}"), completion(f"c{i}", unit)]
            sends.append(first.record(events, committed=True))
            sends.append(second.record([exposure(unit, f"r{i}-again")], committed=True))
        sends.append(
            first.record(
                [completion("ca", "u0", "b1"), completion("cb", "u0", "b1"), battle], committed=True
            )
        )
        await asyncio.gather(*sends)
        await asyncio.gather(
            *(
                log.record([completion(f"c{i}", u)], committed=True)
                for i, u in enumerate(units)
                for log in (first, second)
            )
        )
        answers = await asyncio.gather(
            *(
                log.record_feedback(thumbs(f"c{i}", f"k{i}"))
                for i in range(20)
                for log in (first, second)
            )
        )
        first.observe_scorer_batch(4)
        second.observe_scorer_batch(8)
        await asyncio.gather(
            first.record([thumbs("c30", "late")]), second.record([thumbs("c31", "late2")])
        )
        await asyncio.gather(first.flush(), second.flush())
        return await first.metrics(), await second.metrics(), answers

    one, two, answers = asyncio.run(run())
    statuses = sorted(a.status for a in answers)
    assert statuses == ["recorded"] * 20 + ["replayed"] * 20
    store = OutcomeStore(pg_dsn)
    try:
        assert store.count("exposures") == 40 and store.count("assignments") == 40
        assert store.count("completions") == 42 and store.count("feedback") == 22
    finally:
        store.close()
    assert samples(one) == samples(two)
    # The same events, each once, in one registry: what the totals must be.
    expected = OutcomeMetrics()
    once: list[Event] = [exposure(u, f"r{i}") for i, u in enumerate(units)]
    once += [completion(f"c{i}", u) for i, u in enumerate(units)]
    once += [completion("ca", "u0", "b1"), completion("cb", "u0", "b1"), battle]
    expected.observe(once, [None] * len(once))
    from router.events import FeedbackResult

    feedback = [thumbs(f"c{i}", f"k{i}") for i in range(20)]
    feedback += [thumbs("c30", "late"), thumbs("c31", "late2")]
    recorded = FeedbackResult(status="recorded", feedback_id=1, target=("exp", "a"))
    expected.observe(feedback, [recorded] * len(feedback))
    expected.scorer_batch.observe(4)
    expected.scorer_batch.observe(8)
    assert samples(one) == samples(expected.exposition())


def test_totals_outlive_a_replica(pg_dsn: str) -> None:
    async def run() -> str:
        [log] = replicas(pg_dsn, 1)
        await log.record([exposure("alice", "r1"), completion("c1", "alice")], committed=True)
        [again] = replicas(pg_dsn, 1)  # a replacement replica, a new process
        await again.record([completion("c2", "alice")], committed=True)
        return await again.metrics()

    found = samples(asyncio.run(run()))
    requests = [v for (name, _), v in found.items() if name == "arena_requests_total"]
    assert requests == [2.0]


@pytest.mark.slow
def test_a_postgres_restart_under_load_loses_nothing_acknowledged(
    pg_server: PgServer, pg_dsn: str
) -> None:
    """Two replicas take completions and feedback from many clients while PostgreSQL is
    stopped hard (as a crash) and started again. Feedback answered 2xx-worthy (recorded or
    replayed) is in the store; feedback refused meanwhile is retried with its key, as a
    client does on a 503; every completion recorded is there in the end."""
    clients, per_client = 16, 30

    async def client(log: Any, c: int, acked: list[str]) -> None:
        for i in range(per_client):
            cid = f"c{c}-{i}"
            await log.record([completion(cid, f"u{c}")], committed=False)
            key = f"k{c}-{i}"
            while True:
                try:
                    answer = await log.record_feedback(thumbs(cid, key))
                except Exception:  # the store is down: the gateway answers 503; retry
                    await asyncio.sleep(random.uniform(0.05, 0.2))
                    continue
                if answer.status in ("recorded", "replayed"):
                    acked.append(key)
                    break
                if answer.status == "unknown_target":  # its completion not committed yet
                    await log.flush()
                    continue
                raise AssertionError(answer)
            await asyncio.sleep(random.uniform(0, 0.02))

    async def run() -> list[str]:
        logs = replicas(pg_dsn)
        acked: list[str] = []
        tasks = [asyncio.create_task(client(logs[c % 2], c, acked)) for c in range(clients)]
        await asyncio.sleep(0.5)
        await asyncio.to_thread(pg_server.restart, "immediate")
        await asyncio.gather(*tasks)
        await asyncio.gather(*(log.flush() for log in logs))
        return acked

    acked = asyncio.run(asyncio.wait_for(run(), timeout=120))
    assert len(acked) == clients * per_client
    store = OutcomeStore(pg_dsn)
    try:
        keys = {row["idempotency_key"] for row in store.rows("feedback")}
        assert keys == set(acked)
        assert store.count("completions") == clients * per_client
    finally:
        store.close()
