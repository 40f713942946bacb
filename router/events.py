"""The outcome-log event schema: what the gateway records about every request and judgement.

Plain frozen dataclasses: they cross process boundaries (pickled through Ray) and are written by
`router.store.OutcomeStore`. Times are Unix seconds; latencies are seconds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

from router.assignment import Reason
from router.experiment import Unit

FeedbackKind = Literal["thumbs", "vote", "regenerate", "copy", "custom"]
FeedbackStatus = Literal[
    "recorded",  # a new row
    "replayed",  # the idempotency key was seen with the same feedback: the first answer again
    "unknown_target",  # no such completion or battle
    "already_voted",  # the battle has a vote under another idempotency key
    "key_reused",  # the idempotency key was seen with different feedback
]
VOTE_VALUES = ("a", "b", "tie", "both_bad")
THUMBS_VALUES = ("up", "down")


@dataclass(frozen=True, slots=True)
class Exposure:
    """What a unit was assigned in an experiment, and why.

    The gateway sends one with every experiment request; the store keeps one row per unit per
    experiment per change of (variant, reason), so the analysis counts units, not requests.
    `variant` is None for arena units (each battle draws its own pair; see `Battle`).
    """

    ts: float
    request_id: str
    experiment: str
    unit_type: Unit
    unit: str
    variant: str | None
    reason: Reason
    exposed: bool


@dataclass(frozen=True, slots=True)
class Completion:
    """One served request to one variant, successful or not.

    `completion_id` is the `id` the client received (for an arena side, the id listed in the
    answer's `arena.completion_ids`); `ttft_s` is known only for streams, since a non-stream answer
    arrives whole.
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
    battle_id: str | None = None


@dataclass(frozen=True, slots=True)
class Battle:
    """An arena battle: two variants answered one request; `variant_a` was shown as choice 0."""

    ts: float
    battle_id: str
    request_id: str
    experiment: str
    unit: str
    variant_a: str
    variant_b: str
    completion_a: str
    completion_b: str
    # Style of each answer, for style control: completion tokens and markdown counts.
    tokens_a: int | None = None
    tokens_b: int | None = None
    headers_a: int = 0
    headers_b: int = 0
    list_items_a: int = 0
    list_items_b: int = 0
    bold_a: int = 0
    bold_b: int = 0


@dataclass(frozen=True, slots=True)
class Score:
    """A reward model's score of one completion, written off the response path.

    `latency_s` runs from the completion's end to its score (queueing and batching included).
    """

    ts: float
    completion_id: str
    experiment: str | None
    variant: str | None
    model: str
    score: float
    latency_s: float


@dataclass(frozen=True, slots=True)
class Feedback:
    """A judgement of a completion or a battle, under an idempotency key.

    `value` holds the thumbs (`up`/`down`) or vote (`a`, `b`, `tie`, `both_bad`); `number` and
    `name` a custom metric; `regenerate` and `copy` carry neither.
    """

    ts: float
    kind: FeedbackKind
    idempotency_key: str
    completion_id: str | None = None
    battle_id: str | None = None
    value: str | None = None
    number: float | None = None
    name: str | None = None

    def __post_init__(self) -> None:
        """Refuse what the store could not take or the analysis could not read (ValueError):
        a bad event must fail where it is made, not roll back a batch of good ones."""
        if (self.completion_id is None) == (self.battle_id is None):
            raise ValueError("feedback names exactly one of completion_id and battle_id")
        if not self.idempotency_key:
            raise ValueError("feedback needs an idempotency_key")
        if self.kind == "vote" and (self.battle_id is None or self.value not in VOTE_VALUES):
            raise ValueError(f"a vote is on a battle, with a value in {VOTE_VALUES}")
        thumbs_ok = self.completion_id is not None and self.value in THUMBS_VALUES
        if self.kind == "thumbs" and not thumbs_ok:
            raise ValueError(f"thumbs are on a completion, with a value in {THUMBS_VALUES}")
        if self.kind in ("regenerate", "copy") and self.completion_id is None:
            raise ValueError(f"{self.kind} is feedback on a completion")
        if self.kind == "custom" and not (
            self.name and self.number is not None and math.isfinite(self.number)
        ):
            raise ValueError("custom feedback needs a name and a finite number")
        if self.kind not in ("thumbs", "vote", "regenerate", "copy", "custom"):
            raise ValueError(f"unknown feedback kind {self.kind!r}")

    @property
    def target(self) -> tuple[str, str]:
        if self.battle_id is not None:
            return "battle", self.battle_id
        return "completion", self.completion_id or ""


@dataclass(frozen=True, slots=True)
class FeedbackResult:
    """What the store did with a `Feedback`; `reveal` names a voted battle's variants (a, b).

    `target` is the (experiment, variant) of the judged completion (variant None for a battle),
    for metrics only: it is not part of the answer and not compared.
    """

    status: FeedbackStatus
    feedback_id: int | None
    reveal: tuple[str, str] | None = None
    experiment: str | None = None
    target: tuple[str | None, str | None] = field(default=(None, None), compare=False)


Event = Exposure | Completion | Battle | Score | Feedback
