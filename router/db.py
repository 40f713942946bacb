"""Where the outcome store lives, and one way to query it whichever database it is.

A store *location* is a SQLite file path (one machine: the default) or a PostgreSQL DSN
(`postgresql://…` or `postgres://…`: a cluster, where more than one log replica writes), or
`env:NAME`, which names an environment variable holding either (so a Kubernetes Secret can
carry the DSN and no config file ever holds its password).

Every query in the project is written once, in SQL that both databases run the same: `?`
placeholders, `ON CONFLICT` upserts, `RETURNING`, window functions, `IS NOT DISTINCT FROM`, and
booleans cast to integers where they are summed. `PgConnection` is the thin adapter that lets
psycopg 3 run it: placeholders become `%s`, and numeric results (PostgreSQL's SUM and AVG)
come back as floats, as SQLite's do.
"""

from __future__ import annotations

import os
import re
import sqlite3
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

PG_SCHEMES = ("postgresql://", "postgres://")
ENV_PREFIX = "env:"


class StoreUnavailable(Exception):
    """The store cannot be reached or cannot write now (a server restarting, a lost
    connection): the events are not at fault and are tried again."""


def resolve(location: str | Path) -> str:
    """The location itself: `env:NAME` read from the environment (an error naming the
    variable when it is unset or empty)."""
    text = str(location)
    if not text.startswith(ENV_PREFIX):
        return text
    name = text[len(ENV_PREFIX) :]
    value = os.environ.get(name, "")
    if not value:
        raise ValueError(f"store {text!r}: the environment variable {name} is not set")
    return value


def is_postgres(location: str | Path) -> bool:
    return resolve(location).startswith(PG_SCHEMES)


def redact(location: str | Path) -> str:
    """The location as it may be logged or shown: a DSN's password replaced by `***`."""
    text = str(location)
    if text.startswith(ENV_PREFIX):
        return text
    return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", text)


_TOKENS = re.compile(r"'(?:[^']|'')*'|\"[^\"]*\"|\?|%")


def to_pyformat(sql: str) -> str:
    """`?` placeholders as psycopg's `%s`, and a literal `%` doubled; quoted text kept."""

    def swap(match: re.Match[str]) -> str:
        token = match.group(0)
        if token[0] in "'\"":  # quoted: its `?` stays, its `%` is doubled all the same
            return token.replace("%", "%%")
        return {"?": "%s", "%": "%%"}[token]

    return _TOKENS.sub(swap, sql)


def _bools_as_ints(params: Iterable[Any]) -> tuple[Any, ...]:
    """Python booleans as 0/1: the schema keeps flags in integer columns, as SQLite does."""
    return tuple(int(p) if isinstance(p, bool) else p for p in params)


class PgConnection:
    """A psycopg 3 connection that runs the project's SQL (see the module's docstring).

    `execute` returns the psycopg cursor: `fetchone`, `fetchall`, `rowcount` and `description`
    behave as sqlite3's do. Autocommit: a transaction is opened with `BEGIN` and closed with
    `COMMIT` or `ROLLBACK`, as with sqlite3's `isolation_level=None`.
    """

    def __init__(self, dsn: str, read_only: bool = False) -> None:
        import psycopg
        from psycopg.types.numeric import FloatLoader

        options = "-c default_transaction_read_only=on" if read_only else None
        try:
            self._conn = psycopg.connect(dsn, autocommit=True, options=options)
        except psycopg.OperationalError as exc:
            raise StoreUnavailable(f"cannot connect to {redact(dsn)}: {exc}") from exc
        self._conn.adapters.register_loader("numeric", FloatLoader)

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        if params:
            return self._conn.execute(to_pyformat(sql), _bools_as_ints(params))
        return self._conn.execute(sql)  # no parameters: psycopg reads no placeholder

    def copy_in(self, table: str, names: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
        """Append rows with COPY: an order of magnitude faster than one INSERT each."""
        columns = ", ".join(f'"{name}"' for name in names)
        with self._conn.cursor().copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)

    @property
    def in_transaction(self) -> bool:
        from psycopg.pq import TransactionStatus

        return self._conn.info.transaction_status != TransactionStatus.IDLE

    @property
    def closed(self) -> bool:
        """Closed, or broken (the server went away): a new connection is needed."""
        return self._conn.closed or self._conn.broken

    def close(self) -> None:
        self._conn.close()


Connection = sqlite3.Connection | PgConnection


def connect(location: str | Path, read_only: bool = True) -> Connection:
    """A connection to the store at `location`; read-only by default (the analysis)."""
    target = resolve(location)
    if target.startswith(PG_SCHEMES):
        return PgConnection(target, read_only=read_only)
    if not read_only:
        return sqlite3.connect(target, check_same_thread=False, isolation_level=None)
    db = sqlite3.connect(f"file:{Path(target)}?mode=ro", uri=True, timeout=30)
    db.execute("PRAGMA query_only = ON")
    return db


def snapshot(db: Connection) -> None:
    """Begin a read-only transaction that sees one state of the store for all its queries."""
    if isinstance(db, PgConnection):
        db.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
    else:
        db.execute("BEGIN")


def exists(location: str | Path) -> bool:
    """Whether a store may be there to read: a SQLite file that exists, or any PostgreSQL DSN
    (the connection says the rest)."""
    return is_postgres(location) or Path(resolve(location)).is_file()


def read(location: str | Path, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
    """The rows of one read-only query, on a connection of its own (any thread may call it)."""
    db = connect(location)
    try:
        return [tuple(row) for row in db.execute(sql, params).fetchall()]
    finally:
        db.close()


def open_errors() -> tuple[type[BaseException], ...]:
    """The errors of opening or reading what is not a store, or not one this code can read."""
    import psycopg  # imported when needed: most processes never meet PostgreSQL

    return (sqlite3.DatabaseError, StoreUnavailable, ValueError, psycopg.Error)


def store_errors() -> tuple[type[BaseException], ...]:
    """The errors that mean "the store cannot write now", not "these events are bad"."""
    import psycopg

    return (
        sqlite3.OperationalError,
        StoreUnavailable,
        psycopg.OperationalError,
        psycopg.InterfaceError,
    )
