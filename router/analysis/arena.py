"""The leaderboard of an arena experiment: Bradley–Terry ratings from side-by-side votes.

Method (LM Arena; FastChat ``fastchat/serve/monitor/elo_analysis.py``, ``compute_mle_elo`` and
its style control; "Does style matter?", LMSYS blog, Aug 2024):

- **Model.** Bradley–Terry: ``P(a beats b) = 1 / (1 + base ** ((R_b - R_a) / scale))``, fitted by
  maximum likelihood as a logistic regression without intercept on +1/-1 model indicators
  (scaled by ``ln(base) / scale``). A tie (and a "both bad" vote) is half a win each way: the
  battle counts as a win and a loss of weight 1/2 each, which is FastChat's duplication and is the
  same likelihood as a soft label of 1/2. Ratings are shifted so their mean is ``anchor``.
- **Style control.** Style covariates (`style_features`: normalized length and markdown
  differences, standardized) join the regression; only the model coefficients are reported as
  ratings, so a model is not credited for what voters reward in any answer (length, lists).
- **Uncertainty.** Percentile bootstrap over battles (FastChat's ``get_bootstrap_result``), or
  over voters when the battles name them (``Battles.cluster``): a voter's battles are not
  independent (each voter has their own taste), and resampling battles then gives intervals
  far too narrow. Without style the likelihood depends on the battles only through the counts
  of the ``(a, b, outcome)`` cells (per voter, when clustered), so a replicate is one
  multinomial draw of those counts (or of the voters): cost is independent of the number of
  battles. With style every battle is its own cell; replicates are solved together (batched
  Newton) in chunks that bound memory, at a cost ~ ``n * reps``.

Identifiability and regularization: Bradley–Terry fixes ratings only up to a shift per connected
component of the comparison graph, and data where a model wins (or loses) every battle has its MLE
at infinity. Every fit adds the ridge ``RIDGE / 2 * |coef|^2`` on the coefficients in natural
log-odds units (a Gaussian prior with sd 100 logits, ~17,000 rating points): it makes each
component's coefficients sum to zero, which the anchoring then shifts, and keeps separated data
finite (one unbeaten battle: ~1,360 points apart; 10 unbeaten: ~1,720; 10,000 unbeaten: ~2,840 —
finite, but a sign that the data cannot rank the pair). Where the MLE is finite the ridge shrinks
rating differences by a fraction of about ``RIDGE / (battles per model / 4)``: far below a point.
A model without battles is rated ``nan`` (and left out of the mean), in the point estimate and in
every bootstrap replicate where it drew no battle; ratings in different connected components of
the comparison graph are not comparable (each component is centred on its own).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike
from scipy.special import expit

VOTE_OUTCOME: dict[str, float] = {"a": 1.0, "b": 0.0, "tie": 0.5, "both_bad": 0.5}
# L2 weight on every coefficient, in natural log-odds units (see the module docstring).
RIDGE = 1e-4
# Bootstrap replicates are solved together in chunks of at most this many (replicate, cell)
# weights, which bounds the solver's memory at a few hundred MB.
_CHUNK_ELEMENTS = 1 << 21
# Above this many (battle x replicate) refits, style-controlled intervals come from the fit's
# asymptotic normal distribution instead of refitting per replicate (see `leaderboard`).
BOOTSTRAP_BUDGET = 2_000_000
_MAX_NEWTON = 200
# Fewer voters than this and a bootstrap over voters is degenerate (one voter: every replicate
# is that voter, an interval of zero width): battles are resampled instead, and the report
# makes no decision on so few voters.
MIN_VOTERS = 10
_STEP_TOL = 1e-10


def _frozen_array(values: ArrayLike, dtype: type) -> np.ndarray:
    array = np.array(values, dtype=dtype)
    array.setflags(write=False)
    return array


@dataclass(frozen=True, slots=True, eq=False)
class Battles:
    """Arena battles: model ``a`` was shown as choice 0, model ``b`` as choice 1.

    Guaranteed after construction: ``a``, ``b`` are read-only integer arrays of the same length
    ``n`` indexing ``models`` with ``a != b``; ``outcome`` is 1.0 (a won), 0.0 (b won) or 0.5
    (tie or both bad); ``style`` is None or a finite ``[n, k]`` float array; ``cluster`` is None
    or ``[n]`` integers from 0: who voted (the bootstrap then resamples voters, not battles).
    """

    models: tuple[str, ...]
    a: np.ndarray
    b: np.ndarray
    outcome: np.ndarray
    style: np.ndarray | None = None
    cluster: np.ndarray | None = None

    def __post_init__(self) -> None:
        models = tuple(self.models)
        if len(set(models)) != len(models):
            raise ValueError("models must be distinct")
        a, b = np.asarray(self.a), np.asarray(self.b)
        outcome = np.asarray(self.outcome, dtype=float)
        if a.ndim != 1 or a.shape != b.shape or a.shape != outcome.shape:
            raise ValueError("a, b and outcome must be 1-D arrays of the same length")
        integral = np.issubdtype(a.dtype, np.integer) and np.issubdtype(b.dtype, np.integer)
        if a.size and not integral:
            raise ValueError("a and b must be integer indices into models")
        if a.size and (min(a.min(), b.min()) < 0 or max(a.max(), b.max()) >= len(models)):
            raise ValueError("a and b must index models")
        if np.any(a == b):
            raise ValueError("a battle needs two different models")
        if not np.all(np.isin(outcome, (0.0, 0.5, 1.0))):
            raise ValueError("outcome must be 1.0 (a won), 0.0 (b won) or 0.5 (tie)")
        object.__setattr__(self, "models", models)
        object.__setattr__(self, "a", _frozen_array(a, np.intp))
        object.__setattr__(self, "b", _frozen_array(b, np.intp))
        object.__setattr__(self, "outcome", _frozen_array(outcome, float))
        if self.style is not None:
            style = np.asarray(self.style, dtype=float)
            if style.ndim != 2 or style.shape[0] != a.size:
                raise ValueError("style must be an [n, k] array, one row per battle")
            if not np.all(np.isfinite(style)):
                raise ValueError("style must be finite")
            object.__setattr__(self, "style", _frozen_array(style, float))
        if self.cluster is not None:
            cluster = np.asarray(self.cluster)
            integral = np.issubdtype(cluster.dtype, np.integer)
            if cluster.shape != a.shape or (a.size and not integral):
                raise ValueError("cluster must be one integer per battle")
            if a.size and cluster.min() < 0:
                raise ValueError("cluster indices must not be negative")
            object.__setattr__(self, "cluster", _frozen_array(cluster, np.intp))

    @classmethod
    def from_votes(
        cls,
        variant_a: Sequence[str],
        variant_b: Sequence[str],
        votes: Sequence[str],
        style: ArrayLike | None = None,
        *,
        models: Sequence[str] | None = None,
        voters: Sequence[str] | None = None,
    ) -> Battles:
        """Battles from parallel lists of variant names and votes ("a", "b", "tie", "both_bad"),
        and optionally of who voted (the bootstrap's clusters).

        ``models`` fixes the index space (and may name models without battles); by default it is
        the sorted set of names seen. Raises ValueError on an unknown vote or variant name, on
        lists of different lengths, and on a variant battling itself.
        """
        if not len(variant_a) == len(variant_b) == len(votes):
            raise ValueError("variant_a, variant_b and votes must have the same length")
        if voters is not None and len(voters) != len(votes):
            raise ValueError("voters must name one voter per vote")
        unknown = sorted({str(v) for v in votes} - VOTE_OUTCOME.keys())
        if unknown:
            raise ValueError(f"unknown votes {unknown}; expected one of {sorted(VOTE_OUTCOME)}")
        names = tuple(sorted({*variant_a, *variant_b})) if models is None else tuple(models)
        index = {name: i for i, name in enumerate(names)}
        missing = sorted({*variant_a, *variant_b} - index.keys())
        if missing:
            raise ValueError(f"variants {missing} are not in models")
        return cls(
            models=names,
            a=np.array([index[v] for v in variant_a], dtype=np.intp),
            b=np.array([index[v] for v in variant_b], dtype=np.intp),
            outcome=np.array([VOTE_OUTCOME[v] for v in votes], dtype=float),
            style=None if style is None else np.asarray(style, dtype=float),
            cluster=None if voters is None else np.unique(list(voters), return_inverse=True)[1],
        )


def win_matrix(battles: Battles) -> tuple[np.ndarray, np.ndarray]:
    """``(win_rate, counts)``, both ``[m, m]``: ``counts[i, j]`` battles between i and j in
    either order (symmetric, zero diagonal); ``win_rate[i, j]`` the share of them won by i, a tie
    counting half, so ``win_rate[i, j] + win_rate[j, i] == 1``; nan where no battle and on the
    diagonal."""
    m = len(battles.models)
    forward = battles.a * m + battles.b
    backward = battles.b * m + battles.a
    counts = np.bincount(forward, minlength=m * m) + np.bincount(backward, minlength=m * m)
    score = np.bincount(forward, weights=battles.outcome, minlength=m * m) + np.bincount(
        backward, weights=1.0 - battles.outcome, minlength=m * m
    )
    counts, score = counts.reshape(m, m), score.reshape(m, m)
    win_rate = np.full((m, m), np.nan)
    np.divide(score, counts, out=win_rate, where=counts > 0)
    return win_rate, counts


def win_probability(
    rating_i: ArrayLike, rating_j: ArrayLike, scale: float = 400, base: float = 10
) -> float | np.ndarray:
    """P(i beats j) = 1 / (1 + base ** ((R_j - R_i) / scale)); elementwise on arrays (a float for
    scalars). A difference of ``scale`` points is odds of ``base`` : 1."""
    diff = np.subtract(rating_i, rating_j, dtype=float)
    p = expit(diff * (math.log(base) / scale))
    return float(p) if np.ndim(p) == 0 else p


def style_features(
    tokens_a: ArrayLike, tokens_b: ArrayLike, markdown_a: ArrayLike, markdown_b: ArrayLike
) -> np.ndarray:
    """LM Arena's style covariates, ``[n, 1 + k]``: length then each markdown count column.

    ``tokens_*`` are ``[n]`` answer lengths, ``markdown_*`` ``[n, k]`` counts (e.g. headers, list
    items, bold). Each column is the normalized difference ``(a - b) / (a + b)`` (0 where both are
    0), then standardized over the battles to mean 0 and sd 1; a constant column is all 0. The
    columns are antisymmetric: swapping every battle's sides negates them.
    """
    side_a = np.column_stack([np.asarray(tokens_a, dtype=float), np.asarray(markdown_a, float)])
    side_b = np.column_stack([np.asarray(tokens_b, dtype=float), np.asarray(markdown_b, float)])
    if side_a.shape != side_b.shape:
        raise ValueError("the a and b style counts must have the same shape")
    if not (np.all(np.isfinite(side_a)) and np.all(np.isfinite(side_b))):
        raise ValueError("style counts must be finite")
    if np.any(side_a < 0) or np.any(side_b < 0):
        raise ValueError("style counts must not be negative")
    total = side_a + side_b
    diff = np.zeros_like(total)
    np.divide(side_a - side_b, total, out=diff, where=total > 0)
    if diff.shape[0] == 0:
        return diff
    centred = diff - diff.mean(axis=0)
    sd = centred.std(axis=0)
    out = np.zeros_like(diff)
    np.divide(centred, sd, out=out, where=sd > 1e-12)
    return out


def _newton(
    a: np.ndarray,
    b: np.ndarray,
    y: np.ndarray,
    weights: np.ndarray,
    m: int,
    style: np.ndarray | None,
    ridge: float,
    start: np.ndarray | None = None,
) -> np.ndarray:
    """Penalized Bradley–Terry fits, one per row of ``weights`` ``[R, C]``, solved together.

    Row r minimizes ``sum_c w[r, c] * (log(1 + e^z_c) - y_c z_c) + ridge / 2 * |coef|^2`` with
    ``z_c = coef[a_c] - coef[b_c] + style_c . coef[m:]`` (natural log-odds): Newton steps with an
    Armijo backtracking line search per row. The objective is strictly convex, so this converges
    to the unique minimum from any start. Returns ``coef`` ``[R, m + k]``.
    """
    batch = _Batch(a, b, y, weights, m, style, ridge)
    reps = batch.reps
    coef = np.zeros((reps, batch.p)) if start is None else np.tile(start, (reps, 1)).astype(float)
    f, z = batch.objective(coef)
    for _ in range(_MAX_NEWTON):
        grad, hess = batch.derivatives(coef, z)
        delta = -np.linalg.solve(hess, grad[..., None])[..., 0]
        slope = np.einsum("rp,rp->r", grad, delta)
        step = np.ones(reps)
        for _ in range(60):
            candidate = coef + step[:, None] * delta
            f_new, z_new = batch.objective(candidate)
            accepted = f_new <= f + 1e-4 * step * slope + 1e-12 * np.abs(f)
            if accepted.all():
                break
            step = np.where(accepted, step, 0.5 * step)
        coef, f, z = candidate, f_new, z_new
        if np.max(np.abs(step[:, None] * delta), initial=0.0) < _STEP_TOL:
            break
    return coef


class _Batch:
    """`_newton`'s objective over R rows of cell weights, with its gradient and Hessian per row."""

    def __init__(
        self,
        a: np.ndarray,
        b: np.ndarray,
        y: np.ndarray,
        weights: np.ndarray,
        m: int,
        style: np.ndarray | None,
        ridge: float,
    ) -> None:
        self.a, self.b, self.y, self.weights, self.m = a, b, y, weights, m
        self.style, self.ridge = style, ridge
        self.reps = weights.shape[0]
        self.k = 0 if style is None else style.shape[1]
        self.p = m + self.k
        row = np.arange(self.reps)[:, None] * m
        self.at_a, self.at_b = (row + a).ravel(), (row + b).ravel()
        tiled_a, tiled_b = np.tile(a, self.reps), np.tile(b, self.reps)
        at_a, at_b = self.at_a, self.at_b
        # Flat [R, m, m] positions of the (a, a), (b, b), (a, b), (b, a) Hessian entries per cell.
        self.hess_index = np.concatenate(
            [at_a * m + tiled_a, at_b * m + tiled_b, at_a * m + tiled_b, at_b * m + tiled_a]
        )

    def by_model(self, values: np.ndarray) -> np.ndarray:
        """Per-cell values ``[R, C]`` summed onto the models, +1 on side a and -1 on side b."""
        flat, size = values.ravel(), self.reps * self.m
        plus = np.bincount(self.at_a, weights=flat, minlength=size)
        return (plus - np.bincount(self.at_b, weights=flat, minlength=size)).reshape(
            self.reps, self.m
        )

    def objective(self, c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Each row's penalized loss at ``c``, and the cells' log-odds ``z``."""
        z = c[:, self.a] - c[:, self.b]
        if self.k:
            z += c[:, self.m :] @ self.style.T
        loss = (self.weights * (np.logaddexp(0.0, z) - self.y * z)).sum(axis=1)
        return loss + 0.5 * self.ridge * np.einsum("rp,rp->r", c, c), z

    def derivatives(self, coef: np.ndarray, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Each row's gradient ``[R, p]`` and Hessian ``[R, p, p]`` at ``coef`` (log-odds ``z``)."""
        m, k, reps, style = self.m, self.k, self.reps, self.style
        mu = expit(z)
        resid = self.weights * (mu - self.y)
        curv = self.weights * mu * (1.0 - mu)
        grad = self.ridge * coef
        grad[:, :m] += self.by_model(resid)
        hess = np.zeros((reps, self.p, self.p))
        flat = curv.ravel()
        hess[:, :m, :m] = np.bincount(
            self.hess_index,
            weights=np.concatenate([flat, flat, -flat, -flat]),
            minlength=reps * m * m,
        ).reshape(reps, m, m)
        if k:
            grad[:, m:] += resid @ style
            for j in range(k):
                hess[:, :m, m + j] = self.by_model(curv * style[:, j])
            hess[:, m:, :m] = hess[:, :m, m:].transpose(0, 2, 1)
            hess[:, m:, m:] = np.matmul(curv[:, None, :] * style.T[None], style)
        diagonal = np.arange(self.p)
        hess[:, diagonal, diagonal] += self.ridge
        return grad, hess


def _cells(battles: Battles, style: bool) -> tuple[tuple[np.ndarray, ...], np.ndarray | None]:
    """``(a, b, outcome, count, style)`` of the cells the likelihood sums over (without style the
    distinct ``(a, b, outcome)`` triples with their battle counts, per voter when the battles
    are clustered; with style every battle), and each cell's cluster (None if unclustered)."""
    if style:
        if battles.style is None:
            raise ValueError("style=True needs battles with style covariates (see style_features)")
        cells = (battles.a, battles.b, battles.outcome, np.ones(battles.a.size), battles.style)
        return cells, _voters(battles)
    m = len(battles.models)
    key = (battles.a * m + battles.b) * 3 + np.rint(2 * battles.outcome).astype(np.intp)
    if _voters(battles) is None:
        counts = np.bincount(key, minlength=3 * m * m)
        cells = np.flatnonzero(counts)
        counts = counts[cells]
        cluster = None
    else:
        voters = _voters(battles)
        assert voters is not None
        keys, counts = np.unique(voters * (3 * m * m) + key, return_counts=True)
        cells, cluster = keys % (3 * m * m), keys // (3 * m * m)
    a, b, y = cells // (3 * m), cells // 3 % m, cells % 3 / 2
    return (a, b, y, counts.astype(float), None), cluster


def _voters(battles: Battles) -> np.ndarray | None:
    """Each battle's voter as dense indices 0..V-1; None when unclustered, when every battle
    has a voter of its own (resampling voters is then resampling battles), or when there are
    fewer than `MIN_VOTERS` voters (too few to resample)."""
    if battles.cluster is None:
        return None
    _, dense = np.unique(battles.cluster, return_inverse=True)
    if dense.size == 0 or dense.max() + 1 == dense.size or dense.max() + 1 < MIN_VOTERS:
        return None
    return dense


def _cluster_scores(
    a: np.ndarray,
    b: np.ndarray,
    y: np.ndarray,
    count: np.ndarray,
    covariates: np.ndarray | None,
    m: int,
    coef: np.ndarray,
    cluster: np.ndarray,
) -> np.ndarray:
    """``sum over voters of g g^T``, g a voter's score (log-likelihood gradient) at ``coef``:
    the middle of the cluster-robust (sandwich) covariance."""
    k = 0 if covariates is None else covariates.shape[1]
    z = coef[a] - coef[b]
    if covariates is not None:
        z = z + covariates @ coef[m:]
    residual = count * (y - expit(z))
    scores = np.zeros((int(cluster.max()) + 1, m + k))
    np.add.at(scores, (cluster, a), residual)
    np.add.at(scores, (cluster, b), -residual)
    if covariates is not None:
        at = (cluster[:, None], m + np.arange(k)[None, :])
        np.add.at(scores, at, residual[:, None] * covariates)
    return scores.T @ scores


def _battles_per_model(a: np.ndarray, b: np.ndarray, weights: np.ndarray, m: int) -> np.ndarray:
    """``[R, m]`` battle counts per model for each row of cell weights ``[R, C]``."""
    reps = weights.shape[0]
    row = np.arange(reps)[:, None] * m
    index = np.concatenate([(row + a).ravel(), (row + b).ravel()])
    counts = np.bincount(index, weights=np.tile(weights.ravel(), 2), minlength=reps * m)
    return counts.reshape(reps, m)


def _anchored(
    coef: np.ndarray, played: np.ndarray, scale: float, base: float, anchor: float
) -> np.ndarray:
    """Model coefficients ``[R, m]`` (natural log-odds) as ratings: nan where a model has no
    battle, the others shifted so their mean is ``anchor``."""
    rating = np.where(played, coef * (scale / math.log(base)), np.nan)
    present = played.sum(axis=1)
    total = np.where(played, rating, 0.0).sum(axis=1)
    mean = np.divide(total, present, out=np.zeros(len(total)), where=present > 0)
    return rating + (anchor - mean)[:, None]


def _check_scale(scale: float, base: float, ridge: float) -> None:
    if not scale > 0 or not base > 1:
        raise ValueError("scale must be above 0 and base above 1")
    if not ridge > 0:
        raise ValueError("ridge must be above 0: it keeps the fit identifiable and finite")


def bradley_terry(
    battles: Battles,
    *,
    style: bool = False,
    scale: float = 400,
    base: float = 10,
    anchor: float = 1000,
    ridge: float = RIDGE,
) -> np.ndarray:
    """Bradley–Terry ratings ``[m]`` by maximum likelihood (FastChat's ``compute_mle_elo``).

    ``P(i beats j) = 1 / (1 + base ** ((R_j - R_i) / scale))``; ties are half a win each way; the
    mean rating over models with battles is ``anchor`` and a model without battles is nan. With
    ``style=True`` the battles' style columns join the regression and only the model ratings are
    returned (LM Arena's style control). Exact up to the ``ridge`` (module docstring); invariant to
    swapping the sides of any battle with its outcome flipped (and, with style, its covariates
    negated).
    """
    return _point(battles, style, scale, base, anchor, ridge)[0]


def _point(
    battles: Battles, style: bool, scale: float, base: float, anchor: float, ridge: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[np.ndarray, ...], np.ndarray | None]:
    """``(ratings [m], coefficients [m + k], battles per model [m], cells, cell voters)``."""
    _check_scale(scale, base, ridge)
    cells, cluster = _cells(battles, style)
    a, b, y, count, covariates = cells
    m = len(battles.models)
    k = 0 if covariates is None else covariates.shape[1]
    coef = np.zeros(m + k)
    if count.size:
        coef = _newton(a, b, y, count[None], m, covariates, ridge)[0]
    played = _battles_per_model(a, b, count[None], m)[0]
    rating = _anchored(coef[None, :m], played[None] > 0, scale, base, anchor)[0]
    return rating, coef, played, cells, cluster


def _information(
    a: np.ndarray,
    b: np.ndarray,
    count: np.ndarray,
    covariates: np.ndarray | None,
    m: int,
    coef: np.ndarray,
    ridge: float,
) -> np.ndarray:
    """The penalized log-likelihood's Hessian (observed information) ``[p, p]`` at ``coef``."""
    k = 0 if covariates is None else covariates.shape[1]
    z = coef[a] - coef[b]
    if k:
        z = z + covariates @ coef[m:]
    mu = expit(z)
    curv = count * mu * (1.0 - mu)
    info = np.zeros((m + k, m + k))
    np.add.at(info, (a, a), curv)
    np.add.at(info, (b, b), curv)
    np.add.at(info, (a, b), -curv)
    np.add.at(info, (b, a), -curv)
    if k:
        weighted = [curv * covariates[:, j] for j in range(k)]
        cross = np.stack([np.bincount(a, w, m) - np.bincount(b, w, m) for w in weighted], axis=1)
        info[:m, m:], info[m:, :m] = cross, cross.T
        info[m:, m:] = covariates.T @ (curv[:, None] * covariates)
    info[np.diag_indices(m + k)] += ridge
    return info


def _interval(samples: np.ndarray, alpha: float) -> np.ndarray:
    """``[p, 2]`` percentile interval per column over the finite samples; nan where none."""
    out = np.full((samples.shape[1], 2), np.nan)
    for j in range(samples.shape[1]):
        column = samples[:, j][np.isfinite(samples[:, j])]
        if column.size:
            out[j] = np.quantile(column, [alpha / 2, 1 - alpha / 2])
    return out


@dataclass(frozen=True, slots=True, eq=False)
class Ratings:
    """An arena leaderboard: ratings on the ``scale``/``base`` Elo-like scale, mean ``anchor``.

    ``ci`` is the ``[m, 2]`` percentile bootstrap interval ``(alpha/2, 1 - alpha/2)`` (nan without
    replicates or for a model without battles); ``replicates`` ``[reps, m]`` are the bootstrap
    ratings it is read from (a replicate is nan for a model that drew no battle in it).
    ``style_coefficients`` (and ``style_ci``) are the style weights in rating points per standard
    deviation of each feature (None without style); ``battles`` counts battles per model.
    """

    models: tuple[str, ...]
    rating: np.ndarray
    ci: np.ndarray
    style_coefficients: np.ndarray | None
    battles: np.ndarray
    replicates: np.ndarray | None = None
    style_ci: np.ndarray | None = None
    scale: float = 400
    base: float = 10
    method: str = "bootstrap"  # or "asymptotic" (Wald draws; large style-controlled data)

    def win_probability(
        self, model_i: str, model_j: str, alpha: float = 0.05
    ) -> tuple[float, float, float]:
        """``(P(i beats j), lower, upper)``: the point estimate from the ratings and the
        percentile interval of the same probability over the bootstrap replicates (nan bounds
        without replicates). Unlike the two rating intervals, this interval is for the pair."""
        i, j = self.models.index(model_i), self.models.index(model_j)
        point = win_probability(self.rating[i], self.rating[j], self.scale, self.base)
        lower = upper = math.nan
        if self.replicates is not None and len(self.replicates):
            p = win_probability(self.replicates[:, i], self.replicates[:, j], self.scale, self.base)
            lower, upper = _interval(np.reshape(p, (-1, 1)), alpha)[0]
        return float(point), float(lower), float(upper)


def leaderboard(
    battles: Battles,
    *,
    style: bool = False,
    reps: int = 200,
    alpha: float = 0.05,
    seed: int = 0,
    progress: bool = False,
    scale: float = 400,
    base: float = 10,
    anchor: float = 1000,
    ridge: float = RIDGE,
) -> Ratings:
    """Bradley–Terry ratings (`bradley_terry`) with percentile bootstrap intervals over battles,
    or over voters when the battles are clustered (``Battles.cluster``).

    Each of ``reps`` replicates resamples the battles with replacement (a multinomial draw of the
    cell counts: without style the ``(a, b, outcome)`` cells, so 10^6 battles cost what 10^3 do;
    with style each battle) — or the voters, each drawn voter bringing all their battles — and
    refits, starting from the point estimate; replicates are solved together in chunks, so with
    style (or voters) the cost is ~ ``cells * reps`` (2,000 battles x 200 replicates: well under
    a second). Above ``BOOTSTRAP_BUDGET`` refits, the replicates are drawn from the fit's
    asymptotic normal distribution (cluster-robust, sandwich, with voters) instead.
    Deterministic for a given ``seed``. ``progress=True`` shows a tqdm bar (tqdm must be
    installed).
    """
    if reps < 0:
        raise ValueError("reps must be 0 or more")
    if not 0 < alpha < 1:
        raise ValueError("alpha must be in (0, 1)")
    rating, coef, played, cells, cluster = _point(battles, style, scale, base, anchor, ridge)
    count, covariates = cells[3], cells[4]
    m, k = len(battles.models), coef.size - len(battles.models)
    points = scale / math.log(base)
    replicates = np.full((reps, m), np.nan)
    style_replicates = np.full((reps, k), np.nan)
    refits = covariates is not None or cluster is not None  # else a few cells: always refit
    asymptotic = refits and count.size * reps > BOOTSTRAP_BUDGET
    if round(float(count.sum())) and reps:
        if asymptotic:
            draws = _wald_draws(cells, cluster, m, coef, ridge, reps, seed)
            present = np.broadcast_to(played > 0, (reps, m))
        else:
            draws, present = _bootstrap(cells, cluster, m, coef, ridge, reps, seed, progress)
        replicates = _anchored(draws[:, :m], present, scale, base, anchor)
        style_replicates = draws[:, m:] * points
    replicates.setflags(write=False)
    return Ratings(
        models=battles.models,
        rating=rating,
        ci=_interval(replicates, alpha),
        style_coefficients=coef[m:] * points if covariates is not None else None,
        battles=played.round().astype(np.int64),
        replicates=replicates,
        style_ci=_interval(style_replicates, alpha) if covariates is not None else None,
        scale=scale,
        base=base,
        method="asymptotic" if asymptotic else "bootstrap",
    )


def _wald_draws(
    cells: tuple[np.ndarray, ...],
    cluster: np.ndarray | None,
    m: int,
    coef: np.ndarray,
    ridge: float,
    reps: int,
    seed: int,
) -> np.ndarray:
    """``reps`` coefficient rows drawn from N(coef, covariance), no refits: the covariance is
    information^-1, or with voters H^-1 (sum of g g^T per voter) H^-1."""
    a, b, y, count, covariates = cells
    rng = np.random.default_rng(seed)
    covariance = np.linalg.inv(_information(a, b, count, covariates, m, coef, ridge))
    if cluster is not None:
        middle = _cluster_scores(a, b, y, count, covariates, m, coef, cluster)
        covariance = covariance @ middle @ covariance
    return rng.multivariate_normal(coef, (covariance + covariance.T) / 2, size=reps)


def _bootstrap(
    cells: tuple[np.ndarray, ...],
    cluster: np.ndarray | None,
    m: int,
    coef: np.ndarray,
    ridge: float,
    reps: int,
    seed: int,
    progress: bool,
) -> tuple[np.ndarray, np.ndarray]:
    """``reps`` refits on resampled battles (or voters), from ``coef``, in chunks that bound
    memory: the coefficients ``[reps, m + k]`` and whether each model drew a battle ``[reps, m]``.
    """
    a, b, y, count, covariates = cells
    n = round(float(count.sum()))
    rng = np.random.default_rng(seed)
    chunk = max(1, _CHUNK_ELEMENTS // count.size)
    fitted, present = [], []
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=reps, desc="bootstrap", unit="rep")
    for lo in range(0, reps, chunk):
        size = min(chunk, reps - lo)
        if cluster is None:
            weights = rng.multinomial(n, count / n, size=size).astype(float)
        else:  # voters drawn with replacement; each cell weighs its voter's draws
            voters = int(cluster.max()) + 1
            drawn = rng.multinomial(voters, np.full(voters, 1 / voters), size=size)
            weights = count[None, :] * drawn[:, cluster]
        fitted.append(_newton(a, b, y, weights, m, covariates, ridge, start=coef))
        present.append(_battles_per_model(a, b, weights, m) > 0)
        if bar is not None:
            bar.update(size)
    if bar is not None:
        bar.close()
    return np.concatenate(fitted), np.concatenate(present)
