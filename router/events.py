"""The outcome-log event schema: what the gateway records about every request and vote.

Plain frozen dataclasses: they cross process boundaries (pickled through Ray) and are written by
`router.store.OutcomeStore`. Times are Unix seconds; latencies are seconds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

FeedbackKind = Literal["thumbs"]
FeedbackStatus = Literal["recorded", "replayed", "unknown_completion"]


@dataclass(frozen=True, slots=True)
class Exposure:
    """A unit was shown an arm of an experiment."""

    ts: float
    request_id: str
    experiment: str
    variant: str
    unit: str


@dataclass(frozen=True, slots=True)
class Completion:
    """One served request, successful or not.

    `completion_id` is the `id` the client received; `ttft_s` is known only for streams, since a
    non-stream answer arrives whole.
    """

    ts: float
    completion_id: str
    request_id: str
    experiment: str | None
    variant: str | None
    unit: str | None
    endpoint: Literal["chat", "completions"]
    stream: bool
    status: int
    ttft_s: float | None
    latency_s: float
    prompt_tokens: int | None
    completion_tokens: int | None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class Feedback:
    """A user's judgement of one completion: for now thumbs `up` or `down`."""

    ts: float
    completion_id: str
    kind: FeedbackKind
    value: str
    idempotency_key: str | None = None


@dataclass(frozen=True, slots=True)
class FeedbackResult:
    """What the store did with a `Feedback`: recorded, already recorded, or refused."""

    status: FeedbackStatus
    feedback_id: int | None


Event = Exposure | Completion | Feedback
