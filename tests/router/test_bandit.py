"""Thompson-sampling weights and the inverse-propensity estimates (`router.bandit`)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from router.bandit import cap_shares, ipw_means, thompson_weights

ARMS = ("a", "b", "c")


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 500), st.integers(0, 500)), min_size=3, max_size=3),
    st.floats(0.0, 1 / 3),
    st.integers(0, 2**32 - 1),
)
def test_weights_are_a_distribution_with_each_arm_at_its_minimum(
    counts: list[tuple[int, int]], min_share: float, seed: int
) -> None:
    successes = {arm: float(s) for arm, (s, _) in zip(ARMS, counts, strict=True)}
    trials = {arm: float(s + f) for arm, (s, f) in zip(ARMS, counts, strict=True)}
    weights = thompson_weights(successes, trials, ARMS, min_share=min_share, seed=seed, draws=2000)
    assert list(weights) == list(ARMS)
    assert sum(weights.values()) == pytest.approx(1.0)
    assert min(weights.values()) >= min_share - 1e-12
    again = thompson_weights(successes, trials, ARMS, min_share=min_share, seed=seed, draws=2000)
    assert weights == again  # the same data and seed: the same shares in every process


def test_weights_follow_the_posterior_probability_of_being_best() -> None:
    even = thompson_weights({}, {}, ARMS, min_share=0.0)
    assert all(abs(w - 1 / 3) < 0.02 for w in even.values())
    clear = thompson_weights({"a": 100, "b": 150, "c": 300}, dict.fromkeys(ARMS, 1000), ARMS)
    assert clear["c"] > 0.97 and clear["a"] == pytest.approx(0.01, abs=1e-9)
    # Two arms with the same data split what the third leaves.
    tied = thompson_weights({"a": 30, "b": 30, "c": 5}, dict.fromkeys(ARMS, 100), ARMS)
    assert tied["a"] == pytest.approx(tied["b"], abs=0.03) and tied["c"] < 0.02


def test_fractional_rewards_count_as_their_sums() -> None:
    weights = thompson_weights({"a": 40.5, "b": 60.25}, {"a": 100, "b": 100}, ["a", "b"])
    assert weights["b"] > 0.9


def test_bad_inputs_are_refused() -> None:
    with pytest.raises(ValueError, match="two or more arms"):
        thompson_weights({}, {}, ["a"])
    with pytest.raises(ValueError, match="more than every unit"):
        thompson_weights({}, {}, ARMS, min_share=0.5)
    with pytest.raises(ValueError, match="between 0 and trials"):
        thompson_weights({"a": 5}, {"a": 3}, ARMS)
    with pytest.raises(ValueError, match="same length"):
        ipw_means(ARMS, ["a"], [0.5, 0.5], [1.0])
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        ipw_means(ARMS, ["a"], [0.0], [1.0])


def test_under_a_fixed_split_the_estimates_are_the_plain_means() -> None:
    assigned = ["a", "b", "a", "c", "b", "a"]
    reward = [1.0, 0.0, 0.0, 1.0, 1.0, 1.0]
    found = ipw_means(ARMS, assigned, [1 / 3] * 6, reward)
    assert found["a"].hajek == pytest.approx(2 / 3) and found["a"].naive == pytest.approx(2 / 3)
    # Horvitz-Thompson scales by the share expected, not the share drawn: 2 / (6 / 3).
    assert found["a"].horvitz_thompson == pytest.approx((2 * 3) / 6)
    assert found["c"].n == 1 and math.isnan(ipw_means(ARMS, ["a"], [1.0], [1.0])["b"].hajek)


def test_ipw_corrects_the_bias_of_the_plain_mean_under_adaptive_allocation() -> None:
    """A known bias: an arm whose first rewards were low gets a small share, so its later
    (higher, on average) rewards weigh little in its plain mean. 2,000 runs of two periods:
    an even split, then 90/10 toward whichever arm led."""
    rng = np.random.default_rng(7)
    truth = 0.5
    naive, horvitz = [], []
    for _ in range(2000):
        assigned, propensity, reward = [], [], []
        first = rng.random(20) < truth
        arms = np.array(["a", "b"] * 10)
        leader = "a" if first[arms == "a"].mean() >= first[arms == "b"].mean() else "b"
        assigned += list(arms)
        propensity += [0.5] * 20
        reward += list(first.astype(float))
        share_a = 0.9 if leader == "a" else 0.1
        later = np.where(rng.random(100) < share_a, "a", "b")
        assigned += list(later)
        propensity += [share_a if arm == "a" else 1 - share_a for arm in later]
        reward += list((rng.random(100) < truth).astype(float))
        estimate = ipw_means(["a", "b"], assigned, propensity, reward)["a"]
        naive.append(estimate.naive)
        horvitz.append(estimate.horvitz_thompson)
    se = np.std(horvitz) / math.sqrt(len(horvitz))
    assert np.mean(naive) - truth < -0.005  # the plain mean: biased low
    assert abs(np.mean(horvitz) - truth) < 3 * se  # Horvitz-Thompson: no bias seen


@given(
    st.lists(st.floats(0.01, 1.0), min_size=2, max_size=6).map(
        lambda raw: [w / sum(raw) for w in raw]
    ),
    st.data(),
)
def test_capped_shares_stay_a_distribution_and_only_the_free_arms_grow(
    raw: list[float], data: st.DataObject
) -> None:
    arms = [f"arm-{i}" for i in range(len(raw))]
    shares = dict(zip(arms, raw, strict=True))
    held = data.draw(st.sets(st.sampled_from(arms[1:]), max_size=len(arms) - 1))
    caps = {arm: data.draw(st.floats(0.001, 1.0)) for arm in held}
    capped = cap_shares(shares, caps)
    assert list(capped) == arms and math.isclose(sum(capped.values()), 1.0)
    for arm in arms:
        if arm in caps:
            assert capped[arm] == min(shares[arm], caps[arm])
        else:
            assert capped[arm] >= shares[arm] - 1e-12
    if all(caps[arm] >= shares[arm] for arm in caps):
        assert capped == pytest.approx(shares)  # a cap not reached changes nothing


def test_capping_every_arm_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one must stay free"):
        cap_shares({"a": 0.5, "b": 0.5}, {"a": 0.1, "b": 0.1})
    with pytest.raises(ValueError, match="caps must lie"):
        cap_shares({"a": 0.5, "b": 0.5}, {"a": 0.0})
