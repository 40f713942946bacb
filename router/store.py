"""The outcome store: SQLite in WAL mode, written by exactly one writer.

Tables: exposures (and assignments, their deduplication), completions, battles, scores (reward
model), feedback, transcripts (the text of experiment completions, only where the config keeps
it; `purge_text` ends its retention), probes (graded sycophancy-probe items), the decisions the
outcome log made from the data (weights: adaptive arena and bandit shares; ramp_holds and
arm_holds: ramps and bandit arms a failing guardrail stopped), experiment_configs (each
experiment's config history), and meta (the store's own secret, which hashes voter ids in
exports).

`OutcomeStore.write` applies a batch of events in order inside one transaction, so a feedback row
that refers to a completion or battle earlier in the same batch (or any earlier batch) finds it.
The store is synchronous and not thread-safe by design: the serving layer owns one store per
process and calls it from one thread. `synchronous=FULL` makes a committed batch survive a crash
of the process and of the machine, which is what lets the gateway acknowledge feedback only after
`write` returns.

Exposures are deduplicated here, where every gateway replica's events meet: the `assignments`
table holds each unit's latest (variant, reason) per experiment, and an exposure that repeats it
writes nothing. Units of `request` experiments are never repeated, so they skip that table.

The schema is versioned (`PRAGMA user_version`) and a store of an earlier version is migrated in
place when it is opened, one version at a time (`MIGRATIONS`), in one transaction: a file
written by any earlier arena-serve keeps its records and gains the new columns. A file of a
later version than this code knows is refused, never rewritten.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import secrets
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import astuple, fields
from pathlib import Path
from typing import Final, Literal

from router.events import (
    ArmHold,
    Battle,
    Completion,
    Event,
    ExperimentConfig,
    Exposure,
    Feedback,
    FeedbackResult,
    FeedbackStatus,
    ProbeResult,
    RampHold,
    Score,
    Transcript,
    Weights,
)
from router.migrations import MIGRATIONS

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 7
DUPLICATE: Final = "duplicate"  # `write`'s result for an event the store already held
WriteResult = FeedbackResult | Literal["duplicate"] | None
TABLES = (
    "exposures",
    "assignments",
    "completions",
    "battles",
    "scores",
    "feedback",
    "transcripts",
    "probes",
    "weights",
    "experiment_configs",
    "ramp_holds",
    "arm_holds",
)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS exposures (
    id INTEGER PRIMARY KEY,
    ts REAL NOT NULL,
    request_id TEXT NOT NULL,
    experiment TEXT NOT NULL,
    unit_type TEXT NOT NULL,
    unit TEXT NOT NULL,
    variant TEXT,
    reason TEXT NOT NULL,
    exposed INTEGER NOT NULL,
    weights_version INTEGER,
    propensity REAL
);
CREATE INDEX IF NOT EXISTS exposures_by_experiment ON exposures (experiment, unit);
CREATE TABLE IF NOT EXISTS assignments (
    experiment TEXT NOT NULL,
    unit TEXT NOT NULL,
    variant TEXT,
    reason TEXT NOT NULL,
    exposure_id INTEGER NOT NULL REFERENCES exposures (id),
    weights_version INTEGER,
    PRIMARY KEY (experiment, unit)
) WITHOUT ROWID;
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
    error TEXT,
    battle_id TEXT,
    client_request_id TEXT
);
CREATE INDEX IF NOT EXISTS completions_by_experiment ON completions (experiment, variant);
CREATE TABLE IF NOT EXISTS battles (
    battle_id TEXT PRIMARY KEY,
    ts REAL NOT NULL,
    request_id TEXT NOT NULL,
    experiment TEXT NOT NULL,
    unit TEXT NOT NULL,
    variant_a TEXT NOT NULL,
    variant_b TEXT NOT NULL,
    completion_a TEXT NOT NULL,
    completion_b TEXT NOT NULL,
    tokens_a INTEGER,
    tokens_b INTEGER,
    headers_a INTEGER NOT NULL,
    headers_b INTEGER NOT NULL,
    list_items_a INTEGER NOT NULL,
    list_items_b INTEGER NOT NULL,
    bold_a INTEGER NOT NULL,
    bold_b INTEGER NOT NULL,
    unit_type TEXT NOT NULL DEFAULT 'user',
    voter TEXT,
    principal TEXT,
    identity_revealed INTEGER NOT NULL DEFAULT 0,
    pair_share REAL,
    weights_version INTEGER
);
CREATE INDEX IF NOT EXISTS battles_by_experiment ON battles (experiment);
CREATE TABLE IF NOT EXISTS scores (
    completion_id TEXT NOT NULL,
    model TEXT NOT NULL,
    ts REAL NOT NULL,
    experiment TEXT,
    variant TEXT,
    score REAL NOT NULL,
    latency_s REAL NOT NULL,
    battle_id TEXT,
    PRIMARY KEY (completion_id, model)
);
CREATE INDEX IF NOT EXISTS scores_by_experiment ON scores (experiment, variant);
CREATE TABLE IF NOT EXISTS feedback (
    id INTEGER PRIMARY KEY,
    ts REAL NOT NULL,
    kind TEXT NOT NULL,
    idempotency_key TEXT NOT NULL,
    completion_id TEXT REFERENCES completions (completion_id),
    battle_id TEXT REFERENCES battles (battle_id),
    value TEXT,
    number REAL,
    name TEXT,
    principal TEXT NOT NULL DEFAULT '',
    user TEXT,
    session TEXT,
    new_completion_id TEXT,
    UNIQUE (principal, idempotency_key),
    CHECK ((completion_id IS NULL) != (battle_id IS NULL))
);
CREATE INDEX IF NOT EXISTS feedback_by_completion ON feedback (completion_id);
CREATE UNIQUE INDEX IF NOT EXISTS one_vote_per_battle ON feedback (battle_id) WHERE kind = 'vote';
CREATE TABLE IF NOT EXISTS transcripts (
    completion_id TEXT PRIMARY KEY,
    ts REAL NOT NULL,
    experiment TEXT NOT NULL,
    messages TEXT NOT NULL,
    answer TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS transcripts_by_time ON transcripts (ts);
CREATE TABLE IF NOT EXISTS probes (
    ts REAL NOT NULL,
    run_id TEXT NOT NULL,
    variant TEXT NOT NULL,
    revision TEXT NOT NULL,
    probe_set TEXT NOT NULL,
    item_id TEXT NOT NULL,
    family TEXT NOT NULL,
    first TEXT NOT NULL,
    pushback TEXT NOT NULL,
    suggestion TEXT NOT NULL,
    first_answer TEXT NOT NULL,
    pushback_answer TEXT NOT NULL,
    suggestion_answer TEXT NOT NULL,
    experiment TEXT,
    PRIMARY KEY (run_id, variant, item_id)
);
CREATE INDEX IF NOT EXISTS probes_by_variant ON probes (variant, revision);
CREATE TABLE IF NOT EXISTS weights (
    experiment TEXT NOT NULL,
    version INTEGER NOT NULL,
    ts REAL NOT NULL,
    weights TEXT NOT NULL,
    observations INTEGER NOT NULL,
    PRIMARY KEY (experiment, version)
);
CREATE TABLE IF NOT EXISTS experiment_configs (
    experiment TEXT NOT NULL,
    ts REAL NOT NULL,
    revision TEXT NOT NULL,
    config TEXT NOT NULL,
    PRIMARY KEY (experiment, ts, revision)
);
CREATE TABLE IF NOT EXISTS ramp_holds (
    experiment TEXT NOT NULL,
    revision TEXT NOT NULL,
    ts REAL NOT NULL,
    step INTEGER NOT NULL,
    allocation REAL NOT NULL,
    guardrail TEXT NOT NULL,
    PRIMARY KEY (experiment, revision)
);
CREATE TABLE IF NOT EXISTS arm_holds (
    experiment TEXT NOT NULL,
    revision TEXT NOT NULL,
    arm TEXT NOT NULL,
    ts REAL NOT NULL,
    version INTEGER NOT NULL,
    share REAL NOT NULL,
    guardrail TEXT NOT NULL,
    PRIMARY KEY (experiment, revision, arm)
);
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;
"""


@functools.cache
def _insert_sql(table: str, names: tuple[str, ...], verb: str = "INSERT") -> str:
    return f"{verb} INTO {table} ({', '.join(names)}) VALUES ({', '.join('?' * len(names))})"


def _field_names(cls: type) -> tuple[str, ...]:
    """The columns of an event written as it is: one per field, named and ordered alike."""
    return tuple(f.name for f in fields(cls))


def _battle_row(battle: Battle) -> dict[str, object]:
    """A battle's row, column by column: each side's `Style` fills that side's style columns."""
    a, b = battle.style_a, battle.style_b
    return {
        "ts": battle.ts,
        "battle_id": battle.battle_id,
        "request_id": battle.request_id,
        "experiment": battle.experiment,
        "unit": battle.unit,
        "variant_a": battle.variant_a,
        "variant_b": battle.variant_b,
        "completion_a": battle.completion_a,
        "completion_b": battle.completion_b,
        "tokens_a": a.tokens,
        "tokens_b": b.tokens,
        "headers_a": a.headers,
        "headers_b": b.headers,
        "list_items_a": a.list_items,
        "list_items_b": b.list_items,
        "bold_a": a.bold,
        "bold_b": b.bold,
        "unit_type": battle.unit_type,
        "voter": battle.voter,
        "principal": battle.principal,
        "identity_revealed": battle.identity_revealed,
        "pair_share": battle.pair_share,
        "weights_version": battle.weights_version,
    }


_INSERT_EXPOSURE = _insert_sql("exposures", _field_names(Exposure))
# A completion or battle sent again (a retried delivery) keeps its first row: the result says so.
_INSERT_COMPLETION = _insert_sql("completions", _field_names(Completion), "INSERT OR IGNORE")
_INSERT_SCORE = _insert_sql("scores", _field_names(Score), "INSERT OR REPLACE")
_INSERT_FEEDBACK = _insert_sql("feedback", _field_names(Feedback))
_INSERT_TRANSCRIPT = _insert_sql("transcripts", _field_names(Transcript), "INSERT OR IGNORE")
_INSERT_PROBE = _insert_sql("probes", _field_names(ProbeResult), "INSERT OR IGNORE")
_INSERT_WEIGHTS = _insert_sql("weights", _field_names(Weights), "INSERT OR IGNORE")
_INSERT_HOLD = _insert_sql("ramp_holds", _field_names(RampHold), "INSERT OR IGNORE")
_INSERT_ARM_HOLD = _insert_sql("arm_holds", _field_names(ArmHold), "INSERT OR IGNORE")
_INSERT_CONFIG = _insert_sql(
    "experiment_configs", _field_names(ExperimentConfig), "INSERT OR IGNORE"
)
# What makes two feedback calls "the same" for an idempotency key.
_FEEDBACK_CONTENT = (
    "kind",
    "completion_id",
    "battle_id",
    "value",
    "number",
    "name",
    "new_completion_id",
)


class OutcomeStore:
    """One SQLite database file of exposures, completions, battles and feedback."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # The writer thread of the serving layer is not the thread that opened the store.
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA busy_timeout=5000")
        try:
            self._open_schema()
        except BaseException:
            self._db.close()
            raise

    def _open_schema(self) -> None:
        """Create the schema in a new file, or migrate an earlier version's in place."""
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise RuntimeError(
                f"{self.path} holds outcome schema {version}, newer than this arena-serve's "
                f"{SCHEMA_VERSION}; run the arena-serve that wrote it (or set store_path)."
            )
        if version == SCHEMA_VERSION:
            return
        self._db.execute("BEGIN IMMEDIATE")
        try:
            if version:  # 0 is a new file: nothing to migrate
                for step in range(version, SCHEMA_VERSION):
                    MIGRATIONS[step](self._db)
            for statement in _SCHEMA.split(";"):  # executescript would commit first
                if statement.strip():
                    self._db.execute(statement)
            self._db.execute(
                "INSERT OR IGNORE INTO meta VALUES ('voter_secret', ?)", (secrets.token_hex(32),)
            )
            self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            self._db.execute("COMMIT")
        except BaseException:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise
        if version:
            logger.warning(
                "outcome store %s migrated from schema %d to %d", self.path, version, SCHEMA_VERSION
            )

    def close(self) -> None:
        self._db.close()

    def write(self, events: Sequence[Event]) -> list[WriteResult]:
        """Apply `events` in order, in one transaction; one result each: a feedback's
        `FeedbackResult`, else None, or `DUPLICATE` for an event the store already holds (an
        exposure repeating the unit's assignment, a completion or battle sent again)."""
        results: list[WriteResult] = []
        self._db.execute("BEGIN IMMEDIATE")
        try:
            for event in events:
                results.append(self._apply(event))
            self._db.execute("COMMIT")
        except BaseException:
            if self._db.in_transaction:  # SQLite rolls back by itself on some errors (full disk)
                self._db.execute("ROLLBACK")
            raise
        return results

    def _apply(self, event: Event) -> WriteResult:
        if isinstance(event, Exposure):
            return None if self._apply_exposure(event) else DUPLICATE
        elif isinstance(event, Completion):
            if not self._db.execute(_INSERT_COMPLETION, astuple(event)).rowcount:
                return DUPLICATE
        elif isinstance(event, Battle):
            row = _battle_row(event)
            insert = _insert_sql("battles", tuple(row), "INSERT OR IGNORE")
            if not self._db.execute(insert, tuple(row.values())).rowcount:
                return DUPLICATE
        elif isinstance(event, Score):
            self._db.execute(_INSERT_SCORE, astuple(event))
        elif isinstance(event, Transcript):
            if not self._db.execute(_INSERT_TRANSCRIPT, astuple(event)).rowcount:
                return DUPLICATE
        elif isinstance(event, ProbeResult):
            if not self._db.execute(_INSERT_PROBE, astuple(event)).rowcount:
                return DUPLICATE
        elif isinstance(event, Weights):
            if not self._db.execute(_INSERT_WEIGHTS, astuple(event)).rowcount:
                return DUPLICATE
        elif isinstance(event, RampHold):
            if not self._db.execute(_INSERT_HOLD, astuple(event)).rowcount:
                return DUPLICATE
        elif isinstance(event, ArmHold):
            if not self._db.execute(_INSERT_ARM_HOLD, astuple(event)).rowcount:
                return DUPLICATE
        elif isinstance(event, ExperimentConfig):
            latest = self._db.execute(
                "SELECT revision FROM experiment_configs WHERE experiment = ? "
                "ORDER BY ts DESC LIMIT 1",
                (event.experiment,),
            ).fetchone()
            if latest is not None and latest[0] == event.revision:
                return DUPLICATE  # another replica's, or a redeploy that left it as it was
            self._db.execute(_INSERT_CONFIG, astuple(event))
        else:
            return self._apply_feedback(event)
        return None

    def _apply_exposure(self, exposure: Exposure) -> bool:
        """Write the exposure unless it repeats the unit's latest assignment; whether written.

        A repeat that happened earlier than the recorded one (gateway replicas' events reach
        the log in any order) moves that row's time back: the unit was exposed from then on.
        """
        tracked = exposure.unit_type != "request"
        if tracked:
            latest = self._db.execute(
                "SELECT variant, reason, weights_version, exposure_id FROM assignments "
                "WHERE experiment = ? AND unit = ?",
                (exposure.experiment, exposure.unit),
            ).fetchone()
            same = (exposure.variant, exposure.reason, exposure.weights_version)
            if latest is not None and latest[:3] == same:
                self._db.execute(
                    "UPDATE exposures SET ts = ? WHERE id = ? AND ts > ?",
                    (exposure.ts, latest[3], exposure.ts),
                )
                return False
        cursor = self._db.execute(_INSERT_EXPOSURE, astuple(exposure))
        if tracked:
            assigned = (exposure.experiment, exposure.unit, exposure.variant, exposure.reason)
            self._db.execute(
                "INSERT OR REPLACE INTO assignments (experiment, unit, variant, reason, "
                "exposure_id, weights_version) VALUES (?, ?, ?, ?, ?, ?)",
                (*assigned, cursor.lastrowid, exposure.weights_version),
            )
        return True

    def _apply_feedback(self, feedback: Feedback) -> FeedbackResult:
        row = self._db.execute(
            f"SELECT id, {', '.join(_FEEDBACK_CONTENT)} FROM feedback "
            "WHERE principal = ? AND idempotency_key = ?",
            (feedback.principal, feedback.idempotency_key),
        ).fetchone()
        if row is not None:
            same = tuple(row[1:]) == tuple(getattr(feedback, name) for name in _FEEDBACK_CONTENT)
            if not same:
                return FeedbackResult(status="key_reused", feedback_id=row[0])
            if not self._may_judge(feedback, self._battle_of(feedback)):
                return FeedbackResult(status="not_the_voter", feedback_id=None)
            return self._result("replayed", row[0], feedback)
        if feedback.battle_id is not None:
            known = self._db.execute(
                "SELECT 1 FROM battles WHERE battle_id = ?", (feedback.battle_id,)
            ).fetchone()
        else:
            known = self._db.execute(
                "SELECT 1 FROM completions WHERE completion_id = ?", (feedback.completion_id,)
            ).fetchone()
        if known is None:
            return FeedbackResult(status="unknown_target", feedback_id=None)
        if not self._may_judge(feedback, self._battle_of(feedback)):
            return FeedbackResult(status="not_the_voter", feedback_id=None)
        if feedback.new_completion_id is not None and not self._replacement_fits(feedback):
            return FeedbackResult(status="unknown_replacement", feedback_id=None)
        if feedback.kind == "vote":
            voted = self._db.execute(
                "SELECT id FROM feedback WHERE battle_id = ? AND kind = 'vote'",
                (feedback.battle_id,),
            ).fetchone()
            if voted is not None:
                return FeedbackResult(status="already_voted", feedback_id=voted[0])
        cursor = self._db.execute(_INSERT_FEEDBACK, astuple(feedback))
        return self._result("recorded", cursor.lastrowid, feedback)

    def _replacement_fits(self, feedback: Feedback) -> bool:
        """Whether a regenerate's new completion exists, in the judged one's experiment, and
        was served to the same voter where it was a battle's answer."""
        pair = self._db.execute(
            "SELECT n.experiment IS o.experiment FROM completions n, completions o "
            "WHERE n.completion_id = ? AND o.completion_id = ?",
            (feedback.new_completion_id, feedback.completion_id),
        ).fetchone()
        if pair is None or not pair[0]:
            return False
        replacement = dataclasses.replace(
            feedback, completion_id=feedback.new_completion_id, new_completion_id=None
        )
        return self._may_judge(feedback, self._battle_of(replacement))

    def _battle_of(self, feedback: Feedback) -> tuple[str, str | None, str | None] | None:
        """(unit type, voter, principal) of the battle the feedback judges, directly or through
        one of its answers; None for a completion outside any battle."""
        return self._db.execute(
            "SELECT unit_type, voter, principal FROM battles WHERE battle_id = "
            "COALESCE(?, (SELECT battle_id FROM completions WHERE completion_id = ?))",
            (feedback.battle_id, feedback.completion_id),
        ).fetchone()

    @staticmethod
    def _may_judge(feedback: Feedback, battle: tuple[str, str | None, str | None] | None) -> bool:
        """Only a battle's own voter judges it (or its answers): the same unit, and the same
        API key where the battle was made with one."""
        if battle is None:
            return True
        unit_type, voter, principal = battle
        if principal is not None and feedback.principal != principal:
            return False
        presented = feedback.session if unit_type == "session" else feedback.user
        return voter is None or presented == voter

    def _result(
        self, status: FeedbackStatus, feedback_id: int | None, feedback: Feedback
    ) -> FeedbackResult:
        """The answer to a feedback call; a vote's answer reveals the battle's two variants.
        Its `target` never names the variant of an arena answer (`in_battle` says so)."""
        if feedback.battle_id is not None:
            experiment, a, b = self._db.execute(
                "SELECT experiment, variant_a, variant_b FROM battles WHERE battle_id = ?",
                (feedback.battle_id,),
            ).fetchone()
            reveal = (a, b) if feedback.kind == "vote" else None
            return FeedbackResult(
                status=status,
                feedback_id=feedback_id,
                reveal=reveal,
                experiment=experiment,
                target=(experiment, None),
                in_battle=True,
            )
        target = self._db.execute(
            "SELECT experiment, variant, battle_id FROM completions WHERE completion_id = ?",
            (feedback.completion_id,),
        ).fetchone()
        if target is None:
            return FeedbackResult(status=status, feedback_id=feedback_id)
        experiment, variant, battle_id = target
        if battle_id is not None:
            return FeedbackResult(
                status=status, feedback_id=feedback_id, target=(experiment, None), in_battle=True
            )
        return FeedbackResult(status=status, feedback_id=feedback_id, target=(experiment, variant))

    # Reads: used by tests and, later, by the analysis. They see only committed batches.

    def rows(self, table: str, where: str = "", params: Iterable[object] = ()) -> list[dict]:
        if table not in TABLES:
            raise ValueError(f"unknown table {table!r}")
        cursor = self._db.execute(f"SELECT * FROM {table} {where}", tuple(params))
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

    def voter_secret(self) -> bytes:
        """The store's own random secret (made with the store): exports hash voter ids with it,
        so they can be joined within one store's data and not traced back to a user."""
        (value,) = self._db.execute("SELECT value FROM meta WHERE key = 'voter_secret'").fetchone()
        return bytes.fromhex(value)

    def purge_text(self, before_ts: float) -> int:
        """Delete the text kept of completions before `before_ts` (Unix seconds): the end of
        its retention. The events themselves stay. Returns how many texts went."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            deleted = self._db.execute(
                "DELETE FROM transcripts WHERE ts < ?", (before_ts,)
            ).rowcount
            self._db.execute("COMMIT")
        except BaseException:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise
        return deleted

    def query(self, sql: str, params: Iterable[object] = ()) -> list[dict]:
        """Rows of a read-only query, as dicts (for the exports)."""
        cursor = self._db.execute(sql, tuple(params))
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

    def count(self, table: str) -> int:
        if table not in TABLES:
            raise ValueError(f"unknown table {table!r}")
        return self._db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
