"""The RewardScorer deployment: dynamic batching in front of `reward.scorer.RewardScorer`.

Requests from every gateway replica meet here; `@serve.batch` gathers them (up to
`max_batch_size`, waiting at most `batch_wait_s`), and the scorer splits each gathered batch by
its token budget into length buckets, so one forward pads little. The model runs on one worker
thread, off the event loop; on a CPU that thread runs at Linux's idle priority by default
(`scorer.priority`), so the scorer's forwards take only the cycles the engines leave.

Two entry points: `score_and_log` (the gateway fires it after a completion ends and never waits:
the score lands in the outcome log as a `Score` event) and `score` (best-of-n awaits it, with a
timeout, to rank candidates).

Which model scores is the deployment's `user_config` (`{model: FOLDER}`), so pointing it at
another model applies live, through Ray Serve's reconfigure: the engines keep running. The new
model loads beside the current one, which scores until it is ready; every score names the model
that computed it (its folder's name). A model that cannot load is refused and the current one
stays.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ray import serve
from ray.serve.handle import DeploymentHandle

from router.events import Score
from serve.config import SCORER_DEPLOYMENT, ScorerConfig, ScorerLiveConfig

logger = logging.getLogger("ray.serve")


@dataclass(frozen=True, slots=True, kw_only=True)
class ScoreJob:
    """One response to score, with what the `Score` event needs to name it."""

    completion_id: str
    experiment: str | None
    variant: str | None
    messages: Sequence[Mapping[str, Any]]
    response: str
    ended: float  # Unix time the completion ended
    battle_id: str | None = None


def run_at_idle_priority() -> bool:
    """Put the calling thread under Linux's SCHED_IDLE policy: it runs only on CPU time that no
    other thread wants, and the OpenMP and tokenizer threads it starts inherit that. Returns
    False (and logs why) where the policy is missing or refused."""
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    except (AttributeError, OSError) as error:  # not Linux, or refused
        logger.warning("reward scorer: could not take idle CPU priority: %s", error)
        return False
    return True


@dataclass(frozen=True, slots=True)
class Scored:
    """Scores of several responses by one model (None where it could not score one)."""

    model: str
    scores: list[float | None]


def usable_scores(scores: Sequence[float | None]) -> list[float | None]:
    """None for what is not a score: a pair the template refused (NaN), an overflow (inf in
    fp16). JSON cannot carry either, and the store's NOT NULL score column refuses NaN."""
    return [value if value is not None and math.isfinite(value) else None for value in scores]


@serve.deployment(name=SCORER_DEPLOYMENT, max_ongoing_requests=4096)
class RewardScorerDeployment:
    """Scores responses in batches; its failures never reach a user's answer."""

    def __init__(self, config: ScorerConfig, outcome_log: DeploymentHandle) -> None:
        self._config = config
        self._outcome_log = outcome_log
        self._model_runtime = self._load(config.model_path)
        self._model_path = config.model_path
        # `auto` is resolved by the app builder (AppConfig.scorer_priority); alone, it is idle.
        idle = config.priority != "normal" and self._model_runtime.device.type == "cpu"
        self._executor = ThreadPoolExecutor(
            max_workers=1,
            thread_name_prefix="reward-scorer",
            initializer=run_at_idle_priority if idle else None,
        )
        self._batch.set_max_batch_size(config.max_batch_size)
        self._batch.set_batch_wait_timeout_s(config.batch_wait_s)
        logger.info(
            "reward scorer ready: %s, %s backend%s",
            self.model,
            self._model_runtime.backend,
            ", forwards at idle CPU priority" if idle else "",
        )

    @property
    def model(self) -> str:
        """The id scores carry: the current model's folder name."""
        return self._model_path.name

    def _load(self, path: Path) -> Any:
        from reward.scorer import RewardScorer

        config = self._config
        return RewardScorer(
            path,
            device=config.device,
            dtype=config.dtype,
            kernels=config.kernels,
            max_length=config.max_length,
        )

    async def reconfigure(self, user_config: Mapping[str, Any]) -> None:
        """Score with the model `user_config` names from now on (loaded first, beside the
        current one); a model that cannot load leaves the current one in place."""
        try:
            path = ScorerLiveConfig.model_validate(user_config).model_path
        except ValueError as exc:
            logger.error("reward scorer: user_config refused, model unchanged: %s", exc)
            return
        if path == self._model_path:
            return
        try:
            runtime = await asyncio.to_thread(self._load, path)
        except Exception as exc:
            logger.error(
                "reward scorer: %s cannot load; still scoring with %s: %r", path, self.model, exc
            )
            return
        self._model_runtime, self._model_path = runtime, path
        logger.info("reward scorer: now scoring with %s", self.model)

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.02)
    async def _batch(self, jobs: list[ScoreJob]) -> list[tuple[float | None, str]]:
        self._outcome_log.observe_scorer_batch.remote(len(jobs))  # for /metrics; not awaited
        runtime, model = self._model_runtime, self.model  # a swap meanwhile: from the next batch
        conversations = [(job.messages, job.response) for job in jobs]
        scores = await asyncio.get_running_loop().run_in_executor(
            self._executor,
            runtime.score,
            conversations,
            self._config.token_budget,
            self._config.max_batch_size,
        )
        return [(value, model) for value in usable_scores(scores)]

    async def score(self, jobs: list[ScoreJob]) -> Scored:
        """Scores of several responses (best-of-n candidates), batched with everyone else's;
        None for a response the model could not score, or that a model swapped in meanwhile
        scored (two models' scores are on two scales)."""
        results = await asyncio.gather(*(self._batch(job) for job in jobs))
        model = results[0][1] if results else self.model
        return Scored(model, [value if by == model else None for value, by in results])

    async def score_and_log(self, job: ScoreJob) -> None:
        """Score one finished completion and record the `Score` event (none if unscorable)."""
        value, model = await self._batch(job)
        if value is None:
            logger.warning("completion %s could not be scored", job.completion_id)
            return
        now = time.time()
        score = Score(
            ts=now,
            completion_id=job.completion_id,
            experiment=job.experiment,
            variant=job.variant,
            model=model,
            score=value,
            latency_s=max(0.0, now - job.ended),
            battle_id=job.battle_id,
        )
        await self._outcome_log.record.remote([score])

    def backend(self) -> str:
        return self._model_runtime.backend
