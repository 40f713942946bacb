"""The scorer deployment's CPU priority: its forwards run on cycles the engines leave."""

from __future__ import annotations

import os
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from serve.scorer import run_at_idle_priority, usable_scores


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="SCHED_IDLE is Linux's")
def test_the_scoring_thread_runs_at_idle_priority_and_nothing_else_does() -> None:
    main = os.sched_getscheduler(0)
    with ThreadPoolExecutor(max_workers=1, initializer=run_at_idle_priority) as pool:
        assert pool.submit(os.sched_getscheduler, 0).result() == os.SCHED_IDLE
    with ThreadPoolExecutor(max_workers=1) as pool:  # threads the main thread starts: unchanged
        assert pool.submit(os.sched_getscheduler, 0).result() == main
    assert os.sched_getscheduler(0) == main != os.SCHED_IDLE


def test_a_refused_policy_is_logged_not_raised(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*_: object) -> None:
        raise PermissionError("not allowed")

    monkeypatch.setattr(os, "sched_setscheduler", refuse)
    assert run_at_idle_priority() is False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="SCHED_IDLE is Linux's")
@pytest.mark.parametrize(("priority", "policy"), [("idle", os.SCHED_IDLE), ("normal", None)])
def test_the_deployment_scores_on_a_thread_of_the_configured_priority(
    priority: str, policy: int | None
) -> None:
    from serve.config import ScorerConfig
    from serve.models import MODELS_DIR, TINY_REWARD, prepare
    from serve.scorer import RewardScorerDeployment

    prepare([TINY_REWARD])
    config = ScorerConfig(model=str(MODELS_DIR / TINY_REWARD), device="cpu", priority=priority)
    scorer = RewardScorerDeployment.func_or_class(config, outcome_log=None)
    try:
        got = scorer._executor.submit(os.sched_getscheduler, 0).result()
    finally:
        scorer._executor.shutdown()
    assert got == (policy if policy is not None else os.sched_getscheduler(0))


def test_what_the_model_cannot_score_is_none_and_never_logged(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A NaN (a pair the chat template refused) or an overflow is no score: best-of-n skips it
    and no `Score` event carries it (SQLite would store NaN as NULL, which the table refuses)."""
    import asyncio
    import math

    from serve.config import ScorerConfig
    from serve.models import MODELS_DIR, TINY_REWARD, prepare
    from serve.scorer import RewardScorerDeployment, Scored, ScoreJob

    assert usable_scores([math.nan, math.inf, -math.inf, 1.5]) == [None, None, None, 1.5]

    class Log:
        def __init__(self) -> None:
            self.events: list[object] = []
            self.record = self

        def remote(self, events: list[object], **_: object) -> object:
            self.events.extend(events)
            return asyncio.sleep(0)

    prepare([TINY_REWARD])
    config = ScorerConfig(model=str(MODELS_DIR / TINY_REWARD), device="cpu")
    log = Log()
    scorer = RewardScorerDeployment.func_or_class(config, outcome_log=log)
    scorer._executor.shutdown()
    values = {"nan": None, "one": 1.0}

    async def batch(job: ScoreJob) -> tuple[float | None, str]:  # what `@serve.batch` hands
        return values[job.response], "tiny-reward"  # each caller: its score, and by which model

    monkeypatch.setattr(scorer, "_batch", batch)

    def job(response: str) -> ScoreJob:
        return ScoreJob(
            completion_id=f"c-{response}",
            experiment=None,
            variant="v",
            messages=[{"role": "user", "content": "Hi"}],
            response=response,
            ended=0.0,
        )

    async def run() -> None:
        assert await scorer.score([job("nan"), job("one")]) == Scored("tiny-reward", [None, 1.0])
        await scorer.score_and_log(job("nan"))
        await scorer.score_and_log(job("one"))

    asyncio.run(run())
    assert [event.completion_id for event in log.events] == ["c-one"]  # type: ignore[attr-defined]


def test_a_live_swap_scores_with_the_new_model_and_a_bad_one_keeps_the_current(
    tmp_path: Path,
) -> None:
    """`reconfigure` (the deployment's user_config) loads the named model beside the current
    one; scores name the model that computed them; a model that cannot load changes nothing."""
    import asyncio
    import shutil

    from serve.config import ScorerConfig
    from serve.models import MODELS_DIR, TINY_REWARD, prepare
    from serve.scorer import RewardScorerDeployment, ScoreJob

    prepare([TINY_REWARD])
    other = tmp_path / "judge-2"
    shutil.copytree(MODELS_DIR / TINY_REWARD, other)

    class Log:
        def __init__(self) -> None:
            self.events: list[Any] = []
            self.record = self
            self.observe_scorer_batch = self

        def remote(self, events: Any, **_: object) -> object:
            if isinstance(events, list):
                self.events.extend(events)
            return asyncio.sleep(0)

    log = Log()
    config = ScorerConfig(model=str(MODELS_DIR / TINY_REWARD), device="cpu")
    job = ScoreJob(
        completion_id="c1",
        experiment=None,
        variant="v",
        messages=[{"role": "user", "content": "Hi"}],
        response="Hello there",
        ended=0.0,
    )

    async def run() -> list[str]:
        scorer = RewardScorerDeployment.func_or_class(config, outcome_log=log)
        unbatched = type(scorer)._batch.__wrapped__  # `@serve.batch` needs a replica around it

        async def one(job: ScoreJob) -> tuple[float | None, str]:
            [result] = await unbatched(scorer, [job])
            return result

        scorer._batch = one
        await scorer.reconfigure({"model": str(MODELS_DIR / TINY_REWARD)})  # the same: no-op
        models = [(await scorer.score([job])).model]
        await scorer.reconfigure({"model": str(other)})
        models.append((await scorer.score([job])).model)
        await scorer.reconfigure({"model": str(tmp_path / "missing")})
        await scorer.reconfigure({"model": "https://hub.example/model"})
        models.append((await scorer.score([job])).model)
        await scorer.score_and_log(job)
        scorer._executor.shutdown()
        return models

    assert asyncio.run(run()) == [TINY_REWARD, "judge-2", "judge-2"]
    assert [event.model for event in log.events] == ["judge-2"]
