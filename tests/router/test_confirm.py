"""Confirmation runs (`Experiment.confirm`): the winner against the control again, on units the
experiment never allocated. Those units come from above its highest allocation (a ramp's last
step included), split at even odds, the same in every process, and exposed under the run's own
name; a config that leaves no such unit is refused where it is written."""

from __future__ import annotations

import random
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from router.assignment import CompiledExperiment
from router.experiment import Experiment, GlobalHoldout

T0 = datetime(2026, 12, 1, tzinfo=UTC)
ARMS = [{"variant": "a"}, {"variant": "b"}, {"variant": "c"}, {"variant": "d"}]


def confirming(**extra: Any) -> Experiment:
    config = {
        "name": "explore",
        "arms": ARMS,
        "default_variant": "a",
        "allocation": 0.4,
        "confirm": {"variant": "c"},
        **extra,
    }
    return Experiment.model_validate(config)


def ramp(*allocations: float) -> list[dict[str, Any]]:
    return [
        {"at": (T0 + timedelta(hours=i + 1)).isoformat(), "allocation": a}
        for i, a in enumerate(allocations)
    ]


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.floats(0.05, 0.9), min_size=1, max_size=3).map(sorted),
    st.floats(0.05, 1.0),
    st.integers(0, 10**9),
    st.floats(0.0, 5.0),
)
def test_a_confirmation_unit_is_never_allocated_at_any_step(
    allocations: list[float], share: float, unit: int, hour: float
) -> None:
    start, *steps = allocations
    try:
        experiment = confirming(
            allocation=start, ramp=ramp(*steps), confirm={"variant": "c", "allocation": share}
        )
    except ValidationError:
        return  # rounds to no unit
    plan = CompiledExperiment(experiment)
    without = CompiledExperiment(experiment.model_copy(update={"confirm": None}))
    now = (T0 + timedelta(hours=hour)).timestamp()
    answer = plan.assign(f"user-{unit}", now)
    if answer.reason == "confirm":
        assert answer.exposed and answer.variant in ("a", "c")
        # Outside every step's allocation: under the same config without confirm, never in.
        for h in range(len(allocations) + 1):
            later = (T0 + timedelta(hours=h + 0.5)).timestamp()
            assert without.assign(f"user-{unit}", later).reason == "not_allocated"
    else:
        assert answer == without.assign(f"user-{unit}", now)  # everyone else as before
    assert CompiledExperiment(experiment).assign(f"user-{unit}", now) == answer


def test_the_run_takes_its_share_of_the_units_never_allocated_at_even_odds() -> None:
    plan = CompiledExperiment(confirming(confirm={"variant": "c", "allocation": 0.5}))
    found = Counter((a.variant, a.reason) for a in (plan.assign(f"u{i}") for i in range(40_000)))
    n = 40_000
    assert found["a", "not_allocated"] / n == pytest.approx(0.6 * 0.5, abs=0.012)
    assert found["a", "confirm"] / n == pytest.approx(0.6 * 0.25, abs=0.012)
    assert found["c", "confirm"] / n == pytest.approx(0.6 * 0.25, abs=0.012)
    assert sum(v for (_, reason), v in found.items() if reason == "arm") / n == pytest.approx(
        0.4, abs=0.012
    )
    assert not any(variant in ("b", "d") for variant, reason in found if reason == "confirm")


def test_holdouts_and_forced_units_stay_out_of_the_run() -> None:
    experiment = confirming(holdout=0.5, forced={"qa": "d"})
    plan = CompiledExperiment(experiment)
    assert plan.assign("qa").reason == "forced"
    reasons = Counter(plan.assign(f"u{i}").reason for i in range(5000))
    assert reasons["confirm"] > 0 and reasons["holdout"] > 0  # holdout: within the allocation
    held = CompiledExperiment(experiment, GlobalHoldout(fraction=0.5))
    for i in range(3000):
        answer = held.assign(f"u{i}")
        if answer.reason == "confirm":
            assert plan.assign(f"u{i}").reason == "confirm"  # the global holdout comes first
        assert not (answer.reason == "confirm" and answer.variant not in ("a", "c"))


def test_an_arena_confirms_with_battles_of_its_one_pair() -> None:
    experiment = confirming(mode="arena", confirm={"variant": "d"})
    plan = CompiledExperiment(experiment)
    answers = {plan.assign(f"u{i}") for i in range(2000)}
    assert {(a.variant, a.reason) for a in answers} >= {(None, "confirm"), (None, "arena")}
    rng = random.Random(5)
    pairs = Counter(plan.draw_confirm_pair(rng) for _ in range(2000))
    assert set(pairs) == {("a", "d"), ("d", "a")}
    assert pairs["a", "d"] == pytest.approx(1000, abs=120)
    with pytest.raises(ValueError, match="confirms no arena winner"):
        CompiledExperiment(confirming()).draw_confirm_pair()


def test_the_run_is_its_own_experiment_for_the_analysis() -> None:
    experiment = confirming(guardrails=[{"metric": "error_rate", "max_increase": 0.01}])
    run = experiment.confirmation()
    assert run.name == "explore#confirm" == experiment.confirmation_name
    assert [(arm.variant, arm.weight) for arm in run.arms] == [("a", 1.0), ("c", 1.0)]
    assert run.mode == "ab" and run.control == "a" and run.guardrails == experiment.guardrails
    bandit = confirming(mode="bandit", bandit={"reward": "reward_score"}).confirmation()
    assert bandit.mode == "ab" and bandit.metric == "reward_score"


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        ({"confirm": {"variant": "e"}}, "'e' is not one of the arms"),
        ({"confirm": {"variant": "a"}}, "'a' is the control"),
        ({"allocation": 1.0, "confirm": {"variant": "c"}}, "allocates every unit"),
        ({"allocation": 0.2, "ramp": ramp(0.5, 1.0)}, "allocates every unit"),
        ({"allocation": 0.9999, "confirm": {"variant": "c", "allocation": 0.1}}, "no unit"),
        ({"confirm": {"variant": "c", "allocation": 0}}, "greater than 0"),
    ],
)
def test_a_confirmation_without_units_or_winner_is_refused(extra: dict, match: str) -> None:
    with pytest.raises(ValidationError, match=match):
        confirming(**extra)
