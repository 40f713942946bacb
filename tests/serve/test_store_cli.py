"""The data commands on a PostgreSQL store (a real server, tests/pg.py): `store migrate` moves a
SQLite log across, and `report`, `purge` and `export-preferences` read the copy as they read the
file, the DSN given directly, in the config, or through an environment variable."""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path

import pytest
import yaml

from router.analysis.simulate import Traffic, simulate_ab
from router.events import Transcript
from router.store import OutcomeStore
from serve.cli import main, read_serve_file

ROOT = Path(__file__).resolve().parents[2]


def config_file(tmp_path: Path, store: dict | None = None) -> Path:
    document = copy.deepcopy(yaml.safe_load((ROOT / "deploy" / "config.yaml").read_text()))
    args = document["applications"][0]["args"]
    args["store_path"] = str(tmp_path / "outcomes.db")
    if store is not None:
        args["store"] = store
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


def test_migrate_then_report_from_postgres(
    tmp_path: Path, pg_dsn: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    config = config_file(tmp_path)
    served = read_serve_file(config)
    experiment = served.gateway.experiments[0]
    simulate_ab(served.app.store_file, experiment, Traffic(units=300, seed=3))
    assert main(["store", "migrate", "--config", str(config), "--to", pg_dsn]) == 0
    printed = capsys.readouterr().out
    assert "copied" in printed and "exposures: 300" in printed
    # Again into the same database: refused, nothing written twice.
    assert main(["store", "migrate", "--config", str(config), "--to", pg_dsn]) == 2
    assert "already holds records" in capsys.readouterr().err

    command = ["report", "--experiment", experiment.name, "--json", "--reps", "20"]
    assert main([*command, "--config", str(config)]) == 0
    from_file = json.loads(capsys.readouterr().out)
    monkeypatch.setenv("ARENA_TEST_DSN", pg_dsn)
    in_config = config_file(tmp_path, {"url": "env:ARENA_TEST_DSN"})
    assert main([*command, "--config", str(in_config)]) == 0
    from_pg = json.loads(capsys.readouterr().out)
    assert from_pg["units"] == from_file["units"] and from_pg["verdict"] == from_file["verdict"]
    assert main([*command, "--config", str(config), "--store", pg_dsn]) == 0
    assert json.loads(capsys.readouterr().out)["units"] == from_file["units"]


def test_purge_on_postgres(pg_dsn: str, capsys: pytest.CaptureFixture[str]) -> None:
    now = time.time()
    store = OutcomeStore(pg_dsn)
    store.write(
        [
            Transcript(
                ts=now - days * 86400,
                completion_id=f"c{days}",
                experiment="duel",
                messages="[]",
                answer="x",
            )
            for days in (1, 8, 40)
        ]
    )
    store.close()
    assert main(["purge", "--store", pg_dsn, "--older-than", "7"]) == 0
    out = capsys.readouterr().out
    assert "purged the text of 2 completions older than 7 days" in out
    assert "arena@" in out  # the DSN is named, its password (none here) never


def test_bad_stores_are_messages(
    tmp_path: Path, pg_server, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    config = config_file(tmp_path)
    monkeypatch.delenv("ARENA_NOT_SET", raising=False)
    assert main(["purge", "--store", "env:ARENA_NOT_SET", "--older-than", "1"]) == 2
    assert "ARENA_NOT_SET is not set" in capsys.readouterr().err
    assert main(["store", "migrate", "--config", str(config), "--to", pg_server.dsn]) == 2
    assert "no outcome log at" in capsys.readouterr().err  # the config's file does not exist
    store = tmp_path / "outcomes.db"
    OutcomeStore(store).close()
    secret = pg_server.dsn.replace("arena@", "arena:hunter2@").replace("/postgres", "/nope")
    assert main(["store", "migrate", "--store", str(store), "--to", secret]) == 2
    err = capsys.readouterr().err
    assert "not copied" in err and "hunter2" not in err


@pytest.fixture(params=["sqlite", "postgres"])
def any_store(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "postgres":
        return request.getfixturevalue("pg_dsn")
    return str(tmp_path / "outcomes.db")


def test_export_parquet_hashes_people_and_keeps_types(
    any_store: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import pyarrow.parquet as pq

    from router.preferences import voter_hash

    config = config_file(tmp_path)
    experiment = read_serve_file(config).gateway.experiments[0]
    simulate_ab(any_store, experiment, Traffic(units=50, seed=5))
    out = tmp_path / "parquet"
    assert main(["export-parquet", "--store", any_store, "--out", str(out)]) == 0
    store = OutcomeStore(any_store)
    try:
        secret = store.voter_secret()
        units = {row["unit"] for row in store.rows("exposures")}
        counts = {t: store.count(t) for t in ("exposures", "completions", "feedback")}
    finally:
        store.close()
    exposures = pq.read_table(out / "exposures.parquet")
    assert exposures.num_rows == counts["exposures"] == 50
    assert set(exposures.column("unit").to_pylist()) == {voter_hash(secret, u) for u in units}
    assert str(exposures.schema.field("ts").type) == "double"
    assert str(exposures.schema.field("exposed").type) == "int64"
    assert pq.read_table(out / "completions.parquet").num_rows == counts["completions"]
    feedback = pq.read_table(out / "feedback.parquet")
    assert feedback.num_rows == counts["feedback"]
    assert str(feedback.schema.field("user").type) == "string"  # NULL here, typed all the same
    assert not (out / "transcripts.parquet").exists() and not (out / "meta.parquet").exists()
    assert not list(out.glob("*.partial"))
    raw = tmp_path / "raw"
    assert main(["export-parquet", "--store", any_store, "--out", str(raw), "--raw-ids"]) == 0
    assert set(pq.read_table(raw / "exposures.parquet").column("unit").to_pylist()) == units


def test_purge_events_is_the_logs_retention(
    any_store: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from router.events import Completion, Exposure

    now = time.time()

    def request(unit: str, days: float) -> list:
        ts = now - days * 86400
        return [
            Exposure(
                ts=ts,
                request_id=f"r-{unit}",
                experiment="exp",
                unit_type="user",
                unit=unit,
                variant="a",
                reason="arm",
                exposed=True,
            ),
            Completion(
                ts=ts,
                completion_id=f"c-{unit}",
                request_id=f"r-{unit}",
                experiment="exp",
                variant="a",
                unit=unit,
                endpoint="chat",
                stream=False,
                status=200,
                ttft_s=None,
                latency_s=0.5,
                prompt_tokens=3,
                completion_tokens=4,
            ),
        ]

    store = OutcomeStore(any_store)
    store.write([*request("old", 40), *request("new", 1)])
    store.close()
    assert main(["purge", "--store", any_store, "--events"]) == 2
    assert "--older-than" in capsys.readouterr().err
    assert main(["purge", "--store", any_store, "--events", "--older-than", "30"]) == 0
    assert "exposures 1, completions 1" in capsys.readouterr().out
    store = OutcomeStore(any_store)
    try:
        assert [r["unit"] for r in store.rows("exposures")] == ["new"]
        assert [r["unit"] for r in store.rows("assignments")] == ["new"]
        # The old unit seen again is exposed anew (its assignment went with its exposure).
        assert store.write(request("old", 0)[:1]) == [None]
    finally:
        store.close()
