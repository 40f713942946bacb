"""The outcome store: exposure dedupe, battles and votes, idempotent feedback, atomic batches,
durability and the schema version check."""

from __future__ import annotations

import dataclasses
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import psycopg
import pytest

from router.events import (
    Battle,
    Completion,
    Exposure,
    Feedback,
    FeedbackResult,
    Score,
    Transcript,
)
from router.store import SCHEMA_VERSION, TABLES, OutcomeStore
from router.style import Style

REPO = Path(__file__).resolve().parents[2]


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


def battle(bid: str = "b1", a: str = "llama", b: str = "qwen", experiment: str = "arena") -> Battle:
    return Battle(
        ts=1.0,
        battle_id=bid,
        request_id=f"req-{bid}",
        experiment=experiment,
        unit="alice",
        variant_a=a,
        variant_b=b,
        completion_a=f"{bid}-a",
        completion_b=f"{bid}-b",
    )


def exposure(
    unit: str = "alice",
    variant: str | None = "a",
    reason: str = "arm",
    experiment: str = "exp",
    unit_type: str = "user",
    ts: float = 1.0,
) -> Exposure:
    return Exposure(
        ts=ts,
        request_id=f"req-{ts}",
        experiment=experiment,
        unit_type=unit_type,  # type: ignore[arg-type]
        unit=unit,
        variant=variant,
        reason=reason,  # type: ignore[arg-type]
        exposed=True,
    )


def thumbs(cid: str, key: str, value: str = "up", ts: float = 2.0) -> Feedback:
    return Feedback(ts=ts, kind="thumbs", idempotency_key=key, completion_id=cid, value=value)


def vote(bid: str, key: str, value: str = "a", ts: float = 2.0) -> Feedback:
    return Feedback(ts=ts, kind="vote", idempotency_key=key, battle_id=bid, value=value)


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[OutcomeStore]:
    """Every test of the store runs on both databases."""
    if request.param == "postgres":
        s = OutcomeStore(request.getfixturevalue("pg_dsn"))
    else:
        s = OutcomeStore(tmp_path / "data" / "outcomes.db")
    yield s
    s.close()


def test_wal_mode_and_schema(tmp_path: Path) -> None:
    store = OutcomeStore(tmp_path / "data" / "outcomes.db")
    assert store.path is not None
    db = sqlite3.connect(store.path)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 8
    tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert tables == {*TABLES, "meta"}
    assert store._connect().execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    db.close()
    store.close()


# Exposures: one row per unit per experiment per change of (variant, reason).


def test_a_repeated_exposure_is_written_once(store: OutcomeStore) -> None:
    store.write([exposure(ts=1.0), exposure(ts=2.0)])  # within one batch
    store.write([exposure(ts=3.0)])  # and across batches
    [row] = store.rows("exposures")
    assert (row["ts"], row["unit_type"], row["unit"], row["variant"], row["reason"]) == (
        1.0,
        "user",
        "alice",
        "a",
        "arm",
    )
    assert row["exposed"] == 1
    assert store.rows("assignments") == [
        {"experiment": "exp", "unit": "alice", "variant": "a", "reason": "arm", "exposure_id": 1}
        | {"weights_version": None}
    ]


def test_a_bandit_unit_drawn_again_in_a_new_weights_version_is_written_again(
    store: OutcomeStore,
) -> None:
    first = dataclasses.replace(exposure(ts=1.0), weights_version=3, propensity=0.5)
    store.write([first, dataclasses.replace(first, ts=2.0)])  # the same version: once
    store.write([dataclasses.replace(first, ts=3.0, weights_version=4, propensity=0.8)])
    rows = store.rows("exposures")
    assert [(r["weights_version"], r["propensity"], r["variant"]) for r in rows] == [
        (3, 0.5, "a"),
        (4, 0.8, "a"),
    ]


def test_a_changed_variant_or_reason_is_a_new_exposure(store: OutcomeStore) -> None:
    store.write(
        [
            exposure(variant="a", reason="arm", ts=1.0),
            exposure(variant="b", reason="arm", ts=2.0),  # variant changed
            exposure(variant="b", reason="arm", ts=3.0),  # repeat: nothing
            exposure(variant="b", reason="forced", ts=4.0),  # reason changed
            exposure(variant="a", reason="arm", ts=5.0),  # back to the first: a change again
        ]
    )
    rows = store.rows("exposures", "ORDER BY id")
    assert [(r["ts"], r["variant"], r["reason"]) for r in rows] == [
        (1.0, "a", "arm"),
        (2.0, "b", "arm"),
        (4.0, "b", "forced"),
        (5.0, "a", "arm"),
    ]
    [latest] = store.rows("assignments")
    assert (latest["variant"], latest["reason"], latest["exposure_id"]) == (
        "a",
        "arm",
        rows[-1]["id"],
    )


def test_exposures_are_deduplicated_per_experiment_and_unit(store: OutcomeStore) -> None:
    store.write(
        [
            exposure(unit="alice", experiment="exp"),
            exposure(unit="bob", experiment="exp"),
            exposure(unit="alice", experiment="other"),
            exposure(unit="alice", experiment="exp"),
            exposure(unit="bob", experiment="exp"),
            exposure(unit="alice", experiment="other"),
        ]
    )
    rows = store.rows("exposures", "ORDER BY id")
    assert [(r["experiment"], r["unit"]) for r in rows] == [
        ("exp", "alice"),
        ("exp", "bob"),
        ("other", "alice"),
    ]
    assert store.count("assignments") == 3


def test_request_units_are_never_deduplicated(store: OutcomeStore) -> None:
    same = exposure(unit="req-x", unit_type="request")
    store.write([same, same])
    store.write([same])
    assert store.count("exposures") == 3
    assert store.count("assignments") == 0


def test_arena_exposures_without_a_variant_are_deduplicated(store: OutcomeStore) -> None:
    store.write([exposure(variant=None, reason="arena", experiment="arena", ts=t) for t in (1, 2)])
    store.write([exposure(variant=None, reason="arena", experiment="arena", ts=3.0)])
    [row] = store.rows("exposures")
    assert (row["variant"], row["reason"], row["ts"]) == (None, "arena", 1.0)
    # A unit leaving the arena (e.g. the experiment stopped) is a change.
    store.write([exposure(variant="llama", reason="stopped", experiment="arena", ts=4.0)])
    assert store.count("exposures") == 2


# Battles and votes.


def test_scores_are_stored_once_per_completion_and_model(store: OutcomeStore) -> None:
    store.write([completion("c1")])
    store.write(
        [
            Score(
                ts=3.0,
                completion_id="c1",
                experiment="exp",
                variant="a",
                model="rm",
                score=0.25,
                latency_s=0.5,
            ),
            Score(
                ts=4.0,
                completion_id="c1",
                experiment="exp",
                variant="a",
                model="rm",
                score=0.75,
                latency_s=0.1,
            ),  # the same model again: replaced
            Score(
                ts=4.0,
                completion_id="c1",
                experiment="exp",
                variant="a",
                model="other-rm",
                score=-1.0,
                latency_s=0.1,
            ),
        ]
    )
    rows = {r["model"]: r for r in store.rows("scores")}
    assert set(rows) == {"rm", "other-rm"}
    assert (rows["rm"]["score"], rows["rm"]["latency_s"]) == (0.75, 0.1)
    assert (rows["other-rm"]["experiment"], rows["other-rm"]["variant"]) == ("exp", "a")


def test_battles_are_stored(store: OutcomeStore) -> None:
    assert store.write([battle("b1"), battle("b2", a="qwen", b="llama")]) == [None, None]
    rows = {r["battle_id"]: r for r in store.rows("battles")}
    assert rows["b1"] == {
        "battle_id": "b1",
        "ts": 1.0,
        "request_id": "req-b1",
        "experiment": "arena",
        "unit": "alice",
        "variant_a": "llama",
        "variant_b": "qwen",
        "completion_a": "b1-a",
        "completion_b": "b1-b",
        "tokens_a": None,
        "tokens_b": None,
        "headers_a": 0,
        "headers_b": 0,
        "list_items_a": 0,
        "list_items_b": 0,
        "bold_a": 0,
        "bold_b": 0,
        "unit_type": "user",
        "voter": None,
        "principal": None,
        "identity_revealed": 0,
        "pair_share": None,
        "weights_version": None,
    }
    assert (rows["b2"]["variant_a"], rows["b2"]["variant_b"]) == ("qwen", "llama")
    styled = replace(
        battle("b3"),
        style_a=Style(tokens=40, headers=2, bold=1),
        style_b=Style(tokens=9, list_items=3),
    )
    store.write([styled])
    [row] = store.rows("battles", "WHERE battle_id = ?", ["b3"])
    assert (
        row["tokens_a"],
        row["tokens_b"],
        row["headers_a"],
        row["list_items_b"],
        row["bold_a"],
    ) == (
        40,
        9,
        2,
        3,
        1,
    )


def test_each_sides_style_fills_its_own_columns(store: OutcomeStore) -> None:
    """Every style value differs: a column filled from the wrong side or field would show."""
    styled = replace(
        battle("b1"),
        style_a=Style(tokens=11, headers=12, list_items=13, bold=14),
        style_b=Style(tokens=21, headers=22, list_items=23, bold=24),
    )
    store.write([styled])
    [row] = store.rows("battles")
    columns = ("tokens", "headers", "list_items", "bold")
    assert {f"{c}_{side}": row[f"{c}_{side}"] for c in columns for side in "ab"} == {
        "tokens_a": 11,
        "headers_a": 12,
        "list_items_a": 13,
        "bold_a": 14,
        "tokens_b": 21,
        "headers_b": 22,
        "list_items_b": 23,
        "bold_b": 24,
    }


def test_a_vote_is_recorded_and_reveals_the_variants(store: OutcomeStore) -> None:
    store.write([battle("b1", a="qwen", b="llama", experiment="arena-1")])
    [result] = store.write([vote("b1", "k1", "b")])
    assert result == FeedbackResult(
        status="recorded", feedback_id=1, reveal=("qwen", "llama"), experiment="arena-1"
    )
    [row] = store.rows("feedback")
    assert (row["kind"], row["battle_id"], row["completion_id"], row["value"]) == (
        "vote",
        "b1",
        None,
        "b",
    )
    assert row["idempotency_key"] == "k1"


def test_a_replayed_vote_returns_the_first_answer(store: OutcomeStore) -> None:
    store.write([battle("b1")])
    [first] = store.write([vote("b1", "k1", "tie", ts=2.0)])
    [again] = store.write([vote("b1", "k1", "tie", ts=9.0)])  # a retry: same content, later
    assert first.status == "recorded"
    assert again == FeedbackResult(
        status="replayed",
        feedback_id=first.feedback_id,
        reveal=("llama", "qwen"),
        experiment="arena",
    )
    assert store.count("feedback") == 1


def test_a_replayed_thumbs_returns_the_first_id_and_no_reveal(store: OutcomeStore) -> None:
    store.write([completion("c1")])
    first, again = store.write([thumbs("c1", "k"), thumbs("c1", "k", ts=3.0)])
    assert first == FeedbackResult(status="recorded", feedback_id=1)
    assert again == FeedbackResult(status="replayed", feedback_id=1)
    assert store.count("feedback") == 1


@pytest.mark.parametrize(
    "second",
    [
        pytest.param(vote("b1", "k", "b"), id="other-value"),
        pytest.param(vote("b2", "k", "a"), id="other-battle"),
        pytest.param(
            Feedback(ts=2.0, kind="copy", idempotency_key="k", completion_id="c1"), id="kind"
        ),
        pytest.param(thumbs("c1", "k", "up"), id="other-target-type"),
    ],
)
def test_a_key_reused_for_different_feedback_is_refused(
    store: OutcomeStore, second: Feedback
) -> None:
    store.write([battle("b1"), battle("b2"), completion("c1")])
    [first] = store.write([vote("b1", "k", "a")])
    [result] = store.write([second])
    assert result.status == "key_reused"
    assert result.feedback_id == first.feedback_id
    assert result.reveal is None
    [row] = store.rows("feedback")
    assert (row["battle_id"], row["value"], row["kind"]) == ("b1", "a", "vote")


@pytest.mark.parametrize(
    "second",
    [
        pytest.param({"number": 5.0}, id="number"),
        pytest.param({"name": "speed"}, id="name"),
        pytest.param({"completion_id": "c2"}, id="target"),
    ],
)
def test_a_key_reused_for_a_different_custom_metric_is_refused(
    store: OutcomeStore, second: dict
) -> None:
    store.write([completion("c1"), completion("c2")])
    first = Feedback(
        ts=2.0, kind="custom", idempotency_key="k", completion_id="c1", number=4.0, name="rating"
    )
    assert store.write([first])[0].status == "recorded"
    assert store.write([replace(first, ts=3.0, number=4)])[0].status == "replayed"  # 4 == 4.0
    assert store.write([replace(first, **second)])[0].status == "key_reused"
    assert store.count("feedback") == 1


def test_a_second_vote_on_a_battle_is_already_voted(store: OutcomeStore) -> None:
    store.write([battle("b1")])
    [first] = store.write([vote("b1", "k1", "a")])
    for value in ("a", "b"):  # the same or another choice, under a new key
        [second] = store.write([vote("b1", "k2", value)])
        assert second == FeedbackResult(status="already_voted", feedback_id=first.feedback_id)
    assert store.count("feedback") == 1
    # The refused key was not stored: it is still free for other feedback.
    store.write([battle("b2")])
    assert store.write([vote("b2", "k2", "b")])[0].status == "recorded"


def test_a_custom_metric_on_a_battle_is_refused_where_it_is_made() -> None:
    """No analysis reads a battle's custom metric (it has no variant): refused, not stored."""
    with pytest.raises(ValueError, match="answers"):
        Feedback(
            ts=3.0, kind="custom", idempotency_key="k2", battle_id="b1", number=4.0, name="rating"
        )


def test_a_vote_on_an_unknown_battle_is_unknown_target(store: OutcomeStore) -> None:
    store.write([completion("b1")])  # a completion of that id is not a battle
    assert store.write([vote("b1", "k")]) == [
        FeedbackResult(status="unknown_target", feedback_id=None)
    ]
    assert store.count("feedback") == 0


# Feedback on completions.


@pytest.mark.parametrize(
    ("feedback", "stored"),
    [
        (
            Feedback(ts=2.0, kind="thumbs", idempotency_key="k", completion_id="c1", value="down"),
            ("down", None, None),
        ),
        (
            Feedback(ts=2.0, kind="regenerate", idempotency_key="k", completion_id="c1"),
            (None, None, None),
        ),
        (
            Feedback(ts=2.0, kind="copy", idempotency_key="k", completion_id="c1"),
            (None, None, None),
        ),
        (
            Feedback(
                ts=2.0,
                kind="custom",
                idempotency_key="k",
                completion_id="c1",
                number=0.25,
                name="rating",
            ),
            (None, 0.25, "rating"),
        ),
    ],
    ids=lambda p: p.kind if isinstance(p, Feedback) else "",
)
def test_feedback_kinds_on_a_completion(
    store: OutcomeStore, feedback: Feedback, stored: tuple
) -> None:
    store.write([completion("c1")])
    assert store.write([feedback]) == [FeedbackResult(status="recorded", feedback_id=1)]
    [row] = store.rows("feedback")
    assert (row["kind"], row["completion_id"], row["battle_id"], row["idempotency_key"]) == (
        feedback.kind,
        "c1",
        None,
        "k",
    )
    assert (row["value"], row["number"], row["name"]) == stored


@pytest.mark.parametrize("kind", ["thumbs", "regenerate", "copy", "custom"])
def test_feedback_on_an_unknown_completion_is_unknown_target(
    store: OutcomeStore, kind: str
) -> None:
    store.write([battle("c1")])  # a battle of that id is not a completion
    extra = {"name": "stars", "number": 4.0} if kind == "custom" else {}
    fb = Feedback(
        ts=1.0,
        kind=kind,  # type: ignore[arg-type]
        idempotency_key="k",
        completion_id="c1",
        value="up" if kind == "thumbs" else None,
        **extra,  # type: ignore[arg-type]
    )
    assert store.write([fb]) == [FeedbackResult(status="unknown_target", feedback_id=None)]
    assert store.count("feedback") == 0


def test_feedback_finds_targets_written_earlier_in_the_same_batch(store: OutcomeStore) -> None:
    results = store.write(
        [
            exposure(),
            completion("c1"),
            thumbs("c1", "k1"),
            completion("b1-a"),
            completion("b1-b"),
            battle("b1"),
            vote("b1", "k2", "b"),
            vote("b1", "k3", "a"),  # a second vote in the same batch
            thumbs("c2", "k4"),  # before its completion: not found
            completion("c2"),
        ]
    )
    assert results == [
        None,
        None,
        FeedbackResult(status="recorded", feedback_id=1),
        None,
        None,
        None,
        FeedbackResult(
            status="recorded", feedback_id=2, reveal=("llama", "qwen"), experiment="arena"
        ),
        FeedbackResult(status="already_voted", feedback_id=2),
        FeedbackResult(status="unknown_target", feedback_id=None),
        None,
    ]
    assert store.count("feedback") == 2
    assert store.rows("completions", "WHERE completion_id = 'c1'")[0]["prompt_tokens"] == 10


def test_a_failed_batch_writes_nothing(store: OutcomeStore) -> None:
    no_unit = Exposure(
        ts=3.0,
        request_id="r9",
        experiment="exp",
        unit_type="user",
        unit=None,  # type: ignore[arg-type]
        variant="a",
        reason="arm",
        exposed=True,
    )
    with pytest.raises((sqlite3.IntegrityError, psycopg.IntegrityError)):  # unit NOT NULL
        store.write([exposure(), completion("c1"), battle("b1"), vote("b1", "k"), no_unit])
    for table in TABLES:
        assert store.count(table) == 0, table
    assert not store._db.in_transaction
    # Nothing half-done is left behind: the dedupe state was rolled back with the rows.
    store.write([exposure(), completion("c1"), battle("b1")])
    assert store.count("exposures") == 1
    assert store.write([vote("b1", "k")])[0].status == "recorded"


def test_reopening_keeps_rows_and_replays(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    first = OutcomeStore(path)
    first.write([exposure(), completion("c1"), thumbs("c1", "k1"), battle("b1"), vote("b1", "k2")])
    first.close()
    again = OutcomeStore(path)
    try:
        assert again.count("feedback") == 2
        assert again.write([thumbs("c1", "k1")]) == [
            FeedbackResult(status="replayed", feedback_id=1)
        ]
        assert again.write([vote("b1", "k2")]) == [
            FeedbackResult(
                status="replayed", feedback_id=2, reveal=("llama", "qwen"), experiment="arena"
            )
        ]
        assert again.write([vote("b1", "k3")]) == [
            FeedbackResult(status="already_voted", feedback_id=2)
        ]
        again.write([exposure(ts=9.0)])
        assert again.count("exposures") == 1
        assert again.count("feedback") == 2
    finally:
        again.close()


def test_committed_rows_survive_kill_9(tmp_path: Path) -> None:
    """A writer killed right after `write` returns loses nothing it acknowledged."""
    path = tmp_path / "o.db"
    code = (
        "import os, sys\n"
        "from router.store import OutcomeStore\n"
        "from router.events import Battle, Completion, Exposure, Feedback\n"
        "s = OutcomeStore(sys.argv[1])\n"
        "for i in range(50):\n"
        "    e = Exposure(ts=1.0, request_id='r', experiment='e', unit_type='user', unit=f'u{i}',\n"
        "                 variant='a', reason='arm', exposed=True)\n"
        "    c = Completion(ts=1.0, completion_id=f'c{i}', request_id='r', experiment='e',\n"
        "                   variant='a', unit='u', endpoint='chat', stream=False, status=200,\n"
        "                   ttft_s=None, latency_s=0.1, prompt_tokens=1, completion_tokens=1)\n"
        "    b = Battle(ts=1.0, battle_id=f'b{i}', request_id='r', experiment='e', unit='u',\n"
        "               variant_a='x', variant_b='y', completion_a='ca', completion_b='cb')\n"
        "    s.write([e, c, b,\n"
        "             Feedback(ts=1.0, kind='thumbs', idempotency_key=f'k{i}',\n"
        "                      completion_id=f'c{i}', value='up'),\n"
        "             Feedback(ts=1.0, kind='vote', idempotency_key=f'v{i}',\n"
        "                      battle_id=f'b{i}', value='a')])\n"
        "print('acked', flush=True)\n"
        "os.kill(os.getpid(), 9)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, str(path)], capture_output=True, text=True, cwd=REPO
    )
    assert proc.returncode == -9 and "acked" in proc.stdout, proc.stderr
    reopened = OutcomeStore(path)
    try:
        assert reopened.count("feedback") == 100
        assert reopened.count("exposures") == 50
        assert reopened.count("battles") == 50
    finally:
        reopened.close()


def test_a_file_of_a_later_schema_version_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "new.db"
    later = sqlite3.connect(path)
    later.execute("CREATE TABLE exposures (id INTEGER PRIMARY KEY)")
    later.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    later.commit()
    later.close()
    with pytest.raises(RuntimeError, match=rf"schema {SCHEMA_VERSION + 1}, newer") as e:
        OutcomeStore(path)
    assert str(path) in str(e.value)
    db = sqlite3.connect(path)  # left untouched
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION + 1
    tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert tables == {"exposures"}
    db.close()


def test_reads_refuse_unknown_tables(store: OutcomeStore) -> None:
    with pytest.raises(ValueError, match="unknown table"):
        store.rows("sqlite_master")
    with pytest.raises(ValueError, match="unknown table"):
        store.count("feedback; DROP TABLE feedback")


def test_a_full_disk_reports_the_real_error(tmp_path: Path) -> None:
    store = OutcomeStore(tmp_path / "small.db")
    store._connect().execute("PRAGMA max_page_count=20")
    big = [replace(completion(f"c{i}"), error="x" * 2000) for i in range(200)]
    with pytest.raises(sqlite3.OperationalError, match="full"):
        store.write(big)


@pytest.mark.parametrize(
    "fields",
    [
        {"kind": "thumbs", "completion_id": "c1", "battle_id": "b1", "value": "up"},
        {"kind": "thumbs"},
        {"kind": "thumbs", "completion_id": "c1", "value": "sideways"},
        {"kind": "vote", "battle_id": "b1", "value": "A"},
        {"kind": "vote", "completion_id": "c1", "value": "a"},
        {"kind": "copy", "battle_id": "b1"},
        {"kind": "custom", "completion_id": "c1", "name": "stars", "number": float("nan")},
        {"kind": "custom", "completion_id": "c1", "number": 3.0},
        {"kind": "shrug", "completion_id": "c1"},
    ],
)
def test_feedback_the_store_could_not_take_is_refused_where_it_is_made(fields: dict) -> None:
    with pytest.raises(ValueError):
        Feedback(ts=1.0, idempotency_key="k", **fields)


def test_an_event_the_store_already_holds_is_reported_a_duplicate(store: OutcomeStore) -> None:
    from router.store import DUPLICATE

    first = [exposure(), completion("c1"), battle("b1")]
    assert store.write(first) == [None, None, None]
    again = [exposure(), completion("c1", status=503), battle("b1")]  # a retried delivery
    assert store.write(again) == [DUPLICATE, DUPLICATE, DUPLICATE]
    assert store._db.execute("SELECT status FROM completions").fetchall() == [(200,)]


def test_an_earlier_repeat_of_an_exposure_moves_its_time_back(store: OutcomeStore) -> None:
    """Replicas' events arrive in any order: the unit was exposed from its earliest request."""
    from router.store import DUPLICATE

    store.write([exposure(ts=5.0)])
    assert store.write([exposure(ts=1.0)]) == [DUPLICATE]
    assert store.write([exposure(ts=9.0)]) == [DUPLICATE]
    assert store._db.execute("SELECT ts FROM exposures").fetchall() == [(1.0,)]


# Who may judge a battle; idempotency keys per API key.


def owned(bid: str, **fields: object) -> Battle:
    return replace(battle(bid), **{"voter": "alice", **fields})


@pytest.mark.parametrize(
    ("battle_fields", "voter", "allowed"),
    [
        ({}, {"user": "alice"}, True),
        ({}, {"user": "mallory"}, False),
        ({}, {}, False),  # no unit named at all
        ({}, {"session": "alice"}, False),  # a user battle reads the user
        ({"unit_type": "session"}, {"session": "alice"}, True),
        ({"unit_type": "session"}, {"user": "alice"}, False),
        ({"voter": None, "unit_type": "request"}, {}, True),  # a request arena without a user
        ({"principal": "app-1"}, {"user": "alice", "principal": "app-1"}, True),
        ({"principal": "app-1"}, {"user": "alice", "principal": "app-2"}, False),
        ({"principal": "app-1"}, {"user": "alice"}, False),
    ],
)
def test_only_the_battles_own_voter_may_judge_it(
    store: OutcomeStore, battle_fields: dict, voter: dict, allowed: bool
) -> None:
    """Whoever learns a battle id (a shared screenshot, a log) cannot stuff the ballot."""
    store.write([owned("b1", **battle_fields), completion("b1-a")])
    store.write([replace(completion("b1-a"), completion_id="side-a", battle_id="b1")])
    ballot = replace(vote("b1", "k1"), **voter)
    thumbs_on_a_side = replace(thumbs("side-a", "k2"), **voter)
    results = store.write([ballot, thumbs_on_a_side])
    expected = "recorded" if allowed else "not_the_voter"
    assert [r.status for r in results] == [expected, expected]
    assert store.count("feedback") == (2 if allowed else 0)
    if allowed:  # a replay is the voter's too
        [again] = store.write([replace(ballot, ts=9.0)])
        assert again.status == "replayed" and again.reveal == ("llama", "qwen")


def test_a_replay_by_someone_else_reveals_nothing(store: OutcomeStore) -> None:
    store.write([owned("b1")])
    assert store.write([replace(vote("b1", "k1"), user="alice")])[0].status == "recorded"
    [replay] = store.write([replace(vote("b1", "k1"), user="mallory")])
    assert replay == FeedbackResult(status="not_the_voter", feedback_id=None)


def test_feedback_outside_battles_needs_no_voter(store: OutcomeStore) -> None:
    store.write([completion("c1")])
    assert store.write([replace(thumbs("c1", "k"), user="anyone")])[0].status == "recorded"


def test_idempotency_keys_are_scoped_per_api_key(store: OutcomeStore) -> None:
    """Two clients using `vote-1` do not collide; on one key (or none) a key is one feedback."""
    store.write([owned("b1", voter=None), owned("b2", voter=None)])
    one = replace(vote("b1", "vote-1"), principal="app-1")
    other = replace(vote("b2", "vote-1", "b"), principal="app-2")
    assert [r.status for r in store.write([one, other])] == ["recorded", "recorded"]
    assert store.write([replace(other, principal="app-1")])[0].status == "key_reused"
    rows = store.rows("feedback", "ORDER BY id")
    assert [(r["principal"], r["idempotency_key"]) for r in rows] == [
        ("app-1", "vote-1"),
        ("app-2", "vote-1"),
    ]


def test_metrics_targets_never_name_an_arena_answers_variant(store: OutcomeStore) -> None:
    store.write([battle("b1"), completion("c1", variant="llama")])
    store.write([replace(completion("x", variant="qwen"), completion_id="b1-a", battle_id="b1")])
    side, plain, ballot = store.write([thumbs("b1-a", "k1"), thumbs("c1", "k2"), vote("b1", "k3")])
    assert (side.target, side.in_battle) == (("exp", None), True)
    assert (plain.target, plain.in_battle) == (("exp", "llama"), False)
    assert (ballot.target, ballot.in_battle) == (("arena", None), True)


def transcript(cid: str, ts: float = 1.0, experiment: str = "exp") -> Transcript:
    return Transcript(
        ts=ts,
        completion_id=cid,
        experiment=experiment,
        messages='[{"role": "user", "content": "hi"}]',
        answer=f"answer {cid}",
    )


def test_text_is_kept_once_per_completion_and_purged_after_its_retention(
    store: OutcomeStore,
) -> None:
    assert store.write([completion("c1"), transcript("c1", ts=1.0)]) == [None, None]
    assert store.write([transcript("c1", ts=1.0)]) == ["duplicate"]
    store.write([completion("c2"), transcript("c2", ts=5.0)])
    assert [r["answer"] for r in store.rows("transcripts", "ORDER BY ts")] == [
        "answer c1",
        "answer c2",
    ]
    assert store.purge_text(before_ts=5.0) == 1
    assert [r["completion_id"] for r in store.rows("transcripts")] == ["c2"]
    assert store.count("completions") == 2  # the events stay: only their text goes


def regenerate(cid: str, new: str | None, key: str = "r1", **fields: object) -> Feedback:
    return Feedback(
        ts=3.0,
        kind="regenerate",
        idempotency_key=key,
        completion_id=cid,
        new_completion_id=new,
        **fields,  # type: ignore[arg-type]
    )


def test_a_regenerate_names_the_answer_that_replaced_it(store: OutcomeStore) -> None:
    other = replace(completion("elsewhere"), experiment="other")
    store.write([completion("old"), completion("new"), other])
    assert store.write([regenerate("old", "missing")])[0].status == "unknown_replacement"
    assert store.write([regenerate("old", "elsewhere")])[0].status == "unknown_replacement"
    assert store.write([regenerate("old", "new")])[0].status == "recorded"
    assert store.write([regenerate("old", "new")])[0].status == "replayed"
    assert store.write([regenerate("old", None)])[0].status == "key_reused"
    (row,) = store.rows("feedback")
    assert row["new_completion_id"] == "new"


def test_a_regenerate_in_a_battle_names_only_an_answer_of_the_same_voter(
    store: OutcomeStore,
) -> None:
    store.write([owned("b1", voter="alice"), owned("b2", voter="bob")])
    store.write([replace(completion(f"{b}-{s}"), battle_id=b) for b in ("b1", "b2") for s in "ab"])
    theirs = regenerate("b1-a", "b2-a", user="alice")
    assert store.write([theirs])[0].status == "unknown_replacement"
    mine = regenerate("b1-a", "b1-b", key="r2", user="alice")
    assert store.write([mine])[0].status == "recorded"


def test_the_voter_secret_is_random_per_store(tmp_path: Path) -> None:
    first, second = OutcomeStore(tmp_path / "1.db"), OutcomeStore(tmp_path / "2.db")
    assert first.voter_secret() != second.voter_secret()
    first.close()
    second.close()
