"""The report on simulated logs with a known truth: each verdict is reached for the right reason."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from router.analysis import build_report
from router.analysis.simulate import Arm, Traffic, simulate_ab, simulate_arena
from router.experiment import Experiment

GUARDRAILS = [
    {"metric": "reward_score", "max_decrease": 0.15},
    {"metric": "error_rate", "max_increase": 0.03},
]


def ab(**extra: object) -> Experiment:
    return Experiment.model_validate(
        {"name": "ab", "arms": [{"variant": "a"}, {"variant": "b"}], "guardrails": GUARDRAILS}
        | extra
    )


def arena(**extra: object) -> Experiment:
    return Experiment.model_validate(
        {
            "name": "duel",
            "mode": "arena",
            "arms": [{"variant": "a"}, {"variant": "b"}],
            "guardrails": [{"metric": "reward_score", "max_decrease": 0.2}],
        }
        | extra
    )


def test_a_better_treatment_with_healthy_guardrails_ships(tmp_path: Path) -> None:
    store = tmp_path / "o.db"
    arms = {"a": Arm(thumbs_up=0.2), "b": Arm(thumbs_up=0.3)}
    simulate_ab(store, ab(), Traffic(units=3000, arms=arms, seed=1))
    report = build_report(store, ab(), reps=100)
    assert report.control == "a" and set(report.units) == {"a", "b"}
    assert report.verdict.decision == "ship" and report.verdict.variant == "b"
    assert {g.metric: g.status for g in report.guardrails} == {
        "reward_score": "pass",
        "error_rate": "pass",
    }
    up = next(c for c in report.comparisons if c.metric == "thumbs_up_rate")
    assert up.relative.low < 0.5 < up.relative.high  # the truth: +50 %
    assert report.sequential and report.sequential[-1].p_value < 0.05
    assert not report.sample_ratio.mismatch


def test_winning_thumbs_while_losing_reward_is_the_sycophancy_pattern(tmp_path: Path) -> None:
    store = tmp_path / "o.db"
    arms = {"a": Arm(thumbs_up=0.2), "b": Arm(thumbs_up=0.3, reward=-0.5)}
    simulate_ab(store, ab(), Traffic(units=3000, arms=arms, seed=2))
    report = build_report(store, ab(), reps=100)
    assert report.verdict.decision == "do not ship"
    assert report.verdict.sycophancy == ["b"]
    assert any("sycophancy" in reason for reason in report.verdict.reasons)


def test_no_difference_keeps_running(tmp_path: Path) -> None:
    store = tmp_path / "o.db"
    simulate_ab(store, ab(), Traffic(units=1500, arms={"a": Arm(), "b": Arm()}, seed=3))
    report = build_report(store, ab(), reps=100)
    assert report.verdict.decision == "keep running" and report.verdict.sycophancy == []


def test_a_sample_ratio_mismatch_invalidates_the_experiment(tmp_path: Path) -> None:
    store = tmp_path / "o.db"
    traffic = Traffic(units=4000, split={"a": 0.45, "b": 0.55}, arms={"b": Arm(thumbs_up=0.4)})
    simulate_ab(store, ab(), traffic)
    report = build_report(store, ab(), reps=50)
    assert report.sample_ratio.mismatch
    assert report.verdict.decision == "do not ship"
    assert "sample-ratio mismatch" in report.verdict.reasons[0]


def test_cuped_uses_the_pre_period(tmp_path: Path) -> None:
    store = tmp_path / "o.db"
    arms = {"a": Arm(thumbs_up=0.2), "b": Arm(thumbs_up=0.2)}
    traffic = Traffic(units=2000, pre_period=True, unit_effect=1.0, seed=4, arms=arms)
    simulate_ab(store, ab(), traffic)
    report = build_report(store, ab(), reps=50)
    up = next(c for c in report.comparisons if c.metric == "thumbs_up_rate")
    assert up.cuped and up.variance_reduction > 0.05


def test_holdout_is_its_own_group(tmp_path: Path) -> None:
    store = tmp_path / "o.db"
    experiment = ab(holdout=0.2, default_variant="a")
    simulate_ab(store, experiment, Traffic(units=2000, seed=5))
    report = build_report(store, experiment, reps=50)
    assert set(report.units) == {"a", "b", "holdout"}
    assert {c.treatment for c in report.comparisons} == {"b"}


def test_an_arena_leaderboard_and_its_verdict(tmp_path: Path) -> None:
    store = tmp_path / "o.db"
    ratings, rewards = {"a": 1000, "b": 1070}, {"a": 0.0, "b": 0.0}
    simulate_arena(store, arena(), battles=2000, ratings=ratings, rewards=rewards)
    report = build_report(store, arena(), reps=100)
    board = report.arena.leaderboard
    assert [row.variant for row in board] == ["b", "a"]
    [h2h] = report.arena.head_to_head
    assert h2h.probability.low < 0.6 < h2h.probability.high  # the truth: 1070 vs 1000 -> 0.60
    assert report.verdict.decision == "ship" and report.verdict.variant == "b"


def test_an_arena_winner_with_a_worse_reward_is_named(tmp_path: Path) -> None:
    store = tmp_path / "o.db"
    ratings, rewards = {"a": 1000, "b": 1100}, {"a": 0.0, "b": -0.6}
    simulate_arena(store, arena(), battles=2000, ratings=ratings, rewards=rewards)
    report = build_report(store, arena(), reps=100)
    assert report.verdict.decision == "do not ship"
    assert report.verdict.sycophancy == ["b"]


def test_style_control_removes_a_length_bias(tmp_path: Path) -> None:
    store = tmp_path / "o.db"
    ratings = {"a": 1000, "b": 1000}
    simulate_arena(
        store, arena(), battles=3000, ratings=ratings, length_bias=3.0, longer={"b": 2.0}
    )
    report = build_report(store, arena(), reps=100)
    [h2h] = report.arena.head_to_head
    assert h2h.probability.low > 0.5  # b "wins" only by writing longer answers
    styled = h2h.probability_style_controlled
    assert styled.low < 0.5 < styled.high
    assert report.arena.style_coefficients["length"] > 0


@pytest.mark.parametrize("mode", ["ab", "arena"])
def test_an_empty_log_gives_a_report(tmp_path: Path, mode: str) -> None:
    from router.store import OutcomeStore

    OutcomeStore(tmp_path / "o.db").close()
    experiment = ab() if mode == "ab" else arena()
    report = build_report(tmp_path / "o.db", experiment, reps=10)
    assert report.verdict.decision == "keep running"
    assert report.model_dump_json()  # JSON-safe: no NaN


def test_of_several_treatments_the_best_ships_tested_at_a_corrected_level(tmp_path: Path) -> None:
    store = tmp_path / "o.db"
    experiment = Experiment.model_validate(
        {"name": "m", "arms": [{"variant": "a"}, {"variant": "b"}, {"variant": "c"}]}
    )
    arms = {"a": Arm(thumbs_up=0.2), "b": Arm(thumbs_up=0.25), "c": Arm(thumbs_up=0.4)}
    simulate_ab(store, experiment, Traffic(units=6000, days=3, arms=arms))
    report = build_report(store, experiment, reps=20)
    assert report.verdict.decision == "ship" and report.verdict.variant == "c"
    assert any("Bonferroni" in note for note in report.notes)


def test_a_pair_listed_twice_is_one_pair_in_the_sample_ratio_test(tmp_path: Path) -> None:
    store = tmp_path / "o.db"
    experiment = arena(
        arms=[{"variant": "a"}, {"variant": "b"}, {"variant": "c"}],
        pairs=[{"variants": ["a", "b"]}, {"variants": ["b", "a"]}, {"variants": ["a", "c"]}],
    )
    simulate_arena(store, experiment, battles=3000, ratings={"a": 1000, "b": 1000, "c": 1000})
    ratio = build_report(store, experiment, reps=20).sample_ratio
    assert ratio is not None and ratio.groups == ["a vs b", "a vs c"]
    assert ratio.expected == [2000.0, 1000.0] and not ratio.mismatch


def test_a_violated_guardrail_does_not_pass_at_some_daily_look() -> None:
    """Judged at 20 looks as the data come in, a guardrail that is truly violated (+1.2 points
    against a bound of +1) passes at some look in at most about ALPHA of the runs: its
    interval is a confidence sequence. (With the fixed-horizon interval: 28 of 400.)"""
    import numpy as np

    from router.analysis import stats
    from router.analysis.report import _always_valid, _guardrail_status
    from router.analysis.schema import Interval
    from router.experiment import Guardrail

    guardrail = Guardrail(metric="error_rate", max_increase=0.01)
    runs, looks, n, passed_somewhere = 200, 20, 20_000, 0
    for seed in range(runs):
        rng = np.random.default_rng(seed)
        control = (rng.random(n) < 0.05).astype(float)
        treatment = (rng.random(n) < 0.062).astype(float)
        for k in np.linspace(n / looks, n, looks).astype(int):
            lift = stats.compare_ratio(treatment[:k], np.ones(k), control[:k], np.ones(k))
            change = _always_valid(Interval.of(lift.absolute), guardrail)
            if _guardrail_status(guardrail, change) == "pass":
                passed_somewhere += 1
                break
    assert passed_somewhere <= 0.05 * runs


def test_one_voter_is_no_arena_decision(tmp_path: Path) -> None:
    """A single voter's 30 votes: the interval is not of zero width, and nothing ships."""
    from router.events import Battle, Completion, Feedback
    from router.store import OutcomeStore
    from router.style import Style

    store = OutcomeStore(tmp_path / "o.db")
    events: list = []
    for i in range(30):
        bid, a, b = f"bt{i}", f"bt{i}-a", f"bt{i}-b"
        for cid, variant in ((a, "a"), (b, "b")):
            events.append(
                Completion(
                    ts=float(i),
                    completion_id=cid,
                    request_id=bid,
                    experiment="duel",
                    variant=variant,
                    unit="solo",
                    endpoint="chat",
                    stream=False,
                    status=200,
                    ttft_s=None,
                    latency_s=1.0,
                    prompt_tokens=3,
                    completion_tokens=3,
                    battle_id=bid,
                )
            )
        events.append(
            Battle(
                ts=float(i),
                battle_id=bid,
                request_id=bid,
                experiment="duel",
                unit="solo",
                variant_a="a",
                variant_b="b",
                completion_a=a,
                completion_b=b,
                style_a=Style(tokens=3),
                style_b=Style(tokens=3),
            )
        )
        events.append(
            Feedback(
                ts=i + 0.5,
                kind="vote",
                idempotency_key=f"v{i}",
                battle_id=bid,
                value="b" if i < 19 else "a",
            )
        )
    store.write(events)
    report = build_report(tmp_path / "o.db", arena(guardrails=[]), reps=100)
    assert report.arena is not None and report.arena.voters == 1
    [duel] = report.arena.head_to_head
    assert duel.probability.high > duel.probability.low
    assert report.verdict.decision == "keep running"
    assert any("1 voters so far" in reason for reason in report.verdict.reasons)


def test_a_guardrail_bound_of_zero_can_fail() -> None:
    """`max_increase: 0` (no rise at all): a clear rise of 5 points on a 5 % error rate fails."""
    import numpy as np

    from router.analysis import stats
    from router.analysis.report import _always_valid, _guardrail_status
    from router.analysis.schema import Interval
    from router.experiment import Guardrail

    guardrail = Guardrail(metric="error_rate", max_increase=0.0)
    rng = np.random.default_rng(0)
    n = 20_000
    control = (rng.random(n) < 0.05).astype(float)
    treatment = (rng.random(n) < 0.10).astype(float)
    lift = stats.compare_ratio(treatment, np.ones(n), control, np.ones(n))
    change = _always_valid(Interval.of(lift.absolute), guardrail, lift.control.value)
    assert change.high is not None and change.high - change.low < 0.05
    assert _guardrail_status(guardrail, change) == "fail"


@pytest.mark.parametrize("sequential", [True, False])
def test_the_primary_metric_is_tested_at_the_level_given(sequential: bool) -> None:
    """p = 0.04 is significant alone (0.05) and not with two treatments (0.025)."""
    from router.analysis.report import _primary
    from router.analysis.schema import Comparison, Interval, Look
    from router.analysis.verdict import read_primary

    change = Interval(value=0.05, low=0.01, high=0.09, se=0.02)
    comparison = Comparison(
        metric="thumbs_up_rate",
        treatment="b",
        control="a",
        absolute=change,
        relative=change,
        p_value=0.04,
        p_adjusted=0.04,
        cuped=False,
        variance_reduction=None,
    )
    look = Look(
        ts=1.0,
        treatment="b",
        difference=0.05,
        p_value=0.04,
        naive_p_value=0.01,
        cs_low=0.001,
        cs_high=0.1,
    )
    primary = _primary(ab(), "b", [comparison], [look] if sequential else [], None)
    alone, _ = read_primary(primary, higher_is_better=True, alpha=0.05)
    corrected, _ = read_primary(primary, higher_is_better=True, alpha=0.025)
    assert (alone, corrected) == ("better", "no_difference")


def test_votes_on_battles_whose_answers_named_a_model_are_kept_but_not_counted(
    tmp_path: Path,
) -> None:
    """An even match, plus 400 battles in which b named itself and won every vote: counted, b
    would lead; left out (as LM Arena does), the leaderboard is the even match's alone."""
    import sqlite3

    from router.events import Battle, Feedback
    from router.store import OutcomeStore
    from router.style import Style

    store = tmp_path / "o.db"
    simulate_arena(store, arena(), battles=2000, ratings={"a": 1000, "b": 1000}, seed=11)
    clean = build_report(store, arena(), reps=50)
    named = []
    for i in range(400):
        named.append(
            Battle(
                ts=5e9 + i,
                battle_id=f"named-{i}",
                request_id=f"r{i}",
                experiment="duel",
                unit=f"u{i % 500}",
                variant_a="a",
                variant_b="b",
                completion_a=f"n{i}-a",
                completion_b=f"n{i}-b",
                style_a=Style(tokens=50),
                style_b=Style(tokens=50),
                identity_revealed=True,
            )
        )
        named.append(
            Feedback(
                ts=5e9 + i + 1,
                kind="vote",
                idempotency_key=f"nv-{i}",
                battle_id=f"named-{i}",
                value="b",
            )
        )
    OutcomeStore(store).write(named)
    report = build_report(store, arena(), reps=50)
    assert report.arena is not None and clean.arena is not None
    assert report.arena.votes == clean.arena.votes + 400
    assert report.arena.voided_votes == 400
    ratings = {row.variant: row.rating for row in report.arena.leaderboard}
    assert ratings == {row.variant: row.rating for row in clean.arena.leaderboard}
    assert any("named a model" in note for note in report.notes)
    kept = (
        sqlite3.connect(store)
        .execute("SELECT COUNT(*) FROM feedback WHERE battle_id LIKE 'named-%'")
        .fetchone()[0]
    )
    assert kept == 400


def test_only_declared_custom_metrics_are_tested(tmp_path: Path) -> None:
    """Invented names must not enter the Holm correction (nor be tested at all): they are listed
    as undeclared, with how many values each has."""
    import sqlite3

    from router.events import Feedback
    from router.store import OutcomeStore

    store = tmp_path / "o.db"
    arms = {"a": Arm(thumbs_up=0.2), "b": Arm(thumbs_up=0.3)}
    experiment = ab(custom_metrics=["stars"])
    simulate_ab(store, experiment, Traffic(units=400, arms=arms, seed=3))
    answered = "SELECT completion_id FROM completions WHERE experiment = 'ab' AND status = 200"
    ids = [r[0] for r in sqlite3.connect(store).execute(f"{answered} LIMIT 30")]
    events = [
        Feedback(
            ts=9e9,
            kind="custom",
            idempotency_key=f"s{i}",
            completion_id=c,
            name="stars",
            number=4.0,
        )
        for i, c in enumerate(ids)
    ]
    events += [
        Feedback(
            ts=9e9,
            kind="custom",
            idempotency_key=f"x{i}",
            completion_id=c,
            name=f"invented-{i % 3}",
            number=1.0,
        )
        for i, c in enumerate(ids)
    ]
    OutcomeStore(store).write(events)
    report = build_report(store, experiment, reps=50)
    tested = {c.metric for c in report.comparisons}
    assert "custom:stars" in tested
    assert not any(m.startswith("custom:invented") for m in tested)
    assert report.undeclared_custom_metrics == {f"invented-{i}": 10 for i in range(3)}


def test_no_relative_change_on_a_metric_that_can_be_negative(tmp_path: Path) -> None:
    store = tmp_path / "o.db"
    arms = {"a": Arm(reward=0.5), "b": Arm(reward=0.6)}
    simulate_ab(store, ab(), Traffic(units=1000, arms=arms, seed=4))
    report = build_report(store, ab(), reps=50)
    reward = next(c for c in report.comparisons if c.metric == "reward_score")
    assert reward.absolute.value is not None
    assert reward.relative.value is None and reward.relative.low is None


def test_an_adaptive_arenas_sample_ratio_judges_each_period_by_its_own_weights(
    tmp_path: Path,
) -> None:
    """Battles drawn at the configured weights, then at adaptive weights (logged with their
    version): no mismatch. The same battles judged against other logged weights: a mismatch."""
    from router.assignment import compile_experiment
    from router.events import Weights
    from router.store import OutcomeStore

    store = tmp_path / "o.db"
    experiment = arena(
        name="adaptive-srm",
        arms=[{"variant": "a"}, {"variant": "b"}, {"variant": "c"}],
        adaptive={"min_votes": 10},
    )
    ratings = {"a": 1000, "b": 1050, "c": 1100}
    simulate_arena(store, experiment, battles=1500, ratings=ratings, seed=0)
    skewed = {("a", "b"): 0.1, ("a", "c"): 0.1, ("b", "c"): 0.8}
    logged = '[["a", "b", 0.1], ["a", "c", 0.1], ["b", "c", 0.8]]'
    history = Weights(ts=1.0, experiment="adaptive-srm", version=7, weights=logged, observations=9)
    writer = OutcomeStore(store)
    writer.write([history])
    writer.close()
    plan = compile_experiment(experiment)
    plan.set_pair_weights(skewed, version=7)
    simulate_arena(store, experiment, battles=1500, ratings=ratings, seed=1)
    ratio = build_report(store, experiment, reps=20).sample_ratio
    assert ratio is not None and not ratio.mismatch
    assert ratio.expected == pytest.approx([500 + 150, 500 + 150, 500 + 1200])
    # Had the second period been drawn at other weights than those logged: flagged.
    other = tmp_path / "other.db"
    plan.set_pair_weights({("a", "b"): 0.45, ("a", "c"): 0.45, ("b", "c"): 0.1}, version=8)
    simulate_arena(other, experiment, battles=1500, ratings=ratings, seed=2)
    writer = OutcomeStore(other)
    writer.write([dataclasses.replace(history, version=8)])
    writer.close()
    assert build_report(other, experiment, reps=20).sample_ratio.mismatch


def test_the_sample_ratio_test_judges_each_config_period_by_its_own_weights(
    tmp_path: Path,
) -> None:
    """Weights changed live from 1:1 to 9:1: judged against today's weights alone, the units
    look mismatched; judged period by period from the logged configs, they are not."""
    from router.assignment import assign
    from router.events import ExperimentConfig, Exposure
    from router.store import OutcomeStore

    even = ab(name="reweighted")
    skewed = ab(name="reweighted", arms=[{"variant": "a", "weight": 9}, {"variant": "b"}])
    events: list = []
    for period, (experiment, t0) in enumerate(((even, 1000.0), (skewed, 2000.0))):
        events.append(
            ExperimentConfig(
                ts=t0,
                experiment="reweighted",
                revision=f"r{period}",
                config=experiment.model_dump_json(),
            )
        )
        for i in range(2000):
            unit = f"p{period}-u{i}"
            variant = assign(experiment, unit).variant
            events.append(
                Exposure(
                    ts=t0 + 1 + i * 0.1,
                    request_id=unit,
                    experiment="reweighted",
                    unit_type="user",
                    unit=unit,
                    variant=variant,
                    reason="arm",
                    exposed=True,
                )
            )
    store = tmp_path / "o.db"
    writer = OutcomeStore(store)
    writer.write(events[1:2001] + events[2002:])  # the exposures alone
    writer.close()
    assert build_report(store, skewed, reps=20).sample_ratio.mismatch  # today's weights only
    writer = OutcomeStore(store)
    writer.write([events[0], events[2001]])  # and the configs, as the gateway logs them
    writer.close()
    ratio = build_report(store, skewed, reps=20).sample_ratio
    assert not ratio.mismatch and ratio.expected == pytest.approx([1000 + 1800, 1000 + 200])


def test_a_winner_chosen_among_many_variants_is_flagged(tmp_path: Path) -> None:
    """The experiment tried c and d before b (its logged configs): b's win is the best of
    three treatments, which the report says; with b the only one ever tried, it does not."""
    from router.events import ExperimentConfig
    from router.store import OutcomeStore

    store = tmp_path / "o.db"
    arms = {"a": Arm(thumbs_up=0.2), "b": Arm(thumbs_up=0.3)}
    simulate_ab(store, ab(), Traffic(units=3000, arms=arms, seed=1))
    alone = build_report(store, ab(), reps=50)
    assert alone.verdict.variant == "b" and alone.variants_tried == ["a", "b"]
    assert not any("chosen among" in note for note in alone.notes)
    writer = OutcomeStore(store)
    for i, tried in enumerate(("c", "d", "b")):  # b's config put in force before its units
        config = ab(arms=[{"variant": "a"}, {"variant": tried}]).model_dump_json()
        writer.write([ExperimentConfig(ts=i, experiment="ab", revision=tried, config=config)])
    writer.close()
    report = build_report(store, ab(), reps=50)
    assert report.variants_tried == ["a", "b", "c", "d"]
    assert report.verdict.variant == "b"
    assert any("b was chosen among the 4 variants" in note for note in report.notes)


def test_the_global_holdout_is_compared_with_everyone_exposed(tmp_path: Path) -> None:
    """Held-out units got the default (a, 20 % thumbs up), everyone exposed got b (30 %): the
    comparison finds the +50 % that all the experiments together made."""
    import sqlite3

    from router.analysis.report import build_holdout_report

    store = tmp_path / "o.db"
    empty = build_holdout_report(_empty_store(tmp_path), reps=20)
    assert empty.comparisons == [] and empty.notes
    arms = {"a": Arm(thumbs_up=0.2), "b": Arm(thumbs_up=0.3)}
    simulate_ab(store, ab(), Traffic(units=3000, arms=arms, seed=1))
    db = sqlite3.connect(store)
    db.execute("UPDATE exposures SET reason = 'global_holdout', exposed = 0 WHERE variant = 'a'")
    db.commit()
    db.close()
    report = build_holdout_report(store, reps=50)
    assert report.units["global_holdout"] + report.units["exposed"] == 3000
    up = next(c for c in report.comparisons if c.metric == "thumbs_up_rate")
    assert (up.treatment, up.control) == ("exposed", "global_holdout")
    assert up.relative.low < 0.5 < up.relative.high and up.p_value < 0.001
    assert not report.notes


def _empty_store(tmp_path: Path) -> Path:
    from router.store import OutcomeStore

    path = tmp_path / "empty.db"
    OutcomeStore(path).close()
    return path


def test_a_bandits_report_weighs_by_propensity_and_ships_the_better_arm(tmp_path: Path) -> None:
    """Thumbs-up rates 0.10 and 0.20; the bandit moved most units to b. The report's
    inverse-propensity means find both rates, its sample-ratio test judges each weights
    version by its own shares, and the verdict ships b on that evidence."""
    from router.analysis.simulate import simulate_bandit

    store = tmp_path / "o.db"
    experiment = Experiment.model_validate(
        {
            "name": "bandit",
            "mode": "bandit",
            "arms": [{"variant": "a"}, {"variant": "b"}],
            "bandit": {"refresh_s": 60},
            "guardrails": [{"metric": "error_rate", "max_increase": 0.05}],
        }
    )
    simulate_bandit(store, experiment, rates={"a": 0.1, "b": 0.2}, units=6000, refresh=500)
    report = build_report(store, experiment, reps=20)
    arms = {arm.variant: arm for arm in report.bandit.arms}
    assert arms["b"].completions > 2 * arms["a"].completions  # the bandit moved units to b
    for name, truth in (("a", 0.1), ("b", 0.2)):
        assert arms[name].hajek.low < truth < arms[name].hajek.high
    assert report.bandit.weights_version == 12 and report.bandit.shares["b"] > 0.9
    assert report.sample_ratio is not None and not report.sample_ratio.mismatch
    assert report.verdict.decision == "ship" and report.verdict.variant == "b"
