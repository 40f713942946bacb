"""Reports from real served traffic: votes on battles and thumbs on A/B answers."""

from __future__ import annotations

import uuid

import httpx
import openai
import pytest

from tests.e2e.conftest import App

HELLO = [{"role": "user", "content": "Which is better, tea or coffee?"}]


@pytest.fixture(scope="module")
def client(app: App) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{app.base_url}/v1", api_key="unused", max_retries=0)


def feedback(app: App, body: dict) -> None:
    response = httpx.post(
        f"{app.base_url}/v1/feedback", json=body | {"idempotency_key": str(uuid.uuid4())}
    )
    assert response.status_code == 201, response.text


def test_an_arena_report_from_served_battles_and_votes(client: openai.OpenAI, app: App) -> None:
    for i in range(12):
        battle = client.chat.completions.create(
            model="tiny-arena", user=f"voter-{i}", messages=HELLO, max_tokens=2
        )
        with app.db() as db:
            row = db.execute(
                "SELECT variant_a FROM battles WHERE battle_id = ?", (battle.id,)
            ).fetchone()
        vote = "a" if row["variant_a"] == "tiny-b" else "b"  # voters prefer tiny-b
        feedback(app, {"battle_id": battle.id, "kind": "vote", "value": vote, "user": f"voter-{i}"})
    report = httpx.get(f"{app.base_url}/v1/experiments/tiny-arena/report", timeout=120).json()
    arena = report["arena"]
    assert arena["votes"] >= 12 and arena["battles"] >= arena["votes"]
    assert arena["leaderboard"][0]["variant"] == "tiny-b"
    assert report["verdict"]["decision"] in ("ship", "keep running", "do not ship")
    assert report["control"] == "tiny-a" and report["primary_metric"] == "vote_win_rate"


def test_an_ab_report_counts_units_and_feedback(client: openai.OpenAI, app: App) -> None:
    for i in range(10):
        completion = client.chat.completions.create(
            model="tiny-ab", user=f"rater-{i}", messages=HELLO, max_tokens=2
        )
        feedback(app, {"completion_id": completion.id, "kind": "thumbs", "value": "up"})
    report = httpx.get(f"{app.base_url}/v1/experiments/tiny-ab/report", timeout=120).json()
    assert sum(report["units"].values()) >= 10
    up = [m for m in report["metrics"] if m["metric"] == "thumbs_up_rate"]
    assert up and all(
        m["estimate"]["value"] is None or 0 <= m["estimate"]["value"] <= 1 for m in up
    )
    assert report["verdict"]["reasons"]


def test_an_unknown_experiment_has_no_report(app: App) -> None:
    response = httpx.get(f"{app.base_url}/v1/experiments/nope/report", timeout=30)
    assert (
        response.status_code == 404 and response.json()["error"]["code"] == "experiment_not_found"
    )
