"""The sycophancy probe in a report: each arm's figures at its current config revision, and the
changes that the probe guardrails judge.

Figures (`probe.protocol`): accuracy, flip rate and capitulation rate of each arm, over the items
probed against its variant at the variant's current config revision with the current probe set
(`probe.items.PROBE_SET`). Results of another revision or set are not counted (`stale`). Runs of
the same revision are pooled; an item is one cluster, its counts summed over runs, so every
interval is clustered by item: the delta method over items (`stats.ratio_estimate`), at ALPHA.

A guardrail on a probe metric compares treatment and control item by item (both are asked the
same items): the paired difference of their rates (`stats.paired_ratio_difference`). It is a
fixed-horizon interval, not a confidence sequence like the traffic guardrails': a probe run is a
fixed sample of items, complete before anyone reads it, not a stream of units looked at as it
grows, so there is no peeking to pay for. A run added later for the same revision joins the
pool instead of replacing it: a rerun adds evidence, it does not get another draw at passing.
An arm without results at its current revision leaves the guardrail inconclusive, never passed.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from probe.items import PROBE_SET
from probe.pairs import FLATTERY_FLAG, JUDGE_CHECK_FILE
from probe.protocol import ACCURACY, CAPITULATION_RATE, FIGURES, FLIP_RATE, Graded
from router.analysis import stats
from router.analysis.schema import NO_INTERVAL, Interval, JudgeCheck, ProbeArm, number
from router.analysis.verdict import ALPHA
from router.db import Connection


@dataclass
class VariantProbe:
    """One variant's graded items at its current revision, and what was left out."""

    revision: str | None
    items: dict[str, list[Graded]] = field(default_factory=dict)
    families: dict[str, str] = field(default_factory=dict)
    runs: set[str] = field(default_factory=set)
    stale: int = 0  # results of another revision or probe set


def load(
    db: Connection, variants: list[str], revisions: Mapping[str, str] | None
) -> dict[str, VariantProbe]:
    """The probe results of `variants` in the store, sorted into those of each variant's
    current revision (which `revisions` gives; none are current without it) and stale ones."""
    found = {v: VariantProbe(revision=(revisions or {}).get(v)) for v in variants}
    if not variants:
        return found
    marks = ", ".join("?" * len(variants))
    rows = db.execute(
        "SELECT variant, revision, probe_set, run_id, item_id, family, first, pushback, "
        f"suggestion FROM probes WHERE variant IN ({marks}) ORDER BY ts",
        variants,
    ).fetchall()
    for variant, revision, probe_set, run_id, item_id, family, *grades in rows:
        probe = found[variant]
        if probe.revision is None or revision != probe.revision or probe_set != PROBE_SET:
            probe.stale += 1
            continue
        graded = Graded(first=grades[0], pushback=grades[1], suggestion=grades[2])
        probe.items.setdefault(item_id, []).append(graded)
        probe.families[item_id] = family
        probe.runs.add(run_id)
    return found


def _counts(probe: VariantProbe, items: list[str], metric: str) -> tuple[np.ndarray, np.ndarray]:
    """Per item (in the order of `items`): the figure's numerator and denominator, summed over
    runs; zeros for an item this variant was not asked."""
    num, den = np.zeros(len(items)), np.zeros(len(items))
    for i, item in enumerate(items):
        for graded in probe.items.get(item, ()):
            n, d = graded.counts(metric)
            num[i] += n
            den[i] += d
    return num, den


def arm(variant: str, probe: VariantProbe) -> ProbeArm:
    """One arm's figures with their intervals (clustered by item), and accuracy per family."""
    items = sorted(probe.items)
    figures = {
        m: Interval.of(stats.ratio_estimate(*_counts(probe, items, m), ALPHA)) for m in FIGURES
    }
    by_family: dict[str, list[str]] = defaultdict(list)
    for item in items:
        by_family[probe.families[item]].append(item)
    family_accuracy = {}
    for family, members in sorted(by_family.items()):
        num, den = _counts(probe, members, ACCURACY)
        family_accuracy[family] = number(num.sum() / den.sum()) if den.sum() else None
    return ProbeArm(
        variant=variant,
        revision=probe.revision,
        runs=len(probe.runs),
        items=len(items),
        accuracy=figures[ACCURACY] if items else NO_INTERVAL,
        sycophancy_flip_rate=figures[FLIP_RATE] if items else NO_INTERVAL,
        capitulation_rate=figures[CAPITULATION_RATE] if items else NO_INTERVAL,
        family_accuracy=family_accuracy,
        stale_results=probe.stale,
    )


def change(treatment: VariantProbe, control: VariantProbe, metric: str) -> Interval:
    """Treatment minus control on a probe metric, paired by item, over the items both were
    asked; no interval unless both have results at their current revision."""
    items = sorted(set(treatment.items) & set(control.items))
    if not items:
        return NO_INTERVAL
    estimate = stats.paired_ratio_difference(
        *_counts(treatment, items, metric), *_counts(control, items, metric), ALPHA
    )
    if not math.isfinite(estimate.value):
        return NO_INTERVAL
    return Interval.of(estimate)


def judge_check(models_dir: Path | None, model: str | None) -> JudgeCheck | None:
    """The flattery check of the reward model `model` (a folder name under `models_dir`), as
    `arena-serve judge-check` or `train-reward` wrote it; None where none was written."""
    if models_dir is None or model is None:
        return None
    path = models_dir / model / JUDGE_CHECK_FILE
    try:
        check = JudgeCheck.model_validate({**json.loads(path.read_text()), "model": model})
    except (OSError, ValueError):
        return None
    rate = check.flattery_rate.value
    return check.model_copy(update={"flagged": rate is not None and rate > FLATTERY_FLAG})
