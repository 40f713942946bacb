"""Statistics core: honest error rates when the randomization unit has many requests.

Simulations have fixed seeds, so each test either always passes or always fails. Their
thresholds sit a few Monte Carlo standard errors from the long-run rates measured with many more
runs (A/A flag rate ≈ 4.9% over 20,000 runs, quantile coverage ≈ 94.5% over 3,000), so they fail
for a broken method, not for an unlucky seed. Data are simulated as numpy arrays over runs; the
functions under test are then called once per simulated experiment, as the report would.

The clustered A/A world: each unit has an activity ``lambda_u ~ Exponential(mean 5)`` (requests
``~ Poisson(lambda_u)``, so some units have none) and a rate ``p_u ~ 0.8 * U²`` with ``U`` uniform
(mean 0.8 / 3); its successes are ``Binomial(requests, p_u)``. Requests of a unit are strongly
correlated (intra-unit correlation ≈ 0.29), so a per-request variance is far too small.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from scipy.stats import chisquare, poisson

from router.analysis import stats
from router.analysis.stats import (
    TAU2_FLOOR,
    Estimate,
    Lift,
    always_valid_p_values,
    compare_quantile,
    compare_ratio,
    confidence_sequence,
    default_tau2,
    holm,
    linearize,
    msprt_likelihood_ratio,
    quantile_estimate,
    ratio_estimate,
    sample_ratio_test,
)

ALPHA = 0.05
RATE_SCALE = 0.8  # p_u = RATE_SCALE * U²: room for a 20% lift below 1
MEAN_RATE = RATE_SCALE / 3


@dataclass
class Arms:
    """Per-unit sums of `runs` simulated experiments (rows), with a pre-period for CUPED."""

    num_t: np.ndarray
    den_t: np.ndarray
    num_c: np.ndarray
    den_c: np.ndarray
    pre_num_t: np.ndarray
    pre_den_t: np.ndarray
    pre_num_c: np.ndarray
    pre_den_c: np.ndarray


def simulate(seed: int, runs: int, units: int, lift: float = 1.0) -> Arms:
    """`runs` experiments of `units` units per arm, clustered; treatment rates times `lift`."""
    rng = np.random.default_rng(seed)

    def arm(multiplier: float) -> tuple[np.ndarray, ...]:
        activity = rng.exponential(5.0, (runs, units))
        rate = RATE_SCALE * rng.random((runs, units)) ** 2
        den = rng.poisson(activity)
        num = rng.binomial(den, rate * multiplier)
        pre_den = rng.poisson(activity)
        pre_num = rng.binomial(pre_den, rate)
        return num, den, pre_num, pre_den

    num_t, den_t, pre_num_t, pre_den_t = arm(lift)
    num_c, den_c, pre_num_c, pre_den_c = arm(1.0)
    return Arms(num_t, den_t, num_c, den_c, pre_num_t, pre_den_t, pre_num_c, pre_den_c)


def pre_period_covariate(arms: Arms, seed: int, new_share: float = 0.2) -> tuple[np.ndarray, ...]:
    """Pre-period linearized successes, with one pre-period ratio pooled over both arms.

    The covariate is computed identically for every unit whatever its arm; a share of units is
    new (no pre-period, NaN).
    """
    pooled = (arms.pre_num_t.sum(1) + arms.pre_num_c.sum(1)) / (
        arms.pre_den_t.sum(1) + arms.pre_den_c.sum(1)
    )
    x_t = arms.pre_num_t - pooled[:, None] * arms.pre_den_t
    x_c = arms.pre_num_c - pooled[:, None] * arms.pre_den_c
    rng = np.random.default_rng(seed)
    x_t = np.where(rng.random(x_t.shape) < new_share, np.nan, x_t)
    x_c = np.where(rng.random(x_c.shape) < new_share, np.nan, x_c)
    return x_t, x_c


def compare_runs(arms: Arms, covariates: tuple[np.ndarray, np.ndarray] | None = None) -> list[Lift]:
    lifts = []
    for i in range(arms.num_t.shape[0]):
        cov_t, cov_c = (None, None) if covariates is None else (covariates[0][i], covariates[1][i])
        lifts.append(
            compare_ratio(
                arms.num_t[i],
                arms.den_t[i],
                arms.num_c[i],
                arms.den_c[i],
                ALPHA,
                covariate_t=cov_t,
                covariate_c=cov_c,
            )
        )
    return lifts


def covers(estimates: list[Estimate], truth: float) -> np.ndarray:
    return np.array([e.ci[0] <= truth <= e.ci[1] for e in estimates])


# --------------------------------------------------------------------------------------------
# Ratio estimate and the delta method


def test_ratio_with_unit_denominators_is_the_mean_and_its_standard_error() -> None:
    y = np.array([1.0, 3.0, 2.0, 6.0])
    est = ratio_estimate(y, np.ones(4), alpha=0.1)
    assert est.value == pytest.approx(3.0)
    assert est.se == pytest.approx(np.std(y, ddof=1) / 2.0)
    z = 1.6448536269514722
    assert est.ci == pytest.approx((3.0 - z * est.se, 3.0 + z * est.se))
    assert est.n_units == 4


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 50), st.integers(0, 50)),
        min_size=2,
        max_size=40,
    )
)
def test_linearized_variance_is_the_delta_method_variance(pairs: list[tuple[int, int]]) -> None:
    num = np.array([p[0] for p in pairs], dtype=float)
    den = np.array([p[1] for p in pairs], dtype=float)
    assume(den.sum() > 0)
    n = num.size
    mx, my = den.mean(), num.mean()
    ratio = my / mx
    s_xx, s_yy = np.var(den, ddof=1), np.var(num, ddof=1)
    s_xy = np.cov(num, den, ddof=1)[0, 1]
    # Deng et al. 2018, eq. for Var(ybar / xbar) by the delta method.
    delta = (s_yy / mx**2 - 2 * my * s_xy / mx**3 + my**2 * s_xx / mx**4) / n
    lin = linearize(num, den)
    assert abs(lin.mean()) <= 1e-9 * (1 + np.abs(lin).max())
    assert np.var(lin, ddof=1) / n == pytest.approx(delta, rel=1e-9, abs=1e-12)
    est = ratio_estimate(num, den)
    assert est.value == pytest.approx(ratio)
    assert est.se**2 == pytest.approx(max(delta, 0.0), rel=1e-9, abs=1e-12)
    assert est.n_units == n  # units with den == 0 count too


def test_zero_denominator_units_count_in_n_and_variance() -> None:
    num, den = np.array([2.0, 4.0, 3.0]), np.array([1.0, 2.0, 0.0])
    est = ratio_estimate(num, den)
    assert est.value == pytest.approx(3.0)
    assert est.n_units == 3
    # without the third unit (num 3 on den 0) the spread would be 0
    assert est.se > 0
    assert linearize(num, den)[2] == pytest.approx(3.0 / 1.0)


# --------------------------------------------------------------------------------------------
# A/A: type I error and coverage with clustered requests


@pytest.fixture(scope="module")
def aa_arms() -> Arms:
    return simulate(seed=20240611, runs=2000, units=2000)


def test_aa_flags_at_most_six_percent_and_covers_zero(aa_arms: Arms) -> None:
    lifts = compare_runs(aa_arms)
    p = np.array([lift.p_value for lift in lifts])
    flag_rate = float(np.mean(p < ALPHA))
    coverage = float(np.mean(covers([lift.absolute for lift in lifts], 0.0)))
    assert flag_rate <= 0.06
    assert flag_rate >= 0.04  # not conservative either: the SE is not inflated
    assert 0.94 <= coverage <= 0.96
    assert not any(lift.cuped for lift in lifts)


def test_naive_per_request_test_over_flags_the_same_clustered_data(aa_arms: Arms) -> None:
    # Control for the test above: treating requests as independent Bernoulli trials.
    n_t, n_c = aa_arms.den_t.sum(1), aa_arms.den_c.sum(1)
    p_t, p_c = aa_arms.num_t.sum(1) / n_t, aa_arms.num_c.sum(1) / n_c
    z = (p_t - p_c) / np.sqrt(p_t * (1 - p_t) / n_t + p_c * (1 - p_c) / n_c)
    naive_rate = float(np.mean(np.abs(z) > 1.959963984540054))
    assert naive_rate > 0.2  # measured ≈ 0.34 against ≈ 0.05 for the unit-level test


# --------------------------------------------------------------------------------------------
# Power and relative lift


def test_true_lift_is_detected_and_relative_ci_covers_it() -> None:
    arms = simulate(seed=7, runs=1000, units=2000, lift=1.2)
    lifts = compare_runs(arms)
    power = np.mean([lift.p_value < ALPHA and lift.absolute.value > 0 for lift in lifts])
    assert power >= 0.85
    relative_coverage = covers([lift.relative for lift in lifts], 0.2).mean()
    assert 0.93 <= relative_coverage <= 0.97
    truth_abs = 0.2 * MEAN_RATE
    assert covers([lift.absolute for lift in lifts], truth_abs).mean() >= 0.93
    rel = np.array([lift.relative.value for lift in lifts])
    assert abs(rel.mean() - 0.2) < 4 * rel.std() / math.sqrt(rel.size) + 0.005


# --------------------------------------------------------------------------------------------
# CUPED


def test_cuped_with_correlated_covariate_reduces_variance_and_stays_unbiased(
    aa_arms: Arms,
) -> None:
    lifts = compare_runs(aa_arms, pre_period_covariate(aa_arms, seed=1))
    assert all(lift.cuped for lift in lifts)
    reduction = np.array([lift.variance_reduction for lift in lifts])
    assert reduction.min() > 0.3  # measured: mean ≈ 0.44, smallest ≈ 0.34
    diffs = np.array([lift.absolute.value for lift in lifts])
    assert abs(diffs.mean()) < 4 * diffs.std() / math.sqrt(diffs.size)
    assert np.mean([lift.p_value < ALPHA for lift in lifts]) <= 0.06
    # the reported variance is the true one: the adjusted estimates really are that much tighter
    plain = np.array([lift.absolute.value for lift in compare_runs(aa_arms)])
    observed = 1 - diffs.var() / plain.var()
    assert observed == pytest.approx(reduction.mean(), abs=0.06)


def test_cuped_is_unbiased_under_a_true_effect() -> None:
    arms = simulate(seed=11, runs=1000, units=2000, lift=1.2)
    lifts = compare_runs(arms, pre_period_covariate(arms, seed=2))
    truth = 0.2 * MEAN_RATE
    diffs = np.array([lift.absolute.value for lift in lifts])
    assert abs(diffs.mean() - truth) < 4 * diffs.std() / math.sqrt(diffs.size)
    assert covers([lift.absolute for lift in lifts], truth).mean() >= 0.93
    assert np.mean([lift.variance_reduction for lift in lifts]) > 0.3


def test_cuped_with_independent_covariate_changes_nothing(aa_arms: Arms) -> None:
    rng = np.random.default_rng(3)
    noise = (rng.normal(size=aa_arms.num_t.shape), rng.normal(size=aa_arms.num_c.shape))
    lifts = compare_runs(aa_arms, noise)
    reduction = np.array([lift.variance_reduction for lift in lifts])
    assert all(lift.cuped for lift in lifts)
    assert abs(reduction.mean()) < 0.005
    assert np.abs(reduction).max() < 0.02
    assert np.mean([lift.p_value < ALPHA for lift in lifts]) <= 0.06


def test_cuped_falls_back_without_a_usable_covariate() -> None:
    rng = np.random.default_rng(5)
    num_t, den_t = rng.poisson(3, 100).astype(float), rng.poisson(6, 100).astype(float) + 1
    num_c, den_c = rng.poisson(3, 80).astype(float), rng.poisson(6, 80).astype(float) + 1
    plain = compare_ratio(num_t, den_t, num_c, den_c)
    for cov_t, cov_c in [
        (np.full(100, 2.5), np.full(80, 2.5)),  # zero variance
        (np.full(100, np.nan), np.full(80, np.nan)),  # no unit has a pre-period
        (np.full(100, 0.1), np.full(80, 0.1)),  # zero variance, not exact in binary
        (rng.normal(size=100), None),  # only one arm has one
    ]:
        lift = compare_ratio(num_t, den_t, num_c, den_c, covariate_t=cov_t, covariate_c=cov_c)
        assert not lift.cuped
        assert lift.variance_reduction == 0.0
        assert lift == plain
    with pytest.raises(ValueError):
        compare_ratio(num_t, den_t, num_c, den_c, covariate_t=np.ones(3), covariate_c=np.ones(80))


def test_missing_covariates_are_imputed_with_the_pooled_mean() -> None:
    rng = np.random.default_rng(6)
    num_t, den_t = rng.poisson(3, 50).astype(float), np.full(50, 4.0)
    num_c, den_c = rng.poisson(3, 60).astype(float), np.full(60, 4.0)
    x_t, x_c = num_t + rng.normal(size=50), num_c + rng.normal(size=60)
    x_t[:5] = np.nan
    mean = np.nanmean(np.concatenate([x_t, x_c]))
    filled = compare_ratio(
        num_t, den_t, num_c, den_c, covariate_t=np.nan_to_num(x_t, nan=mean), covariate_c=x_c
    )
    assert compare_ratio(num_t, den_t, num_c, den_c, covariate_t=x_t, covariate_c=x_c) == filled


# --------------------------------------------------------------------------------------------
# Sample ratio mismatch


def test_srm_matches_scipy_chisquare() -> None:
    result = sample_ratio_test([980, 1010, 2100], [1, 1, 2])
    expected = np.array([1, 1, 2]) * 4090 / 4
    reference = chisquare([980, 1010, 2100], expected)
    assert result.expected == pytest.approx(tuple(expected))
    assert result.chi2 == pytest.approx(reference.statistic)
    assert result.p_value == pytest.approx(reference.pvalue)
    assert result.mismatch == (reference.pvalue < 0.001)
    assert result.counts == (980, 1010, 2100)


def test_srm_trips_on_a_50_52_split() -> None:
    exact = sample_ratio_test([49_020, 50_980], [50, 50])
    assert exact.mismatch
    assert exact.p_value < 1e-6
    counts = np.random.default_rng(8).binomial(100_000, 52 / 102, size=1000)
    trips = [sample_ratio_test([100_000 - c, c], [0.5, 0.5]).mismatch for c in counts]
    assert np.mean(trips) >= 0.98  # z ≈ 6.2 against a threshold of 3.3


def test_srm_rarely_flags_a_correct_split() -> None:
    counts = np.random.default_rng(9).binomial(100_000, 0.5, size=1000)
    flags = [sample_ratio_test([100_000 - c, c], [50, 50]).mismatch for c in counts]
    assert np.mean(flags) <= 0.005
    # vectorized reference for the same draws
    chi2 = (2 * counts - 100_000) ** 2 / 100_000
    assert np.sum(chi2 > 10.827566170662733) == sum(flags)


@pytest.mark.filterwarnings("error")
def test_srm_degenerate_inputs() -> None:
    empty = sample_ratio_test([0, 0], [1, 1])
    assert math.isnan(empty.chi2) and math.isnan(empty.p_value) and not empty.mismatch
    one = sample_ratio_test([10], [1])
    assert one.chi2 == 0.0 and one.p_value == 1.0 and not one.mismatch
    for counts, weights in [([1, 2], [1, 0]), ([1, 2], [1]), ([1, -2], [1, 1]), ([], [])]:
        with pytest.raises(ValueError):
            sample_ratio_test(counts, weights)


# --------------------------------------------------------------------------------------------
# Sequential testing


def daily_looks(seed: int, effect: float, runs: int = 1000, days: int = 30, per_day: int = 100):
    """Cumulative difference of means and its variance after each day, for `runs` experiments.

    Units are exponential(1) outcomes (skewed), `per_day` new units per arm per day.
    """
    rng = np.random.default_rng(seed)
    seen = per_day * np.arange(1, days + 1)
    moments = []
    for shift in (effect, 0.0):
        y = rng.exponential(1.0, (runs, days, per_day)) + shift
        total = np.cumsum(y.sum(2), axis=1)
        squares = np.cumsum((y * y).sum(2), axis=1)
        mean = total / seen
        var = (squares - seen * mean**2) / (seen - 1)
        moments.append((mean, var / seen))
    (mean_t, var_t), (mean_c, var_c) = moments
    return mean_t - mean_c, var_t + var_c


def test_msprt_matches_its_formula_and_its_limits() -> None:
    v, tau2, d = 0.01, 0.04, 0.25
    expected = math.sqrt(v / (v + tau2)) * math.exp(tau2 * d * d / (2 * v * (v + tau2)))
    assert msprt_likelihood_ratio(d, v, tau2) == pytest.approx(expected)
    assert isinstance(msprt_likelihood_ratio(d, v, tau2), float)
    arr = msprt_likelihood_ratio(np.array([0.0, d]), np.array([v, v]), tau2)
    assert arr == pytest.approx([math.sqrt(v / (v + tau2)), expected])
    assert msprt_likelihood_ratio(0.0, 0.0, tau2) == 0.0
    assert msprt_likelihood_ratio(0.1, 0.0, tau2) == math.inf
    assert math.isnan(msprt_likelihood_ratio(0.1, math.nan, tau2))
    assert msprt_likelihood_ratio(50.0, 1e-6, 1.0) == math.inf  # overflow, no warning or error
    with pytest.raises(ValueError):
        msprt_likelihood_ratio(0.1, 0.01, 0.0)


@settings(max_examples=200, deadline=None)
@given(
    st.floats(-10, 10),
    st.floats(1e-6, 10),
    st.floats(1e-6, 10),
    st.sampled_from([0.01, 0.05, 0.2]),
)
def test_confidence_sequence_inverts_the_msprt(
    diff: float, variance: float, tau2: float, alpha: float
) -> None:
    lo, hi = confidence_sequence(diff, variance, tau2, alpha)
    assert lo <= diff <= hi
    assert hi - diff == pytest.approx(diff - lo)
    # at either end the mixture ratio of (diff - theta0) is exactly 1/alpha
    for end in (lo, hi):
        lam = msprt_likelihood_ratio(diff - end, variance, tau2)
        assert math.log(lam) == pytest.approx(math.log(1 / alpha), rel=1e-6, abs=1e-9)
    assert confidence_sequence(diff, 0.0, tau2) == (diff, diff)


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.tuples(st.floats(-1, 1), st.one_of(st.floats(1e-4, 1), st.just(math.nan))),
        min_size=1,
        max_size=30,
    ),
    st.floats(1e-4, 1),
)
def test_always_valid_p_values_are_the_running_minimum(looks, tau2: float) -> None:
    diffs = np.array([d for d, _ in looks])
    variances = np.array([v for _, v in looks])
    p = always_valid_p_values(diffs, variances, tau2)
    assert p.shape == diffs.shape
    assert np.all((p >= 0) & (p <= 1))
    assert np.all(np.diff(p) <= 0)
    expected, running = [], 1.0
    for d, v in looks:
        if not math.isnan(v):
            running = min(running, 1 / msprt_likelihood_ratio(d, v, tau2))
        expected.append(running)
    assert p == pytest.approx(expected, rel=1e-9)


def test_peeking_is_safe_with_always_valid_p_values_and_not_with_z_tests() -> None:
    diffs, variances = daily_looks(seed=12, effect=0.0)
    tau2 = default_tau2(1.0)  # pre-registered: 5% of the known control mean
    p = always_valid_p_values(diffs, variances, tau2)
    ever_rejected = float(np.mean(p[:, -1] < ALPHA))
    assert ever_rejected <= ALPHA  # measured ≈ 0.005 over 30 looks
    lo, hi = confidence_sequence(diffs, variances, tau2, ALPHA)
    covered_at_all_looks = float(np.mean(np.all((lo <= 0) & (hi >= 0), axis=1)))
    assert covered_at_all_looks >= 0.95
    z = diffs / np.sqrt(variances)
    peeking = float(np.mean(np.any(np.abs(z) > 1.959963984540054, axis=1)))
    assert peeking > 2 * ALPHA  # measured ≈ 0.30
    final_look_only = float(np.mean(np.abs(z[:, -1]) > 1.959963984540054))
    assert final_look_only <= 0.065  # the z-test itself is fine at one pre-set horizon


def test_always_valid_p_value_detects_a_real_effect() -> None:
    diffs, variances = daily_looks(seed=13, effect=0.15)
    tau2 = default_tau2(1.0)
    p = always_valid_p_values(diffs, variances, tau2)
    assert np.mean(p[:, -1] < ALPHA) >= 0.95
    lo, hi = confidence_sequence(diffs, variances, tau2)
    assert np.mean(np.all((lo <= 0.15) & (hi >= 0.15), axis=1)) >= 0.95


def test_default_tau2() -> None:
    assert default_tau2(2.0) == pytest.approx(0.01)
    assert default_tau2(-2.0, relative_effect=0.1) == pytest.approx(0.04)
    assert default_tau2(0.0) == TAU2_FLOOR
    assert default_tau2(math.nan) == TAU2_FLOOR
    with pytest.raises(ValueError):
        default_tau2(1.0, relative_effect=0.0)


# --------------------------------------------------------------------------------------------
# Holm


@pytest.mark.parametrize(
    ("raw", "adjusted"),
    [
        ([0.01, 0.04, 0.03, 0.005], [0.03, 0.06, 0.06, 0.02]),
        ([0.01, math.nan, 0.04], [0.02, math.nan, 0.04]),
        ([0.5, 0.6], [1.0, 1.0]),
        ([0.02, 0.02, 0.5], [0.06, 0.06, 0.5]),
        ([0.3], [0.3]),
        ([], []),
        ([math.nan, math.nan], [math.nan, math.nan]),
    ],
)
def test_holm_table(raw: list[float], adjusted: list[float]) -> None:
    assert holm(raw) == pytest.approx(adjusted, nan_ok=True)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(st.floats(0, 1), st.just(math.nan)), max_size=20))
def test_holm_properties(raw: list[float]) -> None:
    p = np.array(raw, dtype=float)
    adj = holm(raw)
    present = ~np.isnan(p)
    assert np.array_equal(np.isnan(adj), ~present)
    a, r = adj[present], p[present]
    assert np.all(a >= r) and np.all(a <= 1)
    order = np.argsort(r, kind="stable")
    assert np.all(np.diff(a[order]) >= 0)
    # rejecting adj <= alpha is Holm's step-down procedure at every alpha
    for alpha in (0.01, 0.05, 0.2):
        rejected = np.zeros(r.size, dtype=bool)
        for k, i in enumerate(order):
            if r[i] > alpha / (r.size - k):
                break
            rejected[i] = True
        assert np.array_equal(a <= alpha, rejected)


# --------------------------------------------------------------------------------------------
# Quantiles: Poisson bootstrap over units


def clustered_latencies(rng: np.random.Generator, units: int) -> tuple[np.ndarray, np.ndarray]:
    """Log-latency = unit effect N(0, 0.5²) + request noise N(0, 0.5²); 1 + Poisson(4) requests."""
    requests = 1 + rng.poisson(4, units)
    unit = np.repeat(np.arange(units), requests)
    effect = rng.normal(0.0, 0.5, units)
    return np.exp(effect[unit] + rng.normal(0.0, 0.5, unit.size)), unit


TRUE_P90 = math.exp(1.2815515655446004 * math.sqrt(0.5))


def test_quantile_ci_covers_the_truth_and_the_per_request_one_does_not() -> None:
    rng = np.random.default_rng(14)
    by_unit, by_request = [], []
    for run in range(200):
        values, unit = clustered_latencies(rng, 300)
        by_unit.append(quantile_estimate(values, unit, 0.9, seed=run))
        by_request.append(quantile_estimate(values, np.arange(values.size), 0.9, seed=run))
    coverage = covers(by_unit, TRUE_P90).mean()
    naive = covers(by_request, TRUE_P90).mean()
    assert coverage >= 0.9  # measured ≈ 0.945 over 3,000 runs
    assert naive <= 0.85  # resampling requests ignores the unit effect: ≈ 0.75
    # the bootstrap SE is the spread of the estimate across runs
    values = np.array([e.value for e in by_unit])
    ses = np.array([e.se for e in by_unit])
    assert ses.mean() == pytest.approx(values.std(), rel=0.2)


def brute_force_replicates(values, unit, q, weights):
    """Reference: the full cumulative weight of every replicate, inverted at q."""
    _, index = np.unique(unit, return_inverse=True)
    order = np.argsort(values, kind="stable")
    cumulative = np.cumsum(weights[:, index[order]], axis=1)
    target = np.maximum(q * cumulative[:, -1], 0.5)
    out = np.full(weights.shape[0], np.nan)
    for r in range(weights.shape[0]):
        if cumulative[r, -1] > 0:
            out[r] = values[order][np.searchsorted(cumulative[r], target[r], side="left")]
    return out


@pytest.mark.parametrize("q", [0.0, 0.01, 0.5, 0.9, 0.999, 1.0])
@pytest.mark.parametrize("units", [3, 40, 400])
def test_quantile_bootstrap_matches_brute_force(q: float, units: int) -> None:
    rng = np.random.default_rng(units)
    values, unit = clustered_latencies(rng, units)
    values = np.round(values, 1)  # ties
    point, replicates, n_units = stats._quantile_bootstrap(
        values, unit, q, 64, np.random.default_rng(0)
    )
    weights = stats._poisson1(np.random.default_rng(0), (64, units)).astype(float)
    assert replicates == pytest.approx(
        brute_force_replicates(values, unit, q, weights), nan_ok=True
    )
    assert point == np.quantile(values, q, method="inverted_cdf")
    assert n_units == units


def test_quantile_bootstrap_window_is_only_a_hint() -> None:
    # A window centred on the wrong position forces every replicate through the full fallback.
    rng = np.random.default_rng(15)
    values, unit = clustered_latencies(rng, 200)
    order = np.argsort(values, kind="stable")
    counts = np.bincount(unit)
    positions = stats._weighted_positions(unit[order], counts, 0.9, 0, 32, np.random.default_rng(1))
    weights = stats._poisson1(np.random.default_rng(1), (32, 200)).astype(float)
    expected = brute_force_replicates(values, unit, 0.9, weights)
    assert values[order][positions] == pytest.approx(expected)


def test_poisson_weights_are_poisson_one() -> None:
    w = stats._poisson1(np.random.default_rng(16), (1000, 1000)).ravel()
    observed = np.bincount(w, minlength=8)[:8].astype(float)
    observed[-1] += np.sum(w >= 8)
    expected = poisson.pmf(np.arange(8), 1.0) * w.size
    expected[-1] = poisson.sf(6, 1.0) * w.size
    assert chisquare(observed, expected).pvalue > 1e-3
    assert w.mean() == pytest.approx(1.0, abs=0.005)
    assert w.var() == pytest.approx(1.0, abs=0.01)


def test_quantile_of_a_million_requests_is_fast() -> None:
    rng = np.random.default_rng(17)
    unit = rng.integers(0, 100_000, 1_000_000)
    effect = rng.normal(0.0, 0.5, 100_000)
    values = np.exp(effect[unit] + rng.normal(0.0, 1.0, unit.size))
    start = time.perf_counter()
    est = quantile_estimate(values, unit, 0.99)
    elapsed = time.perf_counter() - start
    assert elapsed < 10.0  # ≈ 0.5 s here; a sanity bound, not a benchmark
    assert est.value == np.quantile(values, 0.99, method="inverted_cdf")
    assert 0 < est.se < 0.05 * est.value
    assert est.n_units == np.unique(unit).size


def test_compare_quantile_detects_a_slowdown_and_holds_in_a_a() -> None:
    rng = np.random.default_rng(18)
    values_c, unit_c = clustered_latencies(rng, 3000)
    values_t, unit_t = clustered_latencies(rng, 3000)
    same = compare_quantile(values_t, unit_t, values_c, unit_c, 0.5)
    slower = compare_quantile(values_t * 1.15, unit_t, values_c, unit_c, 0.5)
    assert same.p_value > ALPHA
    assert slower.p_value < 1e-4
    assert slower.relative.ci[0] <= 0.15 <= slower.relative.ci[1]
    assert slower.absolute.n_units == 6000
    assert not slower.cuped and slower.variance_reduction == 0.0
    # arms get independent streams: swapping the arms changes the draws, not the conclusion
    assert compare_quantile(values_c, unit_c, values_t * 1.15, unit_t, 0.5).p_value < 1e-4


# --------------------------------------------------------------------------------------------
# Edge cases: NaN or finite values, never exceptions (nor numpy warnings: they are errors here)


def is_nan_estimate(e: Estimate) -> bool:
    return math.isnan(e.value) and math.isnan(e.se) and all(math.isnan(x) for x in e.ci)


@pytest.mark.filterwarnings("error")
def test_ratio_edge_cases() -> None:
    empty = ratio_estimate(np.array([]), np.array([]))
    assert is_nan_estimate(empty) and empty.n_units == 0
    assert linearize(np.array([]), np.array([])).size == 0
    zeros = ratio_estimate(np.array([1.0, 2.0]), np.zeros(2))
    assert is_nan_estimate(zeros) and zeros.n_units == 2
    assert np.isnan(linearize(np.array([1.0, 2.0]), np.zeros(2))).all()
    single = ratio_estimate(np.array([3.0]), np.array([4.0]))
    assert single.value == 0.75 and math.isnan(single.se) and single.n_units == 1
    flat = ratio_estimate(np.full(7, 1.0), np.full(7, 3.0))
    assert flat.value == pytest.approx(1 / 3) and flat.se == 0.0
    assert flat.ci == (flat.value, flat.value)
    with pytest.raises(ValueError):
        ratio_estimate(np.ones(3), np.ones(2))


@pytest.mark.filterwarnings("error")
def test_compare_ratio_edge_cases() -> None:
    some = (np.array([1.0, 2.0, 0.0]), np.array([2.0, 2.0, 1.0]))
    empty = compare_ratio(np.array([]), np.array([]), *some)
    assert is_nan_estimate(empty.treatment) and is_nan_estimate(empty.absolute)
    assert math.isnan(empty.p_value) and not empty.cuped
    zero_den = compare_ratio(*some, np.array([1.0]), np.array([0.0]))
    assert is_nan_estimate(zero_den.control) and math.isnan(zero_den.p_value)
    zero_control = compare_ratio(*some, np.zeros(4), np.ones(4))
    assert zero_control.control.value == 0.0 and zero_control.control.se == 0.0
    assert is_nan_estimate(zero_control.relative)
    assert zero_control.p_value < 1  # treatment is not 0
    # constant arms: the difference is exact
    same = compare_ratio(np.full(5, 1.0), np.full(5, 3.0), np.full(9, 2.0), np.full(9, 6.0))
    assert same.absolute.se == 0.0 and same.p_value == 1.0
    apart = compare_ratio(np.full(5, 2.0), np.full(5, 3.0), np.full(9, 1.0), np.full(9, 3.0))
    assert apart.absolute.value == pytest.approx(1 / 3) and apart.p_value == 0.0
    single = compare_ratio(np.array([1.0]), np.array([2.0]), np.array([1.0]), np.array([4.0]))
    assert single.absolute.value == 0.25 and math.isnan(single.absolute.se)
    assert math.isnan(single.p_value)
    compare_ratio(np.array([]), np.array([]), np.array([]), np.array([]))


@pytest.mark.filterwarnings("error")
def test_quantile_edge_cases() -> None:
    empty = quantile_estimate(np.array([]), np.array([]), 0.5)
    assert is_nan_estimate(empty) and empty.n_units == 0
    single = quantile_estimate(np.array([1.0, 5.0, 3.0]), np.array([7, 7, 7]), 0.5)
    assert single.value == 3.0 and math.isnan(single.se) and single.n_units == 1
    flat = quantile_estimate(np.full(50, 2.0), np.arange(50) % 10, 0.9)
    assert flat.value == 2.0 and flat.se == 0.0 and flat.ci == (2.0, 2.0)
    with_nan = quantile_estimate(np.array([np.nan, 1.0, 2.0]), np.array(["a", "b", "c"]), 1.0)
    assert with_nan.value == 2.0 and with_nan.n_units == 2
    lift = compare_quantile(np.array([]), np.array([]), np.array([1.0, 2.0]), np.array([0, 1]), 0.5)
    assert is_nan_estimate(lift.absolute) and math.isnan(lift.p_value)
    for bad in [dict(q=1.5), dict(q=0.5, reps=1)]:
        with pytest.raises(ValueError):
            quantile_estimate(np.ones(3), np.arange(3), **bad)


@pytest.mark.filterwarnings("error")
def test_sequential_edge_cases() -> None:
    p = always_valid_p_values(np.array([]), np.array([]), 0.1)
    assert p.size == 0
    p = always_valid_p_values(np.array([0.3, 0.3]), np.array([np.nan, 0.0]), 0.1)
    assert list(p) == [1.0, 0.0]
    lo, hi = confidence_sequence(np.array([0.1, 0.2]), np.array([np.nan, -1.0]), 0.1)
    assert np.isnan(lo).all() and np.isnan(hi).all()
    with pytest.raises(ValueError):
        confidence_sequence(0.1, 0.01, 0.1, alpha=1.0)


# Relative lift keeps the sign of the absolute one


def test_a_negative_baseline_gives_no_relative_lift() -> None:
    """The arena report showed reward_score at +0.037 absolute and -4.74 % relative: the
    control's mean was negative, so t / c - 1 flipped the sign."""
    rng = np.random.default_rng(5)
    n = 4000
    t = rng.normal(-0.76, 0.3, n)
    c = rng.normal(-0.80, 0.3, n)
    lift = stats.compare_ratio(t, np.ones(n), c, np.ones(n))
    assert lift.absolute.value > 0
    assert math.isnan(lift.relative.value) and math.isnan(lift.relative.ci[0])


def test_a_baseline_whose_interval_reaches_zero_gives_no_relative_lift() -> None:
    rng = np.random.default_rng(6)
    t = rng.normal(0.5, 1.0, 100)
    c = rng.normal(0.02, 1.0, 100)  # indistinguishable from 0: a relative lift would be noise
    assert math.isnan(stats.compare_ratio(t, np.ones(100), c, np.ones(100)).relative.value)


@settings(max_examples=200, deadline=None)
@given(
    mean_t=st.floats(-5, 5),
    mean_c=st.floats(-5, 5),
    spread=st.floats(0.01, 3),
    n=st.integers(2, 60),
    seed=st.integers(0, 10_000),
)
def test_a_relative_lift_never_has_the_opposite_sign_of_the_absolute_one(
    mean_t: float, mean_c: float, spread: float, n: int, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    t, c = rng.normal(mean_t, spread, n), rng.normal(mean_c, spread, n)
    lift = stats.compare_ratio(t, np.ones(n), c, np.ones(n))
    if math.isfinite(lift.relative.value):
        assert lift.control.value > 0 and lift.control.ci[0] > 0
        assert np.sign(lift.relative.value) == np.sign(lift.absolute.value)
