"""The sycophancy probe through the real gateway on the tiny engines: `arena-serve probe` against
an experiment's arms, results in the log and in the report, nothing else counted, admin only,
and bad requests answered in the API's shape."""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import time

import httpx
import pytest

from probe.items import FAMILIES, PROBE_SET
from serve import probe_cli
from serve.auth import hash_key
from serve.cli import main as cli
from serve.config import AppConfig, variant_revisions
from tests.e2e.conftest import ADMIN_KEY, ADMIN_KEY_ENV, EXPERIMENTS, App
from tests.e2e.test_metrics import scrape

CLIENT_KEY = "sk-e2e-probe-client-41d2"
TRAFFIC_TABLES = ("exposures", "assignments", "completions", "battles", "scores", "transcripts")


def counts(app: App) -> dict[str, int]:
    db = app.db()
    try:
        return {t: db.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in TRAFFIC_TABLES}
    finally:
        db.close()


def settled(app: App) -> dict[str, int]:
    """The traffic counts once late events (scores sent off the response path) stop arriving."""
    last, deadline = counts(app), time.monotonic() + 30
    while time.monotonic() < deadline:
        time.sleep(1.0)
        now = counts(app)
        if now == last:
            return now
        last = now
    return last


def gateway_series(app: App) -> dict:
    """The gateway's own series (`arena_*`), not the engines' (which count engine work)."""
    return {name: s for name, s in scrape(app).items() if name.startswith("arena_")}


def revisions(app: App) -> dict[str, str]:
    args = app.document["applications"][0]["args"]
    return variant_revisions(AppConfig.model_validate(args).variants)


def probe_args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    probe_cli.add_arguments(parser)
    return parser.parse_args(list(argv))


@pytest.fixture(scope="module")
def probed(app: App) -> dict:
    before, metrics_before = settled(app), gateway_series(app)
    args = probe_args(
        "--url", app.base_url, "--experiment", "tiny-arena", "--limit", "2", "--run-id", "e2e-run"
    )
    results, _ = asyncio.run(probe_cli.run_probe(args))
    return {
        "arms": {name: probe_cli.figures(name, found) for name, found in results.items()},
        "before": before,
        "after": settled(app),
        "metrics_before": metrics_before,
        "metrics_after": gateway_series(app),
    }


def test_the_probe_runs_every_arm_and_logs_graded_results(app: App, probed: dict) -> None:
    arms = probed["arms"]
    assert set(arms) == {"tiny-a", "tiny-b"}
    expected = revisions(app)
    for name, arm in arms.items():
        assert arm.items == 2 * len(FAMILIES) and arm.runs == 1
        assert arm.revision == expected[name]
        assert set(arm.family_accuracy) == set(FAMILIES)
    db = app.db()
    db.row_factory = sqlite3.Row
    rows = db.execute("SELECT * FROM probes WHERE run_id = 'e2e-run'").fetchall()
    db.close()
    assert len(rows) == 2 * 2 * len(FAMILIES)
    for row in rows:
        assert row["experiment"] == "tiny-arena" and row["probe_set"] == PROBE_SET
        assert {row["first"], row["pushback"], row["suggestion"]} <= {"correct", "wrong", "none"}
        assert row["revision"] == expected[row["variant"]]
        assert row["first_answer"] and row["suggestion_answer"]


def test_the_probe_changes_no_exposure_and_no_other_metric(probed: dict) -> None:
    assert probed["after"] == probed["before"]
    assert probed["metrics_after"] == probed["metrics_before"]


def test_the_report_shows_the_arms_probe_figures(app: App, probed: dict) -> None:
    report = httpx.get(f"{app.base_url}/v1/experiments/tiny-arena/report", timeout=120).json()
    arms = {arm["variant"]: arm for arm in report["probe"]["arms"]}
    assert arms["tiny-a"]["items"] == 2 * len(FAMILIES)
    assert arms["tiny-a"]["revision"] == revisions(app)["tiny-a"]
    for key in ("accuracy", "sycophancy_flip_rate", "capitulation_rate"):
        assert key in arms["tiny-b"]


def test_a_best_of_n_variant_is_probed_as_it_serves_without_scores_logged(app: App) -> None:
    before = settled(app)
    body = {"variant": "tiny-best", "item": "capitals-000", "run_id": "e2e-best"}
    answer = httpx.post(f"{app.base_url}/v1/probe", json=body, timeout=120)
    assert answer.status_code == 200, answer.text
    assert answer.json()["item"] == "capitals-000" and answer.json()["family"] == "capitals"
    assert settled(app) == before


@pytest.mark.parametrize(
    ("body", "status", "param"),
    [
        ({"variant": "nope", "item": "capitals-000", "run_id": "r"}, 404, "variant"),
        ({"variant": "tiny-a", "item": "nope-1", "run_id": "r"}, 404, "item"),
        (
            {"variant": "tiny-a", "item": "capitals-000", "run_id": "r", "probe_set": "v0"},
            409,
            "probe_set",
        ),
        (
            {
                "variant": "tiny-best",
                "item": "capitals-000",
                "run_id": "r",
                "experiment": "tiny-ab",
            },
            400,
            "variant",
        ),
        (
            {"variant": "tiny-a", "item": "capitals-000", "run_id": "r", "experiment": "nope"},
            404,
            "experiment",
        ),
        ({"variant": "tiny-a", "item": "capitals-000", "run_id": "bad id!"}, 400, "run_id"),
        ({"variant": "tiny-a", "item": "capitals-000", "run_id": "r", "unit": "me"}, 400, "unit"),
        ({"variant": "tiny-a", "run_id": "r"}, 400, "item"),
    ],
)
def test_bad_probe_requests_get_an_error_in_the_api_shape(
    app: App, body: dict, status: int, param: str
) -> None:
    answer = httpx.post(f"{app.base_url}/v1/probe", json=body, timeout=30)
    assert answer.status_code == status, answer.text
    assert answer.json()["error"]["param"] == param


def test_the_probe_is_an_admin_route(app: App) -> None:
    keys = {
        "experiments": EXPERIMENTS,
        "auth": {
            "keys": [
                {"name": "probe-client", "sha256": hash_key(CLIENT_KEY)},
                {"name": "probe-admin", "env": ADMIN_KEY_ENV, "role": "admin"},
            ]
        },
    }
    body = {"variant": "tiny-a", "item": "dates-000", "run_id": "e2e-keys"}
    with app.gateway_config(keys):
        url = f"{app.base_url}/v1/probe"
        assert httpx.post(url, json=body, timeout=30).status_code == 401
        client = {"Authorization": f"Bearer {CLIENT_KEY}"}
        assert httpx.post(url, json=body, headers=client, timeout=30).status_code == 403
        admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
        assert httpx.post(url, json=body, headers=admin, timeout=120).status_code == 200
        argv = ["probe", "--url", app.base_url, "--variant", "tiny-a", "--limit", "1"]
        assert cli([*argv, "--key", CLIENT_KEY, "--families", "dates"]) == 1  # refused, said so


def test_the_command_prints_each_variants_figures(app: App, capsys: pytest.CaptureFixture) -> None:
    argv = ["probe", "--url", app.base_url, "--variant", "tiny-a", "--variant", "tiny-b"]
    assert cli([*argv, "--limit", "1", "--families", "capitals", "dates"]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith(f"probe set {PROBE_SET}")
    for name in ("tiny-a", "tiny-b"):
        assert f"{name} (revision {revisions(app)[name]}, 2 items): accuracy" in printed
    assert "first-answer accuracy per family: capitals" in printed
