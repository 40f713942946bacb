"""The outcome store: SQLite in WAL mode, written by exactly one writer.

`OutcomeStore.write` applies a batch of events in order inside one transaction, so a feedback row
that refers to a completion earlier in the same batch (or any earlier batch) finds it. The store is
synchronous and not thread-safe by design: the serving layer owns one store per process and calls
it from one thread. `synchronous=FULL` makes a committed batch survive a crash of the process and
of the machine, which is what lets the gateway acknowledge feedback only after `write` returns.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import astuple, fields
from pathlib import Path

from router.events import Completion, Event, Exposure, Feedback, FeedbackResult

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS exposures (
    id INTEGER PRIMARY KEY,
    ts REAL NOT NULL,
    request_id TEXT NOT NULL,
    experiment TEXT NOT NULL,
    variant TEXT NOT NULL,
    unit TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS exposures_by_experiment ON exposures (experiment, unit);
CREATE TABLE IF NOT EXISTS completions (
    completion_id TEXT PRIMARY KEY,
    ts REAL NOT NULL,
    request_id TEXT NOT NULL,
    experiment TEXT,
    variant TEXT,
    unit TEXT,
    endpoint TEXT NOT NULL,
    stream INTEGER NOT NULL,
    status INTEGER NOT NULL,
    ttft_s REAL,
    latency_s REAL NOT NULL,
    prompt_tokens INTEGER,
    completion_tokens INTEGER,
    error TEXT
);
CREATE INDEX IF NOT EXISTS completions_by_experiment ON completions (experiment, variant);
CREATE TABLE IF NOT EXISTS feedback (
    id INTEGER PRIMARY KEY,
    ts REAL NOT NULL,
    completion_id TEXT NOT NULL REFERENCES completions (completion_id),
    kind TEXT NOT NULL,
    value TEXT NOT NULL,
    idempotency_key TEXT UNIQUE
);
CREATE INDEX IF NOT EXISTS feedback_by_completion ON feedback (completion_id);
"""


def _insert_sql(table: str, cls: type) -> str:
    names = [f.name for f in fields(cls)]
    return f"INSERT INTO {table} ({', '.join(names)}) VALUES ({', '.join('?' * len(names))})"


_INSERT_EXPOSURE = _insert_sql("exposures", Exposure)
_INSERT_COMPLETION = _insert_sql("completions", Completion).replace(
    "INSERT", "INSERT OR REPLACE", 1
)
_INSERT_FEEDBACK = _insert_sql("feedback", Feedback)


class OutcomeStore:
    """One SQLite database file of exposures, completions and feedback."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # The writer thread of the serving layer is not the thread that opened the store.
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA busy_timeout=5000")
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version not in (0, SCHEMA_VERSION):
            raise RuntimeError(f"{self.path}: schema version {version}, expected {SCHEMA_VERSION}")
        self._db.executescript(_SCHEMA)
        self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    def close(self) -> None:
        self._db.close()

    def write(self, events: Sequence[Event]) -> list[FeedbackResult | None]:
        """Apply `events` in order, in one transaction; one result each (None unless feedback)."""
        results: list[FeedbackResult | None] = []
        self._db.execute("BEGIN IMMEDIATE")
        try:
            for event in events:
                results.append(self._apply(event))
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        return results

    def _apply(self, event: Event) -> FeedbackResult | None:
        if isinstance(event, Exposure):
            self._db.execute(_INSERT_EXPOSURE, astuple(event))
            return None
        if isinstance(event, Completion):
            self._db.execute(_INSERT_COMPLETION, astuple(event))
            return None
        return self._apply_feedback(event)

    def _apply_feedback(self, feedback: Feedback) -> FeedbackResult:
        if feedback.idempotency_key is not None:
            row = self._db.execute(
                "SELECT id FROM feedback WHERE idempotency_key = ?", (feedback.idempotency_key,)
            ).fetchone()
            if row is not None:
                return FeedbackResult("replayed", row[0])
        known = self._db.execute(
            "SELECT 1 FROM completions WHERE completion_id = ?", (feedback.completion_id,)
        ).fetchone()
        if known is None:
            return FeedbackResult("unknown_completion", None)
        cursor = self._db.execute(_INSERT_FEEDBACK, astuple(feedback))
        return FeedbackResult("recorded", cursor.lastrowid)

    # Reads: used by tests and, later, by the analysis. They see only committed batches.

    def rows(self, table: str, where: str = "", params: Iterable[object] = ()) -> list[dict]:
        if table not in ("exposures", "completions", "feedback"):
            raise ValueError(f"unknown table {table!r}")
        cursor = self._db.execute(f"SELECT * FROM {table} {where}", tuple(params))
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

    def count(self, table: str) -> int:
        if table not in ("exposures", "completions", "feedback"):
            raise ValueError(f"unknown table {table!r}")
        return self._db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
