"""The gateway ingress: OpenAI routes in front of the variant engines, with experiment routing.

For each completion request the gateway (1) parses the JSON body, (2) resolves `model` to an
experiment (assigning the unit to an arm with `router.assign`) or to a variant, (3) applies the
variant's system prompt and sampling defaults, (4) calls the variant's `LLMServer` deployment and
relays its answer — the engine's own SSE chunks, batch by batch, never re-buffered — and (5) logs
an exposure and a completion event. The completion event is queued in the outcome log before the
client receives the end of the answer, so a feedback call on that completion id always finds it.

It is its own FastAPI ingress rather than a subclass of Ray Serve LLM's `OpenAiIngress`: it needs
its own error shapes, response headers, unit resolution and outcome logging around each call,
and none of `OpenAiIngress`'s middleware stack (CORS, HTTP metrics, request-id) on the hot path.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from fastapi import FastAPI, Request
from pydantic import ValidationError
from ray import serve
from ray.serve.handle import DeploymentHandle, DeploymentResponseGenerator
from ray.serve.llm.openai_api_models import ChatCompletionRequest, CompletionRequest
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse, Response, StreamingResponse

# The engine yields vLLM's own error class; Ray's `ErrorResponse` is a subclass of it.
from vllm.entrypoints.serve.engine.protocol import ErrorResponse
from vllm.exceptions import VLLMClientError

from router.assignment import assign
from router.events import Completion, Event, Exposure, Feedback
from serve.config import AppConfig, VariantConfig
from serve.errors import APIError, from_validation_error
from serve.protocol import FeedbackRequest, FeedbackResponse, ModelCard, ModelList

logger = logging.getLogger("ray.serve")

Endpoint = Literal["chat", "completions"]
_REQUEST_MODELS = {"chat": ChatCompletionRequest, "completions": CompletionRequest}
USER_HEADER = "x-user-id"
RETRY_AFTER_S = "1"

app = FastAPI(title="arena-serve gateway", docs_url=None, redoc_url=None, openapi_url=None)


@app.exception_handler(APIError)
async def _api_error(_: Request, exc: APIError) -> JSONResponse:
    return exc.response()


@app.exception_handler(StarletteHTTPException)
async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
    return APIError(exc.status_code, str(exc.detail), code="unknown_route").response()


@app.exception_handler(Exception)
async def _unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    logger.exception("unhandled error on %s %s", request.method, request.url.path)
    return APIError(
        500, "internal error; the request was not completed", code="internal"
    ).response()


@dataclass(slots=True)
class _Call:
    """What the gateway knows about one completion request while serving it."""

    endpoint: Endpoint
    request_id: str
    started: float
    ts: float
    variant: str
    experiment: str | None
    unit: str | None
    stream: bool
    wants_usage: bool = False
    ttft_s: float | None = None
    events: list[Event] = field(default_factory=list)

    @property
    def headers(self) -> dict[str, str]:
        # x-request-id is set by the Serve proxy from the same request context.
        headers = {"x-variant": self.variant}
        if self.experiment is not None:
            headers["x-experiment"] = self.experiment
        return headers

    def completion(
        self,
        completion_id: str,
        status: int,
        usage: Mapping[str, Any] | None = None,
        error: str | None = None,
    ) -> Completion:
        return Completion(
            ts=self.ts,
            completion_id=completion_id,
            request_id=self.request_id,
            experiment=self.experiment,
            variant=self.variant,
            unit=self.unit,
            endpoint=self.endpoint,
            stream=self.stream,
            status=status,
            ttft_s=self.ttft_s,
            latency_s=time.perf_counter() - self.started,
            prompt_tokens=usage.get("prompt_tokens") if usage else None,
            completion_tokens=usage.get("completion_tokens") if usage else None,
            error=error,
        )


async def _json_object(request: Request) -> dict[str, Any]:
    raw = await request.body()
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise APIError(400, "the request body is not valid JSON", code="invalid_json") from None
    if not isinstance(body, dict):
        raise APIError(400, "the request body must be a JSON object", code="invalid_json")
    return body


def _engine_error(error: ErrorResponse) -> APIError:
    info = error.error
    status = info.code if isinstance(info.code, int) and 400 <= info.code < 600 else 500
    if status >= 500:
        return APIError(
            503, info.message, code="engine_error", headers={"Retry-After": RETRY_AFTER_S}
        )
    return APIError(status, info.message, param=info.param, code="invalid_value")


def _stream_id(chunk: str) -> str | None:
    if not chunk.startswith("data: {"):
        return None
    try:
        return json.loads(chunk[6:]).get("id")
    except ValueError:
        return None


def _is_usage_chunk(chunk: str) -> bool:
    return chunk.startswith("data: {") and '"choices":[]' in chunk and '"usage"' in chunk


def _with_system_prompt(messages: Any, system_prompt: str) -> Any:
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


def _request_id() -> str:
    """Serve's id for this request (a client's X-Request-Id if given); the proxy returns it."""
    return serve.context._get_serve_request_context().request_id or f"req-{uuid.uuid4().hex}"


@serve.deployment(
    name="gateway",
    max_ongoing_requests=1024,
    ray_actor_options={"num_cpus": 0},
)
@serve.ingress(app)
class Gateway:
    """The HTTP entry point; stateless apart from its config, so it scales by replicas."""

    def __init__(
        self,
        config: AppConfig,
        variant_handles: dict[str, DeploymentHandle],
        outcome_log: DeploymentHandle,
    ) -> None:
        self._variants: dict[str, VariantConfig] = {v.name: v for v in config.variants}
        self._experiments = {e.name: e for e in config.experiments}
        self._handles = {name: h.options(stream=True) for name, h in variant_handles.items()}
        self._log = outcome_log
        self._created = int(time.time())

    # Routes: each a few lines; the work is in the methods below.

    @app.get("/health")
    async def health(self) -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/v1/models")
    async def models(self) -> ModelList:
        cards = [
            ModelCard(
                id=e.name,
                created=self._created,
                arena={
                    "kind": "experiment",
                    "unit": e.unit,
                    "arms": [a.model_dump() for a in e.arms],
                },
            )
            for e in self._experiments.values()
        ]
        cards += [
            ModelCard(id=v.name, created=self._created, arena={"kind": "variant", "model": v.model})
            for v in self._variants.values()
        ]
        return ModelList(data=cards)

    @app.post("/v1/chat/completions")
    async def chat_completions(self, request: Request) -> Response:
        return await self._complete(request, "chat")

    @app.post("/v1/completions")
    async def completions(self, request: Request) -> Response:
        return await self._complete(request, "completions")

    @app.post("/v1/feedback")
    async def feedback(self, request: Request) -> JSONResponse:
        try:
            given = FeedbackRequest.model_validate(await _json_object(request))
        except ValidationError as exc:
            raise from_validation_error(exc) from None
        event = Feedback(
            time.time(), given.completion_id, given.kind, given.value, given.idempotency_key
        )
        try:
            result = await self._log.record_feedback.remote(event)
        except Exception as exc:
            logger.error("feedback not recorded: %s", exc)
            raise APIError(
                503,
                "the outcome log could not record the feedback; retry with the same "
                "idempotency_key",
                code="log_unavailable",
                headers={"Retry-After": RETRY_AFTER_S},
            ) from None
        if result.status == "unknown_completion":
            raise APIError(
                404,
                f"no completion with id {given.completion_id!r}",
                param="completion_id",
                code="completion_not_found",
            )
        answer = FeedbackResponse(
            id=f"fb-{result.feedback_id}", completion_id=given.completion_id, status=result.status
        )
        return JSONResponse(
            answer.model_dump(), status_code=201 if result.status == "recorded" else 200
        )

    # Completion requests.

    async def _complete(self, request: Request, endpoint: Endpoint) -> Response:
        started, ts = time.perf_counter(), time.time()
        body = await _json_object(request)
        call = self._route(body, request.headers, endpoint, started, ts)
        try:
            engine_request = self._engine_request(body, call)
        except APIError as exc:
            await self._finish(call, call.request_id, exc.status, error=exc.message)
            return exc.response(call.headers)
        stream = getattr(self._handles[call.variant], endpoint).remote(engine_request)
        try:
            first = await stream.__anext__()
        except Exception as exc:
            logger.warning("variant %s failed request %s: %r", call.variant, call.request_id, exc)
            await self._finish(call, call.request_id, 503, error=type(exc).__name__)
            return APIError(
                503,
                f"variant {call.variant!r} is unavailable; retry",
                code="variant_unavailable",
                headers={"Retry-After": RETRY_AFTER_S},
            ).response(call.headers)
        head = first[0] if isinstance(first, list) and first else first
        if isinstance(head, ErrorResponse):
            error = _engine_error(head)
            await self._finish(call, call.request_id, error.status, error=error.message)
            return error.response(call.headers)
        if not isinstance(first, list):
            usage = first.usage.model_dump() if getattr(first, "usage", None) else None
            await self._finish(call, first.id, 200, usage)
            return Response(
                first.model_dump_json(), media_type="application/json", headers=call.headers
            )
        call.ttft_s = time.perf_counter() - started  # only a stream shows a first token
        return StreamingResponse(
            self._relay(call, first, stream), media_type="text/event-stream", headers=call.headers
        )

    def _route(
        self,
        body: dict[str, Any],
        headers: Mapping[str, str],
        endpoint: Endpoint,
        started: float,
        ts: float,
    ) -> _Call:
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise APIError(
                400,
                "`model` must name an experiment or a variant",
                param="model",
                code="missing_model",
            )
        request_id = _request_id()
        unit = body.get("user")
        if unit is not None and not isinstance(unit, str):
            raise APIError(400, "`user` must be a string", param="user", code="invalid_value")
        unit = unit or headers.get(USER_HEADER) or None
        stream = body.get("stream") is True
        experiment = self._experiments.get(model)
        if experiment is not None:
            if unit is None:
                raise APIError(
                    400,
                    f"experiment {model!r} assigns users: set the `user` field or the "
                    "X-User-Id header",
                    param="user",
                    code="missing_unit",
                )
            variant = assign(experiment, unit)
            call = _Call(endpoint, request_id, started, ts, variant, model, unit, stream)
            call.events.append(Exposure(ts, request_id, model, variant, unit))
            return call
        if model in self._variants:
            return _Call(endpoint, request_id, started, ts, model, None, unit, stream)
        known = ", ".join([*self._experiments, *self._variants])
        raise APIError(
            404,
            f"the model {model!r} does not exist (known: {known})",
            param="model",
            code="model_not_found",
        )

    def _engine_request(self, body: dict[str, Any], call: _Call) -> Any:
        """The vLLM request for this call: the variant's defaults applied, validated."""
        variant = self._variants[call.variant]
        body = {**body, "model": call.variant}
        for name, value in variant.sampling.as_request_fields().items():
            if body.get(name) is None:
                body[name] = value
        if call.endpoint == "chat" and variant.system_prompt:
            body["messages"] = _with_system_prompt(body.get("messages"), variant.system_prompt)
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

    async def _relay(
        self, call: _Call, first: list, rest: DeploymentResponseGenerator
    ) -> AsyncIterator[str]:
        """Pass the engine's SSE batches through; log the completion before the final [DONE]."""
        completion_id = _stream_id(first[0]) if isinstance(first[0], str) else None
        completion_id = completion_id or call.request_id
        usage: dict[str, Any] | None = None
        logged = False
        status, error = 200, None
        batch: list | None = first
        try:
            while batch is not None:
                out = []
                for chunk in batch:
                    if isinstance(chunk, ErrorResponse):
                        problem = _engine_error(chunk)
                        status, error = problem.status, problem.message
                        chunk = f"data: {json.dumps(problem.body())}\n\n"
                    elif _is_usage_chunk(chunk):
                        usage = json.loads(chunk[6:]).get("usage")
                        if not call.wants_usage:
                            continue
                    elif chunk.startswith("data: [DONE]") and not logged:
                        logged = True
                        await self._finish(call, completion_id, status, usage, error)
                    out.append(chunk)
                if out:
                    yield "".join(out)
                batch = await anext(rest, None)
        except Exception as exc:
            logger.warning("stream of %s from %s broke: %r", call.request_id, call.variant, exc)
            status, error = 503, type(exc).__name__
            problem = APIError(
                503,
                f"variant {call.variant!r} failed mid-stream; retry",
                code="variant_unavailable",
            )
            yield f"data: {json.dumps(problem.body())}\n\ndata: [DONE]\n\n"
        finally:
            if batch is not None:  # ended early (client gone): stop the engine's generation
                rest.cancel()
            if not logged:
                # The client may be gone (cancelled task): send without awaiting the answer.
                call.events.append(call.completion(completion_id, status, usage, error))
                self._log.record.remote(call.events)

    async def _finish(
        self,
        call: _Call,
        completion_id: str,
        status: int,
        usage: Mapping[str, Any] | None = None,
        error: str | None = None,
    ) -> None:
        """Queue this call's events in the outcome log (returns once queued, not committed)."""
        call.events.append(call.completion(completion_id, status, usage, error))
        try:
            await self._log.record.remote(call.events)
        except Exception as exc:
            logger.error("outcome events of %s lost: %r", call.request_id, exc)
