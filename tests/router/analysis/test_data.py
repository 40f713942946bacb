"""What the analysis reads from the log: units from their first exposure, the log as of a time,
one thumbs per completion, unknown token counts, a snapshot."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np

from router.analysis.data import load
from router.analysis.metrics import ratio_parts
from router.assignment import Reason
from router.events import Battle, Completion, Exposure, Feedback, Score
from router.store import OutcomeStore
from router.style import Style


def completion(ts: float, cid: str, variant: str, unit: str = "u1", **extra: object) -> Completion:
    return Completion(
        ts=ts,
        completion_id=cid,
        request_id=f"r-{cid}",
        experiment=extra.pop("experiment", "exp"),  # type: ignore[arg-type]
        variant=variant,
        unit=unit,
        endpoint="chat",
        stream=False,
        status=200,
        ttft_s=None,
        latency_s=1.0,
        prompt_tokens=1,
        completion_tokens=1,
        **extra,  # type: ignore[arg-type]
    )


def exposure(
    *,
    ts: float,
    request_id: str = "r0",
    unit: str = "u1",
    variant: str = "a",
    reason: Reason = "arm",
    exposed: bool = True,
) -> Exposure:
    """A user unit's exposure in experiment `exp`."""
    return Exposure(
        ts=ts,
        request_id=request_id,
        experiment="exp",
        unit_type="user",
        unit=unit,
        variant=variant,
        reason=reason,
        exposed=exposed,
    )


def score(*, ts: float, cid: str, model: str, score: float, latency_s: float) -> Score:
    """A reward model's score of a completion of variant `a` in experiment `exp`."""
    return Score(
        ts=ts,
        completion_id=cid,
        experiment="exp",
        variant="a",
        model=model,
        score=score,
        latency_s=latency_s,
    )


def battle(*, battle_id: str = "bt", request_id: str = "r-x1", **style: Style) -> Battle:
    """A battle of `a` (answer x1) against `b` (answer x2) in experiment `ar`."""
    return Battle(
        ts=1.0,
        battle_id=battle_id,
        request_id=request_id,
        experiment="ar",
        unit="u1",
        variant_a="a",
        variant_b="b",
        completion_a="x1",
        completion_b="x2",
        **style,
    )


def test_requests_before_the_first_exposure_are_pre_period_not_the_arm(tmp_path: Path) -> None:
    store = OutcomeStore(tmp_path / "o.db")
    store.write(
        [
            # not allocated yet: served the control, thumbs down
            exposure(ts=0.0, reason="not_allocated", exposed=False),
            completion(1.0, "c1", "a"),
            Feedback(ts=2.0, kind="thumbs", idempotency_key="k1", completion_id="c1", value="down"),
            # allocation raised: exposed to b, thumbs up
            exposure(ts=10.0, request_id="r-c2", variant="b"),
            completion(10.0, "c2", "b"),
            Feedback(ts=12.0, kind="thumbs", idempotency_key="k2", completion_id="c2", value="up"),
        ]
    )
    group = load(tmp_path / "o.db", "exp").groups["b"]
    assert group.rows.columns["ts"].tolist() == [10.0]  # the exposing request itself counts
    assert [x.tolist() for x in ratio_parts(group, "thumbs_down_rate")] == [[0.0], [1.0]]
    assert [x.tolist() for x in ratio_parts(group, "requests_per_unit")] == [[1.0], [1.0]]
    assert group.pre.columns["ts"].tolist() == [1.0]  # CUPED's covariate instead


def test_custom_feedback_follows_its_rows(tmp_path: Path) -> None:
    store = OutcomeStore(tmp_path / "o.db")
    store.write(
        [
            exposure(ts=0.0, reason="not_allocated", exposed=False),
            completion(1.0, "c1", "a"),
            Feedback(
                ts=2.0,
                kind="custom",
                idempotency_key="k1",
                completion_id="c1",
                name="stars",
                number=1.0,
            ),
            exposure(ts=10.0, request_id="r-c2"),
            completion(10.0, "c2", "a"),
            completion(11.0, "c3", "a"),
            Feedback(
                ts=12.0,
                kind="custom",
                idempotency_key="k3",
                completion_id="c3",
                name="stars",
                number=5.0,
            ),
        ]
    )
    group = load(tmp_path / "o.db", "exp").groups["a"]
    rows, values = group.rows.custom["stars"]
    assert group.rows.columns["ts"][rows].tolist() == [11.0] and values.tolist() == [5.0]


def test_a_report_as_of_a_time_sees_only_what_was_recorded_by_then(tmp_path: Path) -> None:
    store = OutcomeStore(tmp_path / "o.db")
    store.write(
        [
            exposure(ts=0.0),
            completion(1.0, "c1", "a"),
            Feedback(ts=500.0, kind="thumbs", idempotency_key="k1", completion_id="c1", value="up"),
            Feedback(
                ts=500.0,
                kind="custom",
                idempotency_key="k2",
                completion_id="c1",
                name="stars",
                number=4.0,
            ),
            score(ts=400.0, cid="c1", model="rm", score=3.0, latency_s=399.0),
            completion(1.0, "x1", "a", experiment="ar", battle_id="bt"),
            completion(1.0, "x2", "b", experiment="ar", battle_id="bt"),
            battle(),
            Feedback(ts=900.0, kind="vote", idempotency_key="v1", battle_id="bt", value="a"),
        ]
    )
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
    store.write(
        [
            exposure(ts=0.0),
            completion(1.0, "c1", "a"),
            Feedback(ts=2.0, kind="thumbs", idempotency_key="k1", completion_id="c1", value="up"),
            Feedback(ts=3.0, kind="thumbs", idempotency_key="k2", completion_id="c1", value="up"),
            Feedback(ts=4.0, kind="thumbs", idempotency_key="k3", completion_id="c1", value="down"),
            Feedback(ts=5.0, kind="copy", idempotency_key="k4", completion_id="c1"),
            Feedback(ts=6.0, kind="copy", idempotency_key="k5", completion_id="c1"),
        ]
    )
    group = load(tmp_path / "o.db", "exp").groups["a"]
    assert group.rows.columns["thumbs_up"].tolist() == [0.0]
    assert group.rows.columns["thumbs_down"].tolist() == [1.0]
    assert group.rows.columns["copy"].tolist() == [1.0]
    before = load(tmp_path / "o.db", "exp", until=3.5).groups["a"].rows.columns
    assert before["thumbs_up"].tolist() == [1.0] and before["thumbs_down"].tolist() == [0.0]


def test_unknown_token_counts_stay_unknown(tmp_path: Path) -> None:
    store = OutcomeStore(tmp_path / "o.db")
    store.write(
        [
            completion(1.0, "x1", "a", experiment="ar", battle_id="bt"),
            completion(1.0, "x2", "b", experiment="ar", battle_id="bt"),
            battle(style_a=Style(tokens=None), style_b=Style(tokens=40)),
            Feedback(ts=2.0, kind="vote", idempotency_key="v1", battle_id="bt", value="a"),
        ]
    )
    battles = load(tmp_path / "o.db", "ar").battles
    assert battles is not None
    assert np.isnan(battles.tokens[0, 0]) and battles.tokens[0, 1] == 40


def test_a_load_reads_one_snapshot(tmp_path: Path, monkeypatch: object) -> None:
    """Every query of one load runs in one read transaction: a commit in between is not seen."""
    import router.analysis.data as data

    store = OutcomeStore(tmp_path / "o.db")
    store.write([exposure(ts=0.0), completion(1.0, "c1", "a")])
    real = data._battles

    def battles_then_a_commit(db: sqlite3.Connection, experiment: str, until: float, new_to):  # type: ignore[no-untyped-def]
        found = real(db, experiment, until, new_to)
        store.write(
            [exposure(ts=2.0, request_id="r1", unit="u2"), completion(2.0, "c2", "a", unit="u2")]
        )
        return found

    monkeypatch.setattr(data, "_battles", battles_then_a_commit)  # type: ignore[attr-defined]
    assert load(tmp_path / "o.db", "exp").groups["a"].n_units == 1
    monkeypatch.undo()  # type: ignore[attr-defined]
    assert load(tmp_path / "o.db", "exp").groups["a"].n_units == 2


def test_reward_scores_are_one_models_the_latest(tmp_path: Path) -> None:
    store = OutcomeStore(tmp_path / "o.db")
    store.write(
        [
            exposure(ts=0.0),
            completion(1.0, "c1", "a"),
            completion(2.0, "c2", "a"),
            score(ts=3.0, cid="c1", model="rm-v1", score=0.9, latency_s=2.0),
            score(ts=4.0, cid="c1", model="rm-v2", score=-4.0, latency_s=3.0),  # another scale
            score(ts=5.0, cid="c2", model="rm-v2", score=-3.0, latency_s=3.0),
        ]
    )
    data = load(tmp_path / "o.db", "exp")
    assert data.groups["a"].rows.columns["score"].tolist() == [-4.0, -3.0]
    assert data.reward_model == "rm-v2"  # the report names the model whose scores it uses
    earlier = load(tmp_path / "o.db", "exp", until=3.5)
    before = earlier.groups["a"].rows
    assert before.columns["score"][0] == 0.9 and np.isnan(before.columns["score"][1])
    assert earlier.reward_model == "rm-v1"
    assert load(tmp_path / "o.db", "exp", until=2.5).reward_model is None


def test_feedback_on_a_failed_completion_inflates_no_rate(tmp_path: Path) -> None:
    """A thumbs up on an answer the client never got whole (499) counted in the numerator of
    thumbs_up_rate but not its denominator: 3 thumbs over 1 answer made a rate of 3."""
    from dataclasses import replace

    store = OutcomeStore(tmp_path / "o.db")
    failed = [replace(completion(float(i), f"f{i}", "a"), status=499) for i in range(1, 3)]
    store.write(
        [
            exposure(ts=0.0),
            completion(1.0, "ok", "a"),
            *failed,
            *(
                Feedback(
                    ts=5.0, kind=kind, idempotency_key=f"k-{kind}-{c}", completion_id=c, value=value
                )
                for c in ("ok", "f1", "f2")
                for kind, value in (("thumbs", "up"), ("regenerate", None), ("copy", None))
            ),
        ]
    )
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
    store.write(
        [
            completion(1.0, "x1", "a", experiment="ar", battle_id="bt"),
            completion(1.0, "x2", "b", experiment="ar", battle_id="bt"),
            battle(),
            replace(completion(2.0, "y1", "a", experiment="ar", battle_id="b2"), status=NOT_SHOWN),
            replace(completion(2.0, "y2", "b", experiment="ar", battle_id="b2"), status=503),
        ]
    )
    groups = load(tmp_path / "o.db", "ar").groups
    assert groups["a"].n_units == 1
    assert [x.tolist() for x in ratio_parts(groups["a"], "error_rate")] == [[0.0], [1.0]]
    assert [x.tolist() for x in ratio_parts(groups["b"], "error_rate")] == [[0.0, 1.0], [1.0, 1.0]]


def test_battles_carry_whether_an_answer_named_a_model(tmp_path: Path) -> None:
    from dataclasses import replace

    store = OutcomeStore(tmp_path / "o.db")
    named = battle(battle_id="b1", request_id="r1")
    store.write(
        [
            named,
            replace(named, battle_id="b2", identity_revealed=True),
            Feedback(ts=2.0, kind="vote", idempotency_key="v1", battle_id="b1", value="a"),
            Feedback(ts=2.0, kind="vote", idempotency_key="v2", battle_id="b2", value="b"),
        ]
    )
    battles = load(tmp_path / "o.db", "ar").battles
    assert battles is not None and battles.identity_revealed.tolist() == [False, True]
