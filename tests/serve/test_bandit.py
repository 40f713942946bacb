"""A bandit on the serving path: the outcome log computes Thompson-sampling shares from the
rewards each refresh period; a gateway replica puts them in force, draws each unit by (unit,
version) and logs the assignment's version and propensity."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

from router.analysis.simulate import simulate_bandit
from router.assignment import CompiledExperiment
from router.events import Exposure
from router.experiment import Experiment
from serve.outcome_log import OutcomeLog
from serve.routing import LogDecisions, Router
from tests.serve.fake_gateway import make

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")  # Gateway.__del__ unawaited
BANDIT = {
    "name": "bandit",
    "mode": "bandit",
    "arms": [{"variant": "a"}, {"variant": "b"}],
    "bandit": {"refresh_s": 3600, "min_share": 0.05},
}
HI = [{"role": "user", "content": "Hi"}]


class Handle:
    def __init__(self, log: Any) -> None:
        self.log, self.weights = log, self

    def remote(self, experiment: Experiment) -> Any:
        return self.log.weights(experiment)


def test_the_log_gives_the_better_arm_most_of_the_next_units(tmp_path: Path) -> None:
    experiment = Experiment.model_validate(BANDIT)
    simulate_bandit(
        tmp_path / "o.db", experiment, rates={"a": 0.1, "b": 0.3}, units=2000, refresh=500
    )

    async def run() -> tuple[Any, CompiledExperiment]:
        log = OutcomeLog.func_or_class(str(tmp_path / "o.db"))
        answer = await log.weights(experiment)
        router = Router({})
        plan = CompiledExperiment(experiment)
        router.experiments = {"bandit": plan}
        await LogDecisions(router, Handle(log)).refresh(plan)
        await log.flush()
        return answer, plan

    answer, plan = asyncio.run(run())
    shares = dict(answer["weights"])
    assert answer["version"] == int(time.time() // 3600) and answer["observations"] == 2000
    assert shares["b"] > 0.9 and shares["a"] >= 0.05 and sum(shares.values()) == pytest.approx(1)
    assert plan.weights_version == answer["version"] and plan.arm_share("b") == shares["b"]
    row = (
        sqlite3.connect(tmp_path / "o.db")
        .execute("SELECT weights FROM weights WHERE version = ?", (answer["version"],))
        .fetchone()
    )
    assert dict(json.loads(row[0])) == shares


def test_a_unit_keeps_its_arm_within_a_version_and_logs_its_propensity() -> None:
    async def test() -> list[Exposure]:
        fake = await make([BANDIT])
        plan = fake.gateway.router.experiments["bandit"]
        exposures = []
        for version, shares in ((7, {"a": 0.2, "b": 0.8}), (8, {"a": 0.6, "b": 0.4})):
            plan.set_arm_weights(shares, version)
            for _ in range(2):  # the second request repeats the assignment: no new exposure
                before = len(fake.log.events)
                status, _, _ = await fake.call(
                    "complete", {"model": "bandit", "user": "u-1", "messages": HI}
                )
                assert status == 200
                await fake.settled()
                exposures += [e for e in fake.log.events[before:] if isinstance(e, Exposure)]
        return exposures

    first, second = asyncio.run(test())
    shares = ({"a": 0.2, "b": 0.8}, {"a": 0.6, "b": 0.4})
    for exposure, version, share in zip((first, second), (7, 8), shares, strict=True):
        assert exposure.weights_version == version
        assert exposure.propensity == share[exposure.variant]


def test_a_bandit_is_checked_where_it_is_written() -> None:
    with pytest.raises(ValueError, match=r"min_share: 0.4 x 3 arms"):
        Experiment.model_validate(
            {**BANDIT, "arms": [{"variant": v} for v in "abc"], "bandit": {"min_share": 0.4}}
        )
    with pytest.raises(ValueError, match="only bandit experiments"):
        Experiment.model_validate({**BANDIT, "mode": "ab"})
    with pytest.raises(ValueError, match="judged on its reward"):
        Experiment.model_validate({**BANDIT, "primary_metric": "error_rate"})
    with pytest.raises(ValueError, match="min_share"):
        Experiment.model_validate({**BANDIT, "bandit": {"min_share": 0.001}})  # at least 1 %
    with pytest.raises(ValueError, match="reward_range"):
        Experiment.model_validate({**BANDIT, "bandit": {"reward_range": [1, 1]}})
