"""The experiment report: metrics per arm, comparisons, sequential tests, leaderboard, verdict.

`build_report(store, experiment)` reads the outcome log (read-only) and answers the question a
team runs the experiment for: ship the treatment or not. Every figure comes with its interval;
the JSON form (`ExperimentReport.model_dump`) is what `GET /v1/experiments/{name}/report`
returns and what the CLI renders as tables, plots and an HTML page.

Decision rules (`_verdict`), per treatment against the control (the experiment's default
variant):

- a sample-ratio mismatch invalidates the experiment: do not ship;
- a guardrail whose whole always-valid interval (confidence sequence, so a daily look is
  fine here too) lies beyond its bound fails: do not ship — and a treatment
  that wins on its primary metric (votes, thumbs) while failing the reward-score guardrail is
  named as the sycophancy pattern;
- the primary metric significantly worse (always-valid p-value, so daily looks are fine): do not
  ship; significantly better with every guardrail passing (interval inside its bound): ship;
  anything else: keep running.

With k treatments the primary metric is tested at ALPHA / k (Bonferroni: the chance of shipping
any treatment that is no better stays at most ALPHA), and of those that could ship, the one with
the best primary estimate is named.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from pydantic import BaseModel

from router.analysis import arena as arena_stats
from router.analysis import stats
from router.analysis.data import HOLDOUT, BattleRows, ExperimentData, Group, load
from router.analysis.metrics import (
    QUANTILES,
    RATIOS,
    covariate,
    higher_is_better,
    is_quantile,
    quantile_values,
    ratio_parts,
)
from router.analysis.schema import (
    NO_INTERVAL,
    ArenaSection,
    Comparison,
    Decision,
    ExperimentReport,
    GuardrailResult,
    HeadToHead,
    Interval,
    LeaderboardRow,
    Look,
    MetricValue,
    SampleRatio,
    Status,
    Verdict,
    number,
)
from router.experiment import Experiment, Guardrail, can_be_negative

ALPHA = 0.05
LOOKS = 20  # sequential looks when the experiment is younger than two days; daily after


def build_report(
    store: str | Path,
    experiment: Experiment,
    *,
    now: float | None = None,
    reps: int = 200,
    progress: bool = False,
) -> ExperimentReport:
    """Analyse `experiment` from the outcome store at `store`, as of `now` (default: the end)."""
    started = time.perf_counter()
    data = load(store, experiment.name, now)
    control = _control(experiment, data)
    notes: list[str] = []
    metric_names = _metrics(experiment)
    groups = [g for g in data.groups.values() if g.n_units]
    treatments = [g.name for g in groups if g.name not in (control, HOLDOUT)]
    values = [
        MetricValue(metric=m, group=g.name, estimate=Interval.of(_estimate(g, m, reps)),
                    units=g.n_units)
        for m in metric_names
        for g in groups
    ]  # fmt: skip
    comparisons = _comparisons(data, control, treatments, metric_names, reps)
    alpha = ALPHA / max(1, len(treatments))
    if len(treatments) > 1:
        notes.append(
            f"{len(treatments)} treatments: the primary metric is tested at {alpha:.3g} each "
            f"(Bonferroni over {ALPHA:g}); its confidence sequences and head-to-head intervals "
            "are at that level"
        )
    arena = _arena(experiment, data, control, reps, progress, alpha) if data.battles else None
    sequential = [] if arena else _sequential(experiment, data, control, treatments, alpha)
    guardrails = _guardrails(experiment, comparisons)
    sample_ratio = _sample_ratio(experiment, data, notes)
    if experiment.mode == "arena" and arena is None:
        notes.append("no battles logged yet")
    if arena is not None and arena.voided_votes:
        notes.append(
            f"{arena.voided_votes} of {arena.votes} votes left out: an answer in their battle "
            "named a model or vendor (identity_terms), so the voter may have known who wrote it"
        )
    undeclared = _undeclared(experiment, data)
    if undeclared:
        notes.append(
            f"custom metrics not declared by the experiment, stored but not tested: "
            f"{', '.join(sorted(undeclared))} (declare them in custom_metrics)"
        )
    verdict = _verdict(experiment, control, treatments, comparisons, sequential, guardrails,
                       sample_ratio, arena, alpha)  # fmt: skip
    return ExperimentReport(
        experiment=experiment.name,
        mode=experiment.mode,
        generated_at=time.time(),
        seconds=time.perf_counter() - started,
        start=data.start,
        end=data.end,
        control=control,
        primary_metric=experiment.metric,
        units={g.name: g.n_units for g in data.groups.values()},
        sample_ratio=sample_ratio,
        metrics=values,
        comparisons=comparisons,
        sequential=sequential,
        guardrails=guardrails,
        arena=arena,
        verdict=verdict,
        notes=notes,
        undeclared_custom_metrics=undeclared,
    )


def _control(experiment: Experiment, data: ExperimentData) -> str:
    arms = [arm.variant for arm in experiment.arms]
    fallback = experiment.fallback_variant
    return fallback if fallback in arms else arms[0]


def _metrics(experiment: Experiment) -> list[str]:
    """Every standard metric, plus the custom ones the experiment declares. A name a client
    made up is never tested: each tested metric widens the Holm correction of the others."""
    return [*RATIOS, *QUANTILES, *(f"custom:{n}" for n in experiment.declared_custom_metrics)]


def _undeclared(experiment: Experiment, data: ExperimentData) -> dict[str, int]:
    """Custom feedback names in the log the experiment does not declare, with their counts."""
    declared = set(experiment.declared_custom_metrics)
    counts: dict[str, int] = {}
    for group in data.groups.values():
        for name, (_, values) in group.rows.custom.items():
            if name not in declared:
                counts[name] = counts.get(name, 0) + len(values)
    return counts


def _estimate(group: Group, metric: str, reps: int) -> stats.Estimate:
    if is_quantile(metric):
        values, units = quantile_values(group, metric)
        return stats.quantile_estimate(values, units, QUANTILES[metric][1], ALPHA, reps)
    num, den = ratio_parts(group, metric)
    return stats.ratio_estimate(num, den, ALPHA)


def _compare(t: Group, c: Group, metric: str, reps: int) -> stats.Lift:
    if is_quantile(metric):
        q = QUANTILES[metric][1]
        values_t, units_t = quantile_values(t, metric)
        values_c, units_c = quantile_values(c, metric)
        return stats.compare_quantile(values_t, units_t, values_c, units_c, q, ALPHA, reps)
    num_t, den_t = ratio_parts(t, metric)
    num_c, den_c = ratio_parts(c, metric)
    x_t, x_c = covariate(t, metric), covariate(c, metric)
    if x_t is None or x_c is None:
        x_t = x_c = None
    return stats.compare_ratio(num_t, den_t, num_c, den_c, ALPHA, x_t, x_c)


def _comparisons(
    data: ExperimentData, control: str, treatments: list[str], metrics: list[str], reps: int
) -> list[Comparison]:
    if control not in data.groups:
        return []
    out = []
    for name in treatments:
        lifts = {m: _compare(data.groups[name], data.groups[control], m, reps) for m in metrics}
        adjusted = stats.holm([lift.p_value for lift in lifts.values()])
        for (metric, lift), p_adjusted in zip(lifts.items(), adjusted, strict=True):
            # A metric that can be negative has no relative change: on a negative baseline
            # it flips the sign, and its scale (a reward model's) has no meaningful zero.
            relative = NO_INTERVAL if can_be_negative(metric) else Interval.of(lift.relative)
            out.append(
                Comparison(metric=metric, treatment=name, control=control,
                           absolute=Interval.of(lift.absolute),
                           relative=relative,
                           p_value=number(lift.p_value), p_adjusted=number(p_adjusted),
                           cuped=lift.cuped, variance_reduction=number(lift.variance_reduction),
                           control_value=number(lift.control.value))
            )  # fmt: skip
    return out


def _look_times(start: float, end: float) -> np.ndarray:
    day = 86_400.0
    if end - start >= 2 * day:
        return np.append(np.arange(start + day, end, day), end)
    return np.linspace(start, end, LOOKS + 1)[1:]


def _sequential(
    experiment: Experiment,
    data: ExperimentData,
    control: str,
    treatments: list[str],
    alpha: float = ALPHA,
) -> list[Look]:
    """The primary metric at each look (daily, or 20 looks for a young experiment), with its
    confidence sequence at level 1 - `alpha`."""
    metric = experiment.metric
    if is_quantile(metric) or metric == "vote_win_rate" or control not in data.groups:
        return []
    if data.start is None or data.end is None or data.end <= data.start:
        return []
    looks = []
    c = data.groups[control]
    for name in treatments:
        t = data.groups[name]
        times = _look_times(data.start, data.end)
        diffs, variances, naive = [], [], []
        for at in times:
            lift = stats.compare_ratio(*ratio_parts(t, metric, at), *ratio_parts(c, metric, at))
            diffs.append(lift.absolute.value)
            variances.append(lift.absolute.se**2)
            naive.append(lift.p_value)
        control_value = stats.ratio_estimate(*ratio_parts(c, metric)).value
        tau2 = stats.default_tau2(control_value if math.isfinite(control_value) else 1.0)
        diff_arr, var_arr = np.array(diffs, dtype=float), np.array(variances, dtype=float)
        valid = np.isfinite(diff_arr) & np.isfinite(var_arr) & (var_arr > 0)
        p_values = np.full(len(times), np.nan)
        if valid.any():
            p_values[valid] = stats.always_valid_p_values(diff_arr[valid], var_arr[valid], tau2)
        for at, diff, var, p, naive_p in zip(times, diffs, variances, p_values, naive,
                                             strict=True):  # fmt: skip
            low = high = None
            if math.isfinite(diff) and math.isfinite(var) and var > 0:
                low, high = stats.confidence_sequence(diff, var, tau2, alpha)
            looks.append(
                Look(ts=float(at), treatment=name, difference=number(diff),
                     p_value=number(p), naive_p_value=number(naive_p),
                     cs_low=number(low), cs_high=number(high))
            )  # fmt: skip
    return looks


def _guardrail_status(guardrail: Guardrail, change: Interval) -> Status:
    """Fail when the whole interval is beyond a bound, pass when it is all within them."""
    low, high = change.low, change.high
    if low is None or high is None:
        return "inconclusive"
    up, down = guardrail.max_increase, guardrail.max_decrease
    if (up is not None and low > up) or (down is not None and high < -down):
        return "fail"
    if (up is None or high <= up) and (down is None or low >= -down):
        return "pass"
    return "inconclusive"


def _always_valid(
    change: Interval, guardrail: Guardrail, control_value: float | None = None
) -> Interval:
    """The change's confidence sequence at ALPHA. Its mixture variance is the bound squared:
    the effect size the guardrail is about, fixed in the config before any data. A bound of 0
    (no worsening at all) takes the default: 5 % of the control's value, or 5 % relative."""
    if change.value is None or change.se is None:
        return Interval(value=change.value, low=None, high=None, se=change.se)
    bound = max(b for b in (guardrail.max_increase, guardrail.max_decrease) if b is not None)
    if bound > 0:
        tau2 = max(bound**2, stats.TAU2_FLOOR)
    else:
        scale = 1.0 if guardrail.relative else control_value
        tau2 = stats.default_tau2(scale if scale is not None else math.nan)
    low, high = stats.confidence_sequence(change.value, change.se**2, tau2, ALPHA)
    return Interval(value=change.value, low=number(low), high=number(high), se=change.se)


def _guardrails(experiment: Experiment, comparisons: list[Comparison]) -> list[GuardrailResult]:
    """Each guardrail for each treatment; one without a comparison is inconclusive, never
    skipped (a guardrail nobody computed must not let a treatment ship)."""
    by_key = {(c.metric, c.treatment): c for c in comparisons}
    treatments = sorted({c.treatment for c in comparisons})
    out = []
    for guardrail in experiment.guardrails:
        for treatment in treatments:
            comparison = by_key.get((guardrail.metric, treatment))
            if comparison is None:
                change = NO_INTERVAL
            else:
                change = comparison.relative if guardrail.relative else comparison.absolute
                change = _always_valid(change, guardrail, comparison.control_value)
            out.append(
                GuardrailResult(metric=guardrail.metric, treatment=treatment, change=change,
                                relative=guardrail.relative,
                                max_increase=guardrail.max_increase,
                                max_decrease=guardrail.max_decrease,
                                status=_guardrail_status(guardrail, change))
            )  # fmt: skip
    return out


def _sample_ratio(
    experiment: Experiment, data: ExperimentData, notes: list[str]
) -> SampleRatio | None:
    """Units per arm against the arm weights (A/B), or battles per pair against pair weights."""
    if experiment.mode == "arena":
        if data.battles is None:
            return None
        # A pair listed twice (in either order) is drawn with the sum of its weights.
        pair_weights: dict[tuple[str, str], float] = {}
        for pair in experiment.arena_pairs():
            a, b = sorted(pair.variants)
            pair_weights[(a, b)] = pair_weights.get((a, b), 0.0) + pair.weight
        names = [f"{a} vs {b}" for a, b in pair_weights]
        counts = [data.battles.pairs.get(key, 0) for key in pair_weights]
        weights = list(pair_weights.values())
    else:
        arms = [arm for arm in experiment.arms if arm.weight > 0]
        names = [arm.variant for arm in arms]
        counts = [data.groups[n].n_units if n in data.groups else 0 for n in names]
        weights = [arm.weight for arm in arms]
    if len(names) < 2 or sum(counts) == 0:
        return None
    test = stats.sample_ratio_test(counts, weights)
    if experiment.mode == "ab" and any(a.weight == 0 for a in experiment.arms):
        notes.append("arms with weight 0 are left out of the sample-ratio test")
    return SampleRatio(groups=names, counts=list(test.counts), expected=list(test.expected),
                       p_value=number(test.p_value), mismatch=test.mismatch)  # fmt: skip


def _arena(
    experiment: Experiment,
    data: ExperimentData,
    control: str,
    reps: int,
    progress: bool,
    alpha: float = ALPHA,
) -> ArenaSection | None:
    """The arena section; head-to-head intervals at level 1 - `alpha`, ratings' at ALPHA's."""
    logged = data.battles
    if logged is None:
        return None
    votes, voided = len(logged.vote), int(logged.identity_revealed.sum())
    rows = _counted(logged)
    names = sorted({*rows.variant_a, *rows.variant_b} | {a.variant for a in experiment.arms})
    pair_battles: dict[str, dict[str, int]] = {n: {} for n in names}
    for (a, b), count in rows.pairs.items():
        pair_battles.setdefault(a, {})[b] = count
        pair_battles.setdefault(b, {})[a] = count
    if not rows.vote:
        return ArenaSection(battles=rows.battles, votes=votes, voided_votes=voided,
                            leaderboard=[], win_rate={}, pair_battles=pair_battles,
                            head_to_head=[], style_coefficients=None)  # fmt: skip
    # A side without a token count (no usage from its engine) gives its battle no length
    # difference, not the largest one there is.
    tokens = np.where(np.isnan(rows.tokens).any(axis=1, keepdims=True), 0.0, rows.tokens)
    voters = len(set(rows.voters))
    style = arena_stats.style_features(tokens[:, 0], tokens[:, 1],
                                       rows.markdown[:, 0], rows.markdown[:, 1])  # fmt: skip
    battles = arena_stats.Battles.from_votes(
        rows.variant_a, rows.variant_b, rows.vote, style, voters=rows.voters
    )
    plain = arena_stats.leaderboard(battles, reps=reps, alpha=ALPHA, progress=progress)
    styled = arena_stats.leaderboard(battles, style=True, reps=reps, alpha=ALPHA, progress=progress)
    win_rate, _ = arena_stats.win_matrix(battles)
    models = list(battles.models)
    board = sorted(
        (
            LeaderboardRow(variant=m, rating=number(plain.rating[i]),
                           low=number(plain.ci[i, 0]), high=number(plain.ci[i, 1]),
                           rating_style_controlled=number(styled.rating[i]),
                           style_low=number(styled.ci[i, 0]), style_high=number(styled.ci[i, 1]),
                           battles=int(plain.battles[i]))
            for i, m in enumerate(models)
        ),
        key=lambda row: -(row.rating or -math.inf),
    )  # fmt: skip
    head_to_head = []
    if control in models:
        for name in models:
            if name != control:
                head_to_head.append(
                    HeadToHead(treatment=name, control=control,
                               probability=_win_interval(plain, name, control, alpha),
                               probability_style_controlled=_win_interval(styled, name, control,
                                                                          alpha))
                )  # fmt: skip
    coefficients = None
    if styled.style_coefficients is not None:
        labels = ["length", "headers", "list_items", "bold"]
        coefficients = {
            label: float(v) for label, v in zip(labels, styled.style_coefficients, strict=False)
        }
    matrix = {
        a: {b: number(win_rate[i, j]) for j, b in enumerate(models) if i != j}
        for i, a in enumerate(models)
    }
    return ArenaSection(battles=rows.battles, votes=votes, voided_votes=voided, voters=voters,
                        leaderboard=board,
                        win_rate=matrix,
                        pair_battles=pair_battles, head_to_head=head_to_head,
                        style_coefficients=coefficients,
                        style_intervals=styled.method)  # fmt: skip


def _counted(rows: BattleRows) -> BattleRows:
    """The voted battles whose votes count: not those in which an answer named a model."""
    keep = ~rows.identity_revealed
    if keep.all():
        return rows
    index = np.flatnonzero(keep)
    return dataclasses.replace(
        rows,
        ts=rows.ts[keep],
        variant_a=[rows.variant_a[i] for i in index],
        variant_b=[rows.variant_b[i] for i in index],
        vote=[rows.vote[i] for i in index],
        voters=[rows.voters[i] for i in index],
        tokens=rows.tokens[keep],
        markdown=rows.markdown[keep],
        identity_revealed=rows.identity_revealed[keep],
    )


def _win_interval(ratings: arena_stats.Ratings, i: str, j: str, alpha: float) -> Interval:
    """P(i beats j) at the ratings, with the percentile interval over the bootstrap replicates."""
    point, low, high = ratings.win_probability(i, j, alpha)
    return Interval(value=number(point), low=number(low), high=number(high))


def _significant(
    value: float | None, low: float | None, high: float | None, metric: str, null: float = 0.0
) -> int:
    """+1 significantly better, -1 significantly worse, 0 neither (by the interval)."""
    if low is None or high is None or value is None:
        return 0
    better = 1 if higher_is_better(metric) else -1
    if low > null:
        return better
    if high < null:
        return -better
    return 0


class _Effect(BaseModel):
    direction: int  # +1 significantly better, -1 significantly worse, 0 neither
    evidence: str
    size: float = -math.inf  # the estimate, oriented so that larger is better (ranks winners)


def _oriented(value: float | None, metric: str, null: float = 0.0) -> float:
    if value is None:
        return -math.inf
    return (value - null) if higher_is_better(metric) else (null - value)


def _primary_effect(
    experiment: Experiment,
    treatment: str,
    comparisons: Iterable[Comparison],
    sequential: list[Look],
    arena: ArenaSection | None,
    alpha: float = ALPHA,
) -> _Effect:
    """How the treatment does on the primary metric, tested at `alpha`, and the evidence."""
    metric = experiment.metric
    if metric == "vote_win_rate":
        if arena is None:
            return _Effect(direction=0, evidence="no votes yet")
        match = next((h for h in arena.head_to_head if h.treatment == treatment), None)
        if match is None:
            return _Effect(direction=0, evidence="no battles against the control")
        if arena.voters < arena_stats.MIN_VOTERS:
            return _Effect(
                direction=0,
                evidence=f"{arena.voters} voters so far; a decision needs "
                f"{arena_stats.MIN_VOTERS} (each voter has their own taste)",
            )
        p = match.probability
        return _Effect(
            direction=_significant(p.value, p.low, p.high, metric, null=0.5),
            evidence=f"wins {_pct(p.value)} of votes against {match.control} "
            f"(interval {_pct(p.low)}–{_pct(p.high)})",
            size=_oriented(p.value, metric, null=0.5),
        )
    looks = [look for look in sequential if look.treatment == treatment]
    comparison = next(
        (c for c in comparisons if c.metric == metric and c.treatment == treatment), None
    )
    if comparison is None:
        return _Effect(direction=0, evidence=f"no {metric} data")
    size = _oriented(comparison.absolute.value, metric)
    if looks:
        last = looks[-1]
        p = min((look.p_value for look in looks if look.p_value is not None), default=None)
        direction = 0
        if p is not None and p < alpha:
            direction = _significant(last.difference, last.cs_low, last.cs_high, metric)
        return _Effect(
            direction=direction,
            evidence=f"{metric} {_signed(comparison.absolute.value)} "
            f"(always-valid p {_fmt(p)}, confidence sequence {_fmt(last.cs_low)} to "
            f"{_fmt(last.cs_high)})",
            size=size,
        )
    a = comparison.absolute
    direction = _significant(a.value, a.low, a.high, metric)
    if alpha < ALPHA and (comparison.p_value is None or comparison.p_value >= alpha):
        direction = 0  # the interval is at ALPHA; several treatments need p below alpha too
    return _Effect(
        direction=direction,
        evidence=f"{metric} {_signed(a.value)} (interval {_fmt(a.low)} to {_fmt(a.high)}, "
        f"p {_fmt(comparison.p_value)})",
        size=size,
    )


def _verdict(
    experiment: Experiment,
    control: str,
    treatments: list[str],
    comparisons: list[Comparison],
    sequential: list[Look],
    guardrails: list[GuardrailResult],
    sample_ratio: SampleRatio | None,
    arena: ArenaSection | None,
    alpha: float = ALPHA,
) -> Verdict:
    if sample_ratio is not None and sample_ratio.mismatch:
        return Verdict(
            decision="do not ship",
            variant=None,
            reasons=[
                f"sample-ratio mismatch (p = {_fmt(sample_ratio.p_value)}): counts "
                f"{sample_ratio.counts} against expected "
                f"{[round(e) for e in sample_ratio.expected]}; assignment or logging is broken "
                "(or the weights changed during the experiment: the test assumes they did "
                "not), so no comparison can be trusted"
            ],
            sycophancy=[],
        )
    if not treatments:
        return Verdict(decision="keep running", variant=None,
                       reasons=["no treatment has units yet"], sycophancy=[])  # fmt: skip
    reasons, sycophancy, blocked = [], [], []
    shippable: list[tuple[float, str]] = []
    for name in treatments:
        effect = _primary_effect(experiment, name, comparisons, sequential, arena, alpha)
        evidence = effect.evidence
        mine = [g for g in guardrails if g.treatment == name]
        failed = [g for g in mine if g.status == "fail"]
        pending = [g for g in mine if g.status == "inconclusive"]
        if failed:
            blocked.append(name)
            names = ", ".join(g.metric for g in failed)
            reasons.append(f"{name}: fails guardrail {names}; {evidence}")
            if effect.direction > 0 and any(g.metric == "reward_score" for g in failed):
                sycophancy.append(name)
                reasons.append(
                    f"{name} wins on {experiment.metric} while losing on the reward-score "
                    "guardrail: the sycophancy pattern (preferred, but judged worse)"
                )
        elif effect.direction < 0:
            blocked.append(name)
            reasons.append(f"{name}: worse than {control}: {evidence}")
        elif effect.direction > 0 and not pending:
            shippable.append((effect.size, name))
            reasons.append(f"{name}: better than {control}, every guardrail passing: {evidence}")
        elif effect.direction > 0:
            reasons.append(
                f"{name}: better than {control} ({evidence}), but guardrails "
                f"{', '.join(g.metric for g in pending)} are not yet conclusive"
            )
        else:
            reasons.append(f"{name}: no significant difference yet: {evidence}")
    best = max(shippable)[1] if shippable else None
    if best is not None:
        decision: Decision = "ship"
        if len(shippable) > 1:
            reasons.append(
                f"{best}: the best primary estimate of the {len(shippable)} that could ship"
            )
    elif len(blocked) == len(treatments):
        decision = "do not ship"
    else:
        decision = "keep running"
    return Verdict(decision=decision, variant=best, reasons=reasons,
                   sycophancy=sycophancy)  # fmt: skip


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3g}"


def _signed(value: float | None) -> str:
    return "n/a" if value is None else f"{value:+.3g}"


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f} %"
