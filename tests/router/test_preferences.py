"""Preference export: votes, regenerations and thumbs become TRL conversational records, with
hashed voters and a split by voter; what cannot be a preference is counted and left out."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from router.events import Battle, Completion, Event, Feedback, Transcript
from router.preferences import (
    ExportError,
    export_preferences,
    split_of,
    unpaired_path,
    voter_hash,
    write_jsonl,
)
from router.store import OutcomeStore

PROMPT = [{"role": "user", "content": "What is the capital of France?"}]


def answered(cid: str, variant: str, unit: str, *, battle: str | None = None, text=True):
    events: list[Event] = [
        Completion(
            ts=1.0,
            completion_id=cid,
            request_id=f"r-{cid}",
            experiment="duel",
            variant=variant,
            unit=unit,
            endpoint="chat",
            stream=True,
            status=200,
            ttft_s=0.1,
            latency_s=1.0,
            prompt_tokens=5,
            completion_tokens=3,
            battle_id=battle,
        )
    ]
    if text:
        events.append(
            Transcript(
                ts=1.0,
                completion_id=cid,
                experiment="duel",
                messages=json.dumps(PROMPT),
                answer=f"answer of {variant} ({cid})",
            )
        )
    return events


def battle(bid: str, voter: str, *, text: bool = True, revealed: bool = False) -> list[Event]:
    return [
        *answered(f"{bid}-a", "alpha", voter, battle=bid, text=text),
        *answered(f"{bid}-b", "beta", voter, battle=bid, text=text),
        Battle(
            ts=1.0,
            battle_id=bid,
            request_id=f"r-{bid}",
            experiment="duel",
            unit=voter,
            variant_a="alpha",
            variant_b="beta",
            completion_a=f"{bid}-a",
            completion_b=f"{bid}-b",
            voter=voter,
            identity_revealed=revealed,
        ),
    ]


def vote(bid: str, value: str, voter: str) -> Feedback:
    return Feedback(
        ts=2.0, kind="vote", idempotency_key=f"v-{bid}", battle_id=bid, value=value, user=voter
    )


@pytest.fixture
def store_path(tmp_path: Path) -> Path:
    return tmp_path / "outcomes.db"


def write(path: Path, events: list[Event]) -> None:
    store = OutcomeStore(path)
    store.write(events)
    store.close()


def test_votes_become_pairs_and_ties_are_counted_and_left_out(store_path: Path) -> None:
    events: list[Event] = []
    for i, value in enumerate(["a", "b", "tie", "both_bad"]):
        events += [*battle(f"b{i}", "alice"), vote(f"b{i}", value, "alice")]
    events += [*battle("b9", "bob", revealed=True), vote("b9", "a", "bob")]
    events += [*battle("b8", "carol", text=False), vote("b8", "a", "carol")]
    write(store_path, events)
    out = export_preferences(store_path, "duel")
    assert [(p["chosen_variant"], p["rejected_variant"]) for p in out.pairs] == [
        ("alpha", "beta"),
        ("beta", "alpha"),
    ]
    first = out.pairs[0]
    assert first["prompt"] == PROMPT
    assert first["chosen"] == [{"role": "assistant", "content": "answer of alpha (b0-a)"}]
    assert first["rejected"] == [{"role": "assistant", "content": "answer of beta (b0-b)"}]
    assert (first["source"], first["battle_id"], first["experiment"]) == ("vote", "b0", "duel")
    assert (first["chosen_id"], first["rejected_id"]) == ("b0-a", "b0-b")
    assert [p["chosen_side"] for p in out.pairs] == ["a", "b"]
    assert first["voter"] != "alice" and len(first["voter"]) == 16
    summary = out.summary()
    assert summary["votes"] == 6 and summary["vote_records"] == 2
    assert (summary["votes_tie"], summary["votes_both_bad"]) == (1, 1)
    assert summary["votes_not_counted_identity_revealed"] == 1
    assert summary["votes_without_text"] == 1


def test_a_linked_regeneration_is_a_pair_with_the_replacement_chosen(store_path: Path) -> None:
    events: list[Event] = [
        *answered("old", "alpha", "u1"),
        *answered("new", "alpha", "u1"),
        *answered("unlinked", "beta", "u2"),
        Feedback(
            ts=3.0,
            kind="regenerate",
            idempotency_key="r1",
            completion_id="old",
            new_completion_id="new",
        ),
        Feedback(ts=3.0, kind="regenerate", idempotency_key="r2", completion_id="unlinked"),
    ]
    write(store_path, events)
    out = export_preferences(store_path, "duel")
    [pair] = out.pairs
    assert (pair["source"], pair["chosen_id"], pair["rejected_id"]) == ("regenerate", "new", "old")
    assert pair["chosen"][0]["content"] == "answer of alpha (new)"
    assert out.counts["regenerations_without_replacement"] == 1


def test_a_regeneration_of_another_prompt_is_left_out(store_path: Path) -> None:
    other = Transcript(
        ts=1.0, completion_id="new", experiment="duel", messages="[]", answer="something"
    )
    events: list[Event] = [
        *answered("old", "alpha", "u1"),
        *answered("new", "alpha", "u1", text=False),
        other,
        Feedback(
            ts=3.0,
            kind="regenerate",
            idempotency_key="r1",
            completion_id="old",
            new_completion_id="new",
        ),
        *answered("c", "beta", "u2"),
        Feedback(ts=3.0, kind="thumbs", idempotency_key="t", completion_id="c", value="up"),
    ]
    write(store_path, events)
    out = export_preferences(store_path, "duel")
    assert out.pairs == [] and out.counts["regenerations_with_another_prompt"] == 1


def test_thumbs_become_unpaired_records(store_path: Path) -> None:
    events: list[Event] = [*answered("c1", "alpha", "u1"), *answered("c2", "beta", "u2")]
    events += [
        Feedback(ts=2.0, kind="thumbs", idempotency_key="t1", completion_id="c1", value="up"),
        Feedback(ts=2.5, kind="thumbs", idempotency_key="t2", completion_id="c2", value="down"),
    ]
    write(store_path, events)
    out = export_preferences(store_path, "duel")
    assert [(r["variant"], r["label"], r["source"]) for r in out.unpaired] == [
        ("alpha", True, "thumbs"),
        ("beta", False, "thumbs"),
    ]
    assert out.unpaired[0]["completion"] == [
        {"role": "assistant", "content": "answer of alpha (c1)"}
    ]


def test_the_split_is_by_voter_and_the_same_on_every_export(store_path: Path) -> None:
    events: list[Event] = []
    for i in range(300):
        voter = f"user-{i % 60}"
        events += [*battle(f"b{i}", voter), vote(f"b{i}", "ab"[i % 2], voter)]
    write(store_path, events)
    out = export_preferences(store_path, "duel", heldout=0.25)
    sides: dict[str, set[str]] = {}
    for pair in out.pairs:
        sides.setdefault(pair["voter"], set()).add(pair["split"])
    assert all(len(s) == 1 for s in sides.values())  # never one voter on both sides
    held = sum("heldout" in s for s in sides.values())
    assert 5 <= held <= 25  # about a quarter of 60 voters
    assert export_preferences(store_path, "duel", heldout=0.25).pairs == out.pairs


@given(st.binary(min_size=32, max_size=32), st.text(min_size=1, max_size=40))
def test_voter_hashes_are_keyed_and_the_split_is_monotone(secret: bytes, voter: str) -> None:
    hashed = voter_hash(secret, voter)
    assert len(hashed) == 16 and hashed == voter_hash(secret, voter)
    assert split_of(hashed, 0.0) == "train"
    # Holding out more voters only moves voters into the held-out side.
    assert split_of(hashed, 0.5) == "train" or split_of(hashed, 0.6) == "heldout"


def test_the_hash_depends_on_the_store(tmp_path: Path) -> None:
    for name in ("one", "two"):
        write(tmp_path / f"{name}.db", [*battle("b1", "alice"), vote("b1", "a", "alice")])
    one = export_preferences(tmp_path / "one.db", "duel").pairs[0]["voter"]
    two = export_preferences(tmp_path / "two.db", "duel").pairs[0]["voter"]
    assert one != two


@pytest.mark.parametrize(
    ("events", "experiment", "message"),
    [
        ([], "duel", "holds nothing of experiment 'duel'"),
        (battle("b1", "alice"), "duel", "has no votes, thumbs or regenerations"),
        (
            [*battle("b1", "alice", text=False), vote("b1", "a", "alice")],
            "duel",
            "none has a preference with its text kept (votes_without_text: 1)",
        ),
        (
            [*battle("b1", "alice"), vote("b1", "tie", "alice")],
            "duel",
            "votes_tie: 1",
        ),
        (battle("b1", "alice"), "other", "holds nothing of experiment 'other'"),
    ],
)
def test_nothing_to_export_says_why(
    store_path: Path, events: list[Event], experiment: str, message: str
) -> None:
    write(store_path, events)
    with pytest.raises(ExportError, match=message.replace("(", r"\(").replace(")", r"\)")):
        export_preferences(store_path, experiment)


def test_a_missing_or_foreign_file_is_an_export_error(tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="no outcome log"):
        export_preferences(tmp_path / "missing.db", "duel")
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"not a database" * 100)
    with pytest.raises(ExportError, match="not an arena-serve outcome log"):
        export_preferences(junk, "duel")


def test_records_are_written_as_json_lines_atomically(tmp_path: Path) -> None:
    out = tmp_path / "prefs.jsonl"
    write_jsonl([{"a": "é"}, {"b": 2}], out)
    assert [json.loads(line) for line in out.read_text().splitlines()] == [{"a": "é"}, {"b": 2}]
    assert [p.name for p in tmp_path.iterdir()] == ["prefs.jsonl"]
    assert unpaired_path(out).name == "prefs.unpaired.jsonl"
    assert Counter(p.suffix for p in tmp_path.iterdir()) == {".jsonl": 1}
