"""Keys, rate limits and request limits on the real app, switched on live and off again.

The module deploys a gateway `user_config` with keys and limits (the experiments unchanged), so
every other module keeps running against an open gateway.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from serve.auth import hash_key
from tests.e2e.conftest import ADMIN_KEY, ADMIN_KEY_ENV, EXPERIMENTS, App

CLIENT_KEY = "sk-e2e-client-51c0ffee2b8d4e17"
LIMITED_KEY = "sk-e2e-limited-0a9b8c7d6e5f4321"
CANARY = f"canary-{uuid.uuid4().hex}"
MAX_TOKENS, MAX_N, MAX_BODY = 64, 4, 64 * 1024


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


CLIENT, ADMIN = bearer(CLIENT_KEY), bearer(ADMIN_KEY)


SECURED = {
    "experiments": EXPERIMENTS,
    "auth": {
        "keys": [
            {"name": "e2e-client", "sha256": hash_key(CLIENT_KEY)},
            {"name": "e2e-admin", "env": ADMIN_KEY_ENV, "role": "admin"},
            {
                "name": "e2e-limited",
                "sha256": hash_key(LIMITED_KEY),
                "rate_limit": {"requests_per_s": 0.2, "burst": 2},
            },
        ]
    },
    "limits": {"max_tokens": MAX_TOKENS, "max_n": MAX_N, "max_body_bytes": MAX_BODY},
}


@pytest.fixture(scope="module")
def secured(app: App) -> Iterator[App]:
    with app.gateway_config(SECURED) as configured:
        yield configured


def chat(app: App, headers: dict[str, str], **body: object) -> httpx.Response:
    payload = {"model": "tiny-a", "messages": [{"role": "user", "content": "Hi"}], **body}
    return httpx.post(
        f"{app.base_url}/v1/chat/completions", json=payload, headers=headers, timeout=60
    )


def error_of(response: httpx.Response) -> dict:
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    return error


def test_openai_routes_need_a_key(secured: App) -> None:
    for headers in ({}, bearer("sk-not-a-key"), {"Authorization": CLIENT_KEY}):
        response = chat(secured, headers)
        assert response.status_code == 401
        assert error_of(response)["type"] == "authentication_error"
    assert httpx.get(f"{secured.base_url}/v1/models", timeout=30).status_code == 401
    answer = chat(secured, CLIENT)
    assert answer.status_code == 200
    models = httpx.get(f"{secured.base_url}/v1/models", headers=CLIENT, timeout=30)
    assert models.status_code == 200
    feedback = httpx.post(
        f"{secured.base_url}/v1/feedback",
        json={
            "completion_id": answer.json()["id"],
            "kind": "thumbs",
            "value": "up",
            "idempotency_key": uuid.uuid4().hex,
        },
        headers=CLIENT,
        timeout=30,
    )
    assert feedback.status_code == 201
    unauthenticated = httpx.post(
        f"{secured.base_url}/v1/feedback", json={"kind": "thumbs"}, timeout=30
    )
    assert unauthenticated.status_code == 401


def test_experiments_reports_and_metrics_need_an_admin_key(secured: App) -> None:
    for path in ("/v1/experiments", "/v1/experiments/tiny-ab/report", "/metrics"):
        assert httpx.get(f"{secured.base_url}{path}", timeout=60).status_code == 401
        forbidden = httpx.get(f"{secured.base_url}{path}", headers=CLIENT, timeout=60)
        assert forbidden.status_code == 403
        assert error_of(forbidden)["type"] == "permission_error"
        assert httpx.get(f"{secured.base_url}{path}", headers=ADMIN, timeout=120).status_code == 200
    assert chat(secured, ADMIN).status_code == 200  # an admin key is a client key too
    # A load balancer's health check needs no key; Prometheus scrapes with the admin key
    # (/metrics: the engines' series could tell a rater which engine wrote a battle's side).
    assert httpx.get(f"{secured.base_url}/health", timeout=60).status_code == 200


def test_a_key_over_its_rate_gets_429_with_retry_after(secured: App) -> None:
    answers = [
        httpx.get(f"{secured.base_url}/v1/models", headers=bearer(LIMITED_KEY), timeout=30)
        for _ in range(6)
    ]
    statuses = [a.status_code for a in answers]
    assert statuses.count(200) >= 1 and statuses.count(429) >= 3, statuses
    limited = next(a for a in answers if a.status_code == 429)
    assert error_of(limited)["type"] == "rate_limit_error"
    assert int(limited.headers["retry-after"]) >= 1
    assert chat(secured, CLIENT).status_code == 200  # other keys are not limited by it


def test_request_limits_are_clear_4xx(secured: App) -> None:
    too_many_tokens = chat(secured, CLIENT, max_tokens=MAX_TOKENS + 1)
    assert too_many_tokens.status_code == 400
    assert error_of(too_many_tokens)["param"] == "max_tokens"
    too_many_choices = chat(secured, CLIENT, n=MAX_N + 1)
    assert too_many_choices.status_code == 400 and error_of(too_many_choices)["param"] == "n"
    huge = chat(secured, CLIENT, messages=[{"role": "user", "content": "x" * (2 * MAX_BODY)}])
    assert huge.status_code == 413 and error_of(huge)["code"] == "body_too_large"
    # Longer than the tiny engine's 512-token context, though under the body limit: vLLM's own
    # check, in the gateway's error shape.
    long_prompt = " ".join(["word"] * 3000)
    too_long = chat(secured, CLIENT, messages=[{"role": "user", "content": long_prompt}])
    assert too_long.status_code == 400, too_long.text
    assert "context" in error_of(too_long)["message"]


def test_beyond_max_in_flight_requests_are_shed_with_503(secured: App) -> None:
    secured.deploy_gateway(SECURED | {"limits": {"max_in_flight": 1, "max_tokens": 400}})

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(
            base_url=secured.base_url, headers=CLIENT, timeout=120
        ) as client:
            body = {
                "model": "tiny-a",
                "messages": [{"role": "user", "content": "Count."}],
                "max_tokens": 300,
                "ignore_eos": True,
            }
            return await asyncio.gather(
                *(client.post("/v1/chat/completions", json=body) for _ in range(16))
            )

    try:
        answers = asyncio.run(burst())
    finally:
        secured.deploy_gateway(SECURED)
    statuses = [a.status_code for a in answers]
    assert set(statuses) <= {200, 503} and 200 in statuses and 503 in statuses, statuses
    shed = next(a for a in answers if a.status_code == 503)
    assert error_of(shed)["code"] == "overloaded" and shed.headers["retry-after"] == "1"


def test_no_key_and_no_prompt_text_in_the_logs(secured: App) -> None:
    import ray

    secret = f"sk-{CANARY}"
    assert chat(secured, bearer(secret)).status_code == 401
    said = chat(secured, CLIENT, messages=[{"role": "user", "content": f"Say {CANARY}."}])
    assert said.status_code == 200
    failed = chat(secured, CLIENT, messages=[{"role": "bogus-role", "content": CANARY}] * 2)
    assert failed.status_code in (200, 400)
    logs = Path(ray._private.worker._global_node.get_session_dir_path()) / "logs"
    found = []
    for path in logs.rglob("*"):
        if path.is_file() and path.stat().st_size < 256 * 1024**2:
            text = path.read_bytes()
            if CANARY.encode() in text or CLIENT_KEY.encode() in text:
                found.append(str(path.relative_to(logs)))
    assert found == []
