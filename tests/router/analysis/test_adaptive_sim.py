"""The adaptive-sampling simulation's plumbing on a few runs (`make bench-adaptive` runs the
full one and writes its figures to docs/benchmarks.md)."""

from __future__ import annotations

import numpy as np

from router.analysis import adaptive_sim
from router.analysis.adaptive_sim import PAIRS, TRUTH, Arena, Settings, adaptive, uniform


def test_votes_follow_the_bradley_terry_truth_and_the_weights() -> None:
    arena = Arena(np.random.default_rng(0))
    only = {p: 0.0 for p in PAIRS} | {("arm-1000", "arm-1100"): 1.0}
    arena.vote(only, 4000)
    assert arena.counts == {("arm-1000", "arm-1100"): 4000}
    # P(1100 beats 1000) = 1 / (1 + 10 ** (-100 / 400)) = 0.640
    assert abs(1 - np.mean(arena.outcome) - 0.640) < 0.03
    ratings = arena.ratings()
    assert abs((ratings["arm-1100"] - ratings["arm-1000"]) - 100) < 25
    assert ratings["arm-1010"] == 1000.0  # no votes yet: the anchor, not nan


def test_the_adaptive_policy_starts_uniform_then_aims_at_the_top_pair() -> None:
    settings = Settings()
    arena = Arena(np.random.default_rng(1))
    assert adaptive(arena, settings) == uniform(arena, settings)
    arena.vote(uniform(arena, settings), 600)
    weights = adaptive(arena, settings)
    assert max(weights, key=weights.get) == ("arm-1030", "arm-1100")
    assert min(weights.values()) >= settings.floor - 1e-12


def test_a_small_run_reports_both_policies_and_the_coverage() -> None:
    settings = Settings(runs=3, budget=200, width=120)
    found = adaptive_sim.run(settings)
    assert found["adaptive"]["median"] < found["uniform"]["median"]
    text = adaptive_sim.markdown(found, settings, "python -m router.analysis.adaptive_sim", 1.0)
    assert "Votes saved" in text and "Coverage" in text
    assert set(TRUTH) == {a for pair in PAIRS for a in pair}
