"""What passes between the gateway and one variant engine: the call record, SSE chunks, errors.

Shared by the single-variant path (`serve.gateway`) and arena battles (`serve.arena`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from ray.serve.exceptions import BackPressureError
from ray.serve.handle import DeploymentHandle

# The engine yields vLLM's own error class; Ray's `ErrorResponse` is a subclass of it.
from vllm.entrypoints.serve.engine.protocol import ErrorResponse

from router.events import Completion, Event
from serve.errors import RETRY_AFTER_S, APIError

logger = logging.getLogger("ray.serve")

Endpoint = Literal["chat", "completions"]
DONE = "data: [DONE]\n\n"
# The status logged for a request whose client went away before its answer's end (nginx's
# convention): not a success, and not the server's error.
CLIENT_CLOSED = 499


@dataclass(slots=True)
class Call:
    """What the gateway knows about one engine call while serving it."""

    endpoint: Endpoint
    request_id: str
    started: float
    ts: float
    variant: str
    experiment: str | None
    unit: str | None
    stream: bool
    wants_usage: bool = False
    ttft_s: float | None = None
    battle_id: str | None = None
    label: str | None = None  # an arena side's: a or b
    client_request_id: str | None = None  # the client's X-Request-Id, kept for tracing
    prompt: list[dict[str, str]] | None = None  # set when the completion will be scored
    events: list[Event] = field(default_factory=list)

    @property
    def engine_request_id(self) -> str:
        """The id the engine makes the completion id from (`chatcmpl-<this>`): the server's
        request id, and an arena side's label after it."""
        return f"{self.request_id}-{self.label}" if self.label else self.request_id

    def completion(
        self,
        completion_id: str,
        status: int,
        usage: Mapping[str, Any] | None = None,
        error: str | None = None,
    ) -> Completion:
        return Completion(
            ts=self.ts,
            completion_id=completion_id,
            request_id=self.request_id,
            experiment=self.experiment,
            variant=self.variant,
            unit=self.unit,
            endpoint=self.endpoint,
            stream=self.stream,
            status=status,
            ttft_s=self.ttft_s,
            latency_s=time.perf_counter() - self.started,
            prompt_tokens=usage.get("prompt_tokens") if usage else None,
            completion_tokens=usage.get("completion_tokens") if usage else None,
            error=error,
            battle_id=self.battle_id,
            client_request_id=self.client_request_id,
        )


def engine_error(error: ErrorResponse) -> APIError:
    """The client's view of an engine error: its 4xx as is, anything else a retryable 503."""
    info = error.error
    status = info.code if isinstance(info.code, int) and 400 <= info.code < 600 else 500
    if status >= 500:
        return APIError(
            503, info.message, code="engine_error", headers={"Retry-After": RETRY_AFTER_S}
        )
    return APIError(status, info.message, param=info.param, code="invalid_value")


def unavailable(
    variant: str, exc: BaseException | None = None, *, shown: str | None = None
) -> APIError:
    """The retryable 503 for an engine call that failed: its queue full, or the engine gone.

    `shown` names the engine in the message instead of the variant (an arena's choice index:
    a battle must not say who is in it).
    """
    if isinstance(exc, BackPressureError):
        why, code = "is at capacity (its queue is full)", "variant_overloaded"
    else:
        why, code = "is unavailable", "variant_unavailable"
    who = shown if shown is not None else f"variant {variant!r}"
    return APIError(503, f"{who} {why}; retry", code=code, headers={"Retry-After": RETRY_AFTER_S})


def first_item(first: Any) -> Any:
    """The first thing an engine yielded: a response, a list of SSE chunks, or an error."""
    return first[0] if isinstance(first, list) and first else first


def stream_id(chunk: str) -> str | None:
    if not chunk.startswith("data: {"):
        return None
    try:
        return json.loads(chunk[6:]).get("id")
    except ValueError:
        return None


def is_usage_chunk(chunk: str) -> bool:
    return chunk.startswith("data: {") and '"choices":[]' in chunk and '"usage"' in chunk


def sse(payload: Mapping[str, Any]) -> str:
    return f"data: {json.dumps(payload, separators=(',', ':'))}\n\n"


def add_usage(total: dict[str, int], usage: Mapping[str, Any] | None) -> None:
    for name in ("prompt_tokens", "completion_tokens", "total_tokens"):
        value = (usage or {}).get(name)
        if isinstance(value, int):
            total[name] = total.get(name, 0) + value


def chunk_text(chunk: str) -> str:
    """The text a chat or completions SSE chunk adds to its first choice, index 0 ("" if none:
    with `n` > 1 the engine streams each choice in chunks of its own)."""
    if not chunk.startswith("data: {"):
        return ""
    try:
        choices = json.loads(chunk[6:]).get("choices") or []
    except ValueError:
        return ""
    if not choices:
        return ""
    choice = choices[0]
    if choice.get("index", 0) != 0:
        return ""
    delta = choice.get("delta")
    if isinstance(delta, dict):
        return delta.get("content") or ""
    return choice.get("text") or ""


class OutcomeSender:
    """Sends a call's events to the outcome log and sees them committed, without ever failing
    the call or holding it up for long.

    `send` returns once the log has committed the events (so a log killed right after loses
    nothing the client saw) or, past `HOLD_S`, leaves the delivery to go on behind. The log
    itself answers after at most its own short wait when the store is slow or cannot write
    (the events stay queued there); a log whose process died is retried with backoff while
    Ray Serve starts a new one, up to `RETRY_FOR_S`. `later` does not wait at all, for a
    caller that may be cancelled (its client left); `pending` lets a stopping replica see
    every delivery through.
    """

    HOLD_S = 10.0  # what a caller waits at most: the client's last byte waits with it
    RETRY_S = (0.1, 2.0)  # first and longest wait between tries
    RETRY_FOR_S = 120.0

    def __init__(self, log: DeploymentHandle) -> None:
        self._log = log
        self._tasks: set[asyncio.Task] = set()

    async def send(self, events: list[Event], what: str) -> None:
        """Returns once the events are committed, or after `HOLD_S`; never raises."""
        await asyncio.wait({self.later(events, what)}, timeout=self.HOLD_S)

    def later(self, events: list[Event], what: str) -> asyncio.Task:
        """Deliver from a tracked task of its own; the caller need not wait for it."""
        task = asyncio.get_running_loop().create_task(self._deliver(events, what))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _deliver(self, events: list[Event], what: str) -> None:
        deadline = time.monotonic() + self.RETRY_FOR_S
        wait = self.RETRY_S[0]
        while True:
            left = deadline - time.monotonic()
            try:
                # Unanswered while no log replica is up: Ray Serve queues the call meanwhile.
                await asyncio.wait_for(self._log.record.remote(events, committed=True), left)
                return
            except TimeoutError:
                problem: BaseException = TimeoutError(f"no log took them in {self.RETRY_FOR_S} s")
            except Exception as exc:  # the log's process died with the call
                problem = exc
            if time.monotonic() + wait >= deadline:
                logger.error("outcome events of %s lost: %r", what, problem)
                return
            if wait == self.RETRY_S[0]:
                logger.warning("outcome events of %s not sent (%r); retrying", what, problem)
            await asyncio.sleep(wait)
            wait = min(2 * wait, self.RETRY_S[1])

    @property
    def pending(self) -> set[asyncio.Task]:
        return set(self._tasks)
