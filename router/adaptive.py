"""Adaptive arena sampling: pair weights that spend the next votes where the leaderboard is least
sure of what it is asked to decide.

An arena of k arms draws one of its k(k-1)/2 pairs per battle. Drawn uniformly, most votes go
to pairs whose order is already clear. LM Arena samples pairs actively instead, to shrink
rating intervals; this module does it as an optimal design:

- **The model** is the leaderboard's (`router.analysis.arena`): Bradley–Terry, where a vote on
  pair (i, j) carries Fisher information ``p (1 - p) d d^T`` about the ratings (in log-odds
  units), ``p`` the current estimate of ``P(i beats j)`` and ``d = e_i - e_j``.
- **The goal** is a set of contrasts ``c`` (rating differences) whose variance should shrink:
  ``top``, the differences between the current leader and each other arm, each weighed by how
  plausible it still is that the arm is the runner-up (who is best: what a ship decision
  reads), or
  ``all``, every adjacent difference of the current ranking (the whole order).
- **The weights** ``w`` minimize the summed variance ``sum_c c^T M(w)^+ c`` after the next
  ``horizon`` votes, ``M(w) = I_now + horizon * sum_pairs w_pair * I_pair``: the information the
  votes so far hold plus what the next ones will add (a c-optimal, sequential design; Fedorov,
  1972). The problem is convex in ``w``; it is solved by Frank–Wolfe over the weights with a
  floor: every pair keeps at least ``floor`` of the draws, so no pair starves and the ratings of
  every arm stay estimable whatever the current estimates say.

The analysis stays valid under such weights: the Bradley–Terry likelihood does not depend on how
pairs were chosen when the choice depends only on earlier votes (the design is ignorable), so the
same fit and intervals apply. `router.analysis.adaptive_sim` shows it by simulation (coverage)
and measures the votes saved.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import combinations, pairwise
from typing import Literal

import numpy as np

from router.experiment import Experiment

Target = Literal["top", "all"]
Pair = tuple[str, str]
_ITERATIONS = 200
# How fast an arm's pull fades as the data set it apart from the runner-up: exp(-SHARPNESS t^2).
# Measured against uniform sampling on the same seeds (docs/benchmarks.md, "Adaptive arena
# sampling"): 0.75 saves a third of the votes with the report's interval covering about as often
# as under uniform sampling; 1.0 saves more but covers measurably less (aiming harder at the
# current runner-up starves an arm that looks weak by chance, and its gap stays overstated);
# 0.5 saved 27 %.
SHARPNESS = 0.75


def contrasts(ratings: Mapping[str, float], arms: Sequence[str], target: Target) -> np.ndarray:
    """``[c, k]`` rating contrasts whose variance the weights minimize, from the current
    ratings: the leader against every other arm (``top``; `_plausibility` weighs them), or each
    adjacent pair of the ranking (``all``). Ties in the ratings are broken by arm order."""
    order = sorted(range(len(arms)), key=lambda i: (-ratings[arms[i]], i))
    links = [(order[0], o) for o in order[1:]] if target == "top" else list(pairwise(order))
    rows = []
    for upper, lower in links:
        row = np.zeros(len(arms))
        row[upper], row[lower] = 1.0, -1.0
        rows.append(row)
    return np.array(rows)


def _plausibility(c: np.ndarray, z: np.ndarray, information: np.ndarray) -> np.ndarray:
    """How much each leader-vs-arm contrast (rows of `c`, the runner-up's first) matters: 1 for
    the runner-up, and for another arm ``exp(-SHARPNESS t^2)``, ``t`` its gap below the
    runner-up over that gap's standard error (1 where the data cannot tell): how plausible it
    still is that the arm is the runner-up. Aiming at the current runner-up alone would starve
    an arm that is underrated by chance, and leave it underrated (a bias the simulation
    measured)."""
    inverse = np.linalg.pinv(information, hermitian=True)
    below = c[0] - c  # runner-up minus each arm (row 0: zero)
    gaps = below @ z
    variances = np.einsum("ck,kl,cl->c", below, inverse, below)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(variances > 1e-12, gaps / np.sqrt(variances), 0.0)
    return np.exp(-SHARPNESS * t**2)


def _pair_information(
    arms: Sequence[str], pairs: Sequence[Pair], ratings: Mapping[str, float], scale: float
) -> tuple[np.ndarray, np.ndarray]:
    """``(D [pairs, k], v [pairs])``: each pair's difference vector and ``p (1 - p)``, in the
    natural log-odds units of the fit (``scale`` rating points per unit)."""
    index = {arm: i for i, arm in enumerate(arms)}
    d = np.zeros((len(pairs), len(arms)))
    v = np.zeros(len(pairs))
    for row, (a, b) in enumerate(pairs):
        d[row, index[a]], d[row, index[b]] = 1.0, -1.0
        z = (ratings[a] - ratings[b]) / scale
        p = 1.0 / (1.0 + math.exp(-z))
        v[row] = p * (1.0 - p)
    return d, v


def _information(d: np.ndarray, v: np.ndarray, votes: np.ndarray) -> np.ndarray:
    """The Bradley–Terry information ``sum_pairs votes v d d^T`` ``[k, k]``."""
    return (d * (votes * v)[:, None]).T @ d


@dataclass(frozen=True)
class Design:
    """The design problem at the current state of an arena: ``objective(w)`` is the summed
    (weighted) variance of the goal's contrasts after ``horizon`` more votes drawn with pair
    shares ``w``, in natural log-odds units squared."""

    pairs: list[Pair]
    d: np.ndarray  # [pairs, k] each pair's difference vector
    v: np.ndarray  # [pairs] p (1 - p) at the current ratings
    base: np.ndarray  # [k, k] the information of the votes so far (plus the free shift)
    c: np.ndarray  # [contrasts, k] the goal, weighted
    horizon: float

    @classmethod
    def of(
        cls,
        ratings: Mapping[str, float],
        battles: Mapping[Pair, float],
        pairs: Sequence[Pair],
        target: Target,
        horizon: float,
        scale: float,
    ) -> Design:
        arms = list(ratings)
        d, v = _pair_information(arms, pairs, ratings, scale)
        seen = np.array([battles.get(p, 0.0) + battles.get((p[1], p[0]), 0.0) for p in pairs])
        # Every contrast is orthogonal to the all-ones direction, the ratings' free shift:
        # adding it makes the information invertible without changing a contrast's variance.
        base = _information(d, v, seen) + np.ones((len(arms), len(arms))) / len(arms)
        c = contrasts(ratings, arms, target)
        if target == "top":
            z = np.array([ratings[arm] for arm in arms]) / scale
            c = c * np.sqrt(_plausibility(c, z, base))[:, None]
        return cls(list(pairs), d, v, base, c, horizon)

    def _solved(self, w: np.ndarray) -> np.ndarray:
        m = self.base + _information(self.d, self.v, self.horizon * w)
        return np.linalg.pinv(m, hermitian=True) @ self.c.T  # [k, contrasts]: M^+ c

    def objective(self, w: np.ndarray) -> float:
        return float(np.einsum("ck,kc->", self.c, self._solved(w)))

    def gradient(self, w: np.ndarray) -> np.ndarray:
        """d objective / d w_r = -horizon * v_r * sum_c (d_r . M^+ c)^2."""
        return -self.horizon * self.v * ((self.d @ self._solved(w)) ** 2).sum(axis=1)


def pair_weights(
    ratings: Mapping[str, float],
    battles: Mapping[Pair, float],
    pairs: Sequence[Pair] | None = None,
    *,
    target: Target = "top",
    floor: float = 0.02,
    horizon: float = 500,
    scale: float = 400 / math.log(10),
) -> dict[Pair, float]:
    """The share of the next draws each pair should get (they sum to 1, each ≥ ``floor``):
    Frank–Wolfe on `Design.objective` over the shares with the floor.

    ``ratings``: the current point estimates per arm (rating points; ``scale`` points per
    natural log-odds unit, the leaderboard's 400/ln 10 by default). ``battles``: votes so far
    per pair (either order of the names). ``pairs``: the pairs that may be drawn (default:
    every pair of the arms in ``ratings``). ``horizon``: about how many votes the weights will
    serve before they are computed again.
    """
    pairs = list(pairs) if pairs is not None else list(combinations(ratings, 2))
    if len(pairs) < 2:
        return {pair: 1.0 for pair in pairs}
    if not 0 <= floor * len(pairs) <= 1:
        raise ValueError(f"floor {floor} x {len(pairs)} pairs is more than every draw")
    if horizon <= 0:
        raise ValueError("horizon must be above 0")
    design = Design.of(ratings, battles, pairs, target, horizon, scale)
    free = 1.0 - floor * len(pairs)
    w = np.full(len(pairs), 1.0 / len(pairs))
    for t in range(_ITERATIONS):
        vertex = np.full(len(pairs), floor)
        vertex[int(np.argmin(design.gradient(w)))] += free
        w += 2.0 / (t + 3.0) * (vertex - w)  # the uniform start keeps a share
    return {pair: float(share) for pair, share in zip(pairs, w, strict=True)}


def contrast_variance(
    ratings: Mapping[str, float],
    battles: Mapping[Pair, float],
    contrast: Pair,
    scale: float = 400 / math.log(10),
) -> float:
    """The asymptotic variance (rating points squared) of ``R_a - R_b`` for ``contrast = (a,
    b)`` from the votes so far: ``c^T I^+ c`` at the current ratings."""
    arms = list(ratings)
    pairs = [p for p in battles if battles[p] > 0]
    if not pairs:
        return math.inf
    d, v = _pair_information(arms, pairs, ratings, scale)
    information = _information(d, v, np.array([battles[p] for p in pairs]))
    c = np.zeros(len(arms))
    c[arms.index(contrast[0])], c[arms.index(contrast[1])] = 1.0, -1.0
    if not _connects(information, arms.index(contrast[0]), arms.index(contrast[1])):
        return math.inf
    return float(c @ np.linalg.pinv(information, hermitian=True) @ c) * scale**2


def _connects(information: np.ndarray, i: int, j: int) -> bool:
    """Whether arms i and j are in one connected component of the comparison graph."""
    from scipy.sparse.csgraph import connected_components

    _, component = connected_components(information != 0, directed=False)
    return bool(component[i] == component[j])


def experiment_weights(
    experiment: Experiment,
    variant_a: Sequence[str],
    variant_b: Sequence[str],
    votes: Sequence[str],
    horizon: float | None = None,
) -> dict[Pair, float] | None:
    """The pair weights of an adaptive arena (`Experiment.adaptive`) from its counted votes so
    far (parallel lists: the sides of each voted battle and its vote, "a", "b", "tie" or
    "both_bad"), over the experiment's own pairs in their configured order; None while fewer
    than `min_votes` votes are in (the configured weights hold). Votes on a pair the
    experiment no longer draws are left out. The design looks ahead `horizon` votes: the
    experiment's own, else the one given, else the counted votes."""
    from router.analysis.arena import Battles, bradley_terry

    settings = experiment.adaptive
    if settings is None:
        raise ValueError(f"experiment {experiment.name!r} is not adaptive")
    pairs = [pair.variants for pair in experiment.arena_pairs()]
    drawn = {frozenset(pair) for pair in pairs}
    keep = [i for i, (a, b) in enumerate(zip(variant_a, variant_b, strict=True)) if {a, b} in drawn]
    if len(keep) < max(settings.min_votes, 1):
        return None
    arms = list(dict.fromkeys(name for pair in pairs for name in pair))
    battles = Battles.from_votes(
        [variant_a[i] for i in keep],
        [variant_b[i] for i in keep],
        [votes[i] for i in keep],
        models=arms,
    )
    fitted = bradley_terry(battles)  # nan for an arm without a counted vote yet
    known = fitted[np.isfinite(fitted)]
    middle = float(known.mean()) if known.size else 1000.0
    ratings = {
        arm: float(r) if np.isfinite(r) else middle for arm, r in zip(arms, fitted, strict=True)
    }
    counts: dict[Pair, float] = {}
    for i in keep:
        pair = (variant_a[i], variant_b[i])
        counts[pair] = counts.get(pair, 0.0) + 1.0
    return pair_weights(
        ratings,
        counts,
        pairs,
        target=settings.target,
        floor=settings.floor,
        horizon=settings.horizon or horizon or len(keep),
    )
