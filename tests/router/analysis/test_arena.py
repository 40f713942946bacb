"""The arena leaderboard: Bradley–Terry recovers simulated preferences within its bootstrap
intervals at about the nominal rate, ties count as half wins, style control removes a pure length
bias, degenerate data stays finite, and a million battles cost what a thousand do."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from router.analysis.arena import (
    RIDGE,
    Battles,
    bradley_terry,
    leaderboard,
    style_features,
    win_matrix,
    win_probability,
)

TRUE_4 = np.array([1100.0, 1050.0, 950.0, 900.0])  # mean 1000


def simulate(true: np.ndarray, n: int, rng: np.random.Generator, tie: float = 0.0) -> Battles:
    """``n`` battles between uniformly drawn distinct pairs; model a's expected score is the
    Bradley–Terry probability, of which ``tie`` is paid as ties (half a win each way)."""
    m = len(true)
    a = rng.integers(0, m, n)
    b = (a + rng.integers(1, m, n)) % m
    score = win_probability(true[a], true[b])
    u = rng.random(n)
    win, draw = score - tie / 2, np.full(n, tie)
    outcome = np.where(u < win, 1.0, np.where(u < win + draw, 0.5, 0.0))
    return Battles(tuple(f"m{i}" for i in range(m)), a, b, outcome)


def sixty_forty(n: int, rng: np.random.Generator, tie: float = 0.0) -> Battles:
    """A ("m0") beats B ("m1") with expected score 0.6, sides shown in random order."""
    return simulate(np.array([400 * math.log10(1.5), 0.0]), n, rng, tie)


def swapped(battles: Battles, rows: np.ndarray) -> Battles:
    """The same battles with the sides of ``rows`` swapped: outcome flipped, style negated."""
    a = np.where(rows, battles.b, battles.a)
    b = np.where(rows, battles.a, battles.b)
    outcome = np.where(rows, 1.0 - battles.outcome, battles.outcome)
    style = (
        None if battles.style is None else np.where(rows[:, None], -battles.style, battles.style)
    )
    return Battles(battles.models, a, b, outcome, style)


def length_biased(n: int, rng: np.random.Generator) -> Battles:
    """Two models of equal quality; A answers longer, and the vote depends only on the length
    difference (plus three markdown columns that voters ignore)."""
    a_shown_first = rng.random(n) < 0.5
    long = rng.lognormal(math.log(500), 0.5, n)
    short = rng.lognormal(math.log(300), 0.5, n)
    tokens_a, tokens_b = np.where(a_shown_first, long, short), np.where(a_shown_first, short, long)
    markdown_a, markdown_b = rng.poisson(3, (n, 3)), rng.poisson(3, (n, 3))
    length = (tokens_a - tokens_b) / (tokens_a + tokens_b)
    outcome = (rng.random(n) < 1 / (1 + np.exp(-4 * length))).astype(float)
    a = np.where(a_shown_first, 0, 1)
    style = style_features(tokens_a, tokens_b, markdown_a, markdown_b)
    return Battles(("A", "B"), a, 1 - a, outcome, style)


def difference_interval(ratings, alpha: float = 0.05) -> np.ndarray:
    """Percentile interval of rating(A) - rating(B) over the bootstrap replicates."""
    diff = ratings.replicates[:, 0] - ratings.replicates[:, 1]
    return np.quantile(diff, [alpha / 2, 1 - alpha / 2])


# --- Recovery and coverage -------------------------------------------------------------------


@pytest.mark.parametrize("tie", [0.0, 0.3])
def test_a_sixty_forty_preference_is_recovered_within_its_interval(tie: float) -> None:
    ratings = leaderboard(sixty_forty(2000, np.random.default_rng(7), tie))
    p, lower, upper = ratings.win_probability("m0", "m1")
    assert lower <= 0.60 <= upper
    assert abs(p - 0.60) < 0.03
    # The binomial standard error at 2,000 votes is 0.011: a 95% interval is ~0.043 wide.
    assert 0.03 < upper - lower < 0.06
    assert ratings.win_probability("m1", "m0")[0] == pytest.approx(1 - p)


def test_the_interval_covers_the_true_preference_at_about_the_nominal_rate() -> None:
    rng = np.random.default_rng(11)
    covered, widths = 0, []
    for _ in range(100):
        _, lower, upper = leaderboard(sixty_forty(2000, rng), reps=200).win_probability("m0", "m1")
        covered += lower <= 0.60 <= upper
        widths.append(upper - lower)
    assert covered >= 85
    assert 0.035 < np.mean(widths) < 0.05


def test_four_known_ratings_are_recovered_within_their_intervals() -> None:
    ratings = leaderboard(simulate(TRUE_4, 20_000, np.random.default_rng(3)), alpha=0.01)
    assert np.all((ratings.ci[:, 0] <= TRUE_4) & (ratings.ci[:, 1] >= TRUE_4))
    assert np.all(ratings.ci[:, 1] - ratings.ci[:, 0] < 40)
    assert list(np.argsort(-ratings.rating)) == [0, 1, 2, 3]
    assert ratings.rating.mean() == pytest.approx(1000)
    assert ratings.battles.sum() == 2 * 20_000


def test_the_ridge_does_not_move_ratings_materially() -> None:
    battles = simulate(TRUE_4, 2000, np.random.default_rng(5))
    tight = bradley_terry(battles, ridge=1e-10)
    assert np.max(np.abs(bradley_terry(battles) - tight)) < 0.01
    assert np.max(np.abs(bradley_terry(battles, ridge=100 * RIDGE) - tight)) < 0.5


# --- Invariances and the scale ---------------------------------------------------------------


def test_ratings_do_not_depend_on_which_side_a_model_was_shown() -> None:
    rng = np.random.default_rng(1)
    battles = simulate(TRUE_4, 3000, rng, tie=0.1)
    flip = rng.random(3000) < 0.5
    np.testing.assert_allclose(bradley_terry(swapped(battles, flip)), bradley_terry(battles))
    np.testing.assert_allclose(
        bradley_terry(swapped(battles, np.ones(3000, bool))), bradley_terry(battles)
    )


def test_style_controlled_ratings_do_not_depend_on_sides_either() -> None:
    rng = np.random.default_rng(2)
    battles = length_biased(1000, rng)
    flip = rng.random(1000) < 0.5
    np.testing.assert_allclose(
        bradley_terry(swapped(battles, flip), style=True), bradley_terry(battles, style=True)
    )


@pytest.mark.parametrize("anchor", [1000.0, 1500.0, 0.0])
def test_the_mean_rating_is_the_anchor(anchor: float) -> None:
    battles = simulate(TRUE_4, 500, np.random.default_rng(4))
    ratings = leaderboard(battles, anchor=anchor, reps=20)
    assert ratings.rating.mean() == pytest.approx(anchor)
    np.testing.assert_allclose(ratings.replicates.mean(axis=1), anchor, atol=1e-9)
    np.testing.assert_allclose(ratings.rating - anchor, bradley_terry(battles) - 1000, atol=1e-8)


def ten_to_one() -> Battles:
    votes = ["a"] * 1000 + ["b"] * 100
    return Battles.from_votes(["x"] * 1100, ["y"] * 1100, votes)


@pytest.mark.parametrize(
    ("scale", "base", "difference"),
    [(400, 10, 400.0), (800, 10, 800.0), (1, math.e, math.log(10)), (400, 100, 200.0)],
)
def test_scale_and_base_give_the_odds(scale: float, base: float, difference: float) -> None:
    """Ten wins to one loss is odds of 10:1, which is `scale * log_base(10)` points."""
    rating = bradley_terry(ten_to_one(), scale=scale, base=base)
    assert rating[0] - rating[1] == pytest.approx(difference, rel=1e-4)
    assert win_probability(rating[0], rating[1], scale, base) == pytest.approx(10 / 11)


def test_win_probability() -> None:
    assert win_probability(1400, 1000) == pytest.approx(10 / 11)
    assert win_probability(1000, 1400) == pytest.approx(1 / 11)
    assert win_probability(1234, 1234) == 0.5
    assert win_probability(1800, 1000, scale=800) == pytest.approx(10 / 11)
    assert win_probability(1e6, 0) == 1.0
    np.testing.assert_allclose(win_probability(np.array([1400, 1000]), 1000), [10 / 11, 0.5])


# --- Ties ------------------------------------------------------------------------------------


def test_all_ties_rate_every_model_the_same() -> None:
    battles = Battles.from_votes(["x", "y", "z", "x"], ["y", "z", "x", "z"], ["tie"] * 4)
    np.testing.assert_allclose(bradley_terry(battles), 1000, atol=1e-9)


def test_a_tie_is_half_a_win_each_way() -> None:
    tie_heavy = Battles.from_votes(
        ["x"] * 44 + ["y"] * 20,
        ["y"] * 44 + ["z"] * 20,
        ["a"] * 10 + ["tie"] * 30 + ["b"] * 4 + ["both_bad"] * 12 + ["a"] * 8,
    )
    # Each pair of ties is one win each way.
    half_wins = Battles.from_votes(
        ["x"] * 44 + ["y"] * 20,
        ["y"] * 44 + ["z"] * 20,
        ["a"] * 25 + ["b"] * 19 + ["a"] * 6 + ["b"] * 6 + ["a"] * 8,
    )
    np.testing.assert_allclose(bradley_terry(tie_heavy), bradley_terry(half_wins), atol=1e-8)
    assert bradley_terry(tie_heavy)[0] > bradley_terry(tie_heavy)[1]


# --- Style control ---------------------------------------------------------------------------


def test_style_control_removes_a_pure_length_bias() -> None:
    battles = length_biased(3000, np.random.default_rng(2))

    naive = leaderboard(battles)
    gap = naive.rating[0] - naive.rating[1]
    assert gap > 80  # A wins ~66% of its battles on length alone: ~115 points
    assert difference_interval(naive)[0] > 50
    assert naive.style_coefficients is None and naive.style_ci is None

    controlled = leaderboard(battles, style=True)
    lower, upper = difference_interval(controlled)
    assert abs(controlled.rating[0] - controlled.rating[1]) < 30
    assert lower <= 0 <= upper
    assert controlled.style_coefficients.shape == (4,)
    assert controlled.style_ci[0, 0] > 100  # length: clearly positive
    # Markdown, which voters ignored, weighs little beside length (~270 points per sd).
    assert np.all(np.abs(controlled.style_coefficients[1:]) < 40)


def test_large_style_data_get_asymptotic_intervals(monkeypatch: pytest.MonkeyPatch) -> None:
    """Past the refit budget, Wald draws replace the bootstrap: same point, similar intervals,
    nominal coverage."""
    import router.analysis.arena as arena

    battles = length_biased(3000, np.random.default_rng(5))
    refit = leaderboard(battles, style=True)
    monkeypatch.setattr(arena, "BOOTSTRAP_BUDGET", 1000)
    wald = leaderboard(battles, style=True)
    assert (refit.method, wald.method) == ("bootstrap", "asymptotic")
    np.testing.assert_allclose(wald.rating, refit.rating)
    width = np.diff(difference_interval(wald))[0] / np.diff(difference_interval(refit))[0]
    assert 0.75 < width < 1.33
    covered = 0
    for seed in range(100):
        data = length_biased(3000, np.random.default_rng(1000 + seed))
        low, high = difference_interval(leaderboard(data, style=True, seed=seed))
        covered += low <= 0 <= high
    assert covered >= 88  # equal quality: the gap's interval covers 0 about 95 % of the time


def test_style_needs_covariates() -> None:
    with pytest.raises(ValueError, match="style covariates"):
        bradley_terry(simulate(TRUE_4, 10, np.random.default_rng(0)), style=True)


def test_style_features_by_hand() -> None:
    features = style_features(
        tokens_a=[30, 10, 0],
        tokens_b=[10, 30, 0],
        markdown_a=[[1, 3], [0, 0], [2, 1]],
        markdown_b=[[1, 1], [0, 0], [2, 1]],
    )
    # length (0.5, -0.5, 0); headers constant 0; lists (0.5, 0, 0): standardized.
    np.testing.assert_allclose(features[:, 0], [math.sqrt(1.5), -math.sqrt(1.5), 0])
    np.testing.assert_array_equal(features[:, 1], 0)
    np.testing.assert_allclose(features[:, 2], [math.sqrt(2), -math.sqrt(0.5), -math.sqrt(0.5)])


def test_style_features_are_standardized_and_antisymmetric() -> None:
    rng = np.random.default_rng(0)
    tokens_a, tokens_b = rng.integers(0, 900, 200), rng.integers(0, 900, 200)
    markdown_a, markdown_b = rng.poisson(2, (200, 3)), rng.poisson(2, (200, 3))
    features = style_features(tokens_a, tokens_b, markdown_a, markdown_b)
    assert features.shape == (200, 4)
    np.testing.assert_allclose(features.mean(axis=0), 0, atol=1e-12)
    np.testing.assert_allclose(features.std(axis=0), 1)
    np.testing.assert_allclose(
        style_features(tokens_b, tokens_a, markdown_b, markdown_a), -features
    )


def test_style_features_reject_negative_counts() -> None:
    with pytest.raises(ValueError, match="negative"):
        style_features([1, -1], [1, 1], [[0], [0]], [[0], [0]])


# --- The win matrix --------------------------------------------------------------------------


def test_win_matrix_by_hand() -> None:
    battles = Battles.from_votes(
        ["x", "x", "x", "y", "y"],
        ["y", "y", "y", "x", "z"],
        ["a", "a", "tie", "a", "b"],
        models=["x", "y", "z"],
    )
    win_rate, counts = win_matrix(battles)
    np.testing.assert_array_equal(counts, [[0, 4, 0], [4, 0, 1], [0, 1, 0]])
    nan = np.nan
    np.testing.assert_allclose(
        win_rate, [[nan, 0.625, nan], [0.375, nan, 0.0], [nan, 1.0, nan]], equal_nan=True
    )


# --- Validation and degenerate data ----------------------------------------------------------


@pytest.mark.parametrize("vote", ["A", "draw", "", "left"])
def test_from_votes_rejects_unknown_votes(vote: str) -> None:
    with pytest.raises(ValueError, match="unknown votes"):
        Battles.from_votes(["x", "x"], ["y", "y"], ["a", vote])


@pytest.mark.parametrize(
    ("variant_a", "variant_b", "votes", "models", "message"),
    [
        (["x"], ["y", "y"], ["a"], None, "same length"),
        (["x"], ["x"], ["a"], None, "two different models"),
        (["x"], ["w"], ["a"], ["x", "y"], "not in models"),
        (["x"], ["y"], ["a"], ["x", "y", "x"], "distinct"),
    ],
)
def test_from_votes_rejects_malformed_battles(variant_a, variant_b, votes, models, message) -> None:
    with pytest.raises(ValueError, match=message):
        Battles.from_votes(variant_a, variant_b, votes, models=models)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"outcome": [0.3]}, "outcome"),
        ({"b": [2]}, "index models"),
        ({"a": [0.0]}, "integer"),
        ({"style": [[1.0], [2.0]]}, "style"),
        ({"style": [[math.nan]]}, "finite"),
    ],
)
def test_battles_reject_malformed_arrays(fields: dict, message: str) -> None:
    battle = {"models": ("x", "y"), "a": [0], "b": [1], "outcome": [1.0]} | fields
    with pytest.raises(ValueError, match=message):
        Battles(**battle)


def test_battles_are_read_only() -> None:
    battles = Battles.from_votes(["x"], ["y"], ["a"])
    with pytest.raises(ValueError):
        battles.outcome[0] = 0.0


def test_a_model_without_battles_is_unrated() -> None:
    battles = Battles.from_votes(
        ["x", "y", "x", "y"], ["y", "x", "y", "x"], ["a", "a", "a", "b"], models=["x", "idle", "y"]
    )
    ratings = leaderboard(battles, reps=50)
    assert math.isnan(ratings.rating[1]) and np.all(np.isnan(ratings.ci[1]))
    assert list(ratings.battles) == [4, 0, 4]
    assert np.nanmean(ratings.rating) == pytest.approx(1000)
    assert ratings.rating[0] > ratings.rating[2]
    assert np.all(np.isfinite(ratings.ci[[0, 2]]))


def test_no_battles_at_all() -> None:
    ratings = leaderboard(Battles(("x", "y"), [], [], []))
    assert np.all(np.isnan(ratings.rating)) and np.all(np.isnan(ratings.ci))
    assert list(ratings.battles) == [0, 0]


def test_a_single_battle_ranks_the_winner_first_and_stays_finite() -> None:
    ratings = leaderboard(Battles.from_votes(["x"], ["y"], ["b"]), reps=20)
    assert ratings.rating[1] > ratings.rating[0]
    assert np.all(np.isfinite(ratings.rating)) and np.all(np.isfinite(ratings.ci))


def test_a_model_that_always_wins_gets_a_finite_rating() -> None:
    """The MLE is at infinity; the ridge keeps it finite (~1,700 points over 10 battles)."""
    battles = Battles.from_votes(
        ["x"] * 10 + ["x"] * 10 + ["y"] * 10,
        ["y"] * 10 + ["z"] * 10 + ["z"] * 10,
        ["a"] * 20 + ["a", "b"] * 5,
    )
    ratings = leaderboard(battles, reps=50)
    assert np.all(np.isfinite(ratings.rating)) and np.all(np.isfinite(ratings.ci))
    assert ratings.rating[0] - max(ratings.rating[1:]) > 1000
    assert ratings.rating[0] - min(ratings.rating[1:]) < 4000
    assert ratings.rating[1] == pytest.approx(ratings.rating[2], abs=1e-6)


def test_disconnected_groups_are_each_centred() -> None:
    battles = Battles.from_votes(
        ["x", "x", "z", "z", "z"], ["y", "y", "w", "w", "w"], ["a", "tie", "b", "b", "a"]
    )
    rating = dict(zip(battles.models, bradley_terry(battles), strict=True))
    assert rating["x"] + rating["y"] == pytest.approx(rating["z"] + rating["w"])
    assert rating["x"] > rating["y"] and rating["w"] > rating["z"]


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(0, 3), st.integers(1, 3), st.sampled_from(["a", "b", "tie", "both_bad"])
        ),
        min_size=1,
        max_size=40,
    )
)
def test_any_votes_give_finite_anchored_side_free_ratings(rows) -> None:
    names = ["w", "x", "y", "z"]
    variant_a = [names[i] for i, _, _ in rows]
    variant_b = [names[(i + d) % 4] for i, d, _ in rows]
    votes = [vote for _, _, vote in rows]
    battles = Battles.from_votes(variant_a, variant_b, votes, models=names)
    rating = bradley_terry(battles)
    played = np.isfinite(rating)
    assert played.sum() == len({*variant_a, *variant_b})
    assert rating[played].mean() == pytest.approx(1000)
    flipped = {"a": "b", "b": "a", "tie": "tie", "both_bad": "both_bad"}
    mirrored = Battles.from_votes(variant_b, variant_a, [flipped[v] for v in votes], models=names)
    np.testing.assert_allclose(bradley_terry(mirrored), rating, atol=1e-6)


# --- Bootstrap mechanics and performance -----------------------------------------------------


def test_the_bootstrap_is_deterministic_per_seed_and_progress_changes_nothing() -> None:
    battles = simulate(TRUE_4, 1000, np.random.default_rng(8))
    first = leaderboard(battles, reps=50, seed=1)
    np.testing.assert_array_equal(first.ci, leaderboard(battles, reps=50, seed=1).ci)
    np.testing.assert_array_equal(first.ci, leaderboard(battles, reps=50, seed=1, progress=True).ci)
    assert not np.array_equal(first.ci, leaderboard(battles, reps=50, seed=2).ci)
    assert first.replicates.shape == (50, 4)


def test_no_replicates_give_nan_intervals() -> None:
    ratings = leaderboard(simulate(TRUE_4, 100, np.random.default_rng(0)), reps=0)
    assert np.all(np.isnan(ratings.ci)) and np.all(np.isfinite(ratings.rating))
    assert math.isnan(ratings.win_probability("m0", "m1")[1])


@pytest.mark.parametrize(("reps", "alpha"), [(-1, 0.05), (10, 0.0), (10, 1.0)])
def test_leaderboard_rejects_bad_arguments(reps: int, alpha: float) -> None:
    with pytest.raises(ValueError):
        leaderboard(simulate(TRUE_4, 10, np.random.default_rng(0)), reps=reps, alpha=alpha)


def test_a_million_battles_cost_what_a_thousand_do() -> None:
    battles = simulate(TRUE_4, 1_000_000, np.random.default_rng(9))
    start = time.perf_counter()
    ratings = leaderboard(battles, reps=200)
    assert time.perf_counter() - start < 20
    np.testing.assert_allclose(ratings.rating, TRUE_4, atol=3)
    assert np.all(ratings.ci[:, 1] - ratings.ci[:, 0] < 5)


def test_style_bootstrap_is_fast() -> None:
    battles = length_biased(2000, np.random.default_rng(10))
    start = time.perf_counter()
    leaderboard(battles, style=True, reps=200)
    assert time.perf_counter() - start < 5


def _tasteful_votes(seed: int, voters: int = 30, n: int = 3000) -> tuple[list, list, list, list]:
    """Two equally good models; each voter leans their own way (logit ~ N(0, 1.5)), so the
    population's P(x beats y) is 1/2 but a voter's battles are not independent."""
    rng = np.random.default_rng(seed)
    taste = rng.normal(0.0, 1.5, voters)
    who = rng.integers(0, voters, n)
    x_first = rng.random(n) < 0.5
    x_wins = rng.random(n) < 1 / (1 + np.exp(-taste[who]))
    a = np.where(x_first, "x", "y").tolist()
    b = np.where(x_first, "y", "x").tolist()
    votes = np.where(x_wins == x_first, "a", "b").tolist()
    return a, b, votes, [f"voter-{v}" for v in who]


@pytest.mark.parametrize("style", [False, True])
def test_intervals_resample_voters_and_cover_the_truth(style: bool) -> None:
    """Resampling battles misses the truth most of the time here; resampling voters covers it
    about as often as a 95 % interval should."""
    runs, missed_by = 30, {"battles": 0, "voters": 0}
    for seed in range(runs):
        a, b, votes, voters = _tasteful_votes(seed)
        covariates = np.random.default_rng(seed).normal(size=(len(votes), 1)) if style else None
        for clustered in ("battles", "voters"):
            battles = Battles.from_votes(
                a, b, votes, covariates, voters=voters if clustered == "voters" else None
            )
            _, low, high = leaderboard(battles, style=style, reps=100, seed=seed).win_probability(
                "x", "y"
            )
            missed_by[clustered] += not low <= 0.5 <= high
    assert missed_by["battles"] >= runs // 2
    assert missed_by["voters"] <= 5


def test_asymptotic_intervals_are_cluster_robust_too(monkeypatch: pytest.MonkeyPatch) -> None:
    import router.analysis.arena as arena

    monkeypatch.setattr(arena, "BOOTSTRAP_BUDGET", 0)  # always the Wald draws
    a, b, votes, voters = _tasteful_votes(seed=1)
    plain = leaderboard(Battles.from_votes(a, b, votes), style=False, reps=200)
    robust = leaderboard(Battles.from_votes(a, b, votes, voters=voters), style=False, reps=200)
    assert robust.method == "asymptotic" and plain.method == "bootstrap"  # few cells: refits
    _, low, high = robust.win_probability("x", "y")
    _, plain_low, plain_high = plain.win_probability("x", "y")
    assert high - low > 3 * (plain_high - plain_low)


def test_one_battle_per_voter_is_the_plain_bootstrap() -> None:
    a, b, votes, _ = _tasteful_votes(seed=2, n=500)
    voters = [f"v{i}" for i in range(len(votes))]
    plain = leaderboard(Battles.from_votes(a, b, votes), reps=50, seed=3)
    same = leaderboard(Battles.from_votes(a, b, votes, voters=voters), reps=50, seed=3)
    np.testing.assert_array_equal(plain.replicates, same.replicates)
