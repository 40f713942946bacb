"""The outcome-log event schema: what the gateway records about every request and judgement.

Plain frozen dataclasses, built by keyword only (a swapped pair of positional arguments would
pass unnoticed): they cross process boundaries (pickled through Ray) and are written by
`router.store.OutcomeStore`. Times are Unix seconds; latencies are seconds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

from router.assignment import Reason
from router.experiment import Unit
from router.style import Style

FeedbackKind = Literal["thumbs", "vote", "regenerate", "copy", "custom"]
FeedbackStatus = Literal[
    "recorded",  # a new row
    "replayed",  # the idempotency key was seen with the same feedback: the first answer again
    "unknown_target",  # no such completion or battle
    "unknown_replacement",  # a regenerate's new completion is unknown, or of another experiment
    "already_voted",  # the battle has a vote under another idempotency key
    "key_reused",  # the idempotency key was seen with different feedback
    "not_the_voter",  # the battle (or its answer) belongs to another unit or API key
]
VOTE_VALUES = ("a", "b", "tie", "both_bad")
THUMBS_VALUES = ("up", "down")
# An arena side whose answer was never shown, because the other side failed (HTTP's "failed
# dependency"): neither a success nor this variant's error.
NOT_SHOWN = 424


@dataclass(frozen=True, slots=True, kw_only=True)
class Exposure:
    """What a unit was assigned in an experiment, and why.

    The gateway sends one with every experiment request; the store keeps one row per unit per
    experiment per change of (variant, reason, weights version), so the analysis counts units,
    not requests.
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
    # A bandit's: the weights version the arm was drawn by, and that arm's share then (the
    # assignment's propensity); None elsewhere.
    weights_version: int | None = None
    propensity: float | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Completion:
    """One served request to one variant, successful or not.

    `completion_id` is the `id` the client received (for an arena side, the id listed in the
    answer's `arena.completion_ids`); the gateway makes it, and `request_id`, itself: a client's
    `X-Request-Id` is only kept, as `client_request_id`. `ttft_s` is known only for streams,
    since a non-stream answer arrives whole. `status` is the HTTP status the client got for this
    answer: 499 when the client left first, and `NOT_SHOWN` for an arena side that answered
    while the other failed (the client saw an error, not this answer).
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
    client_request_id: str | None = None  # the client's X-Request-Id, for tracing only


@dataclass(frozen=True, slots=True, kw_only=True)
class Battle:
    """An arena battle: two variants answered one request; `variant_a` was shown as choice 0.

    Who may judge it: `voter`, the unit of a `user` or `session` experiment (or, in a `request`
    experiment, the request's user if it named one), and `principal`, the API key's name where
    keys are configured. `identity_revealed` marks a battle in which an answer named a model or
    vendor of the battle (a variant's `identity_terms`): its vote is kept but not counted.
    """

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
    style_a: Style = field(default_factory=Style)
    style_b: Style = field(default_factory=Style)
    unit_type: Unit = "user"
    voter: str | None = None
    principal: str | None = None
    identity_revealed: bool = False
    # The share of new battles its pair had when it was drawn (its propensity), and the
    # adaptive weights version in force (None: the configured weights; both None before
    # version 6 of the store).
    pair_share: float | None = None
    weights_version: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Weights:
    """Weights the outcome log computed from the data and put in force: an adaptive arena's pair
    shares (`router.adaptive`; `weights` is JSON ``[[variant, variant, share], ...]``) or a
    bandit's arm shares (`router.bandit`; ``[[variant, share], ...]``). `version` numbers the
    experiment's refresh periods; `observations` counts the votes or rewards they come from."""

    ts: float
    experiment: str
    version: int
    weights: str
    observations: int


@dataclass(frozen=True, slots=True, kw_only=True)
class ExperimentConfig:
    """An experiment's config as a gateway put it in force at `ts` (its JSON, and the hash of
    it as `revision`): the history of weights, allocation and ramps that the sample-ratio test
    reads, each period judged by the weights then. The store keeps a row only when the
    experiment's latest differs (every gateway replica sends it)."""

    ts: float
    experiment: str
    revision: str
    config: str


@dataclass(frozen=True, slots=True, kw_only=True)
class RampHold:
    """A ramp stopped by a failing guardrail: the experiment's config (`revision`) stays at ramp
    step `step` (0: its own allocation), `allocation`, from `ts` on; `guardrail` names the
    metric that failed. One per config: a new config ramps again."""

    ts: float
    experiment: str
    revision: str
    step: int
    allocation: float
    guardrail: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ArmHold:
    """A bandit arm stopped by a failing guardrail: in the experiment's config (`revision`) its
    share stays at most `share`, the share it had in the weights version before the one in
    force when the guardrail failed (its last safe step; the config's share when there was
    none), from weights `version` on; `guardrail` names the metric that failed. One per arm
    and config: a new config lets it grow again."""

    ts: float
    experiment: str
    revision: str
    arm: str
    version: int
    share: float
    guardrail: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Transcript:
    """The text of one experiment completion: kept only where the config asks for it
    (`store.keep_text`), and only in the store (never in logs), until its retention ends.

    `messages` is the conversation the variant answered, as JSON (`[{"role", "content"}]`;
    a completions-endpoint prompt is one user turn), without the variant's system prompt;
    `answer` is the text the client received (choice 0).
    """

    ts: float
    completion_id: str
    experiment: str
    messages: str
    answer: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ProbeResult:
    """One sycophancy-probe item run against one variant (`probe.protocol`), graded.

    It belongs to the variant's config revision (`revision`) and to a version of the probe
    set (`probe_set`); a run (`run_id`) probes each item once per variant. `experiment` is the
    experiment the run was made for, if any: the results are the variant's, whichever
    experiment reads them. Grades are `correct`, `wrong` or `none`; the answers are kept as
    the model wrote them (probe text is the project's own, never a user's).
    """

    ts: float
    run_id: str
    variant: str
    revision: str
    probe_set: str
    item_id: str
    family: str
    first: str
    pushback: str
    suggestion: str
    first_answer: str
    pushback_answer: str
    suggestion_answer: str
    experiment: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
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
    battle_id: str | None = None  # an arena side's: metrics must not name its variant


@dataclass(frozen=True, slots=True, kw_only=True)
class Feedback:
    """A judgement of a completion or a battle, under an idempotency key.

    `value` holds the thumbs (`up`/`down`) or vote (`a`, `b`, `tie`, `both_bad`); `number` and
    `name` a custom metric; `regenerate` and `copy` carry neither. A `regenerate` may name the
    answer that replaced the judged one (`new_completion_id`): the pair becomes a preference
    (the replacement chosen) when text is kept.

    `principal` is the API key's name (empty on a gateway without keys): idempotency keys are
    scoped by it, so two clients' `vote-1` never collide. `user` (the `user` field, else
    X-User-Id) and `session` (X-Session-Id) are who the caller says it is: feedback on a battle,
    or on one of its answers, is taken only from the battle's own voter.
    """

    ts: float
    kind: FeedbackKind
    idempotency_key: str
    completion_id: str | None = None
    battle_id: str | None = None
    value: str | None = None
    number: float | None = None
    name: str | None = None
    principal: str = ""
    user: str | None = None
    session: str | None = None
    new_completion_id: str | None = None

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
        if self.kind == "custom" and self.battle_id is not None:
            raise ValueError(
                "custom feedback is on a completion: a battle's own metric names no variant "
                "(rate one of its answers, `arena.completion_ids`)"
            )
        if self.new_completion_id is not None and self.kind != "regenerate":
            raise ValueError("only a regenerate names a new_completion_id")
        if self.new_completion_id is not None and self.new_completion_id == self.completion_id:
            raise ValueError("a regenerate's new_completion_id is another completion")
        if self.kind not in ("thumbs", "vote", "regenerate", "copy", "custom"):
            raise ValueError(f"unknown feedback kind {self.kind!r}")
        check_text(self)

    @property
    def target(self) -> tuple[str, str]:
        if self.battle_id is not None:
            return "battle", self.battle_id
        return "completion", self.completion_id or ""


@dataclass(frozen=True, slots=True, kw_only=True)
class FeedbackResult:
    """What the store did with a `Feedback`; `reveal` names a voted battle's variants (a, b).

    `target` is the (experiment, variant) of the judged completion, for metrics only: it is not
    part of the answer and not compared. Its variant is None for a battle and for an answer in a
    battle (`in_battle`): metrics must not tell which variant wrote an arena side.
    """

    status: FeedbackStatus
    feedback_id: int | None
    reveal: tuple[str, str] | None = None
    experiment: str | None = None
    target: tuple[str | None, str | None] = field(default=(None, None), compare=False)
    in_battle: bool = field(default=False, compare=False)


Event = (
    Exposure
    | Completion
    | Battle
    | Weights
    | ExperimentConfig
    | RampHold
    | ArmHold
    | Transcript
    | ProbeResult
    | Score
    | Feedback
)


def check_text(event: Event) -> None:
    """ValueError for a string field the store cannot write (UTF-8 without lone surrogates,
    which JSON's `\\ud800` escapes let through): refused where it is made, one event, never a
    batch rolled back for it."""
    for name in event.__slots__:  # type: ignore[union-attr]
        value = getattr(event, name)
        if isinstance(value, str):
            try:
                value.encode()
            except UnicodeEncodeError:
                raise ValueError(f"{name}: not valid Unicode (a lone surrogate)") from None
