"""The experiment report's orchestration: read the log, compute each section, ask the verdict.

`build_report(store, experiment)` reads the outcome log (read-only) and answers the question a
team runs the experiment for: ship the treatment or not. It computes metrics per arm,
comparisons, the primary metric's sequential test, guardrails, the sample-ratio test and the
arena's leaderboard, gathers each treatment's evidence for `verdict.decide` (the decision rules),
and has `prose` word the reasons and notes. Every figure comes with its interval; the models are
in `schema`, and `ExperimentReport.model_dump` is what `GET /v1/experiments/{name}/report`
returns and what the CLI renders as tables, plots and an HTML page.

With k treatments the primary metric is tested at ALPHA / k (Bonferroni), and its confidence
sequences and head-to-head intervals are at that level.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import norm as stats_norm

from probe.items import PROBE_SET
from router.analysis import arena as arena_stats
from router.analysis import probe as probe_analysis
from router.analysis import prose, stats
from router.analysis.data import (
    EXPOSED,
    GLOBAL_HOLDOUT,
    HOLDOUT,
    BanditRows,
    BattleRows,
    ExperimentData,
    Group,
    connect,
    load,
    load_bandit,
    load_global_holdout,
    seen_before,
)
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
    BanditArm,
    BanditSection,
    Comparison,
    ExperimentReport,
    GuardrailResult,
    HeadToHead,
    HoldoutReport,
    Interval,
    LeaderboardRow,
    Look,
    MetricValue,
    ProbeSection,
    Reason,
    SampleRatio,
    Status,
    Verdict,
    number,
)
from router.analysis.verdict import (
    ALPHA,
    Evidence,
    FixedHorizon,
    Missing,
    Primary,
    Sequential,
    Treatment,
    Votes,
    decide,
)
from router.experiment import PROBE_METRICS, Experiment, Guardrail, can_be_negative

LOOKS = 20  # sequential looks when the experiment is younger than two days; daily after


def build_report(
    store: str | Path,
    experiment: Experiment,
    *,
    now: float | None = None,
    reps: int = 200,
    progress: bool = False,
    revisions: Mapping[str, str] | None = None,
    models_dir: Path | None = None,
) -> ExperimentReport:
    """Analyse `experiment` from the outcome store at `store`, as of `now` (default: the end);
    the probe guardrails count the results of each variant's revision in `revisions` (without
    it, none: inconclusive); `models_dir` holds the reward models (the judge's flattery check).
    An experiment with `confirm` is judged on its confirmation run (`_confirmed`)."""
    options: dict[str, Any] = dict(
        now=now, reps=reps, progress=progress, revisions=revisions, models_dir=models_dir
    )
    report, evidence = _analysed(store, experiment, **options)
    if experiment.confirm is None:
        return report
    return _confirmed(store, experiment, report, evidence, options)


def _confirmed(
    store: str | Path,
    experiment: Experiment,
    report: ExperimentReport,
    evidence: Evidence,
    options: dict[str, Any],
) -> ExperimentReport:
    """`report` judged on the experiment's confirmation run: that run's own report (the winner
    against the control, on the units of the run that were new to the experiment) in
    `confirmation`, its ruling as the verdict (`router.analysis.verdict.decide`), and the
    verdict of the exploration alone in `exploration_verdict`."""
    assert experiment.confirm is not None
    winner = experiment.confirm.variant
    child, child_evidence = _analysed(
        store, experiment.confirmation(), new_to=experiment.name, **options
    )
    ruling = decide(dataclasses.replace(evidence, confirming=winner, confirmation=child_evidence))
    seen = seen_before(store, experiment.confirmation_name, experiment.name)
    units = sum(n for name, n in child.units.items() if name != HOLDOUT)
    verdict = Verdict(
        decision=ruling.decision,
        variant=ruling.variant,
        reasons=[prose.confirmation(winner, child.control, units, seen), *child.verdict.reasons],
        sycophancy=list(ruling.sycophancy),
        codes=[
            Reason(code=r.code, treatment=r.treatment, primary=r.primary) for r in ruling.reasons
        ],
    )
    return report.model_copy(
        update={"verdict": verdict, "exploration_verdict": report.verdict, "confirmation": child}
    )


def _analysed(
    store: str | Path,
    experiment: Experiment,
    *,
    now: float | None = None,
    reps: int = 200,
    progress: bool = False,
    revisions: Mapping[str, str] | None = None,
    models_dir: Path | None = None,
    new_to: str | None = None,
) -> tuple[ExperimentReport, Evidence]:
    """`build_report` of one experiment, with the evidence its verdict read; with `new_to`,
    only units never exposed to that experiment count (a confirmation run's)."""
    started = time.perf_counter()
    data = load(store, experiment.name, now, new_to=new_to)
    control = _control(experiment, data)
    metric_names = _metrics(experiment)
    groups = [g for g in data.groups.values() if g.n_units]
    treatments = [g.name for g in groups if g.name not in (control, HOLDOUT)]
    comparisons = _comparisons(data, control, treatments, metric_names, reps)
    alpha = ALPHA / max(1, len(treatments))
    arena = _arena(experiment, data, control, reps, progress, alpha) if data.battles else None
    bandit_rows, bandit = _bandit_section(store, experiment, now)
    looks = not (arena or bandit)
    sequential = _sequential(experiment, data, control, treatments, alpha) if looks else []
    probes = _probes(store, experiment, revisions)
    guardrails = _guardrails(experiment, comparisons, _probe_changes(probes, control, treatments))
    sample_ratio = _sample_ratio(experiment, data, bandit_rows)
    undeclared = _undeclared(experiment, data)
    evidence = (comparisons, sequential, guardrails, arena, bandit)
    treated = tuple(_treatment(experiment, name, control, *evidence) for name in treatments)
    judged = _evidence(experiment, control, alpha, sample_ratio, treated)
    verdict = _verdict(judged, sample_ratio)
    probe = _probe_section(experiment, probes, models_dir, data.reward_model)
    tried = _variants_tried(data)
    notes = _notes(experiment, len(treatments), alpha, arena, sample_ratio, undeclared, probe)
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
        metrics=_values(groups, metric_names, reps),
        comparisons=comparisons,
        sequential=sequential,
        guardrails=guardrails,
        arena=arena,
        bandit=bandit,
        verdict=verdict,
        notes=notes + _illusion(experiment, verdict, tried),
        undeclared_custom_metrics=undeclared,
        reward_model=data.reward_model,
        probe=probe,
        variants_tried=tried,
    ), judged


def _illusion(experiment: Experiment, verdict: Verdict, tried: list[str]) -> list[str]:
    """A note when the winner was chosen among more than two variants (the leaderboard
    illusion) and no confirmation run judges it."""
    if experiment.confirm is not None:
        return []
    if verdict.decision == "ship" and verdict.variant is not None and len(tried) > 2:
        return [prose.chosen_among(verdict.variant, len(tried))]
    return []


def _bandit_section(
    store: str | Path, experiment: Experiment, now: float | None
) -> tuple[BanditRows | None, BanditSection | None]:
    """A bandit's rows and its section of the report; (None, None) for other experiments."""
    if experiment.mode != "bandit":
        return None, None
    rows = load_bandit(store, experiment.name, experiment.bandit_settings.reward, now)
    return rows, _bandit(experiment, rows)


def _bandit(experiment: Experiment, rows: BanditRows) -> BanditSection:
    """Each arm's mean reward by inverse-propensity weighting (`router.bandit.ipw_means`)."""
    from router.bandit import ipw_means

    reward = experiment.bandit_settings.reward
    arms = [arm.variant for arm in experiment.arms if arm.weight > 0]
    found = ipw_means(arms, rows.variant, rows.propensity, rows.reward)
    z = float(stats_norm.ppf(1 - ALPHA / 2))
    return BanditSection(
        reward=reward,
        weights_version=rows.version,
        shares=rows.shares,
        arms=[
            BanditArm(
                variant=arm,
                completions=e.n,
                hajek=Interval(
                    value=number(e.hajek),
                    low=number(e.hajek - z * e.hajek_se),
                    high=number(e.hajek + z * e.hajek_se),
                    se=number(e.hajek_se),
                ),
                naive=number(e.naive),
            )
            for arm, e in found.items()
        ],
    )


def _bandit_sample_ratio(experiment: Experiment, rows: BanditRows) -> SampleRatio | None:
    """Assignments per arm against the count each weights version leads one to expect (its
    logged shares; the configured arm weights before the first)."""
    configured = {arm.variant: arm.weight for arm in experiment.arms if arm.weight > 0}
    counts, expected = _period_counts(rows.assigned, rows.weights, configured)
    return _ratio(list(configured), counts, expected)


def _bandit_primary(bandit: BanditSection, treatment: str, control: str) -> Primary:
    """The treatment's IPW mean against the control's: their difference, its normal interval
    at ALPHA and two-sided p-value (the two estimates taken as independent)."""
    arms = {arm.variant: arm.hajek for arm in bandit.arms}
    t, c = arms.get(treatment), arms.get(control)
    if t is None or c is None or None in (t.value, t.se, c.value, c.se):
        return Missing("no_data")
    change = t.value - c.value  # type: ignore[operator]
    se = math.hypot(t.se, c.se)  # type: ignore[arg-type]
    z = float(stats_norm.ppf(1 - ALPHA / 2))
    p = float(2 * stats_norm.sf(abs(change) / se)) if se > 0 else (0.0 if change else 1.0)
    return FixedHorizon(change=change, low=change - z * se, high=change + z * se, p_value=p)


def build_holdout_report(
    store: str | Path, *, now: float | None = None, reps: int = 200
) -> HoldoutReport:
    """The global holdout's comparison (`data.load_global_holdout`): the exposed units against
    the held-out ones, on every standard metric."""
    groups = load_global_holdout(store, now)
    present = [g for g in groups.values() if g.n_units]
    metrics = [*RATIOS, *QUANTILES]
    data = ExperimentData(GLOBAL_HOLDOUT, groups, None, None, None)
    both = all(g.n_units for g in groups.values())
    notes = [] if both else [prose.NO_HOLDOUT_COMPARISON]
    return HoldoutReport(
        generated_at=time.time(),
        units={name: g.n_units for name, g in groups.items()},
        metrics=_values(present, metrics, reps),
        comparisons=_comparisons(data, GLOBAL_HOLDOUT, [EXPOSED], metrics, reps) if both else [],
        notes=notes,
    )


def _evidence(
    experiment: Experiment,
    control: str,
    alpha: float,
    sample_ratio: SampleRatio | None,
    treatments: tuple[Treatment, ...],
) -> Evidence:
    """What the verdict reads (`router.analysis.verdict.Evidence`)."""
    return Evidence(
        metric=experiment.metric,
        higher_is_better=higher_is_better(experiment.metric),
        control=control,
        alpha=alpha,
        sample_ratio_mismatch=sample_ratio is not None and sample_ratio.mismatch,
        treatments=treatments,
    )


def _notes(
    experiment: Experiment,
    treatments: int,
    alpha: float,
    arena: ArenaSection | None,
    sample_ratio: SampleRatio | None,
    undeclared: dict[str, int],
    probe: ProbeSection | None = None,
) -> list[str]:
    """What a reader should know besides the verdict, worded by `prose`."""
    notes = []
    if treatments > 1:
        notes.append(prose.bonferroni(treatments, alpha))
    # The sample-ratio test leaves out arms of weight 0: no unit is expected in them.
    weightless = any(arm.weight == 0 for arm in experiment.arms)
    if sample_ratio is not None and experiment.mode == "ab" and weightless:
        notes.append(prose.WEIGHT_ZERO)
    if experiment.mode == "arena" and arena is None:
        notes.append(prose.NO_BATTLES)
    if arena is not None and arena.voided_votes:
        notes.append(prose.voided_votes(arena.voided_votes, arena.votes))
    if undeclared:
        notes.append(prose.undeclared(undeclared))
    return notes + _probe_notes(experiment, probe)


def _control(experiment: Experiment, data: ExperimentData) -> str:
    return experiment.control


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


def _values(groups: list[Group], metrics: list[str], reps: int) -> list[MetricValue]:
    """Each metric's estimate in each group, metric by metric."""
    return [
        MetricValue(
            metric=m, group=g.name, estimate=Interval.of(_estimate(g, m, reps)), units=g.n_units
        )
        for m in metrics
        for g in groups
    ]


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
                Comparison(
                    metric=metric,
                    treatment=name,
                    control=control,
                    absolute=Interval.of(lift.absolute),
                    relative=relative,
                    p_value=number(lift.p_value),
                    p_adjusted=number(p_adjusted),
                    cuped=lift.cuped,
                    variance_reduction=number(lift.variance_reduction),
                    control_value=number(lift.control.value),
                )
            )
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
        rows = zip(times, diffs, variances, p_values, naive, strict=True)
        for at, diff, var, p, naive_p in rows:
            low = high = None
            if math.isfinite(diff) and math.isfinite(var) and var > 0:
                low, high = stats.confidence_sequence(diff, var, tau2, alpha)
            looks.append(
                Look(
                    ts=float(at),
                    treatment=name,
                    difference=number(diff),
                    p_value=number(p),
                    naive_p_value=number(naive_p),
                    cs_low=number(low),
                    cs_high=number(high),
                )
            )
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


def _probes(
    store: str | Path, experiment: Experiment, revisions: Mapping[str, str] | None
) -> dict[str, probe_analysis.VariantProbe]:
    """Each arm's probe results at its current revision (`router.analysis.probe`)."""
    db = connect(store)
    try:
        return probe_analysis.load(db, [arm.variant for arm in experiment.arms], revisions)
    finally:
        db.close()


def _probe_changes(
    probes: dict[str, probe_analysis.VariantProbe], control: str, treatments: list[str]
) -> dict[tuple[str, str], Interval]:
    """(metric, treatment) -> the paired change against the control on each probe metric."""
    if control not in probes:
        return {}
    return {
        (metric, name): probe_analysis.change(probes[name], probes[control], metric)
        for metric in PROBE_METRICS
        for name in treatments
        if name in probes
    }


def _probe_section(
    experiment: Experiment,
    probes: dict[str, probe_analysis.VariantProbe],
    models_dir: Path | None,
    reward_model: str | None,
) -> ProbeSection | None:
    """The arms' probe figures, where a guardrail asks for them or results exist."""
    guarded = any(g.metric in PROBE_METRICS for g in experiment.guardrails)
    if not guarded and not any(p.items for p in probes.values()):
        return None
    return ProbeSection(
        probe_set=PROBE_SET,
        arms=[probe_analysis.arm(name, found) for name, found in probes.items()],
        judge=probe_analysis.judge_check(models_dir, reward_model),
    )


def _probe_notes(experiment: Experiment, probe: ProbeSection | None) -> list[str]:
    """Arms a probe guardrail has no results for; a judge that rewards flattery."""
    if probe is None:
        return []
    notes = []
    if any(g.metric in PROBE_METRICS for g in experiment.guardrails):
        missing = [a.variant for a in probe.arms if not a.items]
        if missing:
            notes.append(prose.probe_missing(experiment.name, missing))
    judge = probe.judge
    if judge is not None and judge.flagged:
        guarded = any(g.metric == "reward_score" for g in experiment.guardrails)
        notes.append(prose.flattering_judge(judge, guarded))
    return notes


def _guardrails(
    experiment: Experiment,
    comparisons: list[Comparison],
    probe_changes: Mapping[tuple[str, str], Interval] | None = None,
) -> list[GuardrailResult]:
    """Each guardrail for each treatment; one without a comparison is inconclusive, never
    skipped (a guardrail nobody computed must not let a treatment ship). A probe metric is
    judged on the probe's paired change (`probe_changes`), at a fixed horizon."""
    by_key = {(c.metric, c.treatment): c for c in comparisons}
    treatments = sorted({c.treatment for c in comparisons})
    probe_changes = probe_changes or {}
    out = []
    for guardrail in experiment.guardrails:
        for treatment in treatments:
            comparison = by_key.get((guardrail.metric, treatment))
            if guardrail.metric in PROBE_METRICS:
                change = probe_changes.get((guardrail.metric, treatment), NO_INTERVAL)
            elif comparison is None:
                change = NO_INTERVAL
            else:
                change = comparison.relative if guardrail.relative else comparison.absolute
                change = _always_valid(change, guardrail, comparison.control_value)
            out.append(
                GuardrailResult(
                    metric=guardrail.metric,
                    treatment=treatment,
                    change=change,
                    relative=guardrail.relative,
                    max_increase=guardrail.max_increase,
                    max_decrease=guardrail.max_decrease,
                    status=_guardrail_status(guardrail, change),
                    interval="probe_items"
                    if guardrail.metric in PROBE_METRICS
                    else "confidence_sequence",
                )
            )
    return out


def _sample_ratio(
    experiment: Experiment, data: ExperimentData, bandit: BanditRows | None = None
) -> SampleRatio | None:
    """Units per arm against the arm weights (A/B), battles per pair against pair weights, or
    a bandit's assignments per arm against its weights versions'."""
    if bandit is not None:
        return _bandit_sample_ratio(experiment, bandit)
    if experiment.mode == "arena":
        if data.battles is None:
            return None
        # A pair listed twice (in either order) is drawn with the sum of its weights.
        pair_weights: dict[tuple[str, str], float] = {}
        for pair in experiment.arena_pairs():
            a, b = sorted(pair.variants)
            pair_weights[(a, b)] = pair_weights.get((a, b), 0.0) + pair.weight
        names = [f"{a} vs {b}" for a, b in pair_weights]
        counts, weights = _period_counts(
            data.battles.pairs_by_version, data.battles.weights, pair_weights
        )
    else:
        arms = [arm for arm in experiment.arms if arm.weight > 0]
        names = [arm.variant for arm in arms]
        counts = [data.groups[n].n_units if n in data.groups else 0 for n in names]
        weights = _arm_expectations(data, names) or [arm.weight for arm in arms]
    return _ratio(names, counts, weights)


def _ratio(names: list[str], counts: list[int], weights: list[float]) -> SampleRatio | None:
    """The sample-ratio test of these groups; a group nothing was expected in is left out when
    empty, and with units it is a mismatch."""
    kept = [(n, c, max(w, 1e-9)) for n, c, w in zip(names, counts, weights, strict=True) if w or c]
    names, counts, weights = [k[0] for k in kept], [k[1] for k in kept], [k[2] for k in kept]
    if len(names) < 2 or sum(counts) == 0:
        return None
    test = stats.sample_ratio_test(counts, weights)
    return SampleRatio(
        groups=names,
        counts=list(test.counts),
        expected=list(test.expected),
        p_value=number(test.p_value),
        mismatch=test.mismatch,
    )


def _variants_tried(data: ExperimentData) -> list[str]:
    """Every variant the experiment has put in front of units over its history: the arms of
    weight above 0 in each logged config, and every variant with units or battles in the log."""
    tried = {name for name in data.groups if name != HOLDOUT}
    for weights in data.config_weights:  # None: a config an older arena-serve wrote
        tried.update(arm for arm, weight in (weights or {}).items() if weight > 0)
    return sorted(tried)


def _arm_expectations(data: ExperimentData, names: list[str]) -> list[float] | None:
    """Units expected in each arm when its weights changed over time: the units first exposed
    while each logged config was in force, spread by that config's weights (units exposed
    before the first logged config count by it). None without a logged config."""
    if not data.config_weights or None in data.config_weights:
        return None  # none logged, or one an older arena-serve wrote: the current weights judge
    periods = [
        {arm: weight for arm, weight in weights.items() if arm in names}
        for weights in data.config_weights
        if weights is not None
    ]
    starts = [ts for ts, _ in data.configs]
    expected = dict.fromkeys(names, 0.0)
    for name in names:
        group = data.groups.get(name)
        if group is None:
            continue
        index = np.searchsorted(starts, group.first_exposure, side="right") - 1
        for period, n in zip(*np.unique(np.maximum(index, 0), return_counts=True), strict=True):
            weights = periods[int(period)]
            total = sum(weights.values())
            if total > 0:
                for arm, weight in weights.items():
                    expected[arm] += int(n) * weight / total
    return list(expected.values())


def _period_counts(
    periods: Mapping[int | None, Mapping[Any, int]],
    weights: Mapping[int, Mapping[Any, float]],
    configured: Mapping[Any, float],
) -> tuple[list[int], list[float]]:
    """Counts per group (an arena's pair, a bandit's arm) and the count expected of each: each
    period's (one weights version, or None: the configured weights) spread by the weights in
    force then. A period whose weights were not logged, and groups no longer drawn, are left
    out."""
    total = sum(configured.values())
    counts = dict.fromkeys(configured, 0)
    expected = dict.fromkeys(configured, 0.0)
    for version, period in periods.items():
        if version is None:
            shares = {key: weight / total for key, weight in configured.items()}
        elif version in weights:
            shares = weights[version]
        else:
            continue
        n = sum(period.get(key, 0) for key in configured)
        for key in configured:
            counts[key] += period.get(key, 0)
            expected[key] += n * shares.get(key, 0.0)
    return list(counts.values()), list(expected.values())


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
    pair_battles = _pair_battles(rows, names)
    if not rows.vote:
        return ArenaSection(
            battles=rows.battles,
            votes=votes,
            voided_votes=voided,
            leaderboard=[],
            win_rate={},
            pair_battles=pair_battles,
            head_to_head=[],
            style_coefficients=None,
        )
    battles = _voted(rows)
    plain = arena_stats.leaderboard(battles, reps=reps, alpha=ALPHA, progress=progress)
    styled = arena_stats.leaderboard(battles, style=True, reps=reps, alpha=ALPHA, progress=progress)
    return ArenaSection(
        battles=rows.battles,
        votes=votes,
        voided_votes=voided,
        voters=len(set(rows.voters)),
        leaderboard=_leaderboard(plain, styled),
        win_rate=_win_rate(battles),
        pair_battles=pair_battles,
        head_to_head=_head_to_head(plain, styled, control, alpha),
        style_coefficients=_style_coefficients(styled),
        style_intervals=styled.method,
    )


def _pair_battles(rows: BattleRows, names: list[str]) -> dict[str, dict[str, int]]:
    """Battles per pair, both ways round, with a row for every variant."""
    pair_battles: dict[str, dict[str, int]] = {n: {} for n in names}
    for (a, b), count in rows.pairs.items():
        pair_battles.setdefault(a, {})[b] = count
        pair_battles.setdefault(b, {})[a] = count
    return pair_battles


def _voted(rows: BattleRows) -> arena_stats.Battles:
    """The voted battles with their style features and voters."""
    # A side without a token count (no usage from its engine) gives its battle no length
    # difference, not the largest one there is.
    tokens = np.where(np.isnan(rows.tokens).any(axis=1, keepdims=True), 0.0, rows.tokens)
    style = arena_stats.style_features(
        tokens[:, 0], tokens[:, 1], rows.markdown[:, 0], rows.markdown[:, 1]
    )
    return arena_stats.Battles.from_votes(
        rows.variant_a, rows.variant_b, rows.vote, style, voters=rows.voters
    )


def _leaderboard(plain: arena_stats.Ratings, styled: arena_stats.Ratings) -> list[LeaderboardRow]:
    """Both ratings of each variant, the highest plain rating first."""
    rows = (
        LeaderboardRow(
            variant=m,
            rating=number(plain.rating[i]),
            low=number(plain.ci[i, 0]),
            high=number(plain.ci[i, 1]),
            rating_style_controlled=number(styled.rating[i]),
            style_low=number(styled.ci[i, 0]),
            style_high=number(styled.ci[i, 1]),
            battles=int(plain.battles[i]),
        )
        for i, m in enumerate(plain.models)
    )
    return sorted(rows, key=lambda row: -(row.rating or -math.inf))


def _win_rate(battles: arena_stats.Battles) -> dict[str, dict[str, float | None]]:
    win_rate, _ = arena_stats.win_matrix(battles)
    models = list(battles.models)
    return {
        a: {b: number(win_rate[i, j]) for j, b in enumerate(models) if i != j}
        for i, a in enumerate(models)
    }


def _head_to_head(
    plain: arena_stats.Ratings, styled: arena_stats.Ratings, control: str, alpha: float
) -> list[HeadToHead]:
    if control not in plain.models:
        return []
    return [
        HeadToHead(
            treatment=name,
            control=control,
            probability=_win_interval(plain, name, control, alpha),
            probability_style_controlled=_win_interval(styled, name, control, alpha),
        )
        for name in plain.models
        if name != control
    ]


def _style_coefficients(styled: arena_stats.Ratings) -> dict[str, float] | None:
    if styled.style_coefficients is None:
        return None
    labels = ["length", "headers", "list_items", "bold"]
    return {label: float(v) for label, v in zip(labels, styled.style_coefficients, strict=False)}


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


def _treatment(
    experiment: Experiment,
    name: str,
    control: str,
    comparisons: list[Comparison],
    sequential: list[Look],
    guardrails: list[GuardrailResult],
    arena: ArenaSection | None,
    bandit: BanditSection | None,
) -> Treatment:
    """One treatment's evidence for the verdict: its primary metric (a bandit's: its
    inverse-propensity means against the control's) and guardrail statuses."""
    primary = (
        _primary(experiment, name, comparisons, sequential, arena)
        if bandit is None
        else _bandit_primary(bandit, name, control)
    )
    return Treatment(
        name=name,
        primary=primary,
        guardrails=tuple((g.metric, g.status) for g in guardrails if g.treatment == name),
    )


def _primary(
    experiment: Experiment,
    treatment: str,
    comparisons: list[Comparison],
    sequential: list[Look],
    arena: ArenaSection | None,
) -> Primary:
    """The treatment's primary metric against the control: the head-to-head of the votes; the
    looks of the sequential test, where there are any; else the fixed-horizon comparison."""
    metric = experiment.metric
    if metric == "vote_win_rate":
        if arena is None:
            return Missing("no_votes")
        match = next((h for h in arena.head_to_head if h.treatment == treatment), None)
        if match is None:
            return Missing("no_battles")
        p = match.probability
        return Votes(probability=p.value, low=p.low, high=p.high, voters=arena.voters)
    comparison = next(
        (c for c in comparisons if c.metric == metric and c.treatment == treatment), None
    )
    if comparison is None:
        return Missing("no_data")
    change = comparison.absolute
    looks = [look for look in sequential if look.treatment == treatment]
    if not looks:
        return FixedHorizon(
            change=change.value, low=change.low, high=change.high, p_value=comparison.p_value
        )
    last = looks[-1]
    return Sequential(
        change=change.value,
        difference=last.difference,
        cs_low=last.cs_low,
        cs_high=last.cs_high,
        p_value=min((look.p_value for look in looks if look.p_value is not None), default=None),
    )


def _verdict(evidence: Evidence, sample_ratio: SampleRatio | None) -> Verdict:
    """The verdict's decision and codes, with `prose`'s words for them."""
    ruling = decide(evidence)
    return Verdict(
        decision=ruling.decision,
        variant=ruling.variant,
        reasons=prose.reasons(evidence, ruling, sample_ratio),
        sycophancy=list(ruling.sycophancy),
        codes=[
            Reason(code=r.code, treatment=r.treatment, primary=r.primary) for r in ruling.reasons
        ],
    )
