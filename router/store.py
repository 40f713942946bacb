"""The outcome store: a SQLite file in WAL mode (one machine, one writer), or a PostgreSQL
database (a cluster, where more than one outcome log replica writes).

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

PostgreSQL holds the same tables (the schema below with PostgreSQL's types, `_pg_schema`) and
runs the same statements (`router.db`). Its version is the `meta` row `schema_version`;
PostgreSQL stores begin at version 8 and take later migrations from `PG_MIGRATIONS`. Every write
transaction first takes one advisory lock, so replicas writing at once apply their batches one
after another, exactly as one SQLite writer would: an exposure is deduplicated, a feedback
key replayed and a battle's one vote kept across replicas, with the unique constraints behind
them. `counters` holds the totals of `/metrics`, added to in the transaction of the batch they
count (`write`'s `counts`), so they are exact however many replicas write.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import re
import secrets
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import astuple, fields
from pathlib import Path
from typing import Any, Final, Literal

from router.db import Connection, PgConnection, connect, is_postgres, redact, store_errors
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
from router.migrations import MIGRATIONS, PG_MIGRATIONS

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 8
PG_FIRST_VERSION = 8  # the first schema a PostgreSQL store was made with
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
    "counters",
)
# The tables of events, each row stamped with its time (`purge_events`).
_EVENT_TABLES = ("exposures", "completions", "battles", "scores", "feedback", "transcripts")
# One advisory lock serializes PostgreSQL writers (any 64-bit key no other app uses: "arenaSrv").
_WRITER_LOCK = int.from_bytes(b"arenaSrv", "big")

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
    "user" TEXT,
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
CREATE TABLE IF NOT EXISTS counters (
    series TEXT PRIMARY KEY,
    value REAL NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;
"""


def _pg_schema(sqlite_schema: str) -> str:
    """The schema in PostgreSQL's types: 64-bit integers and floats, an identity for each
    integer primary key. References are left out, as SQLite never enforced them either."""
    out = sqlite_schema.replace(" WITHOUT ROWID", "")
    out = re.sub(
        r"\bINTEGER PRIMARY KEY\b", "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY", out
    )
    out = re.sub(r" REFERENCES \w+ \(\w+\)", "", out)
    out = re.sub(r"\bINTEGER\b", "BIGINT", out)
    return re.sub(r"\bREAL\b", "DOUBLE PRECISION", out)


def column_types() -> dict[str, dict[str, str]]:
    """Each table's columns and their declared types (TEXT, INTEGER or REAL), as in the schema."""
    types: dict[str, dict[str, str]] = {}
    for statement in _statements(_SCHEMA):
        table = re.search(r"CREATE TABLE IF NOT EXISTS (\w+)", statement)
        if table is None:
            continue
        columns = re.findall(r'^\s+"?(\w+)"? (TEXT|INTEGER|REAL)\b', statement, re.MULTILINE)
        types[table.group(1)] = dict(columns)
    return types


def _statements(schema: str) -> list[str]:
    return [statement for statement in schema.split(";") if statement.strip()]


@functools.cache
def _insert_sql(
    table: str,
    names: tuple[str, ...],
    conflict: Literal["fail", "ignore", "replace"] = "fail",
    key: tuple[str, ...] = (),
    returning: str = "",
) -> str:
    """An INSERT both databases run: a conflict on a unique key fails, is ignored, or replaces
    the row (`key`: the primary key's columns); `returning` names a column to return."""
    columns = ", ".join(f'"{name}"' for name in names)
    sql = f"INSERT INTO {table} ({columns}) VALUES ({', '.join('?' * len(names))})"
    if conflict == "ignore":
        sql += " ON CONFLICT DO NOTHING"
    elif conflict == "replace":
        updates = ", ".join(f'"{n}" = excluded."{n}"' for n in names if n not in key)
        sql += f" ON CONFLICT ({', '.join(key)}) DO UPDATE SET {updates}"
    return sql + (f" RETURNING {returning}" if returning else "")


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


_INSERT_EXPOSURE = _insert_sql("exposures", _field_names(Exposure), returning="id")
# A completion or battle sent again (a retried delivery) keeps its first row: the result says so.
_INSERT_COMPLETION = _insert_sql("completions", _field_names(Completion), "ignore")
_INSERT_SCORE = _insert_sql(
    "scores", _field_names(Score), "replace", key=("completion_id", "model")
)
_INSERT_FEEDBACK = _insert_sql("feedback", _field_names(Feedback), returning="id")
_INSERT_TRANSCRIPT = _insert_sql("transcripts", _field_names(Transcript), "ignore")
_INSERT_PROBE = _insert_sql("probes", _field_names(ProbeResult), "ignore")
_INSERT_WEIGHTS = _insert_sql("weights", _field_names(Weights), "ignore")
_INSERT_HOLD = _insert_sql("ramp_holds", _field_names(RampHold), "ignore")
_INSERT_ARM_HOLD = _insert_sql("arm_holds", _field_names(ArmHold), "ignore")
_INSERT_CONFIG = _insert_sql("experiment_configs", _field_names(ExperimentConfig), "ignore")
_ASSIGN = _insert_sql(
    "assignments",
    ("experiment", "unit", "variant", "reason", "exposure_id", "weights_version"),
    "replace",
    key=("experiment", "unit"),
)
_COUNT = (
    "INSERT INTO counters (series, value) VALUES (?, ?) "
    "ON CONFLICT (series) DO UPDATE SET value = counters.value + excluded.value"
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
    """The outcome store at `location`: a SQLite file, or a PostgreSQL DSN (`router.db`)."""

    def __init__(self, location: str | Path) -> None:
        self.location = str(location)
        self.postgres = is_postgres(location)
        self.path = None if self.postgres else Path(location)
        self._db: Connection | None = None
        self._connect()
        try:
            self._open_schema()
        except BaseException:
            self.close()
            raise

    def _connect(self) -> Connection:
        """The connection, made again where PostgreSQL lost the last one (a restart)."""
        if self._db is not None and not (self.postgres and self._db.closed):  # type: ignore[union-attr]
            return self._db
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        # The writer thread of the serving layer is not the thread that opened the store.
        self._db = connect(self.location, read_only=False)
        if not self.postgres:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA busy_timeout=5000")
        return self._db

    def _begin(self) -> Connection:
        """Open a write transaction: one writer at a time, across PostgreSQL replicas too."""
        db = self._connect()
        if self.postgres:
            db.execute("BEGIN")
            db.execute("SELECT pg_advisory_xact_lock(?)", (_WRITER_LOCK,))
        else:
            db.execute("BEGIN IMMEDIATE")
        return db

    def _transaction(self, work: Callable[[Connection], object]) -> object:
        """`work` inside a write transaction, committed; rolled back where it raises. A
        PostgreSQL connection that failed is dropped, to be made again on the next call."""
        db = self._begin()
        try:
            out = work(db)
            db.execute("COMMIT")
        except BaseException as exc:
            if self.postgres and isinstance(exc, store_errors()):
                self._db.close()  # type: ignore[union-attr]
                raise
            # SQLite rolls back by itself on some errors (full disk)
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        return out

    def _version(self) -> int:
        if not self.postgres:
            return self._connect().execute("PRAGMA user_version").fetchone()[0]
        row = (
            self._connect()
            .execute("SELECT value FROM meta WHERE key = 'schema_version'")
            .fetchone()
        )
        return int(row[0]) if row is not None else 0

    def _open_schema(self) -> None:
        """Create the schema in a new store, or migrate an earlier version's in place."""
        if self.postgres:  # replicas starting at once: one creates, the others wait and see it
            self._transaction(lambda db: db.execute(_statements(_pg_schema(_SCHEMA))[-1]))  # meta
        version = self._version()
        if version > SCHEMA_VERSION:
            raise RuntimeError(
                f"{redact(self.location)} holds outcome schema {version}, newer than this "
                f"arena-serve's {SCHEMA_VERSION}; run the arena-serve that wrote it (or set "
                "the store)."
            )
        if version == SCHEMA_VERSION:
            return
        self._transaction(self._create_or_migrate)
        if version:
            logger.warning(
                "outcome store %s migrated from schema %d to %d",
                redact(self.location),
                version,
                SCHEMA_VERSION,
            )

    def _create_or_migrate(self, db: Connection) -> None:
        version = self._version()  # again, under the writer's lock
        if version == SCHEMA_VERSION:
            return
        if self.postgres:
            for step in range(max(version, PG_FIRST_VERSION), SCHEMA_VERSION):
                PG_MIGRATIONS[step](db)
            schema = _pg_schema(_SCHEMA)
        else:
            for step in range(version, SCHEMA_VERSION) if version else ():
                MIGRATIONS[step](db)  # type: ignore[arg-type]
            schema = _SCHEMA
        for statement in _statements(schema):  # executescript would commit first
            db.execute(statement)
        db.execute(
            "INSERT INTO meta VALUES ('voter_secret', ?) ON CONFLICT DO NOTHING",
            (secrets.token_hex(32),),
        )
        if self.postgres:
            db.execute(
                "INSERT INTO meta VALUES ('schema_version', ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (str(SCHEMA_VERSION),),
            )
        else:
            db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    def close(self) -> None:
        if self._db is not None:
            self._db.close()

    def write(
        self,
        events: Sequence[Event],
        counts: Callable[[list[WriteResult]], Mapping[str, float]] | None = None,
    ) -> list[WriteResult]:
        """Apply `events` in order, in one transaction; one result each: a feedback's
        `FeedbackResult`, else None, or `DUPLICATE` for an event the store already holds (an
        exposure repeating the unit's assignment, a completion or battle sent again).

        `counts`, given the results, names what to add to which `counters` series: added in
        the same transaction, so a batch is counted exactly once, with it."""

        def apply(db: Connection) -> list[WriteResult]:
            results = [self._apply(event) for event in events]
            for series, value in (counts(results) if counts is not None else {}).items():
                db.execute(_COUNT, (series, value))
            return results

        return self._transaction(apply)  # type: ignore[return-value]

    def _apply(self, event: Event) -> WriteResult:
        if isinstance(event, Exposure):
            return None if self._apply_exposure(event) else DUPLICATE
        elif isinstance(event, Completion):
            if not self._db.execute(_INSERT_COMPLETION, astuple(event)).rowcount:
                return DUPLICATE
        elif isinstance(event, Battle):
            row = _battle_row(event)
            insert = _insert_sql("battles", tuple(row), "ignore")
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
        (exposure_id,) = self._db.execute(_INSERT_EXPOSURE, astuple(exposure)).fetchone()
        if tracked:
            assigned = (exposure.experiment, exposure.unit, exposure.variant, exposure.reason)
            self._db.execute(_ASSIGN, (*assigned, exposure_id, exposure.weights_version))
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
        (feedback_id,) = self._db.execute(_INSERT_FEEDBACK, astuple(feedback)).fetchone()
        return self._result("recorded", feedback_id, feedback)

    def _replacement_fits(self, feedback: Feedback) -> bool:
        """Whether a regenerate's new completion exists, in the judged one's experiment, and
        was served to the same voter where it was a battle's answer."""
        pair = self._db.execute(
            "SELECT n.experiment IS NOT DISTINCT FROM o.experiment "
            "FROM completions n, completions o WHERE n.completion_id = ? AND o.completion_id = ?",
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
        cursor = self._connect().execute(f"SELECT * FROM {table} {where}", tuple(params))
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

    def voter_secret(self) -> bytes:
        """The store's own random secret (made with the store): exports hash voter ids with it,
        so they can be joined within one store's data and not traced back to a user."""
        (value,) = (
            self._connect().execute("SELECT value FROM meta WHERE key = 'voter_secret'").fetchone()
        )
        return bytes.fromhex(value)

    def purge_text(self, before_ts: float) -> int:
        """Delete the text kept of completions before `before_ts` (Unix seconds): the end of
        its retention. The events themselves stay. Returns how many texts went."""
        purge = "DELETE FROM transcripts WHERE ts < ?"
        return self._transaction(lambda db: db.execute(purge, (before_ts,)).rowcount)  # type: ignore[return-value]

    def cursor(self, sql: str, params: Iterable[object] = ()) -> Any:
        """A cursor over a read-only query's rows, fetched as needed (`fetchmany`)."""
        return self._connect().execute(sql, tuple(params))

    def purge_events(self, before_ts: float) -> dict[str, int]:
        """Retention of the events themselves: delete every exposure, completion, battle,
        score, feedback and kept text from before `before_ts`, and the assignments that
        pointed at exposures now gone (a unit seen again is exposed anew), in one
        transaction; rows deleted per table. Configs, weights, holds, probe results and the
        /metrics totals stay. A report then sees only what is left."""

        def purge(db: Connection) -> dict[str, int]:
            gone = {
                table: db.execute(f"DELETE FROM {table} WHERE ts < ?", (before_ts,)).rowcount
                for table in _EVENT_TABLES
            }
            gone["assignments"] = db.execute(
                "DELETE FROM assignments WHERE NOT EXISTS "
                "(SELECT 1 FROM exposures e WHERE e.id = assignments.exposure_id)"
            ).rowcount
            return gone

        return self._transaction(purge)  # type: ignore[return-value]

    def query(self, sql: str, params: Iterable[object] = ()) -> list[dict]:
        """Rows of a read-only query, as dicts (for the exports)."""
        cursor = self._connect().execute(sql, tuple(params))
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

    def count(self, table: str) -> int:
        if table not in TABLES:
            raise ValueError(f"unknown table {table!r}")
        return self._connect().execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]


def copy_store(
    source: str | Path,
    destination: str | Path,
    progress: Callable[[str, int], None] | None = None,
    chunk: int = 10_000,
) -> dict[str, int]:
    """Copy every record of the store at `source` into the empty store at `destination` (either
    kind: `arena-serve store migrate` moves a SQLite log to PostgreSQL), with its voter secret,
    so hashed voter ids stay joinable; rows per table. The source is migrated to this schema
    first; the destination is refused unless it holds no record, and is written in one
    transaction: a copy that fails leaves it empty. `progress(table, rows)` follows it."""
    src, dst = OutcomeStore(source), OutcomeStore(destination)
    try:
        held = {table: dst.count(table) for table in TABLES}
        if any(held.values()):
            raise ValueError(
                f"{redact(dst.location)} already holds records "
                f"({', '.join(f'{t}: {n}' for t, n in held.items() if n)}); copy into an "
                "empty store"
            )
        return dst._transaction(lambda db: _copy_rows(src, dst, db, progress, chunk))  # type: ignore[return-value]
    finally:
        src.close()
        dst.close()


def _copy_rows(
    src: OutcomeStore,
    dst: OutcomeStore,
    db: Connection,
    progress: Callable[[str, int], None] | None,
    chunk: int,
) -> dict[str, int]:
    copied: dict[str, int] = {}
    for table in TABLES:
        cursor = src._connect().execute(f"SELECT * FROM {table}")
        names = tuple(d[0] for d in cursor.description)
        insert = _insert_sql(table, names)
        copied[table] = 0
        while rows := cursor.fetchmany(chunk):
            if isinstance(db, PgConnection):
                db.copy_in(table, names, rows)
            else:
                db.executemany(insert, rows)
            copied[table] += len(rows)
            if progress is not None:
                progress(table, copied[table])
    db.execute("UPDATE meta SET value = ? WHERE key = 'voter_secret'", (src.voter_secret().hex(),))
    if dst.postgres:  # the identities go on from the highest id copied
        for table in ("exposures", "feedback"):
            db.execute(
                f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                f"COALESCE(MAX(id), 0) + 1, false) FROM {table}"
            )
        db.execute("ANALYZE")  # statistics for the planner now, not at autovacuum's next round
    return copied
