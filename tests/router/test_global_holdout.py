"""The gateway's global holdout (`GlobalHoldout`): the same units out of every experiment, in
every layer, on each experiment's default variant, and never counted as exposed."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from router.assignment import CompiledExperiment
from router.experiment import Experiment, GlobalHoldout

HOLDOUT = GlobalHoldout(fraction=0.2)


def plan(name: str, layer: str | None = None, **extra: object) -> CompiledExperiment:
    experiment = Experiment.model_validate(
        {
            "name": name,
            "arms": [{"variant": "a"}, {"variant": "b"}],
            "default_variant": "a",
            "layer": layer,
            **extra,
        }
    )
    return CompiledExperiment(experiment, HOLDOUT)


UNITS = [f"user-{i}" for i in range(5000)]


def held(p: CompiledExperiment) -> set[str]:
    return {u for u in UNITS if p.assign(u).reason == "global_holdout"}


def test_the_same_units_are_held_out_of_every_experiment_and_layer() -> None:
    first, second = plan("one"), plan("two", layer="other", salt="x", allocation=0.5)
    out = held(first)
    assert len(out) / len(UNITS) == pytest.approx(0.2, abs=0.02)
    assert held(second) == out
    for unit in sorted(out)[:50]:
        answer = first.assign(unit)
        assert answer.variant == "a" and not answer.exposed
    # Without a global holdout, the same experiment assigns those units arms as before.
    bare = CompiledExperiment(first.experiment)
    assert all(bare.assign(u).reason == "arm" for u in sorted(out)[:50])


def test_a_forced_unit_stays_forced_and_a_scheduled_experiment_holds_nobody() -> None:
    out = sorted(held(plan("one")))
    forced = plan("forced", forced={out[0]: "b"})
    assert forced.assign(out[0]).reason == "forced"
    later = plan("later", start="2100-01-01T00:00:00Z")
    assert later.assign(out[1]).reason == "scheduled"


@given(st.text(max_size=30))
def test_holding_out_is_deterministic_and_independent_of_the_experiment(unit: str) -> None:
    assert (plan("one").assign(unit).reason == "global_holdout") == (
        plan("two", salt="s").assign(unit).reason == "global_holdout"
    )
