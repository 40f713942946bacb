"""The simulation behind `confirm:` (`make bench-confirm`): under the null, the best of many
separate tests ships far more often than one test would, and the winner's estimate is biased
up; a confirmation run on new units ships at one test's rate and estimates without bias."""

from __future__ import annotations

from router.analysis.confirm_sim import Settings, markdown, run


def test_the_best_of_many_is_an_illusion_that_a_confirmation_run_dispels() -> None:
    settings = Settings(runs=4000, seed=11)
    found = run(settings)
    for k, row in found.items():
        assert row["confirmed"] <= 0.034  # one two-sided test's 0.025, up to its noise
        assert row["bonferroni"] <= 0.034
        assert abs(row["again"]) <= 4 * row["again_se"]  # new units: no winner's curse
        if k >= 4:
            assert row["curse"] > 10 * row["curse_se"]  # chosen for being high
    assert found[16]["separate"] > 0.12 > found[4]["separate"] > 0.04
    assert found[16]["curse"] > found[4]["curse"]
    assert "| 16 |" in markdown(found, settings, "cmd", 0.1)
