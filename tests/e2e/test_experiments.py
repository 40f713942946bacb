"""Experiments end to end: listing, unit kinds, exposures counted per unit, live changes."""

from __future__ import annotations

import copy
import uuid

import httpx
import openai
import pytest
import ray

from router import Experiment, assign
from tests.e2e.conftest import EXPERIMENTS, App

HELLO = [{"role": "user", "content": "Hi!"}]


@pytest.fixture(scope="module")
def client(app: App) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{app.base_url}/v1", api_key="unused", max_retries=0)


def chat(app: App, model: str, headers: dict[str, str] | None = None, **body) -> httpx.Response:
    payload = {"model": model, "messages": HELLO, "max_tokens": 1, **body}
    return httpx.post(
        f"{app.base_url}/v1/chat/completions", json=payload, headers=headers or {}, timeout=60
    )


def exposures(app: App, experiment: str, unit: str) -> list[dict]:
    with app.db() as db:
        rows = db.execute(
            "SELECT * FROM exposures WHERE experiment = ? AND unit = ? ORDER BY id",
            (experiment, unit),
        ).fetchall()
    return [dict(r) for r in rows]


def test_experiments_are_listed_with_their_settings(app: App) -> None:
    listing = app.experiments()
    assert listing["revision"] and listing["rejected"] is None
    by_name = {e["name"]: e for e in listing["data"]}
    assert list(by_name) == [e["name"] for e in EXPERIMENTS]
    ab, arena, sessions = by_name["tiny-ab"], by_name["tiny-arena"], by_name["tiny-sessions"]
    assert ab["mode"] == "ab" and ab["state"] == "running" and ab["allocation"] == 1.0
    assert [a["variant"] for a in ab["arms"]] == ["tiny-a", "tiny-b"]
    assert arena["mode"] == "arena" and arena["pairs"][0]["variants"] == ["tiny-a", "tiny-b"]
    assert arena["primary_metric"] == "vote_win_rate"
    assert sessions["unit"] == "session" and sessions["allocation"] == 0.5
    assert sessions["forced_units"] == 1 and "qa-session" not in str(sessions)


def test_one_exposure_per_unit_however_many_requests(app: App) -> None:
    user = f"repeat-{uuid.uuid4()}"
    for _ in range(3):
        assert chat(app, "tiny-ab", user=user).status_code == 200
    [row] = exposures(app, "tiny-ab", user)
    assert row["variant"] == assign(Experiment.model_validate(EXPERIMENTS[0]), user).variant
    assert (row["reason"], row["exposed"], row["unit_type"]) == ("arm", 1, "user")


def test_session_experiments_assign_the_session(app: App) -> None:
    missing = chat(app, "tiny-sessions", user="someone")
    assert missing.status_code == 400 and missing.json()["error"]["code"] == "missing_unit"
    assert missing.json()["error"]["param"] is None  # a header, not a body field
    experiment = Experiment.model_validate(EXPERIMENTS[2])
    seen = {"arm": 0, "not_allocated": 0}
    for i in range(12):
        session = f"session-{i}"
        response = chat(app, "tiny-sessions", headers={"X-Session-Id": session})
        expected = assign(experiment, session)
        assert response.headers["x-variant"] == expected.variant
        [row] = exposures(app, "tiny-sessions", session)
        assert (row["reason"], bool(row["exposed"])) == (expected.reason, expected.exposed)
        seen[expected.reason] += 1
    assert all(seen.values()), seen  # both reasons occur: 2 * 0.5**12 chance of a false alarm


def test_forced_units_get_their_variant_and_are_not_exposed(app: App) -> None:
    for _ in range(2):
        response = chat(app, "tiny-sessions", headers={"X-Session-Id": "qa-session"})
        assert response.headers["x-variant"] == "tiny-a"
    [row] = exposures(app, "tiny-sessions", "qa-session")
    assert (row["reason"], row["exposed"]) == ("forced", 0)


def test_request_experiments_expose_every_request(app: App) -> None:
    """Each request is a unit of its own, named by the server: a client's X-Request-Id (kept,
    for tracing) must not pick the unit, and so the arm."""
    traces = [
        chat(app, "tiny-requests", user="same-user").headers["x-request-id"] for _ in range(3)
    ]
    picked = chat(app, "tiny-requests", headers={"X-Request-Id": "pick-my-arm"})
    assert picked.status_code == 200
    with app.db() as db:
        served = [
            db.execute(
                "SELECT request_id FROM completions WHERE client_request_id = ?", (trace,)
            ).fetchone()["request_id"]
            for trace in [*traces, "pick-my-arm"]
        ]
        rows = db.execute(
            "SELECT unit, unit_type FROM exposures WHERE experiment = 'tiny-requests'"
        ).fetchall()
    units = {r["unit"] for r in rows}
    assert len(set(served)) == 4 and units >= set(served)
    assert not units & {*traces, "pick-my-arm"}
    assert {r["unit_type"] for r in rows} == {"request"}


@pytest.mark.parametrize(
    "feedback",
    [
        {"kind": "regenerate"},
        {"kind": "copy"},
        {"kind": "custom", "name": "stars", "value": 4.5},
        {"kind": "thumbs", "value": "down"},
    ],
)
def test_every_feedback_kind_on_a_completion(
    client: openai.OpenAI, app: App, feedback: dict
) -> None:
    completion = client.chat.completions.create(model="tiny-b", messages=HELLO, max_tokens=1)
    key = f"fb-{uuid.uuid4()}"
    body = {"completion_id": completion.id, "idempotency_key": key, **feedback}
    first = httpx.post(f"{app.base_url}/v1/feedback", json=body, timeout=30)
    assert first.status_code == 201, first.text
    assert httpx.post(f"{app.base_url}/v1/feedback", json=body, timeout=30).status_code == 200
    with app.db() as db:
        rows = db.execute("SELECT * FROM feedback WHERE idempotency_key = ?", (key,)).fetchall()
    assert len(rows) == 1 and rows[0]["kind"] == feedback["kind"]
    if feedback["kind"] == "custom":
        assert (rows[0]["name"], rows[0]["number"]) == ("stars", 4.5)


def variant_replicas() -> set[str]:
    """The named replica actors of the variant engines (a restart would change them)."""
    names = {a["name"] for a in ray.util.list_named_actors(all_namespaces=True)}
    return {n for n in names if "variant:" in n}


def test_a_live_weight_change_applies_without_restarting_engines(app: App) -> None:
    engines = variant_replicas()
    assert len(engines) == 2
    users = [f"live-{uuid.uuid4()}" for _ in range(20)]
    changed = copy.deepcopy(EXPERIMENTS)
    changed[0]["arms"] = [{"variant": "tiny-a", "weight": 1}, {"variant": "tiny-b", "weight": 0}]
    try:
        app.deploy_experiments(changed)
        assert {chat(app, "tiny-ab", user=u).headers["x-variant"] for u in users} == {"tiny-a"}
        weights = [a["weight"] for a in app.experiments()["data"][0]["arms"]]
        assert weights == [1.0, 0.0]
    finally:
        app.deploy_experiments(EXPERIMENTS)
    assert variant_replicas() == engines, "the engines were restarted"
    original = Experiment.model_validate(EXPERIMENTS[0])
    for user in users:
        assert (
            chat(app, "tiny-ab", user=user).headers["x-variant"] == assign(original, user).variant
        )


def test_a_live_experiment_can_be_added_and_stopped(app: App) -> None:
    added = [
        *copy.deepcopy(EXPERIMENTS),
        {"name": "tiny-new", "arms": [{"variant": "tiny-b"}, {"variant": "tiny-a", "weight": 0}]},
    ]
    try:
        app.deploy_experiments(added)
        assert chat(app, "tiny-new", user="newcomer").headers["x-variant"] == "tiny-b"
        added[-1]["stop"] = "2000-01-01T00:00:00Z"
        added[-1]["start"] = "1999-01-01T00:00:00Z"
        added[-1]["default_variant"] = "tiny-a"
        app.deploy_experiments(added)
        assert chat(app, "tiny-new", user="newcomer").headers["x-variant"] == "tiny-a"
        state = {e["name"]: e["state"] for e in app.experiments()["data"]}
        assert state["tiny-new"] == "stopped"
        rows = exposures(app, "tiny-new", "newcomer")
        assert [(r["variant"], r["reason"], r["exposed"]) for r in rows] == [
            ("tiny-b", "arm", 1),
            ("tiny-a", "stopped", 0),
        ]
    finally:
        app.deploy_experiments(EXPERIMENTS)
    assert chat(app, "tiny-new", user="newcomer").status_code == 404


def test_a_bad_live_config_is_refused_and_the_old_one_kept(app: App) -> None:
    from serve.deploy import apply

    before = app.experiments()
    bad = copy.deepcopy(app.document)
    broken = copy.deepcopy(EXPERIMENTS)
    broken[0]["arms"][1]["variant"] = "ghost"
    bad["applications"][0]["deployments"] = [
        {"name": "gateway", "user_config": {"experiments": broken}}
    ]
    try:
        apply(app.client, bad, timeout_s=120)
        listing = app.experiments()
        assert listing["revision"] == before["revision"]
        assert "experiments.0.arms.1.variant" in listing["rejected"]["error"]
        assert chat(app, "tiny-ab", user="still-served").status_code == 200
    finally:
        app.deploy_experiments(EXPERIMENTS)
    assert app.experiments()["rejected"] is None
