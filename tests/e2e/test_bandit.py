"""A bandit end to end: thumbs that favour one arm move the shares of new units toward it at
the next refresh; every assignment is logged with its version and propensity; the report
weighs the rewards by them."""

from __future__ import annotations

import json
import time
import uuid

import httpx
import openai

from tests.e2e.conftest import EXPERIMENTS, App

BANDIT = {
    "name": "tiny-bandit",
    "mode": "bandit",
    "arms": [{"variant": "tiny-a"}, {"variant": "tiny-b"}],
    "bandit": {"refresh_s": 3, "min_share": 0.05},
}
HI = [{"role": "user", "content": "Hi"}]


def listed(app: App) -> dict:
    return next(e for e in app.experiments()["data"] if e["name"] == "tiny-bandit")


def serve_and_rate(client: openai.OpenAI, app: App, user: str) -> str:
    """One request; a thumbs up for tiny-b's answer, down for tiny-a's."""
    raw = client.chat.completions.with_raw_response.create(
        model="tiny-bandit", user=user, messages=HI, max_tokens=4
    )
    variant = raw.headers["x-variant"]
    answer = httpx.post(
        f"{app.base_url}/v1/feedback",
        json={
            "completion_id": raw.parse().id,
            "kind": "thumbs",
            "value": "up" if variant == "tiny-b" else "down",
            "idempotency_key": str(uuid.uuid4()),
        },
        timeout=30,
    )
    assert answer.status_code == 201, answer.text
    return variant


def test_a_bandit_moves_new_units_to_the_arm_users_like(app: App) -> None:
    run = uuid.uuid4().hex[:8]
    client = openai.OpenAI(base_url=f"{app.base_url}/v1", api_key="unused", max_retries=0)
    with app.gateway_config({"experiments": [*EXPERIMENTS, BANDIT]}):
        first = [serve_and_rate(client, app, f"b-{run}-{i}") for i in range(24)]
        assert set(first) == {"tiny-a", "tiny-b"}
        deadline = time.monotonic() + 30
        while True:  # both replicas: several listings in a row show weights toward tiny-b
            shown = [listed(app) for _ in range(6)]
            if all(
                s["weights_version"] is not None and s["arm_shares"]["tiny-b"] > 0.8 for s in shown
            ):
                break
            assert time.monotonic() < deadline, f"the shares never moved: {shown[-1]}"
            time.sleep(0.5)
        later = [serve_and_rate(client, app, f"b-{run}-later-{i}") for i in range(20)]
        assert later.count("tiny-b") >= 14
        with app.db() as db:
            rows = db.execute(
                "SELECT unit, variant, weights_version, propensity FROM exposures "
                "WHERE experiment = 'tiny-bandit' AND unit LIKE ?",
                (f"b-{run}-later-%",),
            ).fetchall()
            history = {
                r["version"]: r["weights"]
                for r in db.execute(
                    "SELECT version, weights FROM weights WHERE experiment = 'tiny-bandit'"
                )
            }
        assert len(rows) == 20
        for row in rows:  # each assignment: the version it was drawn by, its arm's share then
            shares = dict(json.loads(history[row["weights_version"]]))
            assert abs(row["propensity"] - shares[row["variant"]]) < 1e-9
        report = httpx.get(f"{app.base_url}/v1/experiments/tiny-bandit/report", timeout=120).json()
        arms = {a["variant"]: a for a in report["bandit"]["arms"]}
        assert arms["tiny-b"]["hajek"]["value"] == 1.0 and arms["tiny-a"]["hajek"]["value"] == 0.0
        assert report["sample_ratio"] is None or report["sample_ratio"]["mismatch"] is False
