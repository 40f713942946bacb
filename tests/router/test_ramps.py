"""Ramps (`Experiment.ramp`): the allocation steps up in time, units only join, and a bad ramp
is refused where it is written."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from router.assignment import CompiledExperiment
from router.experiment import Experiment

T0 = datetime(2026, 12, 1, tzinfo=UTC)
ARMS = [{"variant": "a"}, {"variant": "b"}]


def ramped(allocations: list[float], start: float = 0.01) -> Experiment:
    steps = [
        {"at": (T0 + timedelta(hours=i + 1)).isoformat(), "allocation": a}
        for i, a in enumerate(allocations)
    ]
    return Experiment(name="ramp", arms=ARMS, default_variant="a", allocation=start, ramp=steps)


def allocated(plan: CompiledExperiment, unit: str, hour: float) -> bool:
    now = (T0 + timedelta(hours=hour)).timestamp()
    return plan.assign(unit, now).reason != "not_allocated"


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.floats(0.02, 1.0), min_size=1, max_size=4).map(sorted),
    st.lists(st.floats(0.0, 6.0), min_size=2, max_size=6),
    st.integers(0, 10**6),
)
def test_a_unit_in_the_experiment_stays_in_it_as_the_ramp_goes_on(
    allocations: list[float], hours: list[float], unit: int
) -> None:
    plan = CompiledExperiment(ramped(allocations))
    seen = [allocated(plan, f"user-{unit}", h) for h in sorted(hours)]
    assert seen == sorted(seen)  # False ... False True ... True: once in, never out
    # Asked out of time order (replicas' clocks differ a little), the answers are the same.
    again = CompiledExperiment(ramped(allocations))
    for h, answer in reversed(list(zip(sorted(hours), seen, strict=True))):
        assert allocated(again, f"user-{unit}", h) == answer


def test_each_step_allocates_its_share_of_units() -> None:
    plan = CompiledExperiment(ramped([0.1, 0.5, 1.0]))
    units = [f"u{i}" for i in range(4000)]
    for hour, share in ((0.5, 0.01), (1.5, 0.1), (2.5, 0.5), (3.5, 1.0)):
        found = sum(allocated(plan, u, hour) for u in units) / len(units)
        assert found == pytest.approx(share, abs=0.025)
        at = (T0 + timedelta(hours=hour)).timestamp()
        assert plan.allocation_at(at) == share


@pytest.mark.parametrize(
    ("start", "allocations", "hours", "message"),
    [
        (0.1, [0.5, 0.2], [1, 2], "ramp.1.allocation: 0.2 is below the 0.5"),
        (0.3, [0.2], [1], "ramp.0.allocation: 0.2 is below the 0.3"),
        (0.1, [0.2, 0.5], [2, 1], "ramp.1.at: steps must come in time order"),
        (1.0, [1.0], [1], "ramp: starts from allocation"),
    ],
)
def test_a_ramp_that_would_drop_units_is_refused(
    start: float, allocations: list[float], hours: list[int], message: str
) -> None:
    steps = [
        {"at": (T0 + timedelta(hours=h)).isoformat(), "allocation": a}
        for h, a in zip(hours, allocations, strict=True)
    ]
    with pytest.raises(ValidationError, match=message):
        Experiment(name="r", arms=ARMS, default_variant="a", allocation=start, ramp=steps)


def test_a_held_ramp_stays_at_its_step_and_moves_the_later_units_out() -> None:
    plan = CompiledExperiment(ramped([0.1, 0.5, 1.0]))
    units = [f"u{i}" for i in range(3000)]
    at_half = {u for u in units if allocated(plan, u, 2.5)}
    plan.hold_ramp(1, {"guardrail": "error_rate"})
    for hour in (2.5, 10.0):  # step 1 (0.1) from now on, whatever the time
        now = (T0 + timedelta(hours=hour)).timestamp()
        assert plan.allocation_at(now) == 0.1
        held = {u for u in units if allocated(plan, u, hour)}
        assert held < at_half and len(held) / len(units) == pytest.approx(0.1, abs=0.02)
    assert plan.ramp_hold == {"guardrail": "error_rate"}
    with pytest.raises(ValueError, match="not one of"):
        CompiledExperiment(ramped([0.5])).hold_ramp(2, {})
