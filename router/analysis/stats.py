"""Frequentist statistics for experiments randomized by unit (user), with many requests per unit.

Every variance here is computed over units, never over requests: a unit's requests share the unit's
taste, device and prompt mix, so they are correlated, and a per-request variance understates the
noise (tests/router/analysis/test_stats.py shows a naive per-request test flagging far more A/A
experiments than alpha). Inputs are therefore per-unit sums (ratio metrics) or per-request values
tagged with their unit (quantiles, bootstrapped over units).

- Ratio metrics ``sum(num) / sum(den)`` with delta-method standard errors over units (Deng,
  Knoblich, Lu 2018, "Applying the delta method in metric analytics"), optionally CUPED-adjusted
  by a pre-period covariate (Deng, Xu, Kohavi, Walker 2013, "Improving the sensitivity of online
  controlled experiments by utilizing pre-experiment data").
- Sample ratio mismatch: chi-square goodness of fit of unit counts against configured weights.
- Sequential looks: the normal-mixture mSPRT, its always-valid p-values and confidence sequences
  (Johari, Pekelis, Walsh 2017, "Always valid inference"; Robbins 1970).
- Holm–Bonferroni adjustment across metrics (Holm 1979).
- Percentiles of per-request values with a Poisson bootstrap over units (Chamandy, Muralidharan,
  Najmi, Naidu 2012, "Estimating uncertainty for massive data streams").

Degenerate data never raises: empty arms, an all-zero denominator or a control of 0 give NaN where
the quantity is undefined; fewer than two units give a NaN standard error (no between-unit
variation to estimate); data without any variation gives a standard error of 0. Arguments that are
programming errors (mismatched lengths, alpha outside (0, 1), non-positive weights or tau2) raise
`ValueError`. Pure numpy/scipy, no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np
from scipy.stats import chi2 as _chi2

_NAN = math.nan
_NORMAL = NormalDist()
_EPS = float(np.finfo(np.float64).eps)
# Below this many rounding errors a standard error is zero variation, not a tiny true one.
_ROUNDING = 64 * _EPS
# default_tau2 never returns less, so the mixture is proper even for a control value of 0.
TAU2_FLOOR = 1e-12


@dataclass(frozen=True, slots=True)
class Estimate:
    """A point estimate, its standard error and a two-sided ``1 - alpha`` normal interval.

    ``ci`` is ``value ± z_{1-alpha/2} * se``; it is ``(nan, nan)`` whenever `value` or `se` is NaN.
    `n_units` counts the randomization units the estimate is based on.
    """

    value: float
    se: float
    ci: tuple[float, float]
    n_units: int


@dataclass(frozen=True, slots=True)
class Lift:
    """Treatment against control for one metric at a fixed horizon.

    `absolute` is treatment - control, `relative` is treatment / control - 1 (delta method; NaN
    unless the control's interval lies above 0: on a negative baseline the ratio flips the sign
    of the change, and near 0 it is noise), `p_value` the two-sided z-test of ``absolute == 0``.
    When `cuped` is true, `control`, `treatment` and both lifts are the covariate-adjusted
    estimates, and `variance_reduction` is ``1 - var(adjusted absolute) / var(unadjusted
    absolute)`` (0.0 without).
    """

    control: Estimate
    treatment: Estimate
    absolute: Estimate
    relative: Estimate
    p_value: float
    cuped: bool
    variance_reduction: float


@dataclass(frozen=True, slots=True)
class SampleRatio:
    """Chi-square goodness of fit of unit counts per arm; `mismatch` is ``p_value < threshold``."""

    counts: tuple[int, ...]
    expected: tuple[float, ...]
    chi2: float
    p_value: float
    mismatch: bool


# --------------------------------------------------------------------------------------------
# Shared helpers


def _z(alpha: float) -> float:
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    return _NORMAL.inv_cdf(1.0 - alpha / 2.0)


def _estimate(value: float, se: float, n_units: int, alpha: float) -> Estimate:
    z = _z(alpha)
    value, se = float(value), float(se)
    if math.isfinite(value) and math.isfinite(se):
        ci = (value - z * se, value + z * se)
    else:
        ci = (_NAN, _NAN)
    return Estimate(value=value, se=se, ci=ci, n_units=int(n_units))


def _p_two_sided(diff: float, se: float, tolerance: float) -> float:
    """Two-sided normal p-value; with ``se == 0`` the difference is exact (1.0 if 0, else 0.0)."""
    if not (math.isfinite(diff) and math.isfinite(se)):
        return _NAN
    if se == 0.0:
        return 1.0 if abs(diff) <= tolerance else 0.0
    return math.erfc(abs(diff) / se / math.sqrt(2.0))


def _relative(
    treatment: float, control: float, se_t: float, se_c: float, z: float
) -> tuple[float, float]:
    """``t / c - 1`` and its delta-method standard error (independent arms); NaN unless the
    control's interval ``c ± z·se_c`` lies above 0, where the ratio keeps the sign of ``t - c``."""
    if not (math.isfinite(control) and math.isfinite(se_c)) or control - z * se_c <= 0.0:
        return _NAN, _NAN
    value = treatment / control - 1.0
    se = math.sqrt(se_t**2 / control**2 + treatment**2 * se_c**2 / control**4)
    return value, se


def _lift(
    treatment: Estimate,
    control: Estimate,
    alpha: float,
    tolerance: float,
    cuped: bool = False,
    variance_reduction: float = 0.0,
) -> Lift:
    n = treatment.n_units + control.n_units
    diff = treatment.value - control.value
    se = math.sqrt(treatment.se**2 + control.se**2)
    rel, rel_se = _relative(treatment.value, control.value, treatment.se, control.se, _z(alpha))
    return Lift(
        control=control,
        treatment=treatment,
        absolute=_estimate(diff, se, n, alpha),
        relative=_estimate(rel, rel_se, n, alpha),
        p_value=_p_two_sided(diff, se, tolerance),
        cuped=cuped,
        variance_reduction=variance_reduction,
    )


# --------------------------------------------------------------------------------------------
# Ratio metrics: delta method and CUPED


def _per_unit(num: np.ndarray, den: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    num = np.asarray(num, dtype=np.float64).ravel()
    den = np.asarray(den, dtype=np.float64).ravel()
    if num.shape != den.shape:
        raise ValueError(f"num and den must have one value per unit: {num.size} != {den.size}")
    return num, den


def linearize(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """Per-unit linearized values ``(num_u - R den_u) / mean(den)``, ``R = sum(num) / sum(den)``.

    They have mean 0, and ``var(l, ddof=1) / n`` is exactly the delta-method variance of ``R``
    (Deng et al. 2018): ``(s_y² - 2 R s_xy + R² s_x²) / (n mean(den)²)``. Units with ``den_u == 0``
    keep a value (``num_u / mean(den)``). Empty input gives an empty array; an all-zero `den` gives
    all NaN.
    """
    num, den = _per_unit(num, den)
    if num.size == 0:
        return np.empty(0)
    total = den.sum()
    if total == 0.0 or not math.isfinite(total):
        return np.full(num.size, _NAN)
    ratio = num.sum() / total
    return (num - ratio * den) / (total / num.size)


def _unit_se(values: np.ndarray, rounding: float) -> float:
    """``sqrt(var(values, ddof=1) / n)``; NaN below two units, 0 when the spread is rounding."""
    n = values.size
    if n < 2:
        return _NAN
    var = float(np.var(values, ddof=1))
    if var <= rounding**2:
        return 0.0
    return math.sqrt(var / n)


def _ratio_parts(num: np.ndarray, den: np.ndarray) -> tuple[float, np.ndarray, float]:
    """``R``, the linearized values, and the size of their rounding error."""
    num, den = _per_unit(num, den)
    lin = linearize(num, den)
    if num.size == 0 or not np.isfinite(lin).all():
        return _NAN, lin, 0.0
    ratio = num.sum() / den.sum()
    rounding = _ROUNDING * float(np.mean(np.abs(num) + np.abs(ratio * den))) / den.mean()
    return float(ratio), lin, abs(rounding)


def ratio_estimate(num: np.ndarray, den: np.ndarray, alpha: float = 0.05) -> Estimate:
    """``R = sum(num) / sum(den)`` over per-unit sums, with its delta-method SE over units.

    The standard error is ``sqrt(var(linearize(num, den), ddof=1) / n)`` (Deng et al. 2018), so the
    correlation of a unit's requests is accounted for. Units with ``den_u == 0`` still count in
    ``n`` and in the variance. Empty input or ``sum(den) == 0``: value, se and ci are NaN. A single
    unit: finite value, NaN se and ci. Identical units: se 0.
    """
    num, den = _per_unit(num, den)
    ratio, lin, rounding = _ratio_parts(num, den)
    se = _unit_se(lin, rounding) if math.isfinite(ratio) else _NAN
    return _estimate(ratio, se, num.size, alpha)


def _covariate(values: np.ndarray, n: int) -> np.ndarray:
    x = np.asarray(values, dtype=np.float64).ravel()
    if x.size != n:
        raise ValueError(f"covariate must have one value per unit: {x.size} != {n}")
    return x


def _cuped(
    lin_t: np.ndarray, lin_c: np.ndarray, x_t: np.ndarray, x_c: np.ndarray
) -> tuple[float, float, np.ndarray, np.ndarray] | None:
    """Shifts of ``R_t``, ``R_c`` and the adjusted linearized values, or None when not applicable.

    ``theta = cov(l, x) / var(x)`` with within-arm centering, pooled over both arms; it needs no
    rescaling because the linearized values are already on the scale of ``R``. Missing covariates
    (NaN) get the pooled mean of the present ones, so they are adjusted by 0.
    """
    if lin_t.size == 0 or lin_c.size == 0:
        return None
    if not (np.isfinite(lin_t).all() and np.isfinite(lin_c).all()):
        return None
    pooled = np.concatenate([x_t, x_c])
    present = pooled[~np.isnan(pooled)]
    if present.size == 0 or not np.isfinite(present).all():
        return None
    mean_all = float(present.mean())
    x_t = np.where(np.isnan(x_t), mean_all, x_t)
    x_c = np.where(np.isnan(x_c), mean_all, x_c)
    dx_t, dx_c = x_t - x_t.mean(), x_c - x_c.mean()
    sxx = float(dx_t @ dx_t + dx_c @ dx_c)
    if not sxx > _ROUNDING**2 * float(x_t @ x_t + x_c @ x_c):
        return None
    theta = float(lin_t @ dx_t + lin_c @ dx_c) / sxx
    shift_t = -theta * (float(x_t.mean()) - mean_all)
    shift_c = -theta * (float(x_c.mean()) - mean_all)
    return shift_t, shift_c, lin_t - theta * dx_t, lin_c - theta * dx_c


def compare_ratio(
    num_t: np.ndarray,
    den_t: np.ndarray,
    num_c: np.ndarray,
    den_c: np.ndarray,
    alpha: float = 0.05,
    covariate_t: np.ndarray | None = None,
    covariate_c: np.ndarray | None = None,
) -> Lift:
    """Compare a ratio metric between arms (per-unit sums in each), at a fixed horizon.

    Arm estimates and SEs are `ratio_estimate`'s; the arms are independent, so
    ``se(absolute) = sqrt(se_t² + se_c²)``. With both covariates (per-unit pre-period values, NaN
    for a unit without a pre-period), CUPED (Deng et al. 2013) is applied to the linearized metric:
    ``R_arm - theta * (xbar_arm - xbar_pooled)`` with variance from the adjusted linearized values,
    which keeps the difference unbiased and removes the share of its variance that the covariate
    explains (``variance_reduction``, about ``corr(l, x)²``). The covariate must be
    computed the same way for every unit whatever its arm (nothing centered or scaled per arm):
    the adjustment relies on the arms' covariate means differing only by chance. With one that is
    absent or has no variance, or an arm without a defined ratio, no adjustment is made
    (``cuped=False``). The relative lift's delta method treats the adjusted arm estimates as
    independent (exact for the absolute lift, where the pooled mean cancels).
    """
    ratio_t, lin_t, rounding_t = _ratio_parts(num_t, den_t)
    ratio_c, lin_c, rounding_c = _ratio_parts(num_c, den_c)
    rounding = max(rounding_t, rounding_c)
    se_t = _unit_se(lin_t, rounding_t) if math.isfinite(ratio_t) else _NAN
    se_c = _unit_se(lin_c, rounding_c) if math.isfinite(ratio_c) else _NAN
    tolerance = _ROUNDING * max(abs(ratio_t), abs(ratio_c), 0.0)

    adjusted = None
    if covariate_t is not None and covariate_c is not None:
        x_t = _covariate(covariate_t, lin_t.size)
        x_c = _covariate(covariate_c, lin_c.size)
        adjusted = _cuped(lin_t, lin_c, x_t, x_c)
    if adjusted is None:
        return _lift(
            _estimate(ratio_t, se_t, lin_t.size, alpha),
            _estimate(ratio_c, se_c, lin_c.size, alpha),
            alpha,
            tolerance,
        )

    shift_t, shift_c, adj_t, adj_c = adjusted
    adj_se_t, adj_se_c = _unit_se(adj_t, rounding), _unit_se(adj_c, rounding)
    var_before = se_t**2 + se_c**2
    var_after = adj_se_t**2 + adj_se_c**2
    reduction = 1.0 - var_after / var_before if var_before > 0.0 else 0.0
    return _lift(
        _estimate(ratio_t + shift_t, adj_se_t, lin_t.size, alpha),
        _estimate(ratio_c + shift_c, adj_se_c, lin_c.size, alpha),
        alpha,
        tolerance,
        cuped=True,
        variance_reduction=float(reduction) if math.isfinite(reduction) else 0.0,
    )


def paired_ratio_difference(
    num_t: np.ndarray,
    den_t: np.ndarray,
    num_c: np.ndarray,
    den_c: np.ndarray,
    alpha: float = 0.05,
) -> Estimate:
    """``R_t - R_c`` of two ratio metrics measured on the same units (the i-th entry of each
    array is the same unit in both arms: a probe item asked of two variants), at a fixed
    horizon.

    The delta method over paired units: the variance is ``var(l_t - l_c, ddof=1) / n`` with
    `linearize`'s values of each arm, so what a unit does in both arms (an item every variant
    gets right) cancels instead of being counted twice as independent arms would count it.
    NaN where either arm's ratio is undefined.
    """
    ratio_t, lin_t, rounding_t = _ratio_parts(num_t, den_t)
    ratio_c, lin_c, rounding_c = _ratio_parts(num_c, den_c)
    if lin_t.size != lin_c.size:
        raise ValueError(f"paired arms need the same units: {lin_t.size} != {lin_c.size}")
    if not (math.isfinite(ratio_t) and math.isfinite(ratio_c)):
        return _estimate(_NAN, _NAN, lin_t.size, alpha)
    se = _unit_se(lin_t - lin_c, max(rounding_t, rounding_c))
    return _estimate(ratio_t - ratio_c, se, lin_t.size, alpha)


# --------------------------------------------------------------------------------------------
# Sample ratio mismatch


def sample_ratio_test(
    counts: Sequence[int], weights: Sequence[float], threshold: float = 0.001
) -> SampleRatio:
    """Chi-square goodness of fit of units per arm against the configured weights.

    Expected counts are ``total * w_i / sum(w)``; ``p_value`` is the chi-square tail with
    ``k - 1`` degrees of freedom. Arms with weight 0 must be left out by the caller (a positive
    count there is a mismatch by construction). No units: chi2 and p_value NaN, no mismatch. One
    arm: chi2 0, p_value 1. The default threshold of 0.001 keeps false alarms rare when the check
    runs on every report refresh.
    """
    c = np.asarray(counts, dtype=np.int64).ravel()
    w = np.asarray(weights, dtype=np.float64).ravel()
    if c.size != w.size or c.size == 0:
        raise ValueError(f"need one weight per arm: {c.size} counts, {w.size} weights")
    if not (np.isfinite(w).all() and (w > 0).all()):
        raise ValueError("weights must be finite and positive (leave weight-0 arms out)")
    if (c < 0).any():
        raise ValueError("counts must be non-negative")
    total = int(c.sum())
    expected = total * w / w.sum()
    if total == 0:
        stat, p = _NAN, _NAN
    elif c.size == 1:
        stat, p = 0.0, 1.0
    else:
        stat = float(np.sum((c - expected) ** 2 / expected))
        p = float(_chi2.sf(stat, c.size - 1))
    return SampleRatio(
        counts=tuple(int(v) for v in c),
        expected=tuple(float(v) for v in expected),
        chi2=stat,
        p_value=p,
        mismatch=bool(p < threshold),
    )


# --------------------------------------------------------------------------------------------
# Sequential testing: mixture SPRT


def _check_tau2(tau2: float) -> None:
    if not (math.isfinite(tau2) and tau2 > 0.0):
        raise ValueError(f"tau2 must be finite and positive, got {tau2}")


def _log_msprt(diff: np.ndarray, variance: np.ndarray, tau2: float) -> np.ndarray:
    """``log Lambda``; at ``V == 0`` its limit (-inf for ``diff == 0``, +inf otherwise)."""
    _check_tau2(tau2)
    d = np.asarray(diff, dtype=np.float64)
    v = np.asarray(variance, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        log_lr = -0.5 * np.log1p(tau2 / v) + tau2 * d * d / (2.0 * v * (v + tau2))
    log_lr = np.where(v == 0.0, np.where(d == 0.0, -np.inf, np.inf), log_lr)
    return np.where((v < 0.0) | np.isnan(v) | np.isnan(d), _NAN, log_lr)


def _scalar_or_array(x: np.ndarray, *inputs: object) -> float | np.ndarray:
    return float(x) if all(np.ndim(i) == 0 for i in inputs) else x


def msprt_likelihood_ratio(
    diff: float | np.ndarray, variance: float | np.ndarray, tau2: float
) -> float | np.ndarray:
    """Normal-mixture mSPRT statistic for ``H0: true difference = 0`` (Johari et al. 2017).

    ``Lambda = sqrt(V / (V + tau2)) * exp(tau2 * diff² / (2 V (V + tau2)))``, the likelihood ratio
    of ``N(theta, V)`` data mixed over ``theta ~ N(0, tau2)`` against ``theta = 0`` (Robbins 1970).
    Under H0 it is a nonnegative martingale over looks, so by Ville's inequality
    ``P(sup_n Lambda_n >= 1/alpha) <= alpha`` however often one peeks. Vectorized (broadcasts);
    ``V == 0`` gives the limit (0 or inf), ``V < 0`` or NaN gives NaN; may overflow to inf.
    """
    with np.errstate(over="ignore"):
        lr = np.exp(_log_msprt(diff, variance, tau2))
    return _scalar_or_array(lr, diff, variance)


def always_valid_p_values(diffs: np.ndarray, variances: np.ndarray, tau2: float) -> np.ndarray:
    """``p_n = min(1, min_{k <= n} 1 / Lambda_k)`` over looks in time order (the last axis).

    Non-increasing along the last axis; ``P(any p_n <= alpha) <= alpha`` under H0 at any number
    of looks (Johari et al. 2017), so it may be watched continuously. A look whose Lambda is NaN
    (no data yet, NaN variance) carries no evidence: it keeps the previous p-value (1 at first).
    Leading axes are independent experiments.
    """
    with np.errstate(over="ignore"):
        p = np.exp(-_log_msprt(diffs, variances, tau2))
    p = np.where(np.isnan(p), 1.0, np.minimum(p, 1.0))
    if p.ndim == 0:
        return p.reshape(1)
    return np.minimum.accumulate(p, axis=-1)


def confidence_sequence(
    diff: float | np.ndarray, variance: float | np.ndarray, tau2: float, alpha: float = 0.05
) -> tuple[float, float] | tuple[np.ndarray, np.ndarray]:
    """The always-valid ``1 - alpha`` interval: all ``theta0`` the mSPRT does not reject.

    ``diff ± sqrt(V (V + tau2) / tau2 * (2 log(1/alpha) + log((V + tau2) / V)))``: exactly the set
    where the mixture ratio of ``diff - theta0`` stays below ``1/alpha``, so it covers the true
    difference at all looks simultaneously with probability ``>= 1 - alpha`` (Johari et al. 2017;
    Howard et al. 2021). Intersect over looks for a running interval. ``V == 0`` gives
    ``(diff, diff)``, ``V < 0`` or NaN gives NaN. Vectorized.
    """
    _check_tau2(tau2)
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    d = np.asarray(diff, dtype=np.float64)
    v = np.asarray(variance, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        half = np.sqrt(v * (v + tau2) / tau2 * (2.0 * math.log(1.0 / alpha) + np.log1p(tau2 / v)))
    half = np.where(v == 0.0, 0.0, half)
    half = np.where((v < 0.0) | np.isnan(v), _NAN, half)
    lo, hi = d - half, d + half
    if np.ndim(diff) == 0 and np.ndim(variance) == 0:
        return float(lo), float(hi)
    return lo, hi


def default_tau2(control_value: float, relative_effect: float = 0.05) -> float:
    """Mixing variance ``(relative_effect * |control_value|)²``, never below `TAU2_FLOOR`.

    The mSPRT is valid for any fixed ``tau2``, but only if ``tau2`` is not chosen by looking at the
    treatment effect: picking the ``tau2`` that gives the smallest p-value is a multiple test.
    This value depends only on the control's level (a nuisance scale, not the effect) and on a
    pre-registered plausible lift of ``relative_effect`` (5% by default), so it is pre-registered
    up to the baseline. Compute it once (pre-period or first-look control value) and keep it fixed
    for every look. A NaN or infinite control value gives the floor.
    """
    if not (math.isfinite(relative_effect) and relative_effect > 0.0):
        raise ValueError(f"relative_effect must be finite and positive, got {relative_effect}")
    if not math.isfinite(control_value):
        return TAU2_FLOOR
    return max((relative_effect * abs(control_value)) ** 2, TAU2_FLOOR)


# --------------------------------------------------------------------------------------------
# Multiple comparisons


def holm(p_values: Sequence[float]) -> np.ndarray:
    """Holm–Bonferroni adjusted p-values (Holm 1979), in the input order.

    ``adj_(i) = max_{j <= i} min(1, (m - j + 1) p_(j))`` over the ``m`` non-NaN p-values sorted
    ascending: each is ``>=`` its raw value, ``<= 1``, and the order of the raw values is kept.
    Rejecting ``adj <= alpha`` controls the family-wise error rate at alpha under any dependence.
    NaN stays NaN and does not count in ``m``.
    """
    p = np.asarray(p_values, dtype=np.float64).ravel()
    present = ~np.isnan(p)
    if ((p[present] < 0.0) | (p[present] > 1.0)).any():
        raise ValueError("p-values must lie in [0, 1]")
    out = np.full(p.size, _NAN)
    m = int(present.sum())
    if m == 0:
        return out
    raw = p[present]
    order = np.argsort(raw, kind="stable")
    adjusted = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * raw[order]))
    values = np.empty(m)
    values[order] = adjusted
    out[present] = values
    return out


# --------------------------------------------------------------------------------------------
# Quantiles: Poisson bootstrap over units


def _poisson1_tables() -> tuple[np.ndarray, np.ndarray]:
    """Poisson(1) by inversion of a 32-bit uniform: thresholds, and a table on its top 16 bits.

    The value of ``r`` is ``#{k : thresholds[k] <= r}``; ``table[r >> 16]`` is that value unless
    the 16-bit slot straddles a threshold (255), a few slots out of 65,536 resolved exactly.
    """
    cdf, term, k, thresholds = 0.0, math.exp(-1.0), 0, []
    while True:
        cdf += term
        t = round(cdf * 2**32)
        if t >= 2**32:
            break
        thresholds.append(t)
        k += 1
        term /= k
    th = np.asarray(thresholds, dtype=np.uint64)
    starts = np.arange(1 << 16, dtype=np.uint64) << np.uint64(16)
    low = np.searchsorted(th, starts, side="right")
    high = np.searchsorted(th, starts + np.uint64(0xFFFF), side="right")
    return th, np.where(low == high, low, 255).astype(np.uint8)


_POISSON1_THRESHOLDS, _POISSON1_TABLE = _poisson1_tables()


def _poisson1(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """Poisson(1) draws (exact to 2^-32 in probability), many times faster than `rng.poisson`."""
    top = rng.integers(0, 1 << 16, size=shape, dtype=np.uint16)
    w = _POISSON1_TABLE[top]
    straddle = np.flatnonzero(w == 255)
    if straddle.size:
        bottom = rng.integers(0, 1 << 16, size=straddle.size, dtype=np.uint64)
        r = (top.ravel()[straddle].astype(np.uint64) << np.uint64(16)) | bottom
        w.ravel()[straddle] = np.searchsorted(_POISSON1_THRESHOLDS, r, side="right")
    return w


def _weighted_positions(
    unit_sorted: np.ndarray,
    counts: np.ndarray,
    q: float,
    k0: int,
    reps: int,
    rng: np.random.Generator,
) -> np.ndarray:
    """Sorted positions of the ``q`` quantile under `reps` Poisson-bootstrap unit weightings.

    A replicate's quantile is the first sorted position whose cumulative weight reaches
    ``max(q * total, 0.5)`` (the inverted CDF; 0.5 skips zero-weight requests at ``q == 0``); -1
    when the replicate has no weight. Cumulative weights are built only in a window around the
    point estimate (the weight below it is one matrix product), sized to about 8 standard
    deviations of the replicate positions; a replicate that falls outside is redone in full.
    """
    n, n_units = unit_sorted.size, counts.size
    below_k0 = np.bincount(unit_sorted[: k0 + 1], minlength=n_units).astype(np.float64)
    spread = math.sqrt(float(np.sum((below_k0 - q * counts) ** 2)))
    half = int(8.0 * spread) + 64
    lo, hi = max(0, k0 - half), min(n, k0 + half + 1)
    below = np.bincount(unit_sorted[:lo], minlength=n_units).astype(np.float64)
    moments = np.stack([counts.astype(np.float64), below], axis=1)
    window = unit_sorted[lo:hi]

    positions = np.full(reps, -1, dtype=np.int64)
    chunk = max(1, min(reps, 4_000_000 // max(n_units, 1)))
    for start in range(0, reps, chunk):
        size = min(chunk, reps - start)
        weights = _poisson1(rng, (size, n_units)).astype(np.float64)
        total, base = (weights @ moments).T
        target = np.maximum(q * total, 0.5)
        cumulative = base[:, None] + np.cumsum(weights[:, window], axis=1)
        reached = cumulative >= target[:, None]
        inside = reached[:, -1] & (base < target)
        found = np.where(inside, lo + np.argmax(reached, axis=1), -1)
        for row in np.flatnonzero(~inside & (total > 0)):
            full = np.cumsum(weights[row, unit_sorted])
            found[row] = int(np.searchsorted(full, target[row], side="left"))
        positions[start : start + size] = found
    return positions


def _quantile_bootstrap(
    values: np.ndarray, units: np.ndarray, q: float, reps: int, rng: np.random.Generator
) -> tuple[float, np.ndarray, int]:
    """Point quantile, bootstrap replicates (NaN where a replicate has no weight), unit count."""
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"q must be in [0, 1], got {q}")
    if reps < 2:
        raise ValueError(f"reps must be at least 2, got {reps}")
    values = np.asarray(values, dtype=np.float64).ravel()
    units = np.asarray(units).ravel()
    if values.size != units.size:
        raise ValueError(f"one unit per value: {values.size} values, {units.size} units")
    keep = ~np.isnan(values)
    values, units = values[keep], units[keep]
    if values.size == 0:
        return _NAN, np.full(reps, _NAN), 0
    _, unit_index = np.unique(units, return_inverse=True)
    unit_index = unit_index.ravel()
    counts = np.bincount(unit_index)
    order = np.argsort(values, kind="stable")
    sorted_values = values[order]
    k0 = min(values.size, math.ceil(max(q * values.size, 0.5))) - 1
    positions = _weighted_positions(unit_index[order], counts, q, k0, reps, rng)
    replicates = np.where(positions >= 0, sorted_values[np.maximum(positions, 0)], _NAN)
    return float(sorted_values[k0]), replicates, int(counts.size)


def _bootstrap_se(replicates: np.ndarray, n_units: int) -> float:
    valid = replicates[~np.isnan(replicates)]
    if n_units < 2 or valid.size < 2:
        return _NAN
    return float(np.std(valid, ddof=1))


def quantile_estimate(
    values: np.ndarray,
    units: np.ndarray,
    q: float,
    alpha: float = 0.05,
    reps: int = 200,
    seed: int = 0,
) -> Estimate:
    """The ``q`` quantile of per-request `values`, with a Poisson bootstrap SE over `units`.

    The point estimate is the inverted-CDF sample quantile (the smallest value with at least a
    fraction ``q`` of requests at or below it). Each replicate gives every unit one Poisson(1)
    weight shared by all its requests (Chamandy et al. 2012), so within-unit correlation is kept;
    ``se`` is the replicates' standard deviation and ``ci`` the normal interval (steadier than
    percentile bounds with a few hundred replicates). `units` are any sortable ids, one per value.
    NaN values are dropped. No values: NaN estimate. One unit: finite value, NaN se (the bootstrap
    cannot see between-unit variation). Deterministic for a given `seed`; about a second for
    1,000,000 requests over 100,000 units.
    """
    value, replicates, n_units = _quantile_bootstrap(
        values, units, q, reps, np.random.default_rng(seed)
    )
    return _estimate(value, _bootstrap_se(replicates, n_units), n_units, alpha)


def compare_quantile(
    values_t: np.ndarray,
    units_t: np.ndarray,
    values_c: np.ndarray,
    units_c: np.ndarray,
    q: float,
    alpha: float = 0.05,
    reps: int = 200,
    seed: int = 0,
) -> Lift:
    """Compare the ``q`` quantile of per-request values between arms, bootstrapped over units.

    Each arm is `quantile_estimate` with its own independent random stream (derived from `seed`);
    the lifts and the z-test p-value follow from the two standard errors as in `compare_ratio`.
    """
    _z(alpha)
    rng_c, rng_t = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(2))
    value_t, reps_t, n_t = _quantile_bootstrap(values_t, units_t, q, reps, rng_t)
    value_c, reps_c, n_c = _quantile_bootstrap(values_c, units_c, q, reps, rng_c)
    treatment = _estimate(value_t, _bootstrap_se(reps_t, n_t), n_t, alpha)
    control = _estimate(value_c, _bootstrap_se(reps_c, n_c), n_c, alpha)
    return _lift(treatment, control, alpha, tolerance=0.0)
