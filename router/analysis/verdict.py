"""The verdict: from each treatment's evidence to a decision and reason codes, with no English.

`decide(evidence)` is pure: the same `Evidence` always gives the same `Ruling`; nothing here
reads the log, a clock or a random source. `tests/router/verdict_cases.json` pins it case by
case. `router.analysis.report` gathers the evidence and `router.analysis.prose` words the ruling.

Rules, per treatment against the control (the experiment's default variant):

- a sample-ratio mismatch invalidates the experiment: do not ship (`sample_ratio_mismatch`);
- a guardrail whose whole always-valid interval (a confidence sequence, so a daily look is fine)
  lies beyond its bound fails: that treatment does not ship (`guardrail_failed`); one that wins
  on its primary metric (votes, thumbs) while failing a sycophancy guardrail (the reward score,
  judged worse; or the probe's flip or capitulation rate, measured worse) is named as the
  sycophancy pattern (`sycophancy_pattern`): preferred by users, but it flatters them;
- the primary metric significantly worse (always-valid p-value, so daily looks are fine): it does
  not ship (`primary_worse`); significantly better with every guardrail passing (interval inside
  its bound): it can ship (`primary_better_guardrails_pass`); better while a guardrail is not yet
  conclusive (`primary_better_guardrails_pending`), or no significant difference
  (`no_significant_difference`): keep running.

With `confirm:` (a confirmation run: the winner again against the control, on units the
experiment never exposed), only that run's evidence decides, by the same rules
(`confirmation`, then its reasons): the best of many variants looks better than it is.

Of the treatments that can ship, the one with the best primary estimate ships (`best_of_several`
when there are several); when none can and every one is ruled out, do not ship; otherwise keep
running. With k treatments the primary metric is tested at ALPHA / k (Bonferroni: the chance of
shipping any treatment that is no better stays at most ALPHA): that level is `Evidence.alpha`.

How the primary metric reads (`PrimaryReading`, on each per-treatment reason): `better`, `worse`
or `no_difference`, or why it cannot be read yet: `no_votes`, `no_battles` (none against the
control), `too_few_voters` (fewer than `MIN_VOTERS`: each voter has their own taste, and an
interval from a handful of them decides nothing), `no_data`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, get_args

from router.analysis.arena import MIN_VOTERS
from router.experiment import PROBE_METRICS

# The level of every interval and test in a report; with several treatments the primary metric
# is tested at ALPHA / k.
ALPHA = 0.05

Decision = Literal["ship", "do not ship", "keep running"]
GuardrailStatus = Literal["pass", "fail", "inconclusive"]
PrimaryReading = Literal[
    "better", "worse", "no_difference", "no_votes", "no_battles", "too_few_voters", "no_data"
]
ReasonCode = Literal[
    "sample_ratio_mismatch",
    "no_treatment_units",
    "guardrail_failed",
    "sycophancy_pattern",
    "primary_worse",
    "primary_better_guardrails_pass",
    "primary_better_guardrails_pending",
    "no_significant_difference",
    "best_of_several",
    "confirmation",
]
REASON_CODES: tuple[ReasonCode, ...] = get_args(ReasonCode)
PRIMARY_READINGS: tuple[PrimaryReading, ...] = get_args(PrimaryReading)
# The guardrails whose failure, with a primary win, is the sycophancy pattern.
SYCOPHANCY_GUARDRAILS = ("reward_score", *PROBE_METRICS)


@dataclass(frozen=True, slots=True, kw_only=True)
class Votes:
    """Arena: P(treatment beats control) from the ratings with its interval (at the tested
    level), and how many voters the votes come from."""

    probability: float | None
    low: float | None
    high: float | None
    voters: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Sequential:
    """A/B judged at every look: the change (the whole period's estimate: it ranks and is
    reported), the last look's difference and confidence sequence (at the tested level), and the
    smallest always-valid p-value over the looks."""

    change: float | None
    difference: float | None
    cs_low: float | None
    cs_high: float | None
    p_value: float | None


@dataclass(frozen=True, slots=True, kw_only=True)
class FixedHorizon:
    """A/B without looks (a percentile metric): the change, its interval at ALPHA, its p-value."""

    change: float | None
    low: float | None
    high: float | None
    p_value: float | None


@dataclass(frozen=True, slots=True)
class Missing:
    """Nothing to read the primary metric from yet: no votes, no battles against the control,
    or no data on the metric."""

    reading: Literal["no_votes", "no_battles", "no_data"]


Primary = Votes | Sequential | FixedHorizon | Missing


@dataclass(frozen=True, slots=True, kw_only=True)
class Treatment:
    """One treatment's evidence: its primary metric, and each guardrail's status (metric,
    status) in the experiment's order."""

    name: str
    primary: Primary
    guardrails: tuple[tuple[str, GuardrailStatus], ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class Evidence:
    """What the verdict reads: the primary metric (its name, for the words; which way is better),
    the control, the level the primary metric is tested at, and every treatment with units."""

    metric: str
    higher_is_better: bool
    control: str
    alpha: float = ALPHA
    sample_ratio_mismatch: bool = False
    treatments: tuple[Treatment, ...] = ()
    # With `confirm`: the winner it re-runs, and the confirmation run's own evidence (that
    # winner against the control, on units new to the experiment), which alone decides.
    confirming: str | None = None
    confirmation: Evidence | None = None


@dataclass(frozen=True, slots=True)
class Reason:
    """One reason: its code, and for a treatment's reason the treatment and how its primary
    metric reads."""

    code: ReasonCode
    treatment: str | None = None
    primary: PrimaryReading | None = None


@dataclass(frozen=True, slots=True)
class Ruling:
    decision: Decision
    variant: str | None  # the treatment to ship, when the decision is ship
    reasons: tuple[Reason, ...]
    sycophancy: tuple[str, ...] = ()


def decide(evidence: Evidence) -> Ruling:
    """The decision, the variant to ship (if any) and the reasons, from `evidence` alone; an
    experiment with a confirmation run from that run's evidence alone (`confirmation` first,
    then its reasons): a winner chosen among many ships only once new units confirm it."""
    if evidence.confirmation is not None:
        confirmed = decide(evidence.confirmation)
        first = Reason("confirmation", evidence.confirming)
        return Ruling(
            confirmed.decision, confirmed.variant, (first, *confirmed.reasons), confirmed.sycophancy
        )
    if evidence.sample_ratio_mismatch:
        return Ruling("do not ship", None, (Reason("sample_ratio_mismatch"),))
    if not evidence.treatments:
        return Ruling("keep running", None, (Reason("no_treatment_units"),))
    reasons: list[Reason] = []
    sycophancy: list[str] = []
    blocked: list[str] = []
    shippable: list[tuple[float, str]] = []
    for treatment in evidence.treatments:
        reading, size = read_primary(
            treatment.primary, higher_is_better=evidence.higher_is_better, alpha=evidence.alpha
        )
        code = _treatment_code(treatment, reading)
        reasons.append(Reason(code, treatment.name, reading))
        if code in ("guardrail_failed", "primary_worse"):
            blocked.append(treatment.name)
        if code == "primary_better_guardrails_pass":
            shippable.append((size, treatment.name))
        if code == "guardrail_failed" and reading == "better" and _fails_sycophancy(treatment):
            sycophancy.append(treatment.name)
            reasons.append(Reason("sycophancy_pattern", treatment.name, reading))
    if shippable:
        best = max(shippable)[1]  # equal estimates: the name that sorts last
        if len(shippable) > 1:
            reasons.append(Reason("best_of_several", best, "better"))
        return Ruling("ship", best, tuple(reasons), tuple(sycophancy))
    decision: Decision = (
        "do not ship" if len(blocked) == len(evidence.treatments) else "keep running"
    )
    return Ruling(decision, None, tuple(reasons), tuple(sycophancy))


def _treatment_code(treatment: Treatment, reading: PrimaryReading) -> ReasonCode:
    statuses = [status for _, status in treatment.guardrails]
    if "fail" in statuses:
        return "guardrail_failed"
    if reading == "worse":
        return "primary_worse"
    if reading == "better":
        if "inconclusive" in statuses:
            return "primary_better_guardrails_pending"
        return "primary_better_guardrails_pass"
    return "no_significant_difference"


def _fails_sycophancy(treatment: Treatment) -> bool:
    return any(m in SYCOPHANCY_GUARDRAILS and s == "fail" for m, s in treatment.guardrails)


def read_primary(
    primary: Primary, *, higher_is_better: bool, alpha: float = ALPHA
) -> tuple[PrimaryReading, float]:
    """How the primary metric reads when tested at `alpha`, and its estimate oriented so that
    larger is better (it ranks the treatments that can ship; -inf without an estimate)."""
    match primary:
        case Missing(reading=reading):
            return reading, -math.inf
        case Votes(probability=p, low=low, high=high, voters=voters):
            if voters < MIN_VOTERS:
                return "too_few_voters", -math.inf
            direction = _direction(p, low, high, higher_is_better, null=0.5)
            return _READINGS[direction], _oriented(p, higher_is_better, null=0.5)
        case Sequential(change=change, p_value=p):
            direction = 0
            if p is not None and p < alpha:
                direction = _direction(
                    primary.difference, primary.cs_low, primary.cs_high, higher_is_better
                )
            return _READINGS[direction], _oriented(change, higher_is_better)
        case FixedHorizon(change=change, low=low, high=high, p_value=p):
            direction = _direction(change, low, high, higher_is_better)
            if alpha < ALPHA and (p is None or p >= alpha):
                direction = 0  # the interval is at ALPHA: below it, p must be below alpha too
            return _READINGS[direction], _oriented(change, higher_is_better)
    raise TypeError(f"not primary-metric evidence: {primary!r}")


_READINGS: dict[int, PrimaryReading] = {1: "better", -1: "worse", 0: "no_difference"}


def _direction(
    value: float | None,
    low: float | None,
    high: float | None,
    higher_is_better: bool,
    null: float = 0.0,
) -> int:
    """+1 significantly better, -1 significantly worse, 0 neither (by the interval)."""
    if low is None or high is None or value is None:
        return 0
    better = 1 if higher_is_better else -1
    if low > null:
        return better
    if high < null:
        return -better
    return 0


def _oriented(value: float | None, higher_is_better: bool, null: float = 0.0) -> float:
    if value is None:
        return -math.inf
    return (value - null) if higher_is_better else (null - value)
