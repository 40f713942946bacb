"""End to end through the stock `openai` SDK: routing, streaming, assignment, feedback, errors."""

from __future__ import annotations

import asyncio
import uuid

import httpx
import openai
import pytest
from scipy.stats import binomtest

from router import Arm, Experiment
from router import assign as assignment
from tests.e2e.conftest import SYSTEM_PROMPT, App

EXPERIMENT = Experiment(name="tiny-ab", arms=(Arm(variant="tiny-a"), Arm(variant="tiny-b")))


def assign(experiment: Experiment, unit: str) -> str | None:
    return assignment(experiment, unit).variant


DEFAULT_MAX_TOKENS = {"tiny-a": 6, "tiny-b": 4}
HELLO = [{"role": "user", "content": "Hello there, who are you?"}]


@pytest.fixture(scope="module")
def client(app: App) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{app.base_url}/v1", api_key="unused", max_retries=0)


def test_models_lists_experiments_and_variants(client: openai.OpenAI) -> None:
    ids = [m.id for m in client.models.list()]
    assert ids == [
        "tiny-ab",
        "tiny-arena",
        "tiny-sessions",
        "tiny-requests",
        "tiny-a",
        "tiny-b",
        "tiny-best",
        "tiny-ahoy",
        "tiny-terse",
        "tiny-ahoy-best",
    ]


def test_chat_through_an_experiment(client: openai.OpenAI, app: App) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model="tiny-ab", user="alice", messages=HELLO
    )
    variant = raw.headers["x-variant"]
    assert variant == assign(EXPERIMENT, "alice")
    assert raw.headers["x-experiment"] == "tiny-ab"
    assert raw.headers["x-request-id"]
    completion = raw.parse()
    assert completion.model == variant
    assert isinstance(completion.choices[0].message.content, str)
    assert 0 < completion.usage.completion_tokens <= DEFAULT_MAX_TOKENS[variant]
    with app.db() as db:
        row = db.execute(
            "SELECT * FROM completions WHERE completion_id = ?", (completion.id,)
        ).fetchone()
        exposure = db.execute(
            "SELECT * FROM exposures WHERE request_id = ?", (row["request_id"],)
        ).fetchone()
    assert row["client_request_id"] == raw.headers["x-request-id"]  # kept for tracing
    assert (row["experiment"], row["variant"], row["unit"], row["status"]) == (
        "tiny-ab",
        variant,
        "alice",
        200,
    )
    assert row["completion_tokens"] == completion.usage.completion_tokens
    assert row["prompt_tokens"] == completion.usage.prompt_tokens
    assert row["ttft_s"] is None and row["latency_s"] > 0  # no first token seen apart
    assert (exposure["experiment"], exposure["variant"], exposure["unit"]) == (
        "tiny-ab",
        variant,
        "alice",
    )


def test_streamed_chat_relays_the_engine_chunks(client: openai.OpenAI, app: App) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model="tiny-ab", user="bob", messages=HELLO, stream=True, max_tokens=5
    )
    assert raw.headers["x-variant"] == assign(EXPERIMENT, "bob")
    assert raw.headers["content-type"].startswith("text/event-stream")
    chunks = list(raw.parse())
    assert len({c.id for c in chunks}) == 1
    assert all(c.usage is None for c in chunks), "usage was not asked for"
    assert chunks[-1].choices[0].finish_reason is not None
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text
    with app.db() as db:
        row = db.execute(
            "SELECT * FROM completions WHERE completion_id = ?", (chunks[0].id,)
        ).fetchone()
    assert row["stream"] == 1 and row["status"] == 200
    assert 0 < row["completion_tokens"] <= 5
    assert 0 < row["ttft_s"] <= row["latency_s"]


def test_stream_carries_usage_when_asked(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model="tiny-b",
        messages=HELLO,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens <= 4


def test_direct_variant_completions(client: openai.OpenAI, app: App) -> None:
    raw = client.completions.with_raw_response.create(
        model="tiny-b", prompt="The capital of France is", max_tokens=3
    )
    assert raw.headers["x-variant"] == "tiny-b"
    assert "x-experiment" not in raw.headers
    completion = raw.parse()
    assert completion.usage.completion_tokens <= 3
    streamed = list(
        client.completions.create(model="tiny-b", prompt="Once upon a time", stream=True)
    )
    assert "".join(c.choices[0].text for c in streamed if c.choices)
    with app.db() as db:
        row = db.execute(
            "SELECT * FROM completions WHERE completion_id = ?", (completion.id,)
        ).fetchone()
    assert (row["experiment"], row["variant"], row["endpoint"]) == (None, "tiny-b", "completions")


def test_variant_system_prompt_and_sampling_defaults(client: openai.OpenAI) -> None:
    with_variant_prompt = client.chat.completions.create(model="tiny-a", messages=HELLO)
    spelled_out = client.chat.completions.create(
        model="tiny-b", messages=[{"role": "system", "content": SYSTEM_PROMPT}, *HELLO]
    )
    assert with_variant_prompt.usage.prompt_tokens == spelled_out.usage.prompt_tokens
    assert with_variant_prompt.usage.completion_tokens <= DEFAULT_MAX_TOKENS["tiny-a"]
    asked = client.chat.completions.create(model="tiny-a", messages=HELLO, max_tokens=2)
    assert asked.usage.completion_tokens <= 2


def test_unit_from_header_when_user_is_absent(app: App) -> None:
    response = httpx.post(
        f"{app.base_url}/v1/chat/completions",
        json={"model": "tiny-ab", "messages": HELLO, "max_tokens": 1},
        headers={"X-User-Id": "carol"},
        timeout=60,
    )
    assert response.status_code == 200
    assert response.headers["x-variant"] == assign(EXPERIMENT, "carol")


def test_same_user_gets_the_same_variant_20_times(client: openai.OpenAI) -> None:
    seen = {
        client.chat.completions.with_raw_response.create(
            model="tiny-ab", user="dave", messages=HELLO, max_tokens=1
        ).headers["x-variant"]
        for _ in range(20)
    }
    assert seen == {assign(EXPERIMENT, "dave")}


def test_400_users_split_50_50(app: App) -> None:
    async def run() -> dict[str, str]:
        client = openai.AsyncOpenAI(base_url=f"{app.base_url}/v1", api_key="x", max_retries=0)
        gate = asyncio.Semaphore(32)

        async def one(user: str) -> tuple[str, str]:
            async with gate:
                raw = await client.chat.completions.with_raw_response.create(
                    model="tiny-ab", user=user, messages=HELLO, max_tokens=1
                )
                return user, raw.headers["x-variant"]

        pairs = await asyncio.gather(*(one(f"split-{uuid.uuid4()}") for _ in range(400)))
        await client.close()
        return dict(pairs)

    variants = asyncio.run(run())
    assert all(v == assign(EXPERIMENT, u) for u, v in variants.items())
    count_a = sum(v == "tiny-a" for v in variants.values())
    assert binomtest(count_a, 400, 0.5).pvalue > 0.001, count_a


def test_feedback_is_committed_and_replays_are_idempotent(client: openai.OpenAI, app: App) -> None:
    completion = client.chat.completions.create(model="tiny-ab", user="erin", messages=HELLO)
    vote = {"completion_id": completion.id, "kind": "thumbs", "value": "up"}
    key = f"vote-{uuid.uuid4()}"
    first = httpx.post(f"{app.base_url}/v1/feedback", json=vote | {"idempotency_key": key})
    assert first.status_code == 201, first.text
    with app.db() as db:
        rows = db.execute(
            "SELECT * FROM feedback WHERE completion_id = ?", (completion.id,)
        ).fetchall()
    assert [(r["kind"], r["value"], r["idempotency_key"]) for r in rows] == [("thumbs", "up", key)]
    again = httpx.post(f"{app.base_url}/v1/feedback", json=vote | {"idempotency_key": key})
    assert again.status_code == 200
    assert again.json()["id"] == first.json()["id"] and again.json()["status"] == "replayed"
    with app.db() as db:
        count = db.execute(
            "SELECT COUNT(*) FROM feedback WHERE completion_id = ?", (completion.id,)
        ).fetchone()[0]
    assert count == 1


def test_feedback_right_after_a_stream_finds_it(client: openai.OpenAI, app: App) -> None:
    chunks = list(
        client.chat.completions.create(model="tiny-b", messages=HELLO, stream=True, max_tokens=2)
    )
    vote = {"completion_id": chunks[0].id, "kind": "thumbs", "value": "down"}
    headers = {"Idempotency-Key": f"k-{uuid.uuid4()}"}
    response = httpx.post(f"{app.base_url}/v1/feedback", json=vote, headers=headers)
    assert response.status_code == 201, response.text


def assert_openai_error(response: httpx.Response, status: int, param: str | None = None) -> None:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["message"] and error["type"]
    if param is not None:
        assert error["param"] == param


@pytest.mark.parametrize(
    ("body", "status", "param"),
    [
        (b"{not json", 400, None),
        (b"[1, 2]", 400, None),
        (b'{"messages": []}', 400, "model"),
        (b'{"model": 7, "messages": []}', 400, "model"),
        (b'{"model": "nope", "messages": []}', 404, "model"),
        (b'{"model": "tiny-ab", "messages": [{"role": "user", "content": "x"}]}', 400, "user"),
        (b'{"model": "tiny-ab", "user": 5, "messages": []}', 400, "user"),
        (b'{"model": "tiny-a", "messages": "hi"}', 400, "messages"),
        (
            b'{"model": "tiny-a", "messages": [{"role": "user", "content": "x"}], '
            b'"temperature": "hot"}',
            400,
            "temperature",
        ),
        (b'{"model": "tiny-a", "messages": [{"role": "user", "content": "x"}], "n": 0}', 400, None),
        (
            b'{"model": "tiny-a", "messages": [{"role": "user", "content": "x"}], "top_p": 7}',
            400,
            None,
        ),
        (
            b'{"model": "tiny-a", "messages": [{"role": "user", "content": "x"}], '
            b'"stream_options": "yes"}',
            400,
            None,
        ),
        (
            b'{"model": "tiny-a", "messages": [{"role": "user", "content": "x"}], '
            b'"max_tokens": -3}',
            400,
            None,
        ),
        (
            b'{"model": "tiny-a", "messages": [{"role": "user", "content": "x"}], '
            b'"max_tokens": 100000}',
            400,
            None,
        ),
        (
            b'{"model": "tiny-a", "stream": true, "messages": [{"role": "user", "content": "x"}], '
            b'"max_tokens": 100000}',
            400,
            None,
        ),
        (b'{"model": "tiny-a", "prompt": "x"}', 400, None),
    ],
)
def test_bad_chat_bodies_get_openai_errors(app: App, body: bytes, status: int, param: str) -> None:
    response = httpx.post(f"{app.base_url}/v1/chat/completions", content=body, timeout=60)
    assert_openai_error(response, status, param)


@pytest.mark.parametrize(
    ("body", "status", "param"),
    [
        (
            {"completion_id": "chatcmpl-unknown", "kind": "thumbs", "value": "up"},
            404,
            "completion_id",
        ),
        ({"battle_id": "battle-unknown", "kind": "vote", "value": "a"}, 404, "battle_id"),
        ({"completion_id": "x", "kind": "stars", "value": "up"}, 400, "kind"),
        ({"completion_id": "x", "kind": "thumbs", "value": "sideways"}, 400, "value"),
        ({"kind": "thumbs", "value": "up"}, 400, "completion_id"),
        ({"battle_id": "x", "kind": "vote", "value": "c"}, 400, "value"),
    ],
)
def test_bad_feedback_gets_openai_errors(app: App, body: dict, status: int, param: str) -> None:
    body = body | {"idempotency_key": f"bad-{uuid.uuid4()}"}
    assert_openai_error(httpx.post(f"{app.base_url}/v1/feedback", json=body), status, param)


def test_feedback_needs_an_idempotency_key(app: App) -> None:
    body = {"completion_id": "x", "kind": "thumbs", "value": "up"}
    response = httpx.post(f"{app.base_url}/v1/feedback", json=body)
    assert_openai_error(response, 400, "idempotency_key")


def test_sdk_raises_typed_errors(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="no-such-model", messages=HELLO)
    with pytest.raises(openai.BadRequestError, match="user"):
        client.chat.completions.create(model="tiny-ab", messages=HELLO)


def test_unknown_route_and_health(app: App) -> None:
    assert_openai_error(httpx.get(f"{app.base_url}/v2/everything"), 404)
    assert httpx.get(f"{app.base_url}/health").json() == {"status": "ok"}


def test_rejected_requests_are_logged_with_their_status(app: App) -> None:
    response = httpx.post(
        f"{app.base_url}/v1/chat/completions",
        json={"model": "tiny-a", "messages": HELLO, "max_tokens": 100000},
        timeout=60,
    )
    assert response.status_code == 400
    with app.db() as db:
        row = db.execute(
            "SELECT * FROM completions WHERE client_request_id = ?",
            (response.headers["x-request-id"],),
        ).fetchone()
    assert (row["variant"], row["status"]) == ("tiny-a", 400)
    assert row["error"]
