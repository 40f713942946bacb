"""The record stage: what one engine call was, and how its outcome reaches the log and the scorer.

A `Call` is what the gateway knows about one engine call while serving it; its `completion`
is the `Completion` event logged at the end. `Recorder` sends a call's events to the outcome
log (`OutcomeSender`, beside the log in `serve.outcome_log`) and its finished answer to the
reward scorer, off the response path.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from ray.exceptions import RayActorError
from ray.serve.handle import DeploymentHandle

from router.events import Completion, Event, Transcript
from serve.config import ScorerConfig
from serve.outcome_log import OutcomeSender
from serve.scorer import ScoreJob

logger = logging.getLogger("ray.serve")

Endpoint = Literal["chat", "completions"]
# The status logged for a request whose client went away before its answer's end (nginx's
# convention): not a success, and not the server's error.
CLIENT_CLOSED = 499
SCORE_RETRY_S = (0.5, 2.0, 5.0)  # waits before a score job is sent again to a new scorer


@dataclass(slots=True, kw_only=True)
class Call:
    """What the gateway knows about one engine call while serving it.

    `wall_ts` (Unix seconds) is when the request arrived, as logged; `perf_start` is the same
    instant on the monotonic performance counter, which latencies are measured from.
    """

    endpoint: Endpoint
    request_id: str
    perf_start: float
    wall_ts: float
    variant: str
    experiment: str | None
    unit: str | None
    stream: bool
    wants_usage: bool = False
    ttft_s: float | None = None
    battle_id: str | None = None
    label: str | None = None  # an arena side's: a or b
    client_request_id: str | None = None  # the client's X-Request-Id, kept for tracing
    # The conversation, read only where its text is needed: for the scorer (`scored`, the
    # sample rate) or for the store (`keep_text`, experiment traffic under `store.keep_text`).
    prompt: list[dict[str, str]] | None = None
    scored: bool = False
    keep_text: bool = False
    events: list[Event] = field(default_factory=list)

    @property
    def engine_request_id(self) -> str:
        """The id the engine makes the completion id from (`chatcmpl-<this>`): the server's
        request id, and an arena side's label after it."""
        return f"{self.request_id}-{self.label}" if self.label else self.request_id

    def elapsed_s(self) -> float:
        return time.perf_counter() - self.perf_start

    def transcript(self, completion_id: str, answer: str) -> Transcript | None:
        """The text to keep of this call's answer, where the config keeps it; else None."""
        if not self.keep_text or self.prompt is None or self.experiment is None:
            return None
        return Transcript(
            ts=self.wall_ts,
            completion_id=completion_id,
            experiment=self.experiment,
            messages=json.dumps(self.prompt, ensure_ascii=False),
            answer=answer,
        )

    def completion(
        self,
        completion_id: str,
        status: int,
        usage: Mapping[str, Any] | None = None,
        error: str | None = None,
    ) -> Completion:
        return Completion(
            ts=self.wall_ts,
            completion_id=completion_id,
            request_id=self.request_id,
            experiment=self.experiment,
            variant=self.variant,
            unit=self.unit,
            endpoint=self.endpoint,
            stream=self.stream,
            status=status,
            ttft_s=self.ttft_s,
            latency_s=self.elapsed_s(),
            prompt_tokens=usage.get("prompt_tokens") if usage else None,
            completion_tokens=usage.get("completion_tokens") if usage else None,
            error=error,
            battle_id=self.battle_id,
            client_request_id=self.client_request_id,
        )


class Recorder:
    """Sends each call's outcome events to the log and its finished answer to the scorer."""

    def __init__(
        self,
        outcome_log: DeploymentHandle,
        scorer_handle: DeploymentHandle | None,
        scorer_config: ScorerConfig | None,
        keep_text: bool = False,
    ) -> None:
        self.outcome_sender = OutcomeSender(outcome_log)
        self.scorer_handle = scorer_handle
        self.scorer_config = scorer_config
        self.keep_text = keep_text  # `store.keep_text`: the text of experiment traffic
        self._score_tasks: set[asyncio.Task] = set()

    async def record(
        self,
        call: Call,
        completion_id: str,
        status: int,
        usage: Mapping[str, Any] | None = None,
        error: str | None = None,
        text: str | None = None,
    ) -> None:
        """Log the call's events and its completion (with its `text`, an answer's, where the
        config keeps it); returns once committed (`OutcomeSender`)."""
        call.events.append(call.completion(completion_id, status, usage, error))
        if text is not None and status == 200:
            transcript = call.transcript(completion_id, text)
            if transcript is not None:
                call.events.append(transcript)
        await self.outcome_sender.send(call.events, call.request_id)

    def record_later(
        self,
        call: Call,
        completion_id: str,
        status: int = CLIENT_CLOSED,
        usage: Mapping[str, Any] | None = None,
        error: str | None = "client_closed",
    ) -> None:
        """Log the call without waiting: its task may be cancelled (the client left)."""
        call.events.append(call.completion(completion_id, status, usage, error))
        self.outcome_sender.later(call.events, call.request_id)

    def sampled(self) -> bool:
        """Whether this completion goes to the reward scorer (its sample rate)."""
        config = self.scorer_config
        return config is not None and random.random() < config.sample_rate

    def read_text(
        self, call: Call, conversation: Callable[[], list[dict[str, str]] | None]
    ) -> None:
        """Decide whether the call's answer is scored and its text kept, and read its
        `conversation()` only where either needs it (not on every request's path)."""
        call.scored = self.sampled()
        call.keep_text = self.keep_text and call.experiment is not None
        if call.scored or call.keep_text:
            call.prompt = conversation()

    def score_later(self, call: Call, completion_id: str, text: str) -> None:
        """Send a finished completion to the scorer without waiting; never fails the caller."""
        config = self.scorer_config
        if self.scorer_handle is None or config is None or not call.scored or call.prompt is None:
            return
        if len(self._score_tasks) >= config.max_in_flight:
            logger.warning("scorer backlog full: completion %s left unscored", completion_id)
            return
        job = ScoreJob(
            completion_id=completion_id,
            experiment=call.experiment,
            variant=call.variant,
            messages=call.prompt,
            response=text,
            ended=time.time(),
            battle_id=call.battle_id,
        )
        task = asyncio.get_running_loop().create_task(self.send_score(job))
        self._score_tasks.add(task)
        task.add_done_callback(self._score_tasks.discard)

    async def send_score(self, job: ScoreJob) -> None:
        """Off the response path: a scorer replica that died with the call (Ray Serve starts
        another, and the handle learns of it) is tried again, a few times, then given up."""
        assert self.scorer_handle is not None
        for wait in (*SCORE_RETRY_S, None):
            try:
                await self.scorer_handle.score_and_log.remote(job)
                return
            except RayActorError as exc:  # the replica is gone: another may take it
                if wait is None:
                    logger.warning("completion %s not scored: %r", job.completion_id, exc)
                    return
                await asyncio.sleep(wait)
            except Exception as exc:
                logger.warning("completion %s not scored: %r", job.completion_id, exc)
                return

    async def wait_for_outcome_sends(self, timeout_s: float) -> bool:
        """Wait (at most `timeout_s`) for the outcome events sent without waiting; whether there
        were any."""
        pending = self.outcome_sender.pending
        if not pending:
            return False
        await asyncio.wait(pending, timeout=timeout_s)
        return True

    async def wait_for_sends(self, timeout_s: float) -> None:
        """Wait (at most `timeout_s`) for the events and score jobs sent without waiting."""
        pending = self.outcome_sender.pending | self._score_tasks
        if pending:
            _, late = await asyncio.wait(pending, timeout=max(0.1, timeout_s))
            if late:
                logger.error("%d outcome sends or score jobs unfinished at stop", len(late))
