"""Adaptive arena pair weights: a valid distribution with its floor, never worse than uniform on
the variance it minimizes, and aimed at the contrast it is asked about."""

from __future__ import annotations

import math
import random
from itertools import combinations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from router.adaptive import Design, contrast_variance, experiment_weights, pair_weights
from router.assignment import CompiledExperiment
from router.experiment import Adaptive, Arm, Experiment

SCALE = 400 / math.log(10)
ARMS = ("a", "b", "c", "d")
PAIRS = list(combinations(ARMS, 2))
SCENARIO = {"a": 1000.0, "b": 1010.0, "c": 1030.0, "d": 1100.0}  # issue 20's four arms


def _objective(ratings, battles, weights, target, horizon) -> float:
    design = Design.of(ratings, battles, PAIRS, target, horizon, SCALE)
    return design.objective(np.array([weights[p] for p in PAIRS]))


ratings_st = st.fixed_dictionaries({arm: st.floats(800, 1200, allow_nan=False) for arm in ARMS})
battles_st = st.dictionaries(st.sampled_from(PAIRS), st.integers(0, 500), max_size=6)


@settings(max_examples=60, deadline=None)
@given(ratings_st, battles_st, st.sampled_from(["top", "all"]), st.floats(0.0, 0.15))
def test_weights_are_a_distribution_that_keeps_its_floor_and_beats_uniform(
    ratings, battles, target, floor
) -> None:
    ratings = {arm: ratings[arm] for arm in ARMS}  # ties in the ranking break by arm order
    weights = pair_weights(ratings, battles, PAIRS, target=target, floor=floor, horizon=300)
    assert set(weights) == set(PAIRS)
    assert sum(weights.values()) == pytest.approx(1.0)
    assert min(weights.values()) >= floor - 1e-12
    uniform = {p: 1 / len(PAIRS) for p in PAIRS}
    ours = _objective(ratings, battles, weights, target, 300)
    assert ours <= _objective(ratings, battles, uniform, target, 300) * (1 + 1e-3)


def test_the_top_target_spends_most_votes_on_the_leader_and_runner_up() -> None:
    weights = pair_weights(SCENARIO, {}, target="top", floor=0.02)
    assert max(weights, key=weights.get) == ("c", "d")
    assert all(weights[p] >= 0.02 - 1e-12 for p in PAIRS)
    # Once the data tell the runner-up from the rest, the leader's other pairs fade.
    settled = {("a", "b"): 3000, ("b", "c"): 3000, ("a", "c"): 3000}
    sure = pair_weights(SCENARIO, settled, target="top", floor=0.02)
    assert sure[("c", "d")] > 0.5 and sure[("c", "d")] > weights[("c", "d")]


def test_an_arm_that_may_still_be_the_runner_up_keeps_a_share() -> None:
    """b sits 20 points under c with no data to tell them apart: the leader's pair with b is
    not starved, as it is once b is known to be well below c."""
    unsure = pair_weights(SCENARIO, {}, target="top", floor=0.0)
    known = pair_weights(SCENARIO, {("b", "c"): 20_000}, target="top", floor=0.0)
    assert unsure[("b", "d")] > 0.05
    assert known[("b", "d")] < unsure[("b", "d")]


def test_the_all_target_spreads_over_the_adjacent_pairs_of_the_ranking() -> None:
    weights = pair_weights(SCENARIO, {}, target="all", floor=0.0)
    adjacent = {("c", "d"), ("b", "c"), ("a", "b")}
    assert sum(weights[p] for p in adjacent) > 0.7
    assert all(weights[p] > 0.1 for p in adjacent)


def test_votes_already_cast_on_a_pair_move_the_next_ones_elsewhere() -> None:
    """With the top pair compared a great deal already, its variance shrinks more through the
    arms that connect it than through yet more direct votes."""
    fresh = pair_weights(SCENARIO, {}, target="all", floor=0.0)
    worn = pair_weights(SCENARIO, {("c", "d"): 50_000}, target="all", floor=0.0)
    assert worn[("c", "d")] < fresh[("c", "d")]


def test_a_contrasts_variance_is_the_inverse_fisher_information() -> None:
    """Two arms of equal rating, n votes: Var(R_a - R_b) = 1 / (n * 1/4) log-odds squared."""
    ratings = {"a": 1000.0, "b": 1000.0}
    assert contrast_variance(ratings, {("a", "b"): 400}, ("a", "b")) == pytest.approx(
        SCALE**2 / (400 * 0.25)
    )
    assert contrast_variance(ratings, {}, ("a", "b")) == math.inf


def test_arms_never_compared_have_no_finite_variance() -> None:
    battles = {("a", "b"): 100, ("c", "d"): 100}
    assert contrast_variance(SCENARIO, battles, ("a", "d")) == math.inf
    assert math.isfinite(contrast_variance(SCENARIO, battles, ("a", "b")))


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="floor"):
        pair_weights(SCENARIO, {}, floor=0.2)
    with pytest.raises(ValueError, match="horizon"):
        pair_weights(SCENARIO, {}, horizon=0)
    assert pair_weights({"a": 1.0, "b": 2.0}, {}) == {("a", "b"): 1.0}


ARMS4 = ("w", "x", "y", "z")


def arena(**adaptive: object) -> Experiment:
    return Experiment(
        name="four",
        mode="arena",
        arms=[Arm(variant=v) for v in ARMS4],
        adaptive=Adaptive(**adaptive),  # type: ignore[arg-type]
    )


def votes_for(truth: dict[str, float], n: int, seed: int = 0) -> tuple[list, list, list]:
    """n votes, pairs uniform, outcomes from the Bradley-Terry model at `truth`."""
    rng = np.random.default_rng(seed)
    pairs = list(combinations(truth, 2))
    a, b, v = [], [], []
    for index in rng.integers(len(pairs), size=n):
        first, second = pairs[index]
        p = 1 / (1 + 10 ** ((truth[second] - truth[first]) / 400))
        a.append(first)
        b.append(second)
        v.append("a" if rng.random() < p else "b")
    return a, b, v


def test_an_adaptive_arena_is_checked_where_it_is_written() -> None:
    with pytest.raises(ValidationError, match="three or more arms"):
        Experiment(name="two", mode="arena", arms=[Arm(variant="a"), Arm(variant="b")], adaptive={})
    with pytest.raises(ValidationError, match="only arena experiments"):
        Experiment(name="ab", arms=[Arm(variant=v) for v in "abc"], adaptive={})
    with pytest.raises(ValidationError, match=r"0.2 x 6 pairs is more than every battle"):
        arena(floor=0.2)
    with pytest.raises(ValidationError, match="two or more pairs"):
        Experiment(
            name="one-pair",
            mode="arena",
            arms=[Arm(variant=v) for v in "abc"],
            pairs=[{"variants": ("a", "b")}],
            adaptive={},
        )
    assert arena(floor=1 / 6).adaptive is not None


def test_weights_from_votes_wait_for_min_votes_then_follow_the_design() -> None:
    experiment = arena(min_votes=100, floor=0.02)
    truth = {"w": 1000.0, "x": 1010.0, "y": 1030.0, "z": 1100.0}
    assert experiment_weights(experiment, *votes_for(truth, 99)) is None
    weights = experiment_weights(experiment, *votes_for(truth, 400))
    assert weights is not None
    assert list(weights) == [p.variants for p in experiment.arena_pairs()]
    assert sum(weights.values()) == pytest.approx(1.0)
    assert min(weights.values()) >= 0.02 - 1e-9
    assert max(weights, key=weights.__getitem__) == ("y", "z")  # leader against runner-up


def test_weights_leave_out_votes_on_pairs_no_longer_drawn() -> None:
    experiment = arena(min_votes=10)
    a, b, v = votes_for({"w": 1000.0, "x": 1000.0, "y": 1000.0, "z": 1000.0}, 40)
    gone = (["w", "old"] * 50, ["old", "x"] * 50, ["a"] * 100)
    assert experiment_weights(experiment, *gone) is None  # none of them counts
    assert experiment_weights(experiment, a + gone[0], b + gone[1], v + gone[2]) == (
        experiment_weights(experiment, a, b, v)
    )


def test_a_plan_draws_by_new_weights_and_reports_each_pairs_share() -> None:
    plan = CompiledExperiment(arena())
    assert plan.weights_version is None
    assert plan.pair_share("x", "w") == pytest.approx(1 / 6)
    pairs = [p.variants for p in plan.experiment.arena_pairs()]
    weights = {pair: (0.9 if pair == ("y", "z") else 0.02) for pair in pairs}
    plan.set_pair_weights(weights, version=7)
    assert plan.weights_version == 7
    assert plan.pair_share("z", "y") == pytest.approx(0.9)
    rng = random.Random(1)
    drawn = [tuple(sorted(plan.draw_pair(rng))) for _ in range(4000)]
    assert drawn.count(("y", "z")) / len(drawn) == pytest.approx(0.9, abs=0.02)
    with pytest.raises(ValueError, match="each of the experiment's pairs"):
        plan.set_pair_weights({("y", "z"): 1.0}, version=8)
    with pytest.raises(ValueError, match="above 0"):
        plan.set_pair_weights({pair: 0.0 for pair in pairs}, version=8)
    assert plan.weights_version == 7
