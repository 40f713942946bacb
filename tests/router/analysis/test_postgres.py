"""The analysis reads a PostgreSQL store as it reads a SQLite file: the same simulated log, copied
across (`copy_store`, what `arena-serve store migrate` runs), gives the same report, number for
number, for every kind of experiment."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from router.analysis import build_report
from router.analysis.data import bandit_rewards, load_bandit, votes
from router.analysis.report import build_holdout_report
from router.analysis.simulate import (
    Arm,
    ProbeTruth,
    Traffic,
    simulate_ab,
    simulate_arena,
    simulate_bandit,
    simulate_probe,
)
from router.events import Exposure
from router.experiment import Experiment
from router.store import TABLES, OutcomeStore, copy_store

GUARDRAILS = [
    {"metric": "reward_score", "max_decrease": 0.15},
    {"metric": "error_rate", "max_increase": 0.03},
]


def _same(sqlite_report: Any, pg_report: Any) -> None:
    """Equal field by field, numbers to 1e-9 (sums taken in another order differ in the last
    digits); the time the report took and was made excepted."""
    skip = {"generated_at", "seconds"}
    first = sqlite_report.model_dump(mode="json", exclude=skip)
    second = pg_report.model_dump(mode="json", exclude=skip)
    _walk(first, second)


def _walk(first: Any, second: Any, where: str = "") -> bool:
    """pytest.approx does not reach into nested structures: compare them leaf by leaf."""
    if isinstance(first, dict):
        assert isinstance(second, dict) and first.keys() == second.keys(), where
        return all(_walk(first[k], second[k], f"{where}.{k}") for k in first)
    if isinstance(first, list):
        assert isinstance(second, list) and len(first) == len(second), where
        return all(
            _walk(a, b, f"{where}[{i}]") for i, (a, b) in enumerate(zip(first, second, strict=True))
        )
    if isinstance(first, float):
        assert second == pytest.approx(first, rel=1e-9, abs=1e-12, nan_ok=True), where
        return True
    assert first == second, where
    return True


def _copied(path: Path, dsn: str) -> dict[str, int]:
    copied = copy_store(path, dsn)
    source, target = OutcomeStore(path), OutcomeStore(dsn)
    try:
        assert copied == {table: source.count(table) for table in TABLES}
        assert {table: target.count(table) for table in TABLES} == copied
        assert source.voter_secret() == target.voter_secret()
    finally:
        source.close()
        target.close()
    return copied


def test_an_ab_report_with_guardrails_probes_and_a_pre_period_is_the_same(
    tmp_path: Path, pg_dsn: str
) -> None:
    experiment = Experiment.model_validate(
        {"name": "ab", "arms": [{"variant": "a"}, {"variant": "b"}], "guardrails": GUARDRAILS}
    )
    path = tmp_path / "o.db"
    arms = {"a": Arm(thumbs_up=0.2), "b": Arm(thumbs_up=0.26, reward=-0.1, error=0.02)}
    simulate_ab(path, experiment, Traffic(units=800, arms=arms, pre_period=True, seed=4))
    for variant in ("a", "b"):
        simulate_probe(path, variant, "r1", ProbeTruth(), items=40)
    copied = _copied(path, dsn=pg_dsn)
    assert copied["exposures"] > 0 and copied["probes"] > 0 and copied["feedback"] > 0
    revisions = {"a": "r1", "b": "r1"}
    _same(
        build_report(path, experiment, reps=50, revisions=revisions),
        build_report(pg_dsn, experiment, reps=50, revisions=revisions),
    )
    _same(build_holdout_report(path, reps=30), build_holdout_report(pg_dsn, reps=30))


def test_an_arena_report_is_the_same(tmp_path: Path, pg_dsn: str) -> None:
    experiment = Experiment.model_validate(
        {
            "name": "duel",
            "mode": "arena",
            "arms": [{"variant": "a"}, {"variant": "b"}, {"variant": "c"}],
            "guardrails": [{"metric": "reward_score", "max_decrease": 0.2}],
        }
    )
    path = tmp_path / "o.db"
    ratings = {"a": 1000.0, "b": 1060.0, "c": 980.0}
    simulate_arena(path, experiment, battles=600, ratings=ratings, length_bias=0.3, seed=5)
    _copied(path, pg_dsn)
    _same(build_report(path, experiment, reps=40), build_report(pg_dsn, experiment, reps=40))
    first, second = votes(path, "duel"), votes(pg_dsn, "duel")
    assert first is not None and second is not None and first.pairs == second.pairs


def test_a_bandit_reads_the_same(tmp_path: Path, pg_dsn: str) -> None:
    reward = "thumbs_up_rate"
    experiment = Experiment.model_validate(
        {
            "name": "bandit",
            "mode": "bandit",
            "arms": [{"variant": "a"}, {"variant": "b"}, {"variant": "c"}],
            "bandit": {"refresh_s": 60},
            "guardrails": [{"metric": "error_rate", "max_increase": 0.05}],
        }
    )
    path = tmp_path / "o.db"
    rates = {"a": 0.2, "b": 0.3, "c": 0.25}
    simulate_bandit(path, experiment, rates=rates, units=900, refresh=300, seed=6)
    _copied(path, pg_dsn)
    assert bandit_rewards(path, "bandit", reward, (-1.0, 1.0)) == bandit_rewards(
        pg_dsn, "bandit", reward, (-1.0, 1.0)
    )
    sqlite_rows, pg_rows = (
        load_bandit(path, "bandit", reward),
        load_bandit(pg_dsn, "bandit", reward),
    )
    assert sqlite_rows.assigned == pg_rows.assigned and sqlite_rows.weights == pg_rows.weights
    _same(build_report(path, experiment, reps=40), build_report(pg_dsn, experiment, reps=40))


def test_a_copy_into_a_store_that_holds_records_is_refused(tmp_path: Path, pg_dsn: str) -> None:
    path = tmp_path / "o.db"
    experiment = Experiment.model_validate(
        {"name": "ab", "arms": [{"variant": "a"}, {"variant": "b"}]}
    )
    simulate_ab(path, experiment, Traffic(units=20, seed=7))
    copy_store(path, pg_dsn)
    with pytest.raises(ValueError, match="already holds records"):
        copy_store(path, pg_dsn)
    target = OutcomeStore(pg_dsn)
    try:  # new rows are numbered after the copied ones
        assert target.count("exposures") == 20
        [exposure] = target.rows("exposures", "WHERE unit = ?", ("user-7-0",))
        again = dataclasses.replace(
            _exposure(exposure), unit="newcomer", request_id="r-new", ts=exposure["ts"] + 1
        )
        assert target.write([again]) == [None]
        ids = [row["id"] for row in target.rows("exposures", "ORDER BY id")]
        assert ids[-1] == max(ids[:-1]) + 1 and len(set(ids)) == 21
    finally:
        target.close()


def _exposure(row: dict[str, Any]) -> Exposure:
    return Exposure(**{f.name: row[f.name] for f in dataclasses.fields(Exposure)})
