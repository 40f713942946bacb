"""The real gateway class without a cluster: fake engine handles that yield what vLLM's
`LLMServer` yields (whole responses, lists of SSE chunks), and a fake outcome log."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionResponse

from router.events import Event, ExperimentConfig, Feedback, FeedbackResult
from serve.config import AppConfig
from serve.errors import APIError
from serve.gateway import Gateway

Script = Callable[[str, Any], list[Any]]
MESSAGES = [{"role": "user", "content": "Hi"}]


class EngineStream:
    """A `DeploymentResponseGenerator` stand-in: its items, or never answering (`hang`), or
    failing as a dead replica's call does (`fail`: on the first wait, not on the call)."""

    def __init__(
        self, items: list[Any], hang: bool = False, fail: bool = False, delay_s: float = 0.0
    ) -> None:
        self.items, self.hang, self.fail, self.cancelled = list(items), hang, fail, False
        self.delay_s = delay_s  # before the first item: a slower engine

    def __aiter__(self) -> EngineStream:
        return self

    async def __anext__(self) -> Any:
        await asyncio.sleep(self.delay_s)
        self.delay_s = 0.0
        if self.hang:
            await asyncio.sleep(3600)
        if self.fail:
            raise RuntimeError("engine gone")
        if not self.items:
            raise StopAsyncIteration
        return self.items.pop(0)

    def cancel(self) -> None:
        self.cancelled = True


def _json(payload: dict[str, Any]) -> str:
    return json.dumps(payload, separators=(",", ":"))  # as vLLM writes its chunks


def sse_chat(name: str, request: Any) -> list[Any]:
    """A streamed chat answer in three engine batches, usage and [DONE] last."""
    cid = f"chatcmpl-{request.request_id}"
    envelope = {"id": cid, "object": "chat.completion.chunk", "created": 1, "model": name}

    def chunk(delta: dict[str, str], finish: str | None = None) -> str:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return f"data: {_json(envelope | {'choices': [choice]})}\n\n"

    usage = {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}
    return [
        [chunk({"role": "assistant", "content": ""})],
        [chunk({"content": f"hi from {name}"}), chunk({}, "stop")],
        [f"data: {_json(envelope | {'choices': [], 'usage': usage})}\n\n", "data: [DONE]\n\n"],
    ]


def whole_chat(name: str, request: Any) -> list[Any]:
    choices = [
        {
            "index": i,
            "message": {"role": "assistant", "content": f"hi from {name}"},
            "finish_reason": "stop",
        }
        for i in range(request.n or 1)
    ]
    usage = {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}
    response = {
        "id": f"chatcmpl-{request.request_id}",
        "object": "chat.completion",
        "created": 1,
        "model": name,
        "choices": choices,
        "usage": usage,
    }
    return [ChatCompletionResponse.model_validate(response)]


def answer(name: str, request: Any) -> list[Any]:
    return sse_chat(name, request) if request.stream else whole_chat(name, request)


@dataclass
class Engine:
    name: str
    script: Script = answer
    hang: bool = False
    fail: bool = False
    delay_s: float = 0.0
    requests: list[Any] = field(default_factory=list)
    streams: list[EngineStream] = field(default_factory=list)

    def options(self, **_: Any) -> Engine:
        return self

    def remote(self, request: Any) -> EngineStream:
        self.requests.append(request)
        stream = EngineStream(
            self.script(self.name, request), hang=self.hang, fail=self.fail, delay_s=self.delay_s
        )
        self.streams.append(stream)
        return stream

    @property
    def chat(self) -> Engine:
        return self

    @property
    def completions(self) -> Engine:
        return self


class Log:
    """The outcome log's `record`, `deliver` and `record_feedback` methods, keeping what they
    were sent (every delivery is committed; feedback is answered `recorded`)."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.configs: list[ExperimentConfig] = []
        self.feedback: list[Feedback] = []
        self.record = self
        self.deliver = _DeliverMethod(self)
        self.record_feedback = _FeedbackMethod(self)

    async def _record(self, events: list[Event], committed: bool = False) -> bool:
        # The configs a reconfigure logs are kept apart, so `events` is what requests sent.
        self.configs.extend(e for e in events if isinstance(e, ExperimentConfig))
        self.events.extend(e for e in events if not isinstance(e, ExperimentConfig))
        return True

    def remote(self, events: list[Event], committed: bool = False) -> Any:
        return self._record(events, committed)

    def kinds(self) -> list[str]:
        return [type(event).__name__ for event in self.events]


class _DeliverMethod:
    def __init__(self, log: Log) -> None:
        self._log = log

    def remote(self, events: list[Event], ticket: str | None = None) -> Any:
        async def answer() -> None:
            await self._log._record(events, committed=True)

        return answer()


class _FeedbackMethod:
    def __init__(self, log: Log) -> None:
        self._log = log

    def remote(self, feedback: Feedback) -> Any:
        self._log.feedback.append(feedback)

        async def answer() -> FeedbackResult:
            return FeedbackResult(status="recorded", feedback_id=len(self._log.feedback))

        return answer()


@dataclass
class FakeGateway:
    gateway: Gateway
    log: Log
    engines: dict[str, Engine]

    async def post(
        self, body: dict[str, Any], headers: dict[str, str] | None = None
    ) -> tuple[int, str]:
        """Status and body of a chat completion request (the stream read to its end)."""
        try:
            response = await self.gateway._complete(request(body, headers), "chat")
        except APIError as exc:
            response = exc.response()
        return response.status_code, await read(response)

    async def call(
        self,
        route: str,
        body: dict[str, Any],
        headers: dict[str, str] | None = None,
        endpoint: str = "chat",
    ) -> tuple[int, str, dict[str, str]]:
        """Status, body and headers of `complete` (the stream read) or `feedback`."""
        try:
            if route == "feedback":
                response = await self.gateway.feedback(request(body, headers))
            else:
                response = await self.gateway._complete(request(body, headers), endpoint)
        except APIError as exc:
            response = exc.response()
        return response.status_code, await read(response), dict(response.headers)

    async def call_raw(self, raw: str) -> tuple[int, str, dict[str, str]]:
        """A chat completion request whose body is this JSON text, as sent."""
        try:
            response = await self.gateway._complete(request(raw), "chat")
        except APIError as exc:
            response = exc.response()
        return response.status_code, await read(response), dict(response.headers)

    async def settled(self) -> None:
        """Wait for every outcome delivery in flight."""
        for _ in range(10):
            await asyncio.sleep(0)
        tasks = list(self.gateway.recorder.outcome_sender.pending)
        if tasks:
            await asyncio.gather(*tasks)


async def make(
    experiments: list[dict[str, Any]] | None = None,
    variants: tuple[str, ...] = ("a", "b"),
    user_config: dict[str, Any] | None = None,
    settings: dict[str, dict[str, Any]] | None = None,
    app_args: dict[str, Any] | None = None,
) -> FakeGateway:
    """A gateway over fake engines, one per variant; `settings` adds fields to a variant's
    config (a system prompt, identity terms), `app_args` to the app's (`store`)."""
    config = AppConfig.from_args(
        {
            "variants": [
                {"name": v, "model": "unused", **(settings or {}).get(v, {})} for v in variants
            ],
            "check_model_files": False,
            **(app_args or {}),
        }
    )
    engines = {v: Engine(v) for v in variants}
    log = Log()
    gateway = Gateway(config, engines, log, None)
    await gateway.reconfigure({"experiments": experiments or [], **(user_config or {})})
    return FakeGateway(gateway, log, engines)


def request(body: dict[str, Any] | str, headers: dict[str, str] | None = None) -> Request:
    raw = (body if isinstance(body, str) else json.dumps(body)).encode("utf-8", "surrogatepass")
    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": raw, "more_body": False}
        await asyncio.sleep(3600)
        return {"type": "http.disconnect"}

    pairs = [(b"content-type", b"application/json")]
    pairs += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    scope = {
        "type": "http",
        "method": "POST",
        "path": "/v1/chat/completions",
        "headers": pairs,
        "query_string": b"",
    }
    return Request(scope, receive)


async def read(response: Response) -> str:
    iterator = getattr(response, "body_iterator", None)
    if iterator is None:
        return bytes(response.body).decode()
    parts = [part if isinstance(part, str) else part.decode() async for part in iterator]
    return "".join(parts)
