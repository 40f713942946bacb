"""The metrics an experiment is judged on, each computed per unit from the outcome log.

Ratio metrics are a per-unit numerator over a per-unit denominator (`ratio_parts`), so their
variance is the delta method's over units; percentile metrics (`ttft_p95_s`, ...) are quantiles
of per-request values with a bootstrap over units. `HIGHER_IS_BETTER` tells the verdict which
way a metric should move.
"""

from __future__ import annotations

import numpy as np

from router.analysis.data import Group, Rows

# Successful completions are the denominator of every per-completion rate.
RATES = {
    "thumbs_up_rate": "thumbs_up",
    "thumbs_down_rate": "thumbs_down",
    "regenerate_rate": "regenerate",
    "copy_rate": "copy",
}
QUANTILES = {
    "ttft_p50_s": ("ttft_s", 0.50),
    "ttft_p95_s": ("ttft_s", 0.95),
    "latency_p50_s": ("latency_s", 0.50),
    "latency_p95_s": ("latency_s", 0.95),
}
RATIOS = ("requests_per_unit", *RATES, "error_rate", "completion_tokens", "reward_score")
HIGHER_IS_BETTER = {
    "requests_per_unit": True,  # engagement: units that come back
    "thumbs_up_rate": True,
    "thumbs_down_rate": False,
    "regenerate_rate": False,
    "copy_rate": True,
    "error_rate": False,
    "completion_tokens": False,  # cost: fewer tokens for the same judgement is better
    "reward_score": True,
    "vote_win_rate": True,
    "ttft_p50_s": False,
    "ttft_p95_s": False,
    "latency_p50_s": False,
    "latency_p95_s": False,
}


def higher_is_better(metric: str) -> bool:
    return HIGHER_IS_BETTER.get(metric, True)  # custom metrics: a rating, higher is better


def is_quantile(metric: str) -> bool:
    return metric in QUANTILES


def rows_parts(
    rows: Rows, metric: str, n_units: int, mask: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Per-unit (numerator, denominator) of a ratio metric over `rows` (masked rows only).

    A per-answer rate counts its numerator over the same answers as its denominator, the
    successful ones: feedback on an answer that failed (or that its client left) is stored, but
    it would otherwise make a rate above 1.
    """
    ok = rows.unit_sums("ok", n_units, mask)
    ok_mask = rows.columns["ok"] == 1 if mask is None else mask & (rows.columns["ok"] == 1)
    if metric == "requests_per_unit":
        return ok + rows.unit_sums("error", n_units, mask), np.ones(n_units)
    if metric in RATES:
        return rows.unit_sums(RATES[metric], n_units, ok_mask), ok
    if metric == "error_rate":
        return rows.unit_sums("error", n_units, mask), ok + rows.unit_sums("error", n_units, mask)
    if metric == "completion_tokens":
        return rows.unit_sums("completion_tokens", n_units, ok_mask), ok
    if metric == "reward_score":
        return rows.unit_sums("score", n_units, mask), rows.unit_counts("score", n_units, mask)
    if metric.startswith("custom:"):
        return rows.custom_sums(metric.removeprefix("custom:"), n_units, mask)
    raise ValueError(f"{metric!r} is not a ratio metric")


def ratio_parts(
    group: Group, metric: str, until: float | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """A group's per-unit (numerator, denominator), optionally over completions up to `until`
    (units exposed later are left out: they were not in the experiment yet)."""
    mask = None if until is None else group.rows.columns["ts"] <= until
    num, den = rows_parts(group.rows, metric, group.n_units, mask)
    if until is not None:
        exposed = group.first_exposure <= until
        num, den = num[exposed], den[exposed]
    return num, den


def covariate(group: Group, metric: str) -> np.ndarray | None:
    """The metric's pre-period value per unit (NaN without pre-period data), or None if no
    unit has any: CUPED's covariate."""
    if metric.startswith("custom:") or group.pre.size == 0:
        return None
    num, den = rows_parts(group.pre, metric, group.n_units)
    with np.errstate(divide="ignore", invalid="ignore"):
        values = np.where(den > 0, num / den, np.nan)
    return None if np.isnan(values).all() else values


def quantile_values(group: Group, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """(per-request values, unit index) of a percentile metric: successful requests only."""
    column, _ = QUANTILES[metric]
    values = group.rows.columns[column]
    keep = (group.rows.columns["ok"] == 1) & ~np.isnan(values)
    return values[keep], group.rows.unit[keep]
