"""Migrations of the outcome store's schema: each takes a store of version N to N + 1, in place.

`router.store.OutcomeStore` runs them in order, in one transaction with the final schema, when it
opens a file of an earlier version (`PRAGMA user_version`). Each step keeps every row: new
columns get the value that describes the old rows (an old battle's voter is its unit), and a
constraint SQLite cannot alter (a UNIQUE, a NOT NULL) is changed by rebuilding the table.

Versions:

1. exposures (variant, unit), completions, feedback on completions (thumbs), one table each.
2. exposures with the assignment reason and `exposed` (and the `assignments` table), battles,
   scores, feedback on battles and every kind. Files written while version 2 grew may lack the
   battles' style columns or the scores table: the step to 3 adds what is missing.
3. completions keep the client's request id; battles their unit type, voter, API key and
   whether an answer named a model; scores their completion's battle; feedback is unique per
   (API key, idempotency key) and keeps who sent it.
4. transcripts (the text of experiment completions, where the config keeps it), meta (the
   store's secret for hashing voter ids), and a regenerate's `new_completion_id`.
5. probes (the sycophancy probe's graded items).
6. exposures keep a bandit's weights version and propensity (and assignments the version);
   battles keep their pair's share when drawn and the adaptive weights version then in force
   (`pair_share`, `weights_version`; NULL before); `weights` keeps the history of
   adaptive arena weights, `experiment_configs` that of each experiment's config, and
   `ramp_holds` the ramps a failing guardrail stopped.
7. arm_holds (the bandit arms a failing guardrail stopped).
8. counters (the totals of /metrics, counted with the batches they count). The first version of
   a PostgreSQL store: its later migrations are `PG_MIGRATIONS`.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import Any


def _columns(db: sqlite3.Connection, table: str) -> list[str]:
    return [row[1] for row in db.execute(f"PRAGMA table_info({table})")]


def _tables(db: sqlite3.Connection) -> set[str]:
    return {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}


def _add_missing(db: sqlite3.Connection, table: str, columns: dict[str, str]) -> None:
    """Add each column (name -> declaration) the table lacks."""
    have = set(_columns(db, table))
    for name, declaration in columns.items():
        if name not in have:
            db.execute(f"ALTER TABLE {table} ADD COLUMN {name} {declaration}")


def _rebuild(db: sqlite3.Connection, table: str, create: str, select: str) -> None:
    """Replace `table` by one made with `create` (for a table named `{table}_new`), filled with
    `select` over the old one."""
    db.execute(create)
    db.execute(f"INSERT INTO {table}_new {select}")
    db.execute(f"DROP TABLE {table}")
    db.execute(f"ALTER TABLE {table}_new RENAME TO {table}")


def _v1_to_v2(db: sqlite3.Connection) -> None:
    _rebuild(
        db,
        "exposures",
        """CREATE TABLE exposures_new (
            id INTEGER PRIMARY KEY, ts REAL NOT NULL, request_id TEXT NOT NULL,
            experiment TEXT NOT NULL, unit_type TEXT NOT NULL, unit TEXT NOT NULL, variant TEXT,
            reason TEXT NOT NULL, exposed INTEGER NOT NULL)""",
        "SELECT id, ts, request_id, experiment, 'user', unit, variant, 'arm', 1 FROM exposures",
    )
    db.execute(
        """CREATE TABLE assignments (
            experiment TEXT NOT NULL, unit TEXT NOT NULL, variant TEXT, reason TEXT NOT NULL,
            exposure_id INTEGER NOT NULL REFERENCES exposures (id),
            PRIMARY KEY (experiment, unit)) WITHOUT ROWID"""
    )
    db.execute(
        "INSERT INTO assignments SELECT experiment, unit, variant, reason, id FROM exposures e "
        "WHERE id = (SELECT MAX(id) FROM exposures l "
        "WHERE l.experiment = e.experiment AND l.unit = e.unit)"
    )
    _add_missing(db, "completions", {"battle_id": "TEXT"})
    _rebuild(
        db,
        "feedback",
        """CREATE TABLE feedback_new (
            id INTEGER PRIMARY KEY, ts REAL NOT NULL, kind TEXT NOT NULL,
            idempotency_key TEXT NOT NULL UNIQUE, completion_id TEXT, battle_id TEXT,
            value TEXT, number REAL, name TEXT,
            CHECK ((completion_id IS NULL) != (battle_id IS NULL)))""",
        # Version 1 took feedback without a key: each such row gets one of its own.
        "SELECT id, ts, kind, COALESCE(idempotency_key, 'v1-feedback-' || id), completion_id, "
        "NULL, value, NULL, NULL FROM feedback",
    )


_STYLE = {
    "tokens_a": "INTEGER",
    "tokens_b": "INTEGER",
    **{
        f"{name}_{side}": "INTEGER NOT NULL DEFAULT 0"
        for name in ("headers", "list_items", "bold")
        for side in "ab"
    },
}


def _v2_to_v3(db: sqlite3.Connection) -> None:
    _add_missing(db, "completions", {"client_request_id": "TEXT"})
    if "scores" in _tables(db):
        _add_missing(db, "scores", {"battle_id": "TEXT"})
        db.execute(
            "UPDATE scores SET battle_id = (SELECT c.battle_id FROM completions c "
            "WHERE c.completion_id = scores.completion_id)"
        )
    if "battles" in _tables(db):
        _add_missing(
            db,
            "battles",
            {
                **_STYLE,
                "unit_type": "TEXT NOT NULL DEFAULT 'user'",
                "voter": "TEXT",
                "principal": "TEXT",
                "identity_revealed": "INTEGER NOT NULL DEFAULT 0",
            },
        )
        # A battle's voter is the unit of its experiment's type; a request's unit was its id,
        # which no voter presents: those battles keep no voter (anyone with the id may vote).
        db.execute(
            "UPDATE battles SET unit_type = COALESCE((SELECT e.unit_type FROM exposures e "
            "WHERE e.experiment = battles.experiment LIMIT 1), 'user')"
        )
        db.execute("UPDATE battles SET voter = unit WHERE unit_type != 'request'")
    _rebuild(
        db,
        "feedback",
        """CREATE TABLE feedback_new (
            id INTEGER PRIMARY KEY, ts REAL NOT NULL, kind TEXT NOT NULL,
            idempotency_key TEXT NOT NULL, completion_id TEXT REFERENCES completions
            (completion_id), battle_id TEXT REFERENCES battles (battle_id), value TEXT,
            number REAL, name TEXT, principal TEXT NOT NULL DEFAULT '', user TEXT, session TEXT,
            UNIQUE (principal, idempotency_key),
            CHECK ((completion_id IS NULL) != (battle_id IS NULL)))""",
        "SELECT id, ts, kind, idempotency_key, completion_id, battle_id, value, number, name, "
        "'', NULL, NULL FROM feedback",
    )


def _v3_to_v4(db: sqlite3.Connection) -> None:
    # The new tables are made by the schema itself (CREATE ... IF NOT EXISTS), the secret too.
    _add_missing(db, "feedback", {"new_completion_id": "TEXT"})


def _v4_to_v5(db: sqlite3.Connection) -> None:
    """Nothing to change: version 5 only adds the probes table, which the schema makes."""


def _v5_to_v6(db: sqlite3.Connection) -> None:
    # The new tables (weights, experiment_configs, ramp_holds) come from the schema; battles
    # get the new columns where an older file had none.
    if "battles" in _tables(db):
        _add_missing(db, "battles", {"pair_share": "REAL", "weights_version": "INTEGER"})
    _add_missing(db, "exposures", {"weights_version": "INTEGER", "propensity": "REAL"})
    if "assignments" in _tables(db):
        _add_missing(db, "assignments", {"weights_version": "INTEGER"})


def _v6_to_v7(db: sqlite3.Connection) -> None:
    """Nothing to change: version 7 only adds the arm_holds table, which the schema makes."""


def _v7_to_v8(db: sqlite3.Connection) -> None:
    """Nothing to change: version 8 only adds the counters table, which the schema makes."""


# MIGRATIONS[n] takes a SQLite store of version n to version n + 1.
MIGRATIONS: dict[int, Callable[[sqlite3.Connection], None]] = {
    1: _v1_to_v2,
    2: _v2_to_v3,
    3: _v3_to_v4,
    4: _v4_to_v5,
    5: _v5_to_v6,
    6: _v6_to_v7,
    7: _v7_to_v8,
}
# PG_MIGRATIONS[n] takes a PostgreSQL store of version n to n + 1 (none yet: PostgreSQL stores
# begin at version 8). Each runs in the same transaction as the schema, under the writers' lock.
PG_MIGRATIONS: dict[int, Callable[[Any], None]] = {}
