"""The variant engines as the execute stage calls them: one variant's request made and sent.

A variant is an engine (a vLLM `LLMServer` deployment) plus what the gateway adds to every
request it sends there: a system prompt and sampling defaults. A prompt-only variant shares its
owner's engine; an adapter variant too, and names its LoRA adapter as the request's model, so the
engine applies the adapter to that request alone. `Engines.request` builds and validates the
vLLM request for one call, and `Engines.start` sends it; their errors become the client's through
`engine_error` and `unavailable`. A request is never left waiting for an engine with no replica
running (`EngineStream`).
"""

from __future__ import annotations

import asyncio
from typing import Any

from pydantic import ValidationError
from ray.serve.exceptions import BackPressureError
from ray.serve.handle import DeploymentHandle, DeploymentResponseGenerator
from ray.serve.llm.openai_api_models import ChatCompletionRequest, CompletionRequest

# The engine yields vLLM's own error class; Ray's `ErrorResponse` is a subclass of it.
from vllm.entrypoints.serve.engine.protocol import ErrorResponse
from vllm.exceptions import VLLMClientError

from serve.config import RequestLimits, VariantConfig
from serve.errors import RETRY_AFTER_S, APIError, from_validation_error
from serve.protocol import check_contents
from serve.records import Call

_REQUEST_MODELS = {"chat": ChatCompletionRequest, "completions": CompletionRequest}
ENGINE_CHECK_S = 0.5  # how often a request waiting for its engine checks that one is running


class Engines:
    """Each variant's engine handle and settings; `limits` follow the gateway's live config."""

    def __init__(
        self, variants: dict[str, VariantConfig], handles: dict[str, DeploymentHandle]
    ) -> None:
        self.variants = variants
        self.handles = {name: h.options(stream=True) for name, h in handles.items()}
        self.limits = RequestLimits()

    def request(self, body: dict[str, Any], call: Call) -> Any:
        """The vLLM request for this call: the variant's defaults applied, validated."""
        variant = self.variants[call.variant]
        # The engine's name for the variant's model (its base model, or the adapter variant's
        # LoRA module), and the server's request id: vLLM makes the completion
        # id from it, so no client-sent `request_id` can name another answer.
        body = {**body, "model": variant.served_model, "request_id": call.engine_request_id}
        for name, value in variant.sampling.as_request_fields().items():
            if body.get(name) is None:
                body[name] = value
        cap = self.limits.max_tokens  # a client's own values were checked; a default is capped
        for name in ("max_tokens", "max_completion_tokens"):
            value = body.get(name)
            if cap is not None and type(value) is int and value > cap:
                body[name] = cap
        if call.endpoint == "chat":
            check_contents(body.get("messages"))
            if variant.system_prompt:
                body["messages"] = with_system_prompt(body.get("messages"), variant.system_prompt)
        elif variant.system_prompt:
            body["prompt"] = with_prompt_prefix(body.get("prompt"), variant.system_prompt)
        if call.stream:
            options = body.get("stream_options")
            if options is None or isinstance(options, dict):
                options = options or {}
                call.wants_usage = options.get("include_usage") is True
                body["stream_options"] = {**options, "include_usage": True}
        try:
            return _REQUEST_MODELS[call.endpoint].model_validate(body)
        except ValidationError as exc:
            raise from_validation_error(exc) from None
        except (VLLMClientError, ValueError, TypeError) as exc:  # vLLM's own request checks
            param = getattr(exc, "parameter", None)
            raise APIError(400, str(exc), param=param, code="invalid_value") from None

    def start(self, call: Call, engine_request: Any) -> EngineStream:
        """Send the request to the call's variant's engine; its answer comes as a stream."""
        handle = self.handles[call.variant]
        return EngineStream(getattr(handle, call.endpoint).remote(engine_request), handle)


class EngineUnavailable(RuntimeError):
    """The engine has no replica running, so a request for it was not left waiting."""


class EngineStream:
    """An engine's answer as Ray Serve streams it, whose first item is awaited only while the
    engine has a replica running.

    Ray Serve holds a request for a deployment without replicas until one is back, and for an
    engine whose node is lost that may be never (its replica waits for the node's resources):
    the client would hang. Here a request not yet sent to a replica is withdrawn, and ends in
    `EngineUnavailable` (a 503 with `Retry-After` for the client), as soon as the handle's router
    lists no replica (checked every `ENGINE_CHECK_S`; at once for a request made then). A replica
    that died stays listed until Ray notices (its node's health checks: seconds); a live one,
    however busy, keeps its requests queued, up to the engine's `max_queued_requests`; and a
    request sent to a replica is its to answer, even to a replica being replaced.
    """

    def __init__(self, stream: DeploymentResponseGenerator, handle: DeploymentHandle) -> None:
        self._stream = stream
        self._handle = handle
        self._started = False

    def __aiter__(self) -> EngineStream:
        return self

    async def __anext__(self) -> Any:
        if self._started:
            return await anext(self._stream)
        self._started = True
        first = asyncio.ensure_future(anext(self._stream))
        try:
            while not first.done() and not sent(self._stream):
                if running_replicas(self._handle) == 0:
                    raise EngineUnavailable("the engine has no replica running")
                await asyncio.wait([first], timeout=ENGINE_CHECK_S)
            return await first
        except BaseException:
            if not first.done():  # no replica, or the client left: withdraw the request
                first.cancel()
                self._stream.cancel()
            raise

    def cancel(self) -> None:
        self._stream.cancel()


# Ray Serve's router and responses are read below through private attributes (ray is pinned to
# 2.60.x in pyproject), without side effects and only through getattr: where one is missing, a
# request waits as Ray Serve makes it wait.


def sent(stream: Any) -> bool:
    """Whether Ray Serve has sent the request to a replica (which answers, or fails, itself)."""
    future = getattr(stream, "_replica_result_future", None)
    return future is None or future.done()


def running_replicas(handle: Any) -> int | None:
    """How many replicas the handle's router can send a request to now; None while it has not
    heard of any yet, or where it keeps no such list."""
    populated = getattr(handle, "running_replicas_populated", None)
    if populated is None or not populated():
        return None
    router = getattr(getattr(handle, "_router", None), "_asyncio_router", None)
    replicas = getattr(getattr(router, "_request_router", None), "curr_replicas", None)
    return None if replicas is None else len(replicas)


def with_system_prompt(messages: Any, system_prompt: str) -> Any:
    """Put the variant's system prompt first; a client's own system message is appended to it."""
    if not isinstance(messages, list):
        return messages  # validation reports the problem
    first = messages[0] if messages else None
    if (
        isinstance(first, dict)
        and first.get("role") == "system"
        and isinstance(first.get("content"), str)
    ):
        return [{**first, "content": f"{system_prompt}\n\n{first['content']}"}, *messages[1:]]
    return [{"role": "system", "content": system_prompt}, *messages]


def with_prompt_prefix(prompt: Any, system_prompt: str) -> Any:
    """A completions prompt with the variant's system prompt before it (a raw prompt has no
    system turn: the text goes first, then a blank line). A prompt of token ids cannot carry
    text: a 400 rather than the variant served without what makes it the variant."""
    if isinstance(prompt, str):
        return f"{system_prompt}\n\n{prompt}"
    if isinstance(prompt, list) and prompt and all(isinstance(p, str) for p in prompt):
        return [f"{system_prompt}\n\n{p}" for p in prompt]
    if prompt is None or prompt == []:
        return prompt  # validation reports the problem
    raise APIError(
        400,
        "prompt: this model has a system prompt, which a prompt of token ids cannot carry; "
        "send the prompt as text",
        param="prompt",
        code="invalid_value",
    )


def conversation(body: dict[str, Any], endpoint: str) -> list[dict[str, str]] | None:
    """The client's conversation as the reward model reads it (text parts only)."""
    if endpoint == "completions":
        prompt = body.get("prompt")
        return [{"role": "user", "content": prompt}] if isinstance(prompt, str) else None
    messages = body.get("messages")
    if not isinstance(messages, list):
        return None
    turns = []
    for message in messages:
        if not isinstance(message, dict):
            return None
        content = message.get("content")
        if isinstance(content, list):  # content parts: keep the text ones
            content = "".join(
                p.get("text", "")
                for p in content
                if isinstance(p, dict) and p.get("type") == "text"
            )
        turns.append({"role": str(message.get("role")), "content": content or ""})
    return turns


def choice_text(choice: dict[str, Any]) -> str:
    """The text of a whole answer's choice: a chat message's content or a completion's text."""
    message = choice.get("message")
    if isinstance(message, dict):
        return message.get("content") or ""
    return choice.get("text") or ""


def first_error(first: Any) -> APIError | None:
    """The engine's error, when the first thing it yielded (a response, a batch of SSE chunks,
    or an error) is one."""
    head = first[0] if isinstance(first, list) and first else first
    return engine_error(head) if is_error(head) else None


def engine_error(error: ErrorResponse) -> APIError:
    """The client's view of an engine error: its 4xx as is, anything else a retryable 503."""
    info = error.error
    status = info.code if isinstance(info.code, int) and 400 <= info.code < 600 else 500
    if status >= 500:
        return APIError(
            503, info.message, code="engine_error", headers={"Retry-After": RETRY_AFTER_S}
        )
    return APIError(status, info.message, param=info.param, code="invalid_value")


def unavailable(
    variant: str, exc: BaseException | None = None, *, shown: str | None = None
) -> APIError:
    """The retryable 503 for an engine call that failed: its queue full, or the engine gone.

    `shown` names the engine in the message instead of the variant (an arena's choice index:
    a battle must not say who is in it).
    """
    if isinstance(exc, BackPressureError):
        why, code = "is at capacity (its queue is full)", "variant_overloaded"
    else:
        why, code = "is unavailable", "variant_unavailable"
    who = shown if shown is not None else f"variant {variant!r}"
    return APIError(503, f"{who} {why}; retry", code=code, headers={"Retry-After": RETRY_AFTER_S})


def is_error(item: Any) -> bool:
    return isinstance(item, ErrorResponse)
