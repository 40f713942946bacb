"""The outcome store: ordered batches, feedback checked against completions, replays, durability."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from router.events import Completion, Exposure, Feedback, FeedbackResult
from router.store import OutcomeStore


def completion(cid: str, variant: str = "a", status: int = 200) -> Completion:
    return Completion(
        ts=1.0,
        completion_id=cid,
        request_id=f"req-{cid}",
        experiment="exp",
        variant=variant,
        unit="alice",
        endpoint="chat",
        stream=False,
        status=status,
        ttft_s=0.1,
        latency_s=0.2,
        prompt_tokens=10,
        completion_tokens=5,
    )


@pytest.fixture
def store(tmp_path: Path) -> OutcomeStore:
    s = OutcomeStore(tmp_path / "data" / "outcomes.db")
    yield s
    s.close()


def test_wal_mode_and_schema(store: OutcomeStore) -> None:
    db = sqlite3.connect(store.path)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"exposures", "completions", "feedback"} <= tables


def test_feedback_finds_a_completion_from_the_same_batch(store: OutcomeStore) -> None:
    results = store.write(
        [
            Exposure(1.0, "req-1", "exp", "a", "alice"),
            completion("c1"),
            Feedback(2.0, "c1", "thumbs", "up", "k1"),
        ]
    )
    assert results[:2] == [None, None]
    assert results[2] == FeedbackResult("recorded", 1)
    [row] = store.rows("feedback")
    assert (row["completion_id"], row["kind"], row["value"]) == ("c1", "thumbs", "up")
    assert store.rows("completions")[0]["prompt_tokens"] == 10


def test_unknown_completion_is_refused_and_not_written(store: OutcomeStore) -> None:
    assert store.write([Feedback(1.0, "nope", "thumbs", "down")]) == [
        FeedbackResult("unknown_completion", None)
    ]
    assert store.count("feedback") == 0


def test_replayed_idempotency_key_returns_the_first_row(store: OutcomeStore) -> None:
    store.write([completion("c1")])
    first = store.write([Feedback(1.0, "c1", "thumbs", "up", "key")])[0]
    again = store.write([Feedback(2.0, "c1", "thumbs", "down", "key")])[0]
    assert first == FeedbackResult("recorded", 1)
    assert again == FeedbackResult("replayed", 1)
    assert [r["value"] for r in store.rows("feedback")] == ["up"]


def test_feedback_without_key_is_recorded_each_time(store: OutcomeStore) -> None:
    store.write([completion("c1")])
    store.write([Feedback(1.0, "c1", "thumbs", "up"), Feedback(1.0, "c1", "thumbs", "up")])
    assert store.count("feedback") == 2


def test_a_failed_batch_writes_nothing(store: OutcomeStore) -> None:
    bad = Exposure(1.0, "req", "exp", "a", None)  # type: ignore[arg-type]  # NOT NULL violated
    with pytest.raises(sqlite3.IntegrityError):
        store.write([completion("c1"), bad])
    assert store.count("completions") == 0


def test_reopening_keeps_rows(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    first = OutcomeStore(path)
    first.write([completion("c1"), Feedback(1.0, "c1", "thumbs", "up", "k")])
    first.close()
    again = OutcomeStore(path)
    assert again.count("feedback") == 1
    assert again.write([Feedback(1.0, "c1", "thumbs", "up", "k")])[0].status == "replayed"


def test_committed_rows_survive_kill_9(tmp_path: Path) -> None:
    """A writer killed right after `write` returns loses nothing it acknowledged."""
    path = tmp_path / "o.db"
    code = (
        "import os, sys\n"
        "from router.store import OutcomeStore\n"
        "from router.events import Completion, Feedback\n"
        "s = OutcomeStore(sys.argv[1])\n"
        "for i in range(50):\n"
        "    c = Completion(1.0, f'c{i}', 'r', 'e', 'a', 'u', 'chat', False, 200, None, 0.1, 1,\n"
        "                   1)\n"
        "    s.write([c,\n"
        "             Feedback(1.0, f'c{i}', 'thumbs', 'up', f'k{i}')])\n"
        "print('acked', flush=True)\n"
        "os.kill(os.getpid(), 9)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True)
    assert proc.returncode == -9 and "acked" in proc.stdout
    assert OutcomeStore(path).count("feedback") == 50
