"""The report's English: the verdict's reasons worded from its codes, and the report's notes.

`router.analysis.verdict` decides in codes and `router.analysis.report` computes figures; the
sentences a person reads in `verdict.reasons` and `notes` (of the JSON report, the terminal and
the HTML page) are made here, from the same typed evidence the verdict read.
"""

from __future__ import annotations

from collections.abc import Iterable

from router.analysis.arena import MIN_VOTERS
from router.analysis.schema import JudgeCheck, SampleRatio
from router.analysis.verdict import (
    ALPHA,
    SYCOPHANCY_GUARDRAILS,
    Evidence,
    FixedHorizon,
    Missing,
    Primary,
    PrimaryReading,
    Reason,
    Ruling,
    Sequential,
    Treatment,
    Votes,
)

NO_BATTLES = "no battles logged yet"
_SYCOPHANCY_WORDS = {
    "reward_score": "preferred, but judged worse",
    "sycophancy_flip_rate": "preferred, but it gives up correct answers when the user pushes back",
    "capitulation_rate": "preferred, but it agrees with users' wrong suggestions",
}
NO_HOLDOUT_COMPARISON = (
    "no comparison yet: it needs units in the global holdout and units exposed to an experiment"
)
WEIGHT_ZERO = "arms with weight 0 are left out of the sample-ratio test"


def reasons(evidence: Evidence, ruling: Ruling, sample_ratio: SampleRatio | None) -> list[str]:
    """One sentence for each of the ruling's reasons, in order."""
    treatments = {t.name: t for t in evidence.treatments}
    shippable = sum(r.code == "primary_better_guardrails_pass" for r in ruling.reasons)
    out = []
    for reason in ruling.reasons:
        if reason.code == "sample_ratio_mismatch":
            assert sample_ratio is not None
            out.append(_mismatch(sample_ratio))
        elif reason.code == "no_treatment_units":
            out.append("no treatment has units yet")
        elif reason.code == "best_of_several":
            out.append(
                f"{reason.treatment}: the best primary estimate of the {shippable} that could ship"
            )
        else:
            assert reason.treatment is not None
            out.append(_treatment_reason(reason, evidence, treatments[reason.treatment]))
    return out


def _mismatch(sample_ratio: SampleRatio) -> str:
    expected = [round(e) for e in sample_ratio.expected]
    return (
        f"sample-ratio mismatch (p = {_fmt(sample_ratio.p_value)}): counts "
        f"{sample_ratio.counts} against expected {expected}; assignment or logging is broken "
        "(or the weights changed during the experiment: the test assumes they did not), so no "
        "comparison can be trusted"
    )


def _treatment_reason(reason: Reason, evidence: Evidence, treatment: Treatment) -> str:
    name, control = treatment.name, evidence.control
    said = primary_evidence(treatment.primary, reason.primary, evidence.metric, control)
    if reason.code == "guardrail_failed":
        return f"{name}: fails guardrail {_guardrails(treatment, 'fail')}; {said}"
    if reason.code == "sycophancy_pattern":
        failed = [m for m, s in treatment.guardrails if s == "fail" and m in SYCOPHANCY_GUARDRAILS]
        return (
            f"{name}: sycophancy: wins on {evidence.metric} while failing {', '.join(failed)}, "
            f"the sycophancy pattern ({_SYCOPHANCY_WORDS[failed[0]]})"
        )
    if reason.code == "primary_worse":
        return f"{name}: worse than {control}: {said}"
    if reason.code == "primary_better_guardrails_pass":
        return f"{name}: better than {control}, every guardrail passing: {said}"
    if reason.code == "primary_better_guardrails_pending":
        pending = _guardrails(treatment, "inconclusive")
        return (
            f"{name}: better than {control} ({said}), but guardrails {pending} are not yet "
            "conclusive"
        )
    return f"{name}: no significant difference yet: {said}"


def _guardrails(treatment: Treatment, status: str) -> str:
    return ", ".join(metric for metric, s in treatment.guardrails if s == status)


def primary_evidence(
    primary: Primary, reading: PrimaryReading | None, metric: str, control: str
) -> str:
    """What the primary metric shows, in a few words with its figures."""
    match primary:
        case Missing(reading="no_votes"):
            return "no votes yet"
        case Missing(reading="no_battles"):
            return "no battles against the control"
        case Missing():
            return f"no {metric} data"
        case Votes() if reading == "too_few_voters":
            return (
                f"{primary.voters} voters so far; a decision needs {MIN_VOTERS} (each voter has "
                "their own taste)"
            )
        case Votes(probability=p, low=low, high=high):
            return f"wins {_pct(p)} of votes against {control} (interval {_pct(low)}–{_pct(high)})"
        case Sequential(change=change, p_value=p, cs_low=low, cs_high=high):
            return (
                f"{metric} {_signed(change)} (always-valid p {_fmt(p)}, confidence sequence "
                f"{_fmt(low)} to {_fmt(high)})"
            )
        case FixedHorizon(change=change, low=low, high=high, p_value=p):
            return f"{metric} {_signed(change)} (interval {_fmt(low)} to {_fmt(high)}, p {_fmt(p)})"
    raise TypeError(f"not primary-metric evidence: {primary!r}")


def bonferroni(treatments: int, alpha: float) -> str:
    return (
        f"{treatments} treatments: the primary metric is tested at {alpha:.3g} each "
        f"(Bonferroni over {ALPHA:g}); its confidence sequences and head-to-head intervals "
        "are at that level"
    )


def chosen_among(variant: str, tried: int) -> str:
    return (
        f"{variant} was chosen among the {tried} variants this experiment has tried: the best "
        "of many looks better than it is (the leaderboard illusion); before shipping, run it "
        "again against the control on units the experiment never exposed"
    )


def confirmation(winner: str, control: str, units: int, seen: int) -> str:
    left_out = (
        f"; {seen} of its units had been exposed to the experiment before (under an earlier "
        "allocation) and are left out"
        if seen
        else ""
    )
    return (
        f"judged on the confirmation run alone: {winner} against {control} on {units} units "
        f"the experiment never exposed before{left_out}; the exploration's own verdict, on a "
        "winner picked among its variants, is in exploration_verdict"
    )


def voided_votes(voided: int, votes: int) -> str:
    return (
        f"{voided} of {votes} votes left out: an answer in their battle named a model or vendor "
        "(identity_terms), so the voter may have known who wrote it"
    )


def undeclared(names: Iterable[str]) -> str:
    return (
        f"custom metrics not declared by the experiment, stored but not tested: "
        f"{', '.join(sorted(names))} (declare them in custom_metrics)"
    )


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3g}"


def _signed(value: float | None) -> str:
    return "n/a" if value is None else f"{value:+.3g}"


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f} %"


def probe_missing(experiment: str, variants: Iterable[str]) -> str:
    return (
        f"no sycophancy-probe results for the current config revision of {', '.join(variants)}: "
        f"its probe guardrails are inconclusive (run `arena-serve probe --experiment {experiment}`)"
    )


def flattering_judge(judge: JudgeCheck, guarded: bool) -> str:
    rate = judge.flattery_rate
    said = (
        f"the reward model {judge.model} scores the capitulating answer above the correct one "
        f"that holds firm in {_pct(rate.value)} of {judge.pairs} probe pairs (interval "
        f"{_pct(rate.low)}–{_pct(rate.high)}): it rewards flattery"
    )
    if guarded:
        return f"{said}, so the reward_score guardrail cannot rule out sycophancy"
    return said
