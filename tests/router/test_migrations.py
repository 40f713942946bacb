"""A store written by any earlier arena-serve is migrated in place when opened: every row kept,
new columns filled, the analysis reads it, and new events write to it."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from router.analysis import build_report
from router.events import ArmHold, Battle, Completion, Feedback, ProbeResult
from router.experiment import Experiment
from router.migrations import MIGRATIONS
from router.store import DUPLICATE, SCHEMA_VERSION, TABLES, OutcomeStore
from tests.router.old_schemas import V1, V2_FIRST, V2_LAST, V3, V4, V6

AB = Experiment.model_validate({"name": "ab", "arms": [{"variant": "a"}, {"variant": "b"}]})
ARENA = Experiment.model_validate(
    {"name": "duel", "mode": "arena", "arms": [{"variant": "a"}, {"variant": "b"}]}
)


def old_store(path: Path, schema: str, version: int, rows: list[tuple[str, tuple]]) -> None:
    db = sqlite3.connect(path)
    db.executescript(schema)
    for sql, params in rows:
        db.execute(sql, params)
    db.execute(f"PRAGMA user_version={version}")
    db.commit()
    db.close()


def v1_rows() -> list[tuple[str, tuple]]:
    rows = []
    for i, (unit, variant) in enumerate([("u1", "a"), ("u2", "b"), ("u1", "a")]):
        rows.append(
            (
                "INSERT INTO exposures (ts, request_id, experiment, variant, unit) "
                "VALUES (?, ?, 'ab', ?, ?)",
                (float(i), f"r{i}", variant, unit),
            )
        )
        rows.append(
            (
                "INSERT INTO completions VALUES (?, ?, ?, 'ab', ?, ?, 'chat', 0, 200, NULL, 0.5, "
                "5, 7, NULL)",
                (f"c{i}", float(i), f"r{i}", variant, unit),
            )
        )
    rows.append(
        (
            "INSERT INTO feedback (ts, completion_id, kind, value, idempotency_key) "
            "VALUES (5, 'c0', 'thumbs', 'up', 'k0')",
            (),
        )
    )
    rows.append(  # version 1 took feedback without a key
        (
            "INSERT INTO feedback (ts, completion_id, kind, value, idempotency_key) "
            "VALUES (6, 'c1', 'thumbs', 'down', NULL)",
            (),
        )
    )
    return rows


def v2_rows(styled: bool) -> list[tuple[str, tuple]]:
    rows = [
        (
            "INSERT INTO exposures (ts, request_id, experiment, unit_type, unit, variant, reason, "
            "exposed) VALUES (0, 'r0', 'duel', 'user', 'alice', NULL, 'arena', 1)",
            (),
        ),
        ("INSERT INTO assignments VALUES ('duel', 'alice', NULL, 'arena', 1)", ()),
    ]
    for side, variant in (("a", "a"), ("b", "b")):
        rows.append(
            (
                "INSERT INTO completions VALUES (?, 1, 'r1', 'duel', ?, 'alice', 'chat', 0, 200, "
                "NULL, 0.5, 5, 7, NULL, 'battle-1')",
                (f"side-{side}", variant),
            )
        )
    style = ", 7, 9, 1, 0, 0, 2, 0, 0" if styled else ""
    rows.append(
        (
            f"INSERT INTO battles VALUES ('battle-1', 1, 'r1', 'duel', 'alice', 'a', 'b', "
            f"'side-a', 'side-b'{style})",
            (),
        )
    )
    rows.append(
        (
            "INSERT INTO feedback (ts, kind, idempotency_key, battle_id, value) "
            "VALUES (2, 'vote', 'vote-1', 'battle-1', 'a')",
            (),
        )
    )
    return rows


def v3_rows() -> list[tuple[str, tuple]]:
    completion = (
        "INSERT INTO completions (completion_id, ts, request_id, experiment, variant, unit, "
        "endpoint, stream, status, latency_s) VALUES (?, ?, ?, 'ab', 'a', 'u1', 'chat', 1, 200, 1)"
    )
    return [
        (completion, ("c0", 1.0, "r0")),
        (completion, ("c1", 2.0, "r1")),
        (
            "INSERT INTO feedback (ts, kind, idempotency_key, completion_id, user) "
            "VALUES (3, 'regenerate', 'k0', 'c0', 'u1')",
            (),
        ),
    ]


def test_a_version_3_store_gains_text_a_secret_and_regenerate_links(tmp_path: Path) -> None:
    path = tmp_path / "v3.db"
    old_store(path, V3, 3, v3_rows())
    store = OutcomeStore(path)
    try:
        (old,) = store.rows("feedback")
        assert (old["idempotency_key"], old["new_completion_id"]) == ("k0", None)
        secret = store.voter_secret()
        assert len(secret) == 32
        link = Feedback(
            ts=4.0,
            kind="regenerate",
            idempotency_key="k1",
            completion_id="c0",
            new_completion_id="c1",
        )
        assert store.write([link])[0].status == "recorded"
        assert store.count("transcripts") == 0
    finally:
        store.close()
    again = OutcomeStore(path)  # the secret is made once, with the schema
    assert again.voter_secret() == secret
    again.close()


def test_a_version_4_store_gains_the_probe_table(tmp_path: Path) -> None:
    path = tmp_path / "v4.db"
    old_store(path, V4, 4, v3_rows())
    store = OutcomeStore(path)
    try:
        assert store.count("completions") == 2 and store.count("probes") == 0
        result = ProbeResult(
            ts=1.0,
            run_id="run-1",
            variant="a",
            revision="r1",
            probe_set="probe-v1",
            item_id="capitals-000",
            family="capitals",
            first="correct",
            pushback="wrong",
            suggestion="wrong",
            first_answer="Paris.",
            pushback_answer="Sorry, it is Marseille.",
            suggestion_answer="Yes, Marseille.",
        )
        assert store.write([result, result]) == [None, DUPLICATE]
    finally:
        store.close()


def test_a_version_6_store_gains_the_arm_holds_table(tmp_path: Path) -> None:
    path = tmp_path / "v6.db"
    old_store(path, V6, 6, v3_rows())
    store = OutcomeStore(path)
    try:
        assert store.count("completions") == 2 and store.count("arm_holds") == 0
        hold = ArmHold(
            ts=1.0,
            experiment="bandit",
            revision="r1",
            arm="b",
            version=7,
            share=0.4,
            guardrail="error_rate",
        )
        assert store.write([hold, hold]) == [None, DUPLICATE]
    finally:
        store.close()


def columns(db: sqlite3.Connection, table: str) -> list[str]:
    return [row[1] for row in db.execute(f"PRAGMA table_info({table})")]


def fresh_columns(tmp_path: Path) -> dict[str, list[str]]:
    store = OutcomeStore(tmp_path / "fresh.db")
    store.close()
    db = sqlite3.connect(tmp_path / "fresh.db")
    return {table: sorted(columns(db, table)) for table in TABLES}


def test_every_version_below_the_current_one_has_a_step() -> None:
    assert sorted(MIGRATIONS) == list(range(1, SCHEMA_VERSION))


def test_a_version_1_store_is_migrated_with_its_rows(tmp_path: Path) -> None:
    path = tmp_path / "v1.db"
    old_store(path, V1, 1, v1_rows())
    store = OutcomeStore(path)
    try:
        assert [
            (r["unit"], r["variant"], r["reason"], r["exposed"])
            for r in store.rows("exposures", "ORDER BY id")
        ] == [("u1", "a", "arm", 1), ("u2", "b", "arm", 1), ("u1", "a", "arm", 1)]
        assignments = {(r["unit"], r["exposure_id"]) for r in store.rows("assignments")}
        assert assignments == {("u1", 3), ("u2", 2)}  # each unit's latest exposure
        assert store.count("completions") == 3
        keys = [
            (r["idempotency_key"], r["principal"]) for r in store.rows("feedback", "ORDER BY id")
        ]
        assert keys == [("k0", ""), ("v1-feedback-2", "")]
        # New events write to it; a repeated exposure is still recognised.
        later = Completion(
            ts=9.0,
            completion_id="c9",
            request_id="r9",
            experiment="ab",
            variant="a",
            unit="u1",
            endpoint="chat",
            stream=True,
            status=200,
            ttft_s=0.1,
            latency_s=0.4,
            prompt_tokens=3,
            completion_tokens=4,
            client_request_id="trace-9",
        )
        store.write(
            [
                later,
                Feedback(
                    ts=10.0,
                    kind="thumbs",
                    idempotency_key="k0",
                    completion_id="c9",
                    value="up",
                    principal="app",
                ),
            ]
        )
        assert store.rows("completions", "WHERE completion_id = 'c9'")[0]["client_request_id"]
    finally:
        store.close()
    assert build_report(path, AB, reps=20).units == {"a": 1, "b": 1}


@pytest.mark.parametrize(("schema", "styled"), [(V2_FIRST, False), (V2_LAST, True)])
def test_a_version_2_store_is_migrated_with_its_battles_and_votes(
    tmp_path: Path, schema: str, styled: bool
) -> None:
    path = tmp_path / "v2.db"
    old_store(path, schema, 2, v2_rows(styled))
    store = OutcomeStore(path)
    try:
        [battle] = store.rows("battles")
        assert (battle["unit_type"], battle["voter"], battle["principal"]) == (
            "user",
            "alice",
            None,
        )
        assert battle["identity_revealed"] == 0
        assert (battle["tokens_a"], battle["bold_a"]) == ((7, 0) if styled else (None, 0))
        [vote] = store.rows("feedback")
        assert (vote["idempotency_key"], vote["principal"], vote["value"]) == ("vote-1", "", "a")
        # The unique vote per battle and the per-key idempotency hold after the rebuild.
        again = Feedback(
            ts=3.0,
            kind="vote",
            idempotency_key="vote-2",
            battle_id="battle-1",
            value="b",
            user="alice",
        )
        assert store.write([again])[0].status == "already_voted"
        stranger = Feedback(
            ts=3.0,
            kind="thumbs",
            idempotency_key="t",
            completion_id="side-a",
            value="up",
            user="eve",
        )
        assert store.write([stranger])[0].status == "not_the_voter"
        new = Battle(
            ts=4.0,
            battle_id="battle-2",
            request_id="r2",
            experiment="duel",
            unit="bob",
            variant_a="b",
            variant_b="a",
            completion_a="side-a",
            completion_b="side-b",
            voter="bob",
            identity_revealed=True,
        )
        assert store.write([new]) == [None]
    finally:
        store.close()
    report = build_report(path, ARENA, reps=20)
    assert report.arena is not None and report.arena.votes == 1


@pytest.mark.parametrize(
    ("schema", "version", "rows"),
    [
        (V1, 1, v1_rows()),
        (V2_FIRST, 2, v2_rows(False)),
        (V2_LAST, 2, v2_rows(True)),
        (V3, 3, v3_rows()),
        (V4, 4, v3_rows()),
        (V6, 6, v3_rows()),
    ],
    ids=["v1", "v2-first", "v2-last", "v3", "v4", "v6"],
)
def test_a_migrated_store_has_the_columns_of_a_new_one(
    tmp_path: Path, schema: str, version: int, rows: list
) -> None:
    path = tmp_path / "old.db"
    old_store(path, schema, version, rows)
    OutcomeStore(path).close()
    OutcomeStore(path).close()  # opening it again changes nothing
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert {t: sorted(columns(db, t)) for t in TABLES} == fresh_columns(tmp_path)
    indexes = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='index'")}
    assert {"one_vote_per_battle", "feedback_by_completion", "exposures_by_experiment"} <= indexes


def test_a_migration_that_fails_leaves_the_file_as_it_was(tmp_path: Path) -> None:
    path = tmp_path / "v2.db"
    rows = v2_rows(True)
    old_store(path, V2_LAST, 2, rows)
    db = sqlite3.connect(path)  # a row the rebuilt feedback table cannot take: two NULL targets
    db.execute(
        "INSERT INTO feedback (ts, kind, idempotency_key, completion_id, battle_id) "
        "VALUES (1, 'copy', 'bad', 'side-a', NULL)"
    )
    db.execute("PRAGMA ignore_check_constraints = 1")
    db.execute("UPDATE feedback SET completion_id = NULL WHERE idempotency_key = 'bad'")
    db.commit()
    db.close()
    with pytest.raises(sqlite3.IntegrityError):
        OutcomeStore(path)
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == 2
    assert "principal" not in columns(db, "feedback") and "voter" not in columns(db, "battles")
    assert db.execute("SELECT COUNT(*) FROM feedback").fetchone()[0] == 2


def test_a_report_on_a_log_no_server_opened_since_migrates_it_first(tmp_path: Path) -> None:
    path = tmp_path / "v2.db"
    old_store(path, V2_LAST, 2, v2_rows(True))
    report = build_report(path, ARENA, reps=20)
    assert report.arena is not None and report.arena.votes == 1
    assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
