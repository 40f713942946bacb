"""The gateway's request limits without a cluster: in-flight shedding and the body-size cap."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from starlette.requests import Request

from serve.admission import InFlight, InFlightLimit
from serve.errors import APIError
from serve.parse import read_json_object


def scope(path: str) -> dict[str, Any]:
    return {"type": "http", "method": "POST", "path": path, "headers": []}


async def call(middleware: InFlightLimit, path: str) -> list[dict[str, Any]]:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await middleware(scope(path), receive, send)
    return sent


def test_beyond_the_limit_completions_get_503_in_openai_shape_until_a_slot_frees() -> None:
    release = asyncio.Event()
    served: list[str] = []

    async def slow_app(scope: dict, receive: Any, send: Any) -> None:
        served.append(scope["path"])
        await release.wait()

    async def run() -> None:
        counter = InFlight(limit=2)
        middleware = InFlightLimit(slow_app, counter)
        held = [asyncio.create_task(call(middleware, "/v1/chat/completions")) for _ in range(2)]
        await asyncio.sleep(0.01)
        assert counter.count == 2
        [start, body] = await call(middleware, "/v1/completions")
        assert start["status"] == 503
        assert (b"retry-after", b"1") in start["headers"]
        error = json.loads(body["body"])["error"]
        assert error["code"] == "overloaded" and error["type"] == "service_unavailable_error"
        other = asyncio.create_task(call(middleware, "/v1/feedback"))  # not limited
        await asyncio.sleep(0.01)
        assert served.count("/v1/feedback") == 1
        release.set()
        await asyncio.gather(*held, other)
        assert counter.count == 0
        await asyncio.wait_for(call(middleware, "/v1/completions"), 1)  # admitted again

    asyncio.run(run())


def test_a_slot_is_freed_when_the_request_fails_or_is_cancelled() -> None:
    async def failing(scope: dict, receive: Any, send: Any) -> None:
        raise RuntimeError("boom")

    async def hanging(scope: dict, receive: Any, send: Any) -> None:
        await asyncio.sleep(3600)

    async def run() -> None:
        counter = InFlight(limit=1)
        with pytest.raises(RuntimeError):
            await call(InFlightLimit(failing, counter), "/v1/chat/completions")
        assert counter.count == 0
        task = asyncio.create_task(call(InFlightLimit(hanging, counter), "/v1/chat/completions"))
        await asyncio.sleep(0.01)
        assert counter.count == 1
        task.cancel()  # the client left
        with pytest.raises(asyncio.CancelledError):
            await task
        assert counter.count == 0

    asyncio.run(run())


def request_with(body: bytes, chunks: int = 1, declared: int | None = None) -> Request:
    size = -(-len(body) // chunks)
    parts = [body[i : i + size] for i in range(0, len(body), size)]
    messages = [
        {"type": "http.request", "body": part, "more_body": i < len(parts) - 1}
        for i, part in enumerate(parts)
    ]
    headers = [] if declared is None else [(b"content-length", str(declared).encode())]

    async def receive() -> dict[str, Any]:
        return messages.pop(0)

    return Request({"type": "http", "method": "POST", "path": "/", "headers": headers}, receive)


@pytest.mark.parametrize(
    ("body", "chunks", "declared", "status"),
    [
        (b'{"a": 1}', 1, 8, None),
        (b"x" * 5000, 1, 5000, 413),  # declared too large: not even read
        (b"x" * 5000, 5, None, 413),  # chunked, no length: cut off while reading
        (b'{"a": "' + b"y" * 2000 + b'"}', 3, None, None),
        (b"[1, 2]", 1, None, 400),
        (b"\xff\xfe", 1, None, 400),
    ],
)
def test_the_body_reader_caps_its_size(
    body: bytes, chunks: int, declared: int | None, status: int | None
) -> None:
    async def run() -> dict[str, Any]:
        return await read_json_object(request_with(body, chunks, declared), max_bytes=4096)

    if status is None:
        assert isinstance(asyncio.run(run()), dict)
        return
    with pytest.raises(APIError) as caught:
        asyncio.run(run())
    assert caught.value.status == status


def test_a_draining_gateway_refuses_new_completions_and_serves_the_rest() -> None:
    async def app(scope: dict, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 201, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    async def run() -> None:
        counter = InFlight(limit=8)
        counter.draining = True
        middleware = InFlightLimit(app, counter)
        [start, body] = await call(middleware, "/v1/chat/completions")
        assert start["status"] == 503
        assert {(b"retry-after", b"1"), (b"connection", b"close")} <= set(start["headers"])
        assert json.loads(body["body"])["error"]["code"] == "shutting_down"
        [start, _] = await call(middleware, "/v1/feedback")  # votes are still taken
        assert start["status"] == 201
        counter.draining = False
        [start, _] = await call(middleware, "/v1/completions")
        assert start["status"] == 201

    asyncio.run(run())
