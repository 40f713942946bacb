"""router.db: one SQL text for both databases, locations, and a password never shown."""

from __future__ import annotations

import pytest

from router.db import connect, exists, is_postgres, redact, resolve, to_pyformat
from router.store import OutcomeStore


def test_placeholders_become_psycopgs_and_quoted_text_keeps_its_question_marks() -> None:
    sql = "SELECT '?', \"a?\" FROM t WHERE x = ? AND y LIKE '%z' AND n % 2 = ?"
    assert to_pyformat(sql) == (
        "SELECT '?', \"a?\" FROM t WHERE x = %s AND y LIKE '%%z' AND n %% 2 = %s"
    )
    assert to_pyformat("SELECT 'it''s ?' , ?") == "SELECT 'it''s ?' , %s"


def test_locations(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setenv("ARENA_DSN_TEST", "postgresql://u:pw@h/db")
    assert resolve("env:ARENA_DSN_TEST") == "postgresql://u:pw@h/db"
    assert is_postgres("env:ARENA_DSN_TEST") and is_postgres("postgres://h/db")
    assert not is_postgres(tmp_path / "o.db")
    assert redact("postgresql://u:pw@h:5432/db") == "postgresql://u:***@h:5432/db"
    assert redact("postgresql://u@h/db") == "postgresql://u@h/db"
    assert redact("env:ARENA_DSN_TEST") == "env:ARENA_DSN_TEST"
    monkeypatch.delenv("ARENA_DSN_TEST")
    with pytest.raises(ValueError, match="ARENA_DSN_TEST is not set"):
        resolve("env:ARENA_DSN_TEST")
    assert not exists(tmp_path / "none.db")


def test_a_statement_with_percent_and_question_marks_runs_on_both(tmp_path, pg_dsn: str) -> None:
    for location in (str(tmp_path / "o.db"), pg_dsn):
        OutcomeStore(location).close()
        db = connect(location)
        row = db.execute("SELECT '?%', 7 % 4, ? || '%'", ("a",)).fetchone()
        assert tuple(row) == ("?%", 3, "a%"), location
        db.close()


def test_a_store_reconnects_after_postgres_restarts(pg_server, pg_dsn: str) -> None:
    store = OutcomeStore(pg_dsn)
    try:
        assert store.count("exposures") == 0
        pg_server.restart("immediate")
        with pytest.raises(Exception):  # noqa: B017 - the connection the restart cut
            store.count("exposures")
        assert store.count("exposures") == 0  # a new connection, made on the next call
    finally:
        store.close()
