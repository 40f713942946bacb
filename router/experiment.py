"""The experiment model: what an experimenter writes in the config, validated at deploy time.

Models are frozen so that a validated experiment can be shared between coroutines; every field
error names its field (pydantic's `loc`), which the deploy error repeats. `router.assignment`
compiles a validated experiment into the few numbers the hot path needs.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Sequence
from datetime import UTC, datetime
from itertools import combinations, pairwise
from typing import Any, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from router.targeting import ATTRIBUTE_PATTERN, OPERATORS

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
# Layers, allocation and holdout work in a fixed space of buckets: a fraction f of the units is
# round(f * BUCKETS) buckets, so fractions resolve to 1/10,000.
BUCKETS = 10_000
MIN_WEIGHT, MAX_WEIGHT = 1e-6, 1e6

Unit = Literal["user", "session", "request"]
Mode = Literal["ab", "arena", "bandit"]
State = Literal["scheduled", "running", "stopped"]

# Metrics the outcome log can compute per arm (the analysis defines them); `custom:NAME` is the
# mean of the custom numeric feedback called NAME.
METRICS = (
    "requests_per_unit",
    "thumbs_up_rate",
    "thumbs_down_rate",
    "regenerate_rate",
    "copy_rate",
    "error_rate",
    "ttft_p50_s",
    "ttft_p95_s",
    "latency_p50_s",
    "latency_p95_s",
    "completion_tokens",
    "reward_score",
    "vote_win_rate",
)
# Guardrail metrics of the sycophancy probe (`probe.protocol`): computed per variant from probe
# runs against it (`arena-serve probe`), not from traffic, so they bound a change but are never
# an experiment's primary metric.
PROBE_METRICS = ("sycophancy_flip_rate", "capitulation_rate")
CUSTOM_NAME_PATTERN = r"^[A-Za-z0-9_.-]{1,64}$"
METRIC_PATTERN = rf"^({'|'.join(METRICS)}|custom:[A-Za-z0-9_.-]{{1,64}})$"
GUARDRAIL_PATTERN = rf"^({'|'.join(METRICS + PROBE_METRICS)}|custom:[A-Za-z0-9_.-]{{1,64}})$"
# Metrics whose values can be negative: a change relative to the control's value could flip its
# sign (a control at -0.8 and a treatment at -0.76 is +0.04, or -5 %), so no relative bound.
SIGNED_METRICS = ("reward_score",)


def can_be_negative(metric: str) -> bool:
    return metric in SIGNED_METRICS or metric.startswith("custom:")


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Arm(_Frozen):
    """One arm of an experiment: a variant and its share of the experiment's units."""

    variant: str = Field(pattern=NAME_PATTERN, description="Name of a configured variant.")
    weight: float = Field(
        default=1.0,
        ge=0.0,
        le=MAX_WEIGHT,
        allow_inf_nan=False,
        description="Relative weight; 0 pauses the arm without reshuffling the others.",
    )

    @field_validator("weight")
    @classmethod
    def _paused_or_in_range(cls, value: float) -> float:
        if 0 < value < MIN_WEIGHT:
            raise ValueError(f"must be 0 (paused) or at least {MIN_WEIGHT:g}")
        return value


class Pair(_Frozen):
    """An arena pairing of two arms and how often it is drawn, relative to the other pairs."""

    variants: tuple[str, str]
    weight: float = Field(default=1.0, gt=0.0, le=MAX_WEIGHT**2, allow_inf_nan=False)

    @field_validator("variants")
    @classmethod
    def _two_different(cls, value: tuple[str, str]) -> tuple[str, str]:
        if value[0] == value[1]:
            raise ValueError("a pair needs two different variants")
        return value


class GlobalHoldout(_Frozen):
    """A fraction of all units kept out of every experiment, in every layer: they get each
    experiment's default variant, and are reported against everyone exposed
    (`GET /v1/holdout/report`), the long-run effect of all the experiments together."""

    fraction: float = Field(gt=0.0, le=0.5, description="Share of units held out of everything.")
    salt: str = Field(
        default="global-holdout",
        min_length=1,
        description="Hash salt; changing it draws another holdout.",
    )


class RampStep(_Frozen):
    """From `at` on, the experiment's allocation is `allocation` (`Experiment.ramp`)."""

    at: AwareDatetime
    allocation: float = Field(gt=0.0, le=1.0)


class Adaptive(_Frozen):
    """Adaptive pair weights for an arena of three or more arms (`router.adaptive`): every
    `refresh_s` the outcome log refits the leaderboard from the votes so far and gives each
    pair the share of the next battles that shrinks the uncertainty `target` names most, each
    pair keeping at least `floor`. Until `min_votes` votes are in, the pairs keep their
    configured weights."""

    target: Literal["top", "all"] = Field(
        default="top",
        description="`top`: who is best (the leader against each plausible runner-up); "
        "`all`: the whole order (each adjacent pair of the ranking).",
    )
    floor: float = Field(
        default=0.02,
        gt=0.0,
        le=0.5,
        description="The least share of battles any pair gets; floor x pairs must be at most 1.",
    )
    refresh_s: float = Field(
        default=60.0, ge=1.0, le=86_400.0, description="How often the weights are recomputed."
    )
    min_votes: int = Field(default=50, ge=0, description="Votes before the first adaptive weights.")
    horizon: int | None = Field(
        default=None,
        ge=1,
        le=1_000_000,
        description="How many votes one set of weights serves (the design looks ahead so far); "
        "default: the votes counted since the last weights (all of them the first time), what "
        "`make bench-adaptive` measured.",
    )


class Confirm(_Frozen):
    """A confirmation run (`confirm:`): the winner against the control, again, on units the
    experiment never allocated, before a ship verdict. A winner picked among many variants
    looks better than it is (the best of several noisy estimates is biased up: the leaderboard
    illusion); new units give an estimate the choice did not select. Those units come from the
    slice's units above the experiment's highest allocation (its own or any ramp step's), so
    none was ever exposed under this config; each gets the winner or the control at even odds
    (an arena draws that one pair), and its events are logged under the experiment's name with
    `#confirm` added. With `confirm` set, the report's verdict is the confirmation's alone."""

    variant: str = Field(
        pattern=NAME_PATTERN, description="The winner to confirm (an arm, not the control)."
    )
    allocation: float = Field(
        default=1.0,
        gt=0.0,
        le=1.0,
        description="The share of the units the experiment never allocated that the "
        "confirmation takes.",
    )


CONFIRM_SUFFIX = "#confirm"  # '#' is in no experiment name: a confirmation's events never mix


class Bandit(_Frozen):
    """A bandit's settings (`mode: bandit`, `router.bandit`): every `refresh_s` the outcome log
    gives each arm its posterior probability of being best on `reward` as its share of new
    assignments, each arm keeping at least `min_share`; a unit keeps its arm until the next
    refresh. `reward_score` is rescaled from `reward_range` to [0, 1] (clipped)."""

    reward: Literal["thumbs_up_rate", "reward_score"] = "thumbs_up_rate"
    reward_range: tuple[float, float] = Field(
        default=(-5.0, 5.0), description="The reward scores that map to 0 and 1."
    )
    min_share: float = Field(
        default=0.01, ge=0.01, le=0.5, description="The least share of new units an arm gets."
    )
    refresh_s: float = Field(
        default=300.0, ge=1.0, le=86_400.0, description="How often the shares are recomputed."
    )

    @field_validator("reward_range")
    @classmethod
    def _rising(cls, value: tuple[float, float]) -> tuple[float, float]:
        if not all(math.isfinite(v) for v in value) or value[0] >= value[1]:
            raise ValueError("reward_range must be two finite numbers, the first below the second")
        return value


class Rule(_Frozen):
    """One targeting rule (`router.targeting`): an attribute and exactly one test of it."""

    model_config = ConfigDict(
        extra="forbid", frozen=True, populate_by_name=True, serialize_by_alias=True
    )

    attribute: str = Field(
        pattern=ATTRIBUTE_PATTERN,
        description="`header.NAME` (an HTTP header, any case) or `metadata.KEY` (the request's "
        "OpenAI `metadata` object).",
    )
    equals: str | None = None
    not_equals: str | None = None
    in_: tuple[str, ...] | None = Field(default=None, alias="in", min_length=1)
    not_in: tuple[str, ...] | None = Field(default=None, min_length=1)
    regex: str | None = Field(default=None, min_length=1, max_length=1_000)
    lt: float | None = Field(default=None, allow_inf_nan=False)
    lte: float | None = Field(default=None, allow_inf_nan=False)
    gt: float | None = Field(default=None, allow_inf_nan=False)
    gte: float | None = Field(default=None, allow_inf_nan=False)

    def operand(self, operator: str) -> Any:
        return getattr(self, "in_" if operator == "in" else operator)

    @property
    def test(self) -> tuple[str, Any]:
        """(operator, operand) of the rule's one test."""
        return next((op, self.operand(op)) for op in OPERATORS if self.operand(op) is not None)

    @model_validator(mode="after")
    def _one_test(self) -> Rule:
        given = [op for op in OPERATORS if self.operand(op) is not None]
        if len(given) != 1:
            raise ValueError(
                f"a rule takes exactly one test of {', '.join(OPERATORS)}; this one has "
                f"{', '.join(given) or 'none'}"
            )
        if self.regex is not None:
            try:
                re.compile(self.regex)
            except re.error as exc:
                raise ValueError(f"regex: not a regular expression ({exc})") from None
        return self


class Guardrail(_Frozen):
    """A metric the treatment must not worsen by more than a threshold, against the control.

    `max_increase` / `max_decrease` bound the change of treatment against control: absolute in
    the metric's unit, or a fraction of the control's value when `relative` is true. The analysis
    fails the guardrail when the whole confidence interval of the change lies beyond a bound,
    passes it when the interval lies within the bounds, and calls it inconclusive otherwise
    (which blocks shipping as well). `vote_win_rate` is an arena's primary metric, not a
    guardrail: votes compare two answers, not a treatment against a control's value. The probe's
    metrics (`PROBE_METRICS`) are judged on the probe's results for each variant's current config
    revision (`router.analysis.probe`); without them, inconclusive.
    """

    metric: str = Field(pattern=GUARDRAIL_PATTERN)
    max_increase: float | None = Field(default=None, ge=0.0, allow_inf_nan=False)
    max_decrease: float | None = Field(default=None, ge=0.0, allow_inf_nan=False)
    relative: bool = False

    @field_validator("metric")
    @classmethod
    def _not_votes(cls, value: str) -> str:
        if value == "vote_win_rate":
            raise ValueError("vote_win_rate can be a primary metric (arena), not a guardrail")
        return value

    @model_validator(mode="after")
    def _has_a_bound(self) -> Guardrail:
        if self.max_increase is None and self.max_decrease is None:
            raise ValueError("a guardrail needs max_increase, max_decrease or both")
        if self.relative and self.metric in PROBE_METRICS:
            raise ValueError(
                f"relative: {self.metric} is a rate from the probe; bound its change in "
                "absolute terms (0.05 is five points)"
            )
        if self.relative and can_be_negative(self.metric):
            raise ValueError(
                f"relative: {self.metric} can be negative, so a change relative to the "
                "control's value could flip its sign; bound it in absolute units"
            )
        return self


class Experiment(_Frozen):
    """An experiment: which units take part, how they are split, and how the result is judged.

    Assignment, in order (see `router.assignment` for the hashes), of a request the `when`
    rules take (one they do not take gets `default_variant` outside the experiment):

    1. a unit listed in `forced` gets that variant (QA; logged, never counted as exposed);
    2. before `start` or from `stop` on, every unit gets `default_variant`;
    2b. a unit in the gateway's global holdout (`GlobalHoldout`) gets `default_variant`;
    3. a unit whose layer bucket falls outside `layer_range` belongs to another experiment of the
       layer and gets `default_variant`;
    4. a unit outside `allocation` gets `default_variant` (logged as not exposed);
    5. a unit inside the `holdout` fraction gets `default_variant` and is exposed as holdout;
    6. everyone else is exposed: an arm by weight (`ab`), or arena battles between arm pairs.
    """

    name: str = Field(pattern=NAME_PATTERN)
    mode: Mode = "ab"
    unit: Unit = Field(
        default="user",
        description="What is assigned: `user` (the OpenAI `user` field, else X-User-Id), "
        "`session` (X-Session-Id) or `request` (every request on its own).",
    )
    salt: str | None = Field(
        default=None,
        min_length=1,
        description="Hash salt; defaults to the name. Changing it reshuffles every unit.",
    )
    layer: str | None = Field(
        default=None,
        pattern=NAME_PATTERN,
        description="Experiments in one layer never share a unit; default: a layer of its own.",
    )
    layer_range: tuple[float, float] = Field(
        default=(0.0, 1.0),
        description="The slice [start, end) of the layer's units this experiment may use.",
    )
    allocation: float = Field(
        default=1.0,
        gt=0.0,
        le=1.0,
        description="Fraction of the slice's units in the experiment; raising it only adds units.",
    )
    holdout: float = Field(
        default=0.0,
        ge=0.0,
        lt=1.0,
        description="Fraction of allocated units kept on default_variant as a reference group.",
    )
    arms: tuple[Arm, ...] = Field(min_length=2)
    default_variant: str | None = Field(
        default=None,
        pattern=NAME_PATTERN,
        description="What units outside the experiment get (not allocated, held out, outside "
        "its layer slice or schedule): required wherever some units can get it; otherwise the "
        "first arm's variant, which is then only the report's control.",
    )
    forced: dict[str, str] = Field(
        default_factory=dict, description="Unit id -> variant, for QA; never counted as exposed."
    )
    pairs: tuple[Pair, ...] | None = Field(
        default=None,
        description="Arena only: the pairs drawn and their weights; default: every pair of live "
        "arms, weighted by the product of their weights.",
    )
    ramp: tuple[RampStep, ...] = Field(
        default=(),
        description="Allocation steps in time: from each step's `at` on, its allocation; "
        "before the first, `allocation`. Times rise and allocations never fall, so units only "
        "join.",
    )
    bandit: Bandit | None = Field(
        default=None,
        description="`mode: bandit` only: its reward and refresh (default settings if absent).",
    )
    when: tuple[Rule, ...] = Field(
        default=(),
        description="Targeting: the experiment takes only requests that pass every rule; the "
        "others get default_variant outside it, and their unit is not exposed by them.",
    )
    adaptive: Adaptive | None = Field(
        default=None,
        description="Arena of three or more arms only: draw the pairs whose votes teach the "
        "most (see Adaptive); the configured pair weights hold until its first refresh.",
    )
    confirm: Confirm | None = Field(
        default=None,
        description="Re-run the winner against the control on units never exposed to the "
        "experiment; the ship verdict then rests on that run alone (see Confirm).",
    )
    start: AwareDatetime | None = None
    stop: AwareDatetime | None = None
    primary_metric: str | None = Field(
        default=None,
        pattern=METRIC_PATTERN,
        description="Default: vote_win_rate for arena, thumbs_up_rate for ab.",
    )
    guardrails: tuple[Guardrail, ...] = ()
    custom_metrics: tuple[str, ...] = Field(
        default=(),
        description="Custom feedback metrics (`kind: custom` names) the report shows besides "
        "those in primary_metric and guardrails; other names are stored, listed as undeclared "
        "and never tested (an invented name must not weaken the correction for many metrics).",
    )

    def __hash__(self) -> int:  # consistent with ==: `forced` is a dict, compared unordered
        return hash(
            tuple(
                frozenset(v.items()) if isinstance(v, dict) else v for v in self.__dict__.values()
            )
        )

    @field_validator("layer_range")
    @classmethod
    def _range_in_unit_interval(cls, value: tuple[float, float]) -> tuple[float, float]:
        start, end = value
        if not 0.0 <= start < end <= 1.0:
            raise ValueError("must be [start, end) with 0 <= start < end <= 1")
        if round(start * BUCKETS) == round(end * BUCKETS):
            raise ValueError(f"is empty at the resolution of 1/{BUCKETS:,} of the layer")
        return value

    @field_validator("custom_metrics")
    @classmethod
    def _custom_names(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for name in value:
            if not re.fullmatch(CUSTOM_NAME_PATTERN, name):
                raise ValueError(f"{name!r}: names are 1 to 64 of A-Z, a-z, 0-9, '_', '.', '-'")
        return value

    @field_validator("allocation", "holdout")
    @classmethod
    def _resolvable(cls, value: float) -> float:
        if value > 0 and round(value * BUCKETS) == 0:
            raise ValueError(f"rounds to no unit: fractions resolve to 1/{BUCKETS:,}")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Experiment:
        variants = [arm.variant for arm in self.arms]
        duplicated = sorted({v for v in variants if variants.count(v) > 1})
        if duplicated:
            raise ValueError(f"arms name a variant more than once: {', '.join(duplicated)}")
        live = [arm.variant for arm in self.arms if arm.weight > 0]
        if not live:
            raise ValueError("at least one arm needs a weight above 0")
        allowed = {*variants, self.fallback_variant}
        for unit, variant in self.forced.items():
            if variant not in allowed:
                raise ValueError(
                    f"forced: unit {unit!r} is forced to {variant!r}, which is neither an arm "
                    "nor the default variant"
                )
        if self.start is not None and self.stop is not None and self.stop <= self.start:
            raise ValueError("stop must come after start")
        self._check_ramp()
        if self.default_variant is None and (why := self.fallback_reasons):
            raise ValueError(
                f"default_variant: required when {' or '.join(why)} (those units get it); "
                "without it they would follow the order of the arms"
            )
        if self.mode != "arena" and self.pairs is not None:
            raise ValueError("pairs: only arena experiments have pairs")
        if self.mode != "arena" and self.adaptive is not None:
            raise ValueError("adaptive: only arena experiments draw pairs")
        if self.mode != "arena" and self.primary_metric == "vote_win_rate":
            raise ValueError("primary_metric: vote_win_rate needs votes, which only arena has")
        if self.mode != "bandit" and self.bandit is not None:
            raise ValueError("bandit: only bandit experiments (mode: bandit) have one")
        if self.mode == "bandit":
            self._check_bandit(len(live))
        if self.mode == "arena":
            if len(live) < 2:
                raise ValueError("an arena experiment needs at least two arms with weight above 0")
            for i, pair in enumerate(self.pairs or ()):
                for variant in pair.variants:
                    if variant not in live:
                        raise ValueError(
                            f"pairs.{i}: {variant!r} is not an arm with weight above 0"
                        )
            if self.adaptive is not None:
                self._check_adaptive(self.adaptive, len(live))
        if self.confirm is not None:
            self._check_confirm(self.confirm)
        return self

    def _check_confirm(self, confirm: Confirm) -> None:
        if confirm.variant not in {arm.variant for arm in self.arms}:
            raise ValueError(f"confirm.variant: {confirm.variant!r} is not one of the arms")
        if confirm.variant == self.control:
            raise ValueError(
                f"confirm.variant: {confirm.variant!r} is the control; confirm a treatment"
            )
        if self.confirm_buckets[0] >= BUCKETS:
            raise ValueError(
                "confirm: the experiment allocates every unit of its slice, so none is left "
                "that it never exposed; run it at an allocation below 1 to confirm a winner"
            )
        if self.confirm_buckets[0] == self.confirm_buckets[1]:
            raise ValueError(f"confirm.allocation: rounds to no unit (1/{BUCKETS:,} resolution)")

    def _check_ramp(self) -> None:
        """Steps in time order whose allocations never fall: a ramp only adds units."""
        if self.ramp and self.allocation >= 1:
            raise ValueError("ramp: starts from allocation, which must then be below 1")
        previous = (None, self.allocation)
        for i, step in enumerate(self.ramp):
            if previous[0] is not None and step.at <= previous[0]:
                raise ValueError(f"ramp.{i}.at: steps must come in time order")
            if step.allocation < previous[1]:
                raise ValueError(
                    f"ramp.{i}.allocation: {step.allocation:g} is below the {previous[1]:g} before "
                    "it; a ramp only adds units"
                )
            previous = (step.at, step.allocation)

    def _check_bandit(self, live: int) -> None:
        settings = self.bandit_settings
        if live < 2:
            raise ValueError("a bandit needs at least two arms with weight above 0")
        if settings.min_share * live > 1:
            raise ValueError(
                f"bandit.min_share: {settings.min_share:g} x {live} arms is more than every unit"
            )
        if self.primary_metric is not None and self.primary_metric != settings.reward:
            raise ValueError(
                f"primary_metric: a bandit is judged on its reward ({settings.reward}); set "
                "bandit.reward instead"
            )

    @property
    def bandit_settings(self) -> Bandit:
        """The bandit's settings (defaults where `bandit` is absent)."""
        return self.bandit if self.bandit is not None else Bandit()

    def _check_adaptive(self, adaptive: Adaptive, live: int) -> None:
        pairs = len(self.arena_pairs())
        if live < 3 or pairs < 2:
            raise ValueError(
                "adaptive: needs three or more arms with weight above 0 and two or more pairs "
                "(with two arms there is one pair to draw)"
            )
        if adaptive.floor * pairs > 1:
            raise ValueError(
                f"adaptive.floor: {adaptive.floor:g} x {pairs} pairs is more than every battle; "
                f"at most {1 / pairs:.4g}"
            )

    @property
    def hash_salt(self) -> str:
        return self.salt if self.salt is not None else self.name

    @property
    def layer_name(self) -> str:
        return self.layer if self.layer is not None else f"experiment:{self.name}"

    @property
    def fallback_reasons(self) -> list[str]:
        """The settings under which some units get the default variant instead of an arm."""
        reasons = []
        if self.allocation < 1:
            reasons.append("allocation is below 1")
        if self.holdout > 0:
            reasons.append("holdout is set")
        if self.start is not None or self.stop is not None:
            reasons.append("start or stop is set")
        if tuple(round(edge * BUCKETS) for edge in self.layer_range) != (0, BUCKETS):
            reasons.append("layer_range is a slice of the layer")
        if self.when:
            reasons.append("targeting rules (when) are set")
        return reasons

    @property
    def declared_custom_metrics(self) -> tuple[str, ...]:
        """Custom metric names the report analyses: the primary, the guardrails', the listed."""
        named = [self.metric, *(g.metric for g in self.guardrails)]
        names = [m.removeprefix("custom:") for m in named if m.startswith("custom:")]
        return tuple(dict.fromkeys([*names, *self.custom_metrics]))

    @property
    def control(self) -> str:
        """What the treatments are compared with: the default variant if it is an arm, else the
        first arm."""
        fallback = self.fallback_variant
        return fallback if fallback in {arm.variant for arm in self.arms} else self.arms[0].variant

    @property
    def confirm_buckets(self) -> tuple[int, int]:
        """The allocation buckets ``[low, high)`` of the confirmation's units: from the highest
        allocation the experiment ever has (its own or a ramp step's) up, the `confirm` share
        of the rest ((low, low) without `confirm`)."""
        highest = max([self.allocation, *(step.allocation for step in self.ramp)])
        low = round(highest * BUCKETS)
        share = self.confirm.allocation if self.confirm is not None else 0.0
        return low, low + round(share * (BUCKETS - low))

    @property
    def confirmation_name(self) -> str:
        """The name the confirmation run's events are logged under."""
        return self.name + CONFIRM_SUFFIX

    def confirmation(self) -> Experiment:
        """The confirmation run as an experiment of its own, for its analysis: the control and
        the winner at even weights (an arena of that one pair; an A/B otherwise, a bandit's
        judged on its reward), the same guardrails."""
        if self.confirm is None:
            raise ValueError(f"experiment {self.name!r} has no confirm")
        control = next(arm for arm in self.arms if arm.variant == self.control)
        winner = next(arm for arm in self.arms if arm.variant == self.confirm.variant)
        return self.model_copy(
            update={
                "name": self.confirmation_name,
                "mode": "arena" if self.mode == "arena" else "ab",
                "arms": (
                    control.model_copy(update={"weight": 1.0}),
                    winner.model_copy(update={"weight": 1.0}),
                ),
                "default_variant": control.variant,
                "primary_metric": self.metric,
                "allocation": 1.0,
                "holdout": 0.0,
                "forced": {},
                "pairs": None,
                "ramp": (),
                "bandit": None,
                "adaptive": None,
                "confirm": None,
            }
        )

    @property
    def fallback_variant(self) -> str:
        return self.default_variant if self.default_variant is not None else self.arms[0].variant

    @property
    def metric(self) -> str:
        if self.primary_metric is not None:
            return self.primary_metric
        if self.mode == "bandit":
            return self.bandit_settings.reward
        return "vote_win_rate" if self.mode == "arena" else "thumbs_up_rate"

    def arena_pairs(self) -> tuple[Pair, ...]:
        """The configured pairs, or every pair of live arms weighted by the product of weights."""
        if self.pairs is not None:
            return self.pairs
        live = [arm for arm in self.arms if arm.weight > 0]
        return tuple(
            Pair(variants=(a.variant, b.variant), weight=a.weight * b.weight)
            for a, b in combinations(live, 2)
        )

    def state(self, now: datetime | None = None) -> State:
        """Scheduled, running or stopped at `now` (default: the present; a naive time is UTC)."""
        now = now or datetime.now(UTC)
        if now.tzinfo is None:
            now = now.replace(tzinfo=UTC)
        if self.start is not None and now < self.start:
            return "scheduled"
        if self.stop is not None and now >= self.stop:
            return "stopped"
        return "running"


def experiment_revision(experiment: Experiment) -> str:
    """A short hash of the experiment's config (its forced units left out): what the gateway
    logs it under, and what a ramp's hold belongs to."""
    config = experiment.model_dump_json(exclude={"forced"})
    return hashlib.sha256(config.encode()).hexdigest()[:16]


def check_live_change(running: Sequence[Experiment], proposed: Sequence[Experiment]) -> None:
    """Refuse (ValueError naming the field) a live change that would move an experiment's
    default variant without saying so: an implicit default follows the order of the arms."""
    before = {e.name: e.fallback_variant for e in running}
    for i, experiment in enumerate(proposed):
        old = before.get(experiment.name)
        if old is None or experiment.default_variant is not None:
            continue
        if experiment.fallback_variant != old:
            raise ValueError(
                f"experiments.{i}.default_variant: this change would move {experiment.name!r}'s "
                f"default from {old!r} to {experiment.fallback_variant!r} (its first arm); set "
                "default_variant to say which it is"
            )


def check_layers(experiments: list[Experiment] | tuple[Experiment, ...]) -> None:
    """Experiments that share a layer must use disjoint slices of it (else they share units)."""
    by_layer: dict[str, list[tuple[int, Experiment]]] = {}
    for i, experiment in enumerate(experiments):
        by_layer.setdefault(experiment.layer_name, []).append((i, experiment))
    for members in by_layer.values():
        ordered = sorted(members, key=lambda m: m[1].layer_range)
        for (_, left), (j, right) in pairwise(ordered):
            if right.layer_range[0] < left.layer_range[1]:
                raise ValueError(
                    f"experiments.{j}.layer_range: {right.name!r} overlaps {left.name!r} in "
                    f"layer {right.layer_name!r}; experiments of one layer need disjoint ranges"
                )
