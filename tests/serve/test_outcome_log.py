"""The outcome writer: order, group commit, feedback acknowledged only after commit."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from router.events import Completion, Exposure, Feedback, FeedbackResult
from serve.outcome_log import OutcomeWriter


def completion(cid: str) -> Completion:
    return Completion(
        ts=1.0, completion_id=cid, request_id=cid, experiment=None, variant="a", unit=None,
        endpoint="chat", stream=False, status=200, ttft_s=0.01, latency_s=0.02,
        prompt_tokens=3, completion_tokens=2,
    )  # fmt: skip


def test_feedback_after_record_sees_the_completion(tmp_path: Path) -> None:
    async def run() -> FeedbackResult:
        writer = OutcomeWriter(str(tmp_path / "o.db"))
        await writer.record([Exposure(1.0, "r1", "e", "a", "u"), completion("c1")])
        return await writer.record_feedback(Feedback(2.0, "c1", "thumbs", "up", "k"))

    assert asyncio.run(run()) == FeedbackResult("recorded", 1)
    db = sqlite3.connect(tmp_path / "o.db")
    assert db.execute("SELECT COUNT(*) FROM exposures").fetchone()[0] == 1
    assert db.execute("SELECT value FROM feedback").fetchone()[0] == "up"


def test_concurrent_feedback_is_group_committed_in_order(tmp_path: Path) -> None:
    async def run() -> list[FeedbackResult]:
        writer = OutcomeWriter(str(tmp_path / "o.db"))
        await writer.record([completion(f"c{i}") for i in range(200)])
        votes = [Feedback(1.0, f"c{i}", "thumbs", "up", f"k{i}") for i in range(200)]
        votes.append(Feedback(1.0, "missing", "thumbs", "up", "k-missing"))
        return await asyncio.gather(*(writer.record_feedback(v) for v in votes))

    results = asyncio.run(run())
    assert [r.status for r in results[:-1]] == ["recorded"] * 200
    assert sorted(r.feedback_id for r in results[:-1]) == list(range(1, 201))
    assert results[-1] == FeedbackResult("unknown_completion", None)


def test_flush_waits_for_commit(tmp_path: Path) -> None:
    async def run() -> None:
        writer = OutcomeWriter(str(tmp_path / "o.db"))
        await writer.record([completion(f"c{i}") for i in range(50)])
        await writer.flush()

    asyncio.run(run())
    assert (
        sqlite3.connect(tmp_path / "o.db").execute("SELECT COUNT(*) FROM completions").fetchone()[0]
        == 50
    )


def test_a_store_that_cannot_write_fails_the_feedback(tmp_path: Path) -> None:
    """No false acknowledgement: the caller sees the error and answers 503."""
    path = tmp_path / "o.db"

    async def run() -> None:
        writer = OutcomeWriter(str(path))
        await writer.record([completion("c1")])
        await writer.flush()
        blocker = sqlite3.connect(path, timeout=0)
        blocker.execute("BEGIN EXCLUSIVE")  # holds the write lock past busy_timeout
        writer._store._db.execute("PRAGMA busy_timeout=50")
        try:
            with pytest.raises(sqlite3.OperationalError, match="locked"):
                await writer.record_feedback(Feedback(1.0, "c1", "thumbs", "up", "k"))
        finally:
            blocker.rollback()
        assert (await writer.record_feedback(Feedback(1.0, "c1", "thumbs", "up", "k"))).status == (
            "recorded"
        )

    asyncio.run(run())
