"""Safe rollouts of bandit arms: an arm that fails a guardrail stops growing. The outcome log
judges each refresh from the report, holds the arm at its share in the weights version before
the one in force, logs the hold, and caps the arm's share from then on; a gateway replica puts
the capped shares in force and lists the hold."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from router.analysis.simulate import simulate_bandit
from router.assignment import CompiledExperiment
from router.experiment import Experiment
from serve.outcome_log import OutcomeLog
from serve.routing import LogDecisions, Router, describe


def bandit(max_increase: float = 0.01) -> Experiment:
    return Experiment.model_validate(
        {
            "name": "bandit",
            "mode": "bandit",
            "arms": [{"variant": "a"}, {"variant": "b"}, {"variant": "c"}],
            "default_variant": "a",
            "bandit": {"refresh_s": 3600, "min_share": 0.05},
            "guardrails": [{"metric": "error_rate", "max_increase": max_increase}],
        }
    )


def erring_bandit(path: Path) -> None:
    """b wins the most thumbs but fails 30 % of its requests; 4 weights versions logged."""
    simulate_bandit(
        path,
        bandit(),
        rates={"a": 0.15, "b": 0.3, "c": 0.2},
        errors={"b": 0.3},
        units=1600,
        refresh=400,
        seed=4,
    )


def logged_shares(path: Path, version: int) -> dict[str, float]:
    db = sqlite3.connect(path)
    row = db.execute("SELECT weights FROM weights WHERE version = ?", (version,)).fetchone()
    return dict(json.loads(row[0]))


class Handle:
    def __init__(self, log: Any) -> None:
        self.log, self.weights = log, self

    def remote(self, experiment: Experiment) -> Any:
        return self.log.weights(experiment)


def test_an_arm_failing_a_guardrail_is_held_at_its_last_safe_share(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    erring_bandit(path)
    safe = logged_shares(path, 3)["b"]  # the version before the one in force (4)
    assert logged_shares(path, 4)["b"] > safe  # b was still growing

    async def run() -> tuple[Any, Any, Any]:
        answer = await OutcomeLog.func_or_class(str(path)).weights(bandit())
        again = await OutcomeLog.func_or_class(str(path)).weights(bandit())
        relaxed = await OutcomeLog.func_or_class(str(path)).weights(bandit(max_increase=0.9))
        return answer, again, relaxed

    answer, again, relaxed = asyncio.run(run())
    shares = dict(answer["weights"])
    hold = answer["holds"]["b"]
    assert (hold["guardrail"], hold["share"]) == ("error_rate", pytest.approx(safe))
    assert hold["version"] == answer["version"] and hold["since"] <= time.time()
    assert shares["b"] == pytest.approx(safe) and sum(shares.values()) == pytest.approx(1)
    assert shares["a"] >= 0.05 and shares["c"] >= 0.05
    assert set(answer["holds"]) == {"b"}  # a is the control; c errs no more than a
    # A restarted log reads the hold from the store (it is not judged again) and caps b.
    assert again["holds"] == answer["holds"] and dict(again["weights"])["b"] <= safe + 1e-12
    assert relaxed["holds"] == {} and dict(relaxed["weights"])["b"] > safe  # another config
    rows = sqlite3.connect(path).execute("SELECT arm, share, guardrail FROM arm_holds")
    assert rows.fetchall() == [("b", pytest.approx(safe), "error_rate")]
    assert logged_shares(path, answer["version"]) == pytest.approx(shares)


def test_a_replica_puts_the_capped_shares_in_force_and_lists_the_hold(tmp_path: Path) -> None:
    erring_bandit(tmp_path / "o.db")

    async def run() -> CompiledExperiment:
        log = OutcomeLog.func_or_class(str(tmp_path / "o.db"))
        router = Router({})
        plan = CompiledExperiment(bandit())
        router.experiments = {"bandit": plan}
        await LogDecisions(router, Handle(log)).refresh(plan)
        await log.flush()
        return plan

    plan = asyncio.run(run())
    listed = describe(plan, datetime.now(UTC))
    assert listed["arm_holds"]["b"]["guardrail"] == "error_rate"
    assert listed["arm_shares"]["b"] == pytest.approx(listed["arm_holds"]["b"]["share"])
    assert plan.arm_share("b") == pytest.approx(listed["arm_holds"]["b"]["share"])


def test_a_bandit_without_guardrails_holds_nothing(tmp_path: Path) -> None:
    erring_bandit(tmp_path / "o.db")
    experiment = bandit().model_copy(update={"guardrails": ()})

    async def run() -> Any:
        return await OutcomeLog.func_or_class(str(tmp_path / "o.db")).weights(experiment)

    answer = asyncio.run(run())
    assert answer["holds"] == {} and dict(answer["weights"])["b"] > 0.8
