"""The bandit simulation (`make bench-bandit`) on a few short runs: it runs, its figures are
what they claim, and its table says so."""

from __future__ import annotations

from router.analysis import bandit_sim
from router.analysis.bandit_sim import ARMS, TRUTH, Settings, one_run


def test_a_run_counts_regret_against_the_best_arm() -> None:
    settings = Settings(units=2000, refresh=250)
    fixed = one_run(settings, seed=1, adaptive=False)
    best = max(TRUTH.values())
    expected = sum(best - TRUTH[a] for a in ARMS) / len(ARMS) * settings.units
    assert abs(fixed["regret"] - expected) < 0.15 * expected
    thompson = one_run(settings, seed=1, adaptive=True)
    assert thompson["regret"] < fixed["regret"] and thompson["best_share"] > fixed["best_share"]
    assert sum(e.n for e in thompson["estimates"].values()) == settings.units


def test_the_table_reports_regret_and_bias() -> None:
    settings = Settings(runs=4, units=1000, refresh=250)
    found = bandit_sim.run(settings)
    assert len(found["regret"]["thompson"]) == 4 and set(found["bias"]) == set(ARMS)
    text = bandit_sim.markdown(found, settings, "python -m router.analysis.bandit_sim", 1.0)
    assert "Thompson sampling" in text and "Horvitz–Thompson" in text and "control" in text
