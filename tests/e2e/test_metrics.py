"""GET /metrics with two gateway replicas: exact totals, the engines' series, the dashboard."""

from __future__ import annotations

import json
import re
import time
import uuid
from pathlib import Path

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families
from ray import serve

from tests.e2e.conftest import APP_NAME, GATEWAY_REPLICAS, App

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "arena-serve.json"
HELLO = [{"role": "user", "content": "Count to three."}]


def scrape(app: App) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """Family -> labels -> value of every sample in a scrape of /metrics."""
    response = httpx.get(f"{app.base_url}/metrics", timeout=30)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    out: dict[str, dict] = {}
    for family in text_string_to_metric_families(response.text):  # also checks the format
        for sample in family.samples:
            out.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return out


def requests_total(found: dict, variant: str) -> float:
    series = found.get("arena_requests_total", {})
    want = {("endpoint", "chat"), ("experiment", ""), ("status", "2xx"), ("variant", variant)}
    return sum(v for labels, v in series.items() if set(labels) == want)


@pytest.fixture(scope="module")
def client(app: App) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{app.base_url}/v1", api_key="unused", max_retries=0)


def test_two_gateway_replicas_serve(app: App) -> None:
    gateway = serve.status().applications[APP_NAME].deployments["gateway"]
    assert gateway.replica_states.get("RUNNING") == GATEWAY_REPLICAS


def test_totals_are_exact_across_gateway_replicas(client: openai.OpenAI, app: App) -> None:
    before = requests_total(scrape(app), "tiny-b")
    for _ in range(12):
        client.chat.completions.create(model="tiny-b", messages=HELLO, max_tokens=2)
    with app.db():  # the log has committed everything queued
        pass
    assert requests_total(scrape(app), "tiny-b") == before + 12


def test_every_dashboard_query_uses_metrics_that_exist(client: openai.OpenAI, app: App) -> None:
    # Traffic of every kind, so that every labelled series has appeared at least once.
    list(client.chat.completions.create(model="tiny-a", messages=HELLO, stream=True))
    completion = client.chat.completions.create(model="tiny-ab", user="dash", messages=HELLO)
    battle = client.chat.completions.create(model="tiny-arena", user="dash", messages=HELLO)
    for body in (
        {"completion_id": completion.id, "kind": "thumbs", "value": "up"},
        {"battle_id": battle.id, "kind": "vote", "value": "a", "user": "dash"},
    ):
        body["idempotency_key"] = str(uuid.uuid4())
        assert httpx.post(f"{app.base_url}/v1/feedback", json=body).status_code == 201
    deadline = time.monotonic() + 60
    names: set[str] = set()
    wanted: set[str] = set()
    dashboard = json.loads(DASHBOARD.read_text())
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            wanted |= set(re.findall(r"\b(?:arena|ray_vllm)_[a-z_]+", target["expr"]))
    while not wanted <= names and time.monotonic() < deadline:
        time.sleep(1)  # scores and the engines' own metrics arrive a little later
        names = set(scrape(app))
    assert wanted <= names, f"dashboard metrics missing from /metrics: {sorted(wanted - names)}"
    assert any(n.startswith("ray_vllm_") for n in wanted)


def test_no_per_user_labels(app: App) -> None:
    found = scrape(app)
    labels = {name for series in found.values() for key in series for name, _ in key}
    assert not labels & {"user", "unit", "request_id", "completion_id", "battle_id"}
