"""A four-arm adaptive arena end to end: battles between every pair at the configured weights,
then, once enough votes are in, at the weights the outcome log computes each refresh period,
which every battle row and the weights history record."""

from __future__ import annotations

import json
import time
import uuid

import httpx
import openai
import pytest

from adapters.style import speaks_ahoy
from tests.e2e.conftest import EXPERIMENTS, App

ARMS = ["tiny-a", "tiny-b", "tiny-ahoy", "tiny-terse"]
ADAPTIVE = {
    "name": "four-arena",
    "mode": "arena",
    "arms": [{"variant": v} for v in ARMS],
    "adaptive": {"refresh_s": 2, "min_votes": 12, "floor": 0.02},
}
ASK = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def client(app: App) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{app.base_url}/v1", api_key="unused", max_retries=0)


def listed(app: App) -> dict:
    return next(e for e in app.experiments()["data"] if e["name"] == "four-arena")


def battle_and_vote(client: openai.OpenAI, app: App, user: str) -> None:
    """A voter who prefers the answer that speaks like a sailor (a tie when neither or both)."""
    battle = client.chat.completions.create(
        model="four-arena", user=user, messages=ASK, n=2, max_tokens=6, temperature=0
    )
    ahoy = [
        speaks_ahoy(c.message.content or "") for c in sorted(battle.choices, key=lambda c: c.index)
    ]
    value = "a" if ahoy == [True, False] else "b" if ahoy == [False, True] else "tie"
    answer = httpx.post(
        f"{app.base_url}/v1/feedback",
        json={"battle_id": battle.id, "kind": "vote", "value": value, "user": user}
        | {"idempotency_key": str(uuid.uuid4())},
        timeout=30,
    )
    assert answer.status_code == 201, answer.text


def test_a_four_arm_adaptive_arena_moves_its_pair_weights_and_logs_them(
    client: openai.OpenAI, app: App
) -> None:
    with app.gateway_config({"experiments": [*EXPERIMENTS, ADAPTIVE]}):
        before = listed(app)
        assert before["weights_version"] is None and before["adaptive"]["min_votes"] == 12
        assert len(before["pair_shares"]) == 6
        assert all(abs(share - 1 / 6) < 1e-9 for _, _, share in before["pair_shares"])
        for i in range(24):
            battle_and_vote(client, app, f"judge-{i % 6}")
        deadline = time.monotonic() + 30
        while True:  # both gateway replicas: several listings in a row show new weights
            if all(listed(app)["weights_version"] is not None for _ in range(6)):
                break
            assert time.monotonic() < deadline, "no adaptive weights were put in force"
            time.sleep(0.5)
        now = listed(app)
        shares = [share for _, _, share in now["pair_shares"]]
        assert abs(sum(shares) - 1) < 1e-9 and min(shares) >= 0.02 - 1e-9
        assert max(shares) > 1 / 6 + 0.05  # some pair teaches more than the others
        for i in range(12):
            battle_and_vote(client, app, f"judge-{i % 6}")
        with app.db() as db:
            history = db.execute(
                "SELECT version, weights, observations FROM weights WHERE experiment = 'four-arena'"
            ).fetchall()
            rows = db.execute(
                "SELECT variant_a, variant_b, pair_share, weights_version FROM battles "
                "WHERE experiment = 'four-arena' ORDER BY ts"
            ).fetchall()
        assert history and all(r["observations"] >= 12 for r in history)
        shares_of = {
            entry["version"]: {frozenset((a, b)): w for a, b, w in json.loads(entry["weights"])}
            for entry in history
        }
        assert len(rows) == 36
        for row in rows:  # each battle logged its pair's share in the weights it was drawn by
            pair = frozenset((row["variant_a"], row["variant_b"]))
            version = row["weights_version"]
            share = 1 / 6 if version is None else shares_of[version][pair]
            assert abs(row["pair_share"] - share) < 1e-9, dict(row)
        assert any(r["weights_version"] is not None for r in rows[24:])
        report = httpx.get(f"{app.base_url}/v1/experiments/four-arena/report", timeout=120)
        board = report.json()["arena"]["leaderboard"]
        assert {r["variant"] for r in board} == set(ARMS)
        # Each period judged by its own weights: no sample-ratio mismatch from adapting.
        assert report.json()["sample_ratio"]["mismatch"] is False
