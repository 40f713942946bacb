"""The report of an experiment with a confirmation run (`confirm:`): the run's own report, on
units new to the experiment, decides; the exploration's verdict is kept beside it."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from router.analysis import build_report
from router.analysis.simulate import Arm, Traffic, simulate_ab, simulate_arena
from router.experiment import Experiment

ARMS = [{"variant": v} for v in "abcd"]


def experiment(confirm: str | None = "d", mode: str = "ab", **extra: Any) -> Experiment:
    config = {
        "name": "explore",
        "mode": mode,
        "arms": ARMS,
        "default_variant": "a",
        "allocation": 0.5,
        "guardrails": [{"metric": "error_rate", "max_increase": 0.05}],
        **extra,
    }
    if confirm is not None:
        config["confirm"] = {"variant": confirm}
    return Experiment.model_validate(config)


def explored(path: Path, d_rate: float) -> None:
    """The exploration alone: d's thumbs-up rate `d_rate`, every other arm's 0.2."""
    arms = {"d": Arm(thumbs_up=d_rate)}
    simulate_ab(path, experiment(confirm=None), Traffic(units=8000, arms=arms, seed=1))


def confirmed(path: Path, d_rate: float, units: int = 6000) -> None:
    """The confirmation run's units alone (logged under its name): d at `d_rate`, a at 0.2."""
    run = experiment().confirmation()
    simulate_ab(path, run, Traffic(units=units, arms={"d": Arm(thumbs_up=d_rate)}, seed=2))


def test_a_winner_the_new_units_do_not_confirm_does_not_ship(tmp_path: Path) -> None:
    store = tmp_path / "o.db"
    explored(store, d_rate=0.3)
    confirmed(store, d_rate=0.2)  # no better, on new units
    report = build_report(store, experiment(), reps=20)
    assert report.exploration_verdict is not None
    assert (report.exploration_verdict.decision, report.exploration_verdict.variant) == (
        "ship",
        "d",
    )
    assert report.verdict.decision != "ship" and report.verdict.variant is None
    assert report.verdict.codes[0].code == "confirmation"
    assert report.verdict.codes[0].treatment == "d"
    assert "judged on the confirmation run alone: d against a" in report.verdict.reasons[0]
    run = report.confirmation
    assert run is not None and run.experiment == "explore#confirm" and set(run.units) == {"a", "d"}
    assert sum(run.units.values()) == 6000 and sum(report.units.values()) < 8000
    assert not any("chosen among" in note for note in report.notes)  # confirm answers it


def test_a_winner_the_new_units_confirm_ships(tmp_path: Path) -> None:
    store = tmp_path / "o.db"
    explored(store, d_rate=0.3)
    confirmed(store, d_rate=0.3)
    report = build_report(store, experiment(), reps=20)
    assert (report.verdict.decision, report.verdict.variant) == ("ship", "d")
    assert [c.code for c in report.verdict.codes] == [
        "confirmation",
        "primary_better_guardrails_pass",
    ]
    assert report.confirmation.verdict.decision == "ship"


def test_without_a_confirmation_unit_yet_it_keeps_running(tmp_path: Path) -> None:
    store = tmp_path / "o.db"
    explored(store, d_rate=0.3)
    report = build_report(store, experiment(), reps=20)
    assert report.verdict.decision == "keep running"
    assert [c.code for c in report.verdict.codes] == ["confirmation", "no_treatment_units"]


def test_units_the_experiment_exposed_before_are_left_out_of_the_run(tmp_path: Path) -> None:
    store = tmp_path / "o.db"
    explored(store, d_rate=0.3)
    confirmed(store, d_rate=0.3, units=1000)
    db = sqlite3.connect(store)
    seen = [
        unit
        for (unit,) in db.execute(
            "SELECT unit FROM exposures WHERE experiment = ?", ("explore#confirm",)
        ).fetchall()[:40]
    ]
    db.executemany(  # under an earlier, larger allocation these were in the exploration
        "INSERT INTO exposures (ts, request_id, experiment, unit_type, unit, variant, reason, "
        "exposed) VALUES (0, ?, 'explore', 'user', ?, 'b', 'arm', 1)",
        [(f"early-{u}", u) for u in seen],
    )
    db.commit()
    db.close()
    report = build_report(store, experiment(), reps=20)
    assert sum(report.confirmation.units.values()) == 1000 - 40
    assert (
        "40 of its units had been exposed to the experiment before" in (report.verdict.reasons[0])
    )


def test_the_whole_flow_assigns_and_logs_the_run_by_the_config(tmp_path: Path) -> None:
    """One simulation through the assignment: confirmation units are logged under the run's
    name; the run's sample-ratio test finds its even split."""
    store = tmp_path / "o.db"
    config = experiment(confirm="c")
    simulate_ab(store, config, Traffic(units=6000, arms={"c": Arm(thumbs_up=0.4)}, seed=3))
    report = build_report(store, config, reps=20)
    run = report.confirmation
    assert set(run.units) == {"a", "c"} and set(report.units) == {"a", "b", "c", "d"}
    assert sum(run.units.values()) == pytest.approx(3000, rel=0.06)  # half the units
    assert run.sample_ratio is not None and not run.sample_ratio.mismatch
    assert (report.verdict.decision, report.verdict.variant) == ("ship", "c")


def test_an_arenas_winner_is_confirmed_by_battles_of_its_pair(tmp_path: Path) -> None:
    store = tmp_path / "o.db"
    config = experiment(mode="arena", primary_metric=None, guardrails=[])
    ratings = {"a": 1000.0, "b": 1000.0, "c": 1000.0, "d": 1100.0}
    simulate_arena(store, config, battles=600, ratings=ratings, seed=1)
    simulate_arena(store, config.confirmation(), battles=600, ratings=ratings, seed=2)
    report = build_report(store, config, reps=20)
    run = report.confirmation
    assert run.mode == "arena" and run.arena is not None
    assert {row.variant for row in run.arena.leaderboard} == {"a", "d"}
    assert (report.verdict.decision, report.verdict.variant) == ("ship", "d")
    assert report.verdict.codes[0].code == "confirmation"
