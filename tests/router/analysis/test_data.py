"""What the analysis reads from the log: units from their first exposure, the log as of a time,
one thumbs per completion, unknown token counts, a snapshot."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np

from router.analysis.data import load
from router.analysis.metrics import ratio_parts
from router.events import Battle, Completion, Exposure, Feedback, Score
from router.store import OutcomeStore


def completion(ts: float, cid: str, variant: str, unit: str = "u1", **extra: object) -> Completion:
    return Completion(ts, cid, f"r-{cid}", extra.pop("experiment", "exp"), variant, unit,  # type: ignore[arg-type]
                      "chat", False, 200, None, 1.0, 1, 1, **extra)  # type: ignore[arg-type]  # fmt: skip


def test_requests_before_the_first_exposure_are_pre_period_not_the_arm(tmp_path: Path) -> None:
    store = OutcomeStore(tmp_path / "o.db")
    store.write([
        # not allocated yet: served the control, thumbs down
        Exposure(0.0, "r0", "exp", "user", "u1", "a", "not_allocated", False),
        completion(1.0, "c1", "a"),
        Feedback(2.0, "thumbs", "k1", completion_id="c1", value="down"),
        # allocation raised: exposed to b, thumbs up
        Exposure(10.0, "r-c2", "exp", "user", "u1", "b", "arm", True),
        completion(10.0, "c2", "b"),
        Feedback(12.0, "thumbs", "k2", completion_id="c2", value="up"),
    ])  # fmt: skip
    group = load(tmp_path / "o.db", "exp").groups["b"]
    assert group.rows.columns["ts"].tolist() == [10.0]  # the exposing request itself counts
    assert [x.tolist() for x in ratio_parts(group, "thumbs_down_rate")] == [[0.0], [1.0]]
    assert [x.tolist() for x in ratio_parts(group, "requests_per_unit")] == [[1.0], [1.0]]
    assert group.pre.columns["ts"].tolist() == [1.0]  # CUPED's covariate instead


def test_custom_feedback_follows_its_rows(tmp_path: Path) -> None:
    store = OutcomeStore(tmp_path / "o.db")
    store.write([
        Exposure(0.0, "r0", "exp", "user", "u1", "a", "not_allocated", False),
        completion(1.0, "c1", "a"),
        Feedback(2.0, "custom", "k1", completion_id="c1", name="stars", number=1.0),
        Exposure(10.0, "r-c2", "exp", "user", "u1", "a", "arm", True),
        completion(10.0, "c2", "a"),
        completion(11.0, "c3", "a"),
        Feedback(12.0, "custom", "k3", completion_id="c3", name="stars", number=5.0),
    ])  # fmt: skip
    group = load(tmp_path / "o.db", "exp").groups["a"]
    rows, values = group.rows.custom["stars"]
    assert group.rows.columns["ts"][rows].tolist() == [11.0] and values.tolist() == [5.0]


def test_a_report_as_of_a_time_sees_only_what_was_recorded_by_then(tmp_path: Path) -> None:
    store = OutcomeStore(tmp_path / "o.db")
    store.write([
        Exposure(0.0, "r0", "exp", "user", "u1", "a", "arm", True),
        completion(1.0, "c1", "a"),
        Feedback(500.0, "thumbs", "k1", completion_id="c1", value="up"),
        Feedback(500.0, "custom", "k2", completion_id="c1", name="stars", number=4.0),
        Score(400.0, "c1", "exp", "a", "rm", 3.0, 399.0),
        completion(1.0, "x1", "a", experiment="ar", battle_id="bt"),
        completion(1.0, "x2", "b", experiment="ar", battle_id="bt"),
        Battle(1.0, "bt", "r-x1", "ar", "u1", "a", "b", "x1", "x2"),
        Feedback(900.0, "vote", "v1", battle_id="bt", value="a"),
    ])  # fmt: skip
    then = load(tmp_path / "o.db", "exp", until=100.0).groups["a"].rows
    assert then.columns["thumbs_up"].tolist() == [0.0]
    assert np.isnan(then.columns["score"]).all() and then.custom == {}
    later = load(tmp_path / "o.db", "exp").groups["a"].rows
    assert later.columns["thumbs_up"].tolist() == [1.0] and later.columns["score"].tolist() == [3.0]
    assert later.custom["stars"][1].tolist() == [4.0]
    battles = load(tmp_path / "o.db", "ar", until=100.0).battles
    assert battles is not None and battles.vote == [] and battles.battles == 1
    assert load(tmp_path / "o.db", "ar").battles.vote == ["a"]  # type: ignore[union-attr]


def test_one_thumbs_per_completion_the_latest(tmp_path: Path) -> None:
    store = OutcomeStore(tmp_path / "o.db")
    store.write([
        Exposure(0.0, "r0", "exp", "user", "u1", "a", "arm", True),
        completion(1.0, "c1", "a"),
        Feedback(2.0, "thumbs", "k1", completion_id="c1", value="up"),
        Feedback(3.0, "thumbs", "k2", completion_id="c1", value="up"),
        Feedback(4.0, "thumbs", "k3", completion_id="c1", value="down"),
        Feedback(5.0, "copy", "k4", completion_id="c1"),
        Feedback(6.0, "copy", "k5", completion_id="c1"),
    ])  # fmt: skip
    group = load(tmp_path / "o.db", "exp").groups["a"]
    assert group.rows.columns["thumbs_up"].tolist() == [0.0]
    assert group.rows.columns["thumbs_down"].tolist() == [1.0]
    assert group.rows.columns["copy"].tolist() == [1.0]
    before = load(tmp_path / "o.db", "exp", until=3.5).groups["a"].rows.columns
    assert before["thumbs_up"].tolist() == [1.0] and before["thumbs_down"].tolist() == [0.0]


def test_unknown_token_counts_stay_unknown(tmp_path: Path) -> None:
    store = OutcomeStore(tmp_path / "o.db")
    store.write([
        completion(1.0, "x1", "a", experiment="ar", battle_id="bt"),
        completion(1.0, "x2", "b", experiment="ar", battle_id="bt"),
        Battle(1.0, "bt", "r-x1", "ar", "u1", "a", "b", "x1", "x2", tokens_a=None, tokens_b=40),
        Feedback(2.0, "vote", "v1", battle_id="bt", value="a"),
    ])  # fmt: skip
    battles = load(tmp_path / "o.db", "ar").battles
    assert battles is not None
    assert np.isnan(battles.tokens[0, 0]) and battles.tokens[0, 1] == 40


def test_a_load_reads_one_snapshot(tmp_path: Path, monkeypatch: object) -> None:
    """Every query of one load runs in one read transaction: a commit in between is not seen."""
    import router.analysis.data as data

    store = OutcomeStore(tmp_path / "o.db")
    store.write([Exposure(0.0, "r0", "exp", "user", "u1", "a", "arm", True),
                 completion(1.0, "c1", "a")])  # fmt: skip
    real = data._battles

    def battles_then_a_commit(db: sqlite3.Connection, experiment: str, until: float):  # type: ignore[no-untyped-def]
        found = real(db, experiment, until)
        store.write([Exposure(2.0, "r1", "exp", "user", "u2", "a", "arm", True),
                     completion(2.0, "c2", "a", unit="u2")])  # fmt: skip
        return found

    monkeypatch.setattr(data, "_battles", battles_then_a_commit)  # type: ignore[attr-defined]
    assert load(tmp_path / "o.db", "exp").groups["a"].n_units == 1
    monkeypatch.undo()  # type: ignore[attr-defined]
    assert load(tmp_path / "o.db", "exp").groups["a"].n_units == 2


def test_reward_scores_are_one_models_the_latest(tmp_path: Path) -> None:
    store = OutcomeStore(tmp_path / "o.db")
    store.write([
        Exposure(0.0, "r0", "exp", "user", "u1", "a", "arm", True),
        completion(1.0, "c1", "a"),
        completion(2.0, "c2", "a"),
        Score(3.0, "c1", "exp", "a", "rm-v1", 0.9, 2.0),
        Score(4.0, "c1", "exp", "a", "rm-v2", -4.0, 3.0),  # another scale
        Score(5.0, "c2", "exp", "a", "rm-v2", -3.0, 3.0),
    ])  # fmt: skip
    rows = load(tmp_path / "o.db", "exp").groups["a"].rows
    assert rows.columns["score"].tolist() == [-4.0, -3.0]
    before = load(tmp_path / "o.db", "exp", until=3.5).groups["a"].rows
    assert before.columns["score"][0] == 0.9 and np.isnan(before.columns["score"][1])


def test_feedback_on_a_failed_completion_inflates_no_rate(tmp_path: Path) -> None:
    """A thumbs up on an answer the client never got whole (499) counted in the numerator of
    thumbs_up_rate but not its denominator: 3 thumbs over 1 answer made a rate of 3."""
    from dataclasses import replace

    store = OutcomeStore(tmp_path / "o.db")
    failed = [replace(completion(float(i), f"f{i}", "a"), status=499) for i in range(1, 3)]
    store.write([
        Exposure(0.0, "r0", "exp", "user", "u1", "a", "arm", True),
        completion(1.0, "ok", "a"),
        *failed,
        *(Feedback(5.0, kind, f"k-{kind}-{c}", completion_id=c, value=value)
          for c in ("ok", "f1", "f2")
          for kind, value in (("thumbs", "up"), ("regenerate", None), ("copy", None))),
    ])  # fmt: skip
    group = load(tmp_path / "o.db", "exp").groups["a"]
    for metric in ("thumbs_up_rate", "regenerate_rate", "copy_rate"):
        assert [x.tolist() for x in ratio_parts(group, metric)] == [[1.0], [1.0]], metric
    assert [x.tolist() for x in ratio_parts(group, "error_rate")] == [[2.0], [3.0]]


def test_an_arena_side_that_was_never_shown_is_no_unit_of_its_variant(tmp_path: Path) -> None:
    """In a battle whose other side failed, the side that answered was not shown: it is neither
    a success nor its variant's error."""
    from dataclasses import replace

    from router.events import NOT_SHOWN

    store = OutcomeStore(tmp_path / "o.db")
    store.write([
        completion(1.0, "x1", "a", experiment="ar", battle_id="bt"),
        completion(1.0, "x2", "b", experiment="ar", battle_id="bt"),
        Battle(1.0, "bt", "r-x1", "ar", "u1", "a", "b", "x1", "x2"),
        replace(completion(2.0, "y1", "a", experiment="ar", battle_id="b2"), status=NOT_SHOWN),
        replace(completion(2.0, "y2", "b", experiment="ar", battle_id="b2"), status=503),
    ])  # fmt: skip
    groups = load(tmp_path / "o.db", "ar").groups
    assert groups["a"].n_units == 1
    assert [x.tolist() for x in ratio_parts(groups["a"], "error_rate")] == [[0.0], [1.0]]
    assert [x.tolist() for x in ratio_parts(groups["b"], "error_rate")] == [[0.0, 1.0], [1.0, 1.0]]


def test_battles_carry_whether_an_answer_named_a_model(tmp_path: Path) -> None:
    from dataclasses import replace

    store = OutcomeStore(tmp_path / "o.db")
    named = Battle(1.0, "b1", "r1", "ar", "u1", "a", "b", "x1", "x2")
    store.write([
        named, replace(named, battle_id="b2", identity_revealed=True),
        Feedback(2.0, "vote", "v1", battle_id="b1", value="a"),
        Feedback(2.0, "vote", "v2", battle_id="b2", value="b"),
    ])  # fmt: skip
    battles = load(tmp_path / "o.db", "ar").battles
    assert battles is not None and battles.identity_revealed.tolist() == [False, True]
