"""The scorer deployment's CPU priority: its forwards run on cycles the engines leave."""

from __future__ import annotations

import os
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest

from serve.scorer import run_at_idle_priority


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
