"""Bandit experiments: Thompson sampling weights, and estimates that stay honest under them.

A bandit moves its arms' shares toward the arm that looks best, on a schedule: each refresh
(a *weights version*) computes new shares from every reward logged so far, and units are
assigned by those shares until the next one (`router.assignment`, sticky per unit and version).

- **Weights** (`thompson_weights`): each arm's reward has a Beta posterior (a binary reward such
  as a thumbs up counts successes; a bounded one, rescaled to [0, 1], counts its fractional
  sums, the usual Bernoulli trick for Thompson sampling). An arm's share is the posterior
  probability that it is the best, by Monte Carlo with a seeded generator (every process gets
  the same shares for the same data and version), then floored: every arm keeps at least
  `min_share` (GrowthBook and Statsig keep 1 %).
- **Estimates** (`ipw_means`): under adaptive allocation the plain mean of an arm's rewards is
  biased (an arm unlucky early gets fewer units to correct it, so it stays underrated). Each
  assignment's propensity (its arm's share when it was made) is logged with it, and the arm's
  mean is estimated by inverse-propensity weighting: Horvitz–Thompson, ``(1/n) sum 1[A_i=a]
  Y_i / p_i``, unbiased because ``E[1[A_i=a] / p_i | the past] = 1``; and Hájek, the same sum
  over ``sum 1[A_i=a] / p_i``, its self-normalized form (a small bias, less variance).
  `router.analysis.bandit_sim` shows both by simulation, with the regret against a fixed split.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

DRAWS = 20_000


def thompson_weights(
    successes: Mapping[str, float],
    trials: Mapping[str, float],
    arms: Sequence[str],
    *,
    min_share: float = 0.01,
    seed: int = 0,
    draws: int = DRAWS,
) -> dict[str, float]:
    """Each arm's share: ``min_share + (1 - k min_share) P(arm is best)``, the probability under
    independent ``Beta(1 + successes, 1 + trials - successes)`` posteriors (ties to the first
    arm), by `draws` Monte Carlo draws from a generator seeded with `seed`."""
    k = len(arms)
    if k < 2:
        raise ValueError("a bandit needs two or more arms")
    if not 0 <= min_share * k <= 1:
        raise ValueError(f"min_share {min_share} x {k} arms is more than every unit")
    a = np.array([1.0 + successes.get(arm, 0.0) for arm in arms])
    b = np.array([1.0 + trials.get(arm, 0.0) - successes.get(arm, 0.0) for arm in arms])
    if (b < 1.0 - 1e-9).any() or not np.isfinite(a).all() or not np.isfinite(b).all():
        raise ValueError("successes must lie between 0 and trials")
    rng = np.random.default_rng(seed)
    sampled = rng.beta(a, np.maximum(b, 1.0), size=(draws, k))
    best = np.bincount(sampled.argmax(axis=1), minlength=k) / draws
    shares = min_share + (1.0 - k * min_share) * best
    return {arm: float(share) for arm, share in zip(arms, shares, strict=True)}


@dataclass(frozen=True)
class Estimate:
    """An arm's mean reward under adaptive allocation: Horvitz–Thompson and Hájek, each with a
    standard error, and the plain mean (biased; shown for comparison)."""

    horvitz_thompson: float
    ht_se: float
    hajek: float
    hajek_se: float
    naive: float
    n: int  # assignments to the arm


def ipw_means(
    arms: Sequence[str],
    assigned: Sequence[str],
    propensity: Sequence[float],
    reward: Sequence[float],
) -> dict[str, Estimate]:
    """Inverse-propensity-weighted means per arm over n assignments (parallel sequences: the
    arm each got, the share that arm had then, and the reward observed)."""
    n = len(assigned)
    if not n == len(propensity) == len(reward):
        raise ValueError("assigned, propensity and reward must have the same length")
    p = np.asarray(propensity, dtype=float)
    y = np.asarray(reward, dtype=float)
    if n and (not ((p > 0) & (p <= 1)).all() or not np.isfinite(y).all()):
        raise ValueError("propensities must lie in (0, 1] and rewards be finite")
    names = np.asarray(assigned, dtype=object)
    out = {}
    for arm in arms:
        hit = names == arm
        count = int(hit.sum())
        if not count:
            out[arm] = Estimate(math.nan, math.nan, math.nan, math.nan, math.nan, 0)
            continue
        terms = np.where(hit, y / p, 0.0)
        ht = float(terms.mean())
        ht_se = float(np.sqrt(((terms - ht) ** 2).sum()) / n)
        inverse = np.where(hit, 1.0 / p, 0.0)
        hajek = float(terms.sum() / inverse.sum())
        hajek_se = float(np.sqrt((inverse**2 * (y - hajek) ** 2).sum()) / inverse.sum())
        out[arm] = Estimate(ht, ht_se, hajek, hajek_se, float(y[hit].mean()), count)
    return out


def cap_shares(shares: Mapping[str, float], caps: Mapping[str, float]) -> dict[str, float]:
    """`shares` (summing to 1) with each arm in `caps` held to at most its cap: a bandit arm a
    guardrail stopped keeps growing no further (`serve.outcome_log`). What the held arms give
    up goes to the others in proportion to their shares, so those only grow; at least one arm
    must be left free."""
    free = [arm for arm in shares if arm not in caps]
    if not free:
        raise ValueError("every arm is held: at least one must stay free to take the rest")
    if any(not 0 < cap <= 1 for cap in caps.values()):
        raise ValueError("caps must lie in (0, 1]")
    capped = {arm: min(share, caps[arm]) for arm, share in shares.items() if arm in caps}
    freed = sum(shares[arm] - share for arm, share in capped.items())
    weight = sum(shares[arm] for arm in free)
    out = dict(capped)
    for arm in free:
        out[arm] = shares[arm] + freed * (shares[arm] / weight if weight > 0 else 1 / len(free))
    return {arm: out[arm] for arm in shares}
