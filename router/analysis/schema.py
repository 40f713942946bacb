"""The report's wire schema: the pydantic models of an experiment report.

`ExperimentReport.model_dump(mode="json")` is what `GET /v1/experiments/{name}/report` returns
and what `arena-serve report --json` prints; `serve.report` renders the same models as tables,
plots and an HTML page. Every figure is a number or null (JSON has no NaN: see `number`), and
every estimate comes with its interval (`Interval`).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, Field

from router.analysis.verdict import Decision, PrimaryReading, ReasonCode
from router.analysis.verdict import GuardrailStatus as Status

if TYPE_CHECKING:
    from router.analysis import stats


def number(value: float | None) -> float | None:
    """JSON has no NaN: missing figures are null."""
    if value is None or not math.isfinite(value):
        return None
    return float(value)


class Interval(BaseModel):
    value: float | None
    low: float | None
    high: float | None
    se: float | None = Field(default=None, description="The estimate's standard error.")

    @classmethod
    def of(cls, estimate: stats.Estimate) -> Interval:
        return cls(
            value=number(estimate.value),
            low=number(estimate.ci[0]),
            high=number(estimate.ci[1]),
            se=number(estimate.se),
        )


NO_INTERVAL = Interval(value=None, low=None, high=None)


class MetricValue(BaseModel):
    metric: str
    group: str
    estimate: Interval
    units: int


class Comparison(BaseModel):
    metric: str
    treatment: str
    control: str
    absolute: Interval
    relative: Interval
    p_value: float | None
    p_adjusted: float | None = Field(description="Holm-adjusted over this treatment's metrics.")
    cuped: bool
    variance_reduction: float | None
    control_value: float | None = Field(default=None, description="The control's estimate.")


class Look(BaseModel):
    """The primary metric at one look: always-valid p-value and confidence sequence."""

    ts: float
    treatment: str
    difference: float | None
    p_value: float | None
    naive_p_value: float | None
    cs_low: float | None
    cs_high: float | None


class GuardrailResult(BaseModel):
    metric: str
    treatment: str
    change: Interval = Field(
        description="The change with its always-valid (confidence sequence) interval: a report "
        "refreshed every day may be judged every day without passing a violated guardrail more "
        "often than ALPHA."
    )
    relative: bool
    max_increase: float | None
    max_decrease: float | None
    status: Status
    interval: Literal["confidence_sequence", "probe_items"] = Field(
        default="confidence_sequence",
        description="confidence_sequence: over the experiment's units, valid at every look; "
        "probe_items: the sycophancy probe's paired difference over items, at a fixed horizon "
        "(router.analysis.probe).",
    )


class SampleRatio(BaseModel):
    groups: list[str]
    counts: list[int]
    expected: list[float]
    p_value: float | None
    mismatch: bool


class LeaderboardRow(BaseModel):
    variant: str
    rating: float | None
    low: float | None
    high: float | None
    rating_style_controlled: float | None
    style_low: float | None
    style_high: float | None
    battles: int


class HeadToHead(BaseModel):
    """P(treatment beats control) from the ratings, with its bootstrap interval."""

    treatment: str
    control: str
    probability: Interval
    probability_style_controlled: Interval


class ArenaSection(BaseModel):
    battles: int
    votes: int = Field(description="Votes logged, voided ones included.")
    voided_votes: int = Field(
        default=0,
        description="Votes on battles in which an answer named a model or vendor (a variant's "
        "identity_terms): kept in the log, left out of the leaderboard and the verdict.",
    )
    voters: int = Field(default=0, description="Distinct units whose votes count.")
    leaderboard: list[LeaderboardRow]
    win_rate: dict[str, dict[str, float | None]]
    pair_battles: dict[str, dict[str, int]]
    head_to_head: list[HeadToHead]
    style_coefficients: dict[str, float] | None
    style_intervals: str = Field(
        default="bootstrap",
        description="bootstrap, or asymptotic (Wald draws) when refitting every replicate on "
        "this many battles would be too slow",
    )


class ProbeArm(BaseModel):
    """One arm's sycophancy-probe figures at its variant's current config revision; each
    interval is clustered by item (`router.analysis.probe`)."""

    variant: str
    revision: str | None = Field(description="The variant's config revision the figures are of.")
    runs: int
    items: int = Field(description="Distinct items with results at this revision.")
    accuracy: Interval = Field(description="Correct first answers, over items.")
    sycophancy_flip_rate: Interval = Field(
        description="Correct first answers no longer correct after the pushback, over correct "
        "first answers."
    )
    capitulation_rate: Interval = Field(
        description="Answers asserting the user's wrong suggestion, over items."
    )
    family_accuracy: dict[str, float | None] = Field(
        description="First-answer accuracy per item family."
    )
    stale_results: int = Field(
        default=0, description="Results of other revisions or probe sets: not counted."
    )


class JudgeCheck(BaseModel):
    """How often a reward model scores a capitulating answer above the correct one that holds
    firm (`probe.pairs`): above 0.5, it rewards flattery."""

    model: str
    probe_set: str
    pairs: int
    flattery_rate: Interval
    flagged: bool = Field(
        default=False,
        description="The rate is above 0.5: a reward_score guardrail judged by this model does "
        "not rule out sycophancy.",
    )


class ProbeSection(BaseModel):
    probe_set: str
    arms: list[ProbeArm]
    judge: JudgeCheck | None = Field(
        default=None, description="The reward model's flattery check, where one was written."
    )


class Reason(BaseModel):
    """One reason for the verdict as a code (`router.analysis.verdict` lists them)."""

    code: ReasonCode
    treatment: str | None = Field(default=None, description="The treatment it is about, if one.")
    primary: PrimaryReading | None = Field(
        default=None,
        description="How that treatment's primary metric reads: better, worse, no_difference, "
        "or why it cannot be read yet (no_votes, no_battles, too_few_voters, no_data).",
    )


class Verdict(BaseModel):
    decision: Decision
    variant: str | None = Field(description="The variant to ship, when the decision is ship.")
    reasons: list[str] = Field(description="The reasons in English, one for each of `codes`.")
    sycophancy: list[str] = Field(
        description="Treatments that win on votes or thumbs while failing a sycophancy "
        "guardrail: the reward score's, or the probe's flip or capitulation rate."
    )
    codes: list[Reason] = Field(
        default_factory=list, description="The reasons as codes, in the order of `reasons`."
    )


class BanditArm(BaseModel):
    variant: str
    completions: int = Field(description="Rated completions (thumbs, or reward scores).")
    hajek: Interval = Field(
        description="The mean reward by inverse-propensity weighting, self-normalized (Hájek), "
        "with its normal 95 % interval: unbiased for the arm's mean under the bandit's "
        "adaptive allocation, up to a small ratio bias."
    )
    naive: float | None = Field(
        description="The plain mean of the arm's rewards: biased under adaptive allocation "
        "(an arm unlucky early is starved and stays underrated); for comparison only."
    )


class BanditSection(BaseModel):
    reward: str
    weights_version: int | None = Field(description="The latest weights the log put in force.")
    shares: dict[str, float] = Field(description="Each arm's share of new units in them.")
    arms: list[BanditArm]


class ExperimentReport(BaseModel):
    experiment: str
    mode: str
    generated_at: float
    seconds: float = Field(description="How long the analysis took.")
    start: float | None
    end: float | None
    control: str
    primary_metric: str
    units: dict[str, int]
    sample_ratio: SampleRatio | None
    metrics: list[MetricValue]
    comparisons: list[Comparison]
    sequential: list[Look]
    guardrails: list[GuardrailResult]
    arena: ArenaSection | None
    bandit: BanditSection | None = Field(
        default=None,
        description="A bandit's inverse-propensity-weighted means per arm, the primary metric's "
        "evidence in its verdict (`comparisons` of other metrics are plain, per first "
        "assignment).",
    )
    verdict: Verdict
    notes: list[str]
    reward_model: str | None = Field(
        default=None,
        description="The reward model whose scores `reward_score` uses: the one that scored "
        "last (after a live swap, the new one once it scores; `arena-serve rescore` scores the "
        "kept history with it). Null where nothing was scored.",
    )
    probe: ProbeSection | None = Field(
        default=None,
        description="The sycophancy probe's figures per arm (and the reward model's flattery "
        "check), where the experiment has a probe guardrail or its arms have probe results.",
    )
    variants_tried: list[str] = Field(
        default_factory=list,
        description="Every variant the experiment has put in front of units over its history "
        "(its logged configs' arms and the log's groups); a winner chosen among more than two "
        "is flagged in `notes`.",
    )
    undeclared_custom_metrics: dict[str, int] = Field(
        default_factory=dict,
        description="Custom feedback names in the log that the experiment does not declare "
        "(primary_metric, guardrails, custom_metrics), with their counts: stored, never tested.",
    )
    confirmation: ExperimentReport | None = Field(
        default=None,
        description="With `confirm`: the confirmation run's own report (the winner against the "
        "control on units the experiment never exposed before), whose ruling is `verdict`.",
    )
    exploration_verdict: Verdict | None = Field(
        default=None,
        description="With `confirm`: the verdict the experiment's own units would give, before "
        "the confirmation run (for reading only: it does not decide).",
    )


class HoldoutReport(BaseModel):
    """The gateway's global holdout against everyone exposed to an experiment
    (`GET /v1/holdout/report`): what all the experiments together did, metric by metric."""

    generated_at: float
    units: dict[str, int] = Field(description="Units in `global_holdout` and in `exposed`.")
    metrics: list[MetricValue]
    comparisons: list[Comparison] = Field(
        description="`exposed` against `global_holdout` on every standard metric (Holm-adjusted "
        "p-values; CUPED where units have earlier traffic)."
    )
    notes: list[str]
