"""Safe rollouts: a ramp whose guardrail fails stops growing. The outcome log judges it from
the report, steps it back to its last safe step, and logs the hold; a gateway replica puts the
hold in force and lists it."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from router.analysis.simulate import Arm, Traffic, simulate_ab
from router.assignment import CompiledExperiment
from router.experiment import Experiment
from serve.outcome_log import OutcomeLog
from serve.routing import LogDecisions, Router, describe


def ramped(max_increase: float = 0.01, **extra: Any) -> Experiment:
    now = datetime.now(UTC)
    steps = [(-2, 0.2), (-1, 0.5), (1, 1.0)]  # in force now: the second step (0.5)
    return Experiment.model_validate(
        {
            "name": "rollout",
            "arms": [{"variant": "a"}, {"variant": "b"}],
            "default_variant": "a",
            "allocation": 0.05,
            "ramp": [
                {"at": (now + timedelta(hours=h)).isoformat(), "allocation": a} for h, a in steps
            ],
            "guardrails": [{"metric": "error_rate", "max_increase": max_increase}],
            **extra,
        }
    )


def erring_log(path: Path) -> Any:
    """A log where b errs on 30 % of its requests and a on 1 %."""
    arms = {"a": Arm(error=0.01), "b": Arm(error=0.3)}
    split = {"a": 0.5, "b": 0.5}
    simulate_ab(path, ramped(), Traffic(units=1500, arms=arms, split=split, seed=3))
    return OutcomeLog.func_or_class(str(path))


class Handle:
    def __init__(self, log: Any) -> None:
        self.log, self.ramp_state = log, self

    def remote(self, experiment: Experiment) -> Any:
        return self.log.ramp_state(experiment)


def test_a_failing_guardrail_holds_the_ramp_at_its_last_safe_step(tmp_path: Path) -> None:
    experiment = ramped()

    async def run() -> tuple[Any, Any, Any]:
        log = erring_log(tmp_path / "o.db")
        hold = await log.ramp_state(experiment)
        again = await OutcomeLog.func_or_class(str(tmp_path / "o.db")).ramp_state(experiment)
        relaxed = await log.ramp_state(ramped(max_increase=0.9))  # another config: not held
        return hold, again, relaxed

    hold, again, relaxed = asyncio.run(run())
    assert hold is not None and (hold["step"], hold["allocation"]) == (1, 0.2)
    assert hold["guardrail"] == "error_rate" and hold["since"] <= time.time()
    assert again == hold  # a restarted log reads the hold from the store
    assert relaxed is None
    rows = sqlite3.connect(tmp_path / "o.db").execute("SELECT step, guardrail FROM ramp_holds")
    assert rows.fetchall() == [(1, "error_rate")]


def test_a_replica_puts_the_hold_in_force_and_lists_it(tmp_path: Path) -> None:
    async def run() -> CompiledExperiment:
        log = erring_log(tmp_path / "o.db")
        router = Router({})
        plan = CompiledExperiment(ramped())
        router.experiments = {"rollout": plan}
        assert plan.allocation_at(time.time()) == 0.5
        await LogDecisions(router, Handle(log)).refresh(plan)
        return plan

    plan = asyncio.run(run())
    assert plan.allocation_at(time.time() + 7200) == 0.2  # past the next step: still held
    listed = describe(plan, datetime.now(UTC))
    assert listed["allocation_now"] == 0.2 and listed["ramp_hold"]["guardrail"] == "error_rate"
    assert LogDecisions.period_of(plan) is None  # held: nothing more to ask


@pytest.mark.parametrize("extra", [{"guardrails": []}, {"ramp": [], "allocation": 1.0}])
def test_without_a_ramp_or_a_guardrail_there_is_nothing_to_hold(
    tmp_path: Path, extra: dict
) -> None:
    async def run() -> Any:
        return await erring_log(tmp_path / "o.db").ramp_state(ramped(**extra))

    assert asyncio.run(run()) is None
