"""The outcome writer: order, group commit, feedback acknowledged only after commit."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from router.events import Battle, Completion, Exposure, Feedback, FeedbackResult
from serve.outcome_log import OutcomeSender, OutcomeWriter


def completion(cid: str) -> Completion:
    return Completion(
        ts=1.0,
        completion_id=cid,
        request_id=cid,
        experiment=None,
        variant="a",
        unit=None,
        endpoint="chat",
        stream=False,
        status=200,
        ttft_s=0.01,
        latency_s=0.02,
        prompt_tokens=3,
        completion_tokens=2,
    )


def thumbs(cid: str, key: str) -> Feedback:
    return Feedback(ts=2.0, kind="thumbs", idempotency_key=key, completion_id=cid, value="up")


def test_feedback_after_record_sees_the_completion(tmp_path: Path) -> None:
    async def run() -> FeedbackResult:
        writer = OutcomeWriter(str(tmp_path / "o.db"))
        await writer.record(
            [
                Exposure(
                    ts=1.0,
                    request_id="r1",
                    experiment="e",
                    unit_type="user",
                    unit="u",
                    variant="a",
                    reason="arm",
                    exposed=True,
                ),
                completion("c1"),
            ]
        )
        return await writer.record_feedback(thumbs("c1", "k"))

    assert asyncio.run(run()) == FeedbackResult(status="recorded", feedback_id=1)
    db = sqlite3.connect(tmp_path / "o.db")
    assert db.execute("SELECT unit_type, variant, reason FROM exposures").fetchall() == [
        ("user", "a", "arm")
    ]
    assert db.execute("SELECT value FROM feedback").fetchone()[0] == "up"


def test_a_vote_after_its_battle_is_recorded_with_the_reveal(tmp_path: Path) -> None:
    async def run() -> tuple[FeedbackResult, FeedbackResult]:
        writer = OutcomeWriter(str(tmp_path / "o.db"))
        await writer.record(
            [
                completion("ca"),
                completion("cb"),
                Battle(
                    ts=1.0,
                    battle_id="b1",
                    request_id="r1",
                    experiment="arena",
                    unit="u",
                    variant_a="llama",
                    variant_b="qwen",
                    completion_a="ca",
                    completion_b="cb",
                ),
            ]
        )
        vote = Feedback(ts=2.0, kind="vote", idempotency_key="k", battle_id="b1", value="b")
        return await writer.record_feedback(vote), await writer.record_feedback(vote)

    first, again = asyncio.run(run())
    assert first == FeedbackResult(
        status="recorded", feedback_id=1, reveal=("llama", "qwen"), experiment="arena"
    )
    assert again == FeedbackResult(
        status="replayed", feedback_id=1, reveal=("llama", "qwen"), experiment="arena"
    )


def test_concurrent_feedback_is_group_committed_in_order(tmp_path: Path) -> None:
    batches: list[int] = []

    async def run() -> list[FeedbackResult]:
        writer = OutcomeWriter(str(tmp_path / "o.db"))
        write = writer._store.write

        def counted(events):
            batches.append(len(events))
            return write(events)

        writer._store.write = counted  # type: ignore[method-assign]
        await writer.record([completion(f"c{i}") for i in range(200)])
        votes = [thumbs(f"c{i}", f"k{i}") for i in range(200)]
        votes.append(thumbs("missing", "k-missing"))
        return await asyncio.gather(*(writer.record_feedback(v) for v in votes))

    results = asyncio.run(run())
    # Written in the order they were queued: the i-th call got the i-th row.
    assert results[:-1] == [
        FeedbackResult(status="recorded", feedback_id=i + 1) for i in range(200)
    ]
    assert results[-1] == FeedbackResult(status="unknown_target", feedback_id=None)
    # Group commit: 401 events in a handful of transactions, not one each.
    assert sum(batches) == 401
    assert len(batches) <= 4, batches


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
                await writer.record_feedback(thumbs("c1", "k"))
            assert sqlite3.connect(path).execute("SELECT COUNT(*) FROM feedback").fetchone()[0] == 0
        finally:
            blocker.rollback()
        # The loop survived the failure, and the retry with the same key is a first write.
        assert (await writer.record_feedback(thumbs("c1", "k"))) == FeedbackResult(
            status="recorded", feedback_id=1
        )

    asyncio.run(run())


def test_a_full_disk_fails_feedback_and_keeps_every_other_event(tmp_path: Path) -> None:
    """SQLITE_FULL (a page cap stands in for the disk): feedback 503s, completions wait."""
    path = tmp_path / "o.db"

    async def run() -> None:
        writer = OutcomeWriter(str(path))
        writer.RETRY_S = (0.01, 0.05)
        await writer.record([completion("c0")])
        await writer.flush()
        db = writer._store._db
        [(pages,)] = db.execute("PRAGMA page_count").fetchall()
        db.execute(f"PRAGMA max_page_count={pages}")  # no room for one more page
        big = [completion(f"c{i}-" + "x" * 4000) for i in range(1, 40)]
        await writer.record(big)
        with pytest.raises(sqlite3.OperationalError, match="full"):
            await writer.record_feedback(thumbs("c0", "k"))
        await asyncio.sleep(0.2)  # retries, still full
        assert writer.pending >= len(big)
        db.execute("PRAGMA max_page_count=1073741823")  # space again
        await asyncio.wait_for(writer.flush(), 5)
        assert writer.pending == 0
        assert (await writer.record_feedback(thumbs("c0", "k"))) == FeedbackResult(
            status="recorded", feedback_id=1
        )

    asyncio.run(run())
    ids = [
        r[0]
        for r in sqlite3.connect(path).execute(
            "SELECT completion_id FROM completions ORDER BY rowid"
        )
    ]
    assert ids == ["c0", *(f"c{i}-" + "x" * 4000 for i in range(1, 40))]  # all of them, in order


async def locked_writer(path: Path) -> tuple[OutcomeWriter, sqlite3.Connection]:
    """A writer on a store another connection holds locked (roll that back to unlock)."""
    writer = OutcomeWriter(str(path))
    writer.RETRY_S = (0.01, 0.05)
    await writer.flush()
    writer._store._db.execute("PRAGMA busy_timeout=20")
    blocker = sqlite3.connect(path, timeout=0)
    blocker.execute("BEGIN EXCLUSIVE")
    return writer, blocker


def test_a_locked_store_delays_events_but_loses_none(tmp_path: Path) -> None:
    path = tmp_path / "o.db"

    async def run() -> None:
        writer, blocker = await locked_writer(path)
        await writer.record([completion(f"c{i}") for i in range(5)])
        await asyncio.sleep(0.3)
        assert writer.pending == 5
        blocker.rollback()
        await asyncio.wait_for(writer.flush(), 5)

    asyncio.run(run())
    assert sqlite3.connect(path).execute("SELECT COUNT(*) FROM completions").fetchone()[0] == 5


def test_a_graceful_stop_commits_what_is_queued(tmp_path: Path) -> None:
    """Ray Serve calls the deployment's `__del__` when it stops the replica gracefully."""
    from serve.outcome_log import OutcomeLog

    async def run() -> None:
        log = OutcomeLog.func_or_class(str(tmp_path / "o.db"))
        await log.record([completion(f"c{i}") for i in range(100)])
        await log.__del__()

    asyncio.run(run())
    db = sqlite3.connect(tmp_path / "o.db")
    assert db.execute("SELECT COUNT(*) FROM completions").fetchone()[0] == 100


def test_record_with_committed_returns_once_the_rows_are_in_the_store(tmp_path: Path) -> None:
    async def run() -> int:
        writer = OutcomeWriter(str(tmp_path / "o.db"))
        assert await writer.record([completion("c1"), completion("c2")], committed=True)
        db = sqlite3.connect(tmp_path / "o.db")  # another connection sees the commit
        return db.execute("SELECT COUNT(*) FROM completions").fetchone()[0]

    assert asyncio.run(run()) == 2


def test_record_with_committed_waits_only_so_long_for_a_locked_store(tmp_path: Path) -> None:
    path = tmp_path / "o.db"

    async def run() -> None:
        writer, blocker = await locked_writer(path)
        started = time.monotonic()
        assert not await writer.record([completion("c1")], committed=True, wait_s=0.2)
        assert time.monotonic() - started < 2 and writer.pending == 2  # the event and its mark
        blocker.rollback()
        await asyncio.wait_for(writer.flush(), 5)

    asyncio.run(run())
    assert sqlite3.connect(path).execute("SELECT COUNT(*) FROM completions").fetchone()[0] == 1


class FakeLog:
    """A stand-in for the outcome log's handle: `deliver.remote(...)` fails `failures` times,
    then takes `delay_s` and keeps what it got."""

    def __init__(self, failures: int = 0, delay_s: float = 0.0) -> None:
        self.failures, self.delay_s = failures, delay_s
        self.calls = 0
        self.received: list[list] = []
        self.deliver = self

    def remote(self, events: list, ticket: str | None = None) -> Any:
        self.calls += 1
        fails = self.calls <= self.failures

        async def answer() -> None:
            if fails:
                raise RuntimeError("ActorDiedError")
            await asyncio.sleep(self.delay_s)
            self.received.append(events)

        return answer()


def sender(log: FakeLog, **overrides: Any) -> OutcomeSender:
    outcomes = OutcomeSender(log)  # type: ignore[arg-type]
    outcomes.RETRY_S = (0.01, 0.02)
    for name, value in overrides.items():
        setattr(outcomes, name, value)
    return outcomes


def test_a_send_returns_once_committed_or_after_its_hold() -> None:
    async def run() -> None:
        log = FakeLog()
        outcomes = sender(log)
        await outcomes.send(["e"], "r1")
        assert log.received == [["e"]] and not outcomes.pending
        slow = FakeLog(delay_s=0.5)
        outcomes = sender(slow, HOLD_S=0.05)
        started = time.monotonic()
        await outcomes.send(["e"], "r2")
        assert time.monotonic() - started < 0.4 and slow.received == []  # the caller goes on
        await asyncio.wait(outcomes.pending, timeout=5)
        assert slow.received == [["e"]]  # and the delivery went on behind it

    asyncio.run(run())


def test_a_send_to_a_dead_log_is_retried_until_it_takes_it() -> None:
    async def run() -> None:
        log = FakeLog(failures=3)
        outcomes = sender(log)
        await outcomes.send(["e1", "e2"], "r1")  # the log comes back within HOLD_S
        assert log.received == [["e1", "e2"]] and log.calls == 4 and not outcomes.pending
        outcomes.later(["e3"], "r2")
        await asyncio.wait(outcomes.pending)
        assert log.received == [["e1", "e2"], ["e3"]]

    asyncio.run(run())


def test_past_its_hold_a_send_returns_and_retries_behind() -> None:
    async def run() -> None:
        log = FakeLog(failures=12)
        outcomes = sender(log, HOLD_S=0.03)
        await outcomes.send(["e"], "r1")
        assert log.received == [] and outcomes.pending
        await asyncio.wait(outcomes.pending, timeout=5)
        assert log.received == [["e"]]

    asyncio.run(run())


def test_a_send_gives_up_after_its_retry_window(caplog: pytest.LogCaptureFixture) -> None:
    async def run() -> None:
        outcomes = sender(FakeLog(failures=10**6), HOLD_S=0.03, RETRY_FOR_S=0.1)
        await outcomes.send(["e"], "r1")
        await asyncio.wait(outcomes.pending, timeout=5)
        assert not outcomes.pending

    asyncio.run(run())
    assert "outcome events of r1 lost" in caplog.text


class WriterHandle:
    """A log handle over real writers: `kill()` drops what the current one holds, as a log
    process killed with -9 would, and the next call reaches a fresh writer on the store."""

    def __init__(self, writer: OutcomeWriter, path: Path) -> None:
        self.writer, self.path = writer, path
        self.deliver = _Remote(self, "deliver")

    def kill(self) -> None:
        self.writer._task.cancel()  # type: ignore[union-attr]
        self.writer = OutcomeWriter(str(self.path))


class _Remote:
    def __init__(self, handle: WriterHandle, method: str) -> None:
        self.handle, self.method = handle, method

    def remote(self, *args: Any, **kwargs: Any) -> Any:
        return getattr(self.handle.writer, self.method)(*args, **kwargs)


def test_events_a_stalled_log_held_are_resent_when_it_dies(tmp_path: Path) -> None:
    """The log answers a send after its own short wait with the events still queued (the store
    was stalled); a log killed then lost them with its queue. The sender waits for their commit
    and sends them again to the log that replaces it."""
    path = tmp_path / "o.db"

    async def run() -> None:
        writer, blocker = await locked_writer(path)
        handle = WriterHandle(writer, path)
        outcomes = sender(handle, HOLD_S=0.05)  # type: ignore[arg-type]
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr("serve.outcome_log.COMMIT_WAIT_S", 0.1)
            await outcomes.send([completion("c1")], "r1")
            await asyncio.sleep(0.3)  # the log's wait ran out, the store still stalled
            handle.kill()
            blocker.rollback()
            await asyncio.wait(outcomes.pending, timeout=5)

    asyncio.run(run())
    assert sqlite3.connect(path).execute("SELECT COUNT(*) FROM completions").fetchone()[0] == 1


def test_feedback_queued_behind_a_full_carried_batch_fails_at_once(tmp_path: Path) -> None:
    """While the store cannot write, feedback never waits out the outage behind other events
    (the client retries it), and those events are all kept."""
    path = tmp_path / "o.db"

    async def run() -> None:
        writer, blocker = await locked_writer(path)
        writer._max_batch = 4
        await writer.record([completion(f"c{i}") for i in range(50)])
        await asyncio.sleep(0.1)  # the first batch failed and was carried
        with pytest.raises(sqlite3.OperationalError):
            await asyncio.wait_for(writer.record_feedback(thumbs("c1", "k")), 2)
        blocker.rollback()
        await asyncio.wait_for(writer.flush(), 5)

    asyncio.run(run())
    ids = [r[0] for r in sqlite3.connect(path).execute("SELECT completion_id FROM completions")]
    assert sorted(ids) == sorted(f"c{i}" for i in range(50))


def test_the_store_failing_during_the_one_by_one_pass_loses_nothing(tmp_path: Path) -> None:
    path = tmp_path / "o.db"

    async def run() -> bool:
        writer = OutcomeWriter(str(path))
        writer.RETRY_S = (0.01, 0.05)
        real, calls = writer._store.write, []

        def write(events: list) -> list:
            calls.append(len(events))
            if len(calls) == 1:  # a bad event in the batch: one by one then
                raise sqlite3.IntegrityError("NOT NULL constraint failed")
            if len(calls) in (2, 3):  # and the disk fills meanwhile
                raise sqlite3.OperationalError("database or disk is full")
            return real(events)

        writer._store.write = write  # type: ignore[method-assign]
        return await writer.record([completion(f"c{i}") for i in range(3)], committed=True)

    assert asyncio.run(run())
    assert sqlite3.connect(path).execute("SELECT COUNT(*) FROM completions").fetchone()[0] == 3


def test_beyond_max_pending_the_oldest_events_go_but_no_flush_is_lost(tmp_path: Path) -> None:
    path = tmp_path / "o.db"

    async def run() -> None:
        writer, blocker = await locked_writer(path)
        writer._max_pending = 10
        await writer.record([completion(f"c{i}") for i in range(30)])
        waiting = asyncio.ensure_future(writer.flush())
        await asyncio.sleep(0.2)
        assert writer.pending <= 11  # ten events and the flush's mark
        blocker.rollback()
        await asyncio.wait_for(waiting, 5)

    asyncio.run(run())
    ids = {r[0] for r in sqlite3.connect(path).execute("SELECT completion_id FROM completions")}
    assert ids == {f"c{i}" for i in range(20, 30)}


def test_an_event_the_store_cannot_take_is_refused_alone(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A lone surrogate in a unit id reached SQLite, failed its whole batch, and sent the log
    into one-by-one commits: refused where it is queued, the others commit in one batch."""
    path = tmp_path / "o.db"
    writes: list[int] = []

    async def run() -> None:
        writer = OutcomeWriter(str(path))
        original = writer._store.write
        writer._store.write = lambda events: (writes.append(len(events)), original(events))[1]
        bad = replace(completion("c-bad"), unit="alice\ud800")
        assert await writer.record([completion("c1"), bad, completion("c2")], committed=True)
        await writer.flush()

    with caplog.at_level("ERROR"):
        asyncio.run(run())
    rows = sqlite3.connect(path).execute("SELECT completion_id FROM completions").fetchall()
    assert sorted(r[0] for r in rows) == ["c1", "c2"]
    assert writes[0] == 2 and "one by one" not in caplog.text
    assert "not valid Unicode" in caplog.text


def test_events_a_stalled_log_holds_are_waited_for_not_sent_again(tmp_path: Path) -> None:
    path = tmp_path / "o.db"

    async def run() -> list[int]:
        writer, blocker = await locked_writer(path)
        sizes: list[int] = []
        real = writer.record

        async def record(events: list, **kwargs: Any) -> bool:
            sizes.append(len(events))
            return await real(events, **kwargs)

        writer.record = record  # type: ignore[method-assign]
        outcomes = sender(WriterHandle(writer, path), HOLD_S=0.05)  # type: ignore[arg-type]
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr("serve.outcome_log.COMMIT_WAIT_S", 0.1)
            await outcomes.send([completion("c1"), completion("c2")], "r1")
            await asyncio.sleep(0.35)
            blocker.rollback()
            await asyncio.wait(outcomes.pending, timeout=5)
        return sizes

    sizes = asyncio.run(run())
    assert sizes[0] == 2 and len(sizes) >= 3 and set(sizes[1:]) == {0}  # later calls only wait
    assert sqlite3.connect(path).execute("SELECT COUNT(*) FROM completions").fetchone()[0] == 2
