"""The gateway ingress: OpenAI routes in front of the variant engines, with experiment routing.

For each completion request the gateway (1) parses the JSON body, (2) resolves `model` to an
experiment (assigning the unit with the experiment's compiled plan) or to a variant, (3) applies
the variant's system prompt and sampling defaults, (4) calls the variant's `LLMServer`
deployment and relays its answer — the engine's own SSE chunks, batch by batch, never
re-buffered — or, for an arena battle, two variants at once (`serve.arena`), and (5) logs the
exposure and completion events. The completion event is queued in the outcome log before the
client receives the end of the answer, so a feedback call on that completion id always finds it.

Experiments arrive through `reconfigure` (the deployment's `user_config`), so `serve deploy` with
edited experiments changes them live, without touching the engines. A config that fails
validation on a running gateway is refused and reported in `GET /v1/experiments`; the previous
experiments stay in force.

It is its own FastAPI ingress rather than a subclass of Ray Serve LLM's `OpenAiIngress`: it needs
its own error shapes, response headers, unit resolution and outcome logging around each call,
and none of `OpenAiIngress`'s middleware stack (CORS, HTTP metrics, request-id) on the hot path.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import random
import re
import time
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime
from typing import Any

import httpx
import ray
from fastapi import FastAPI, Request
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import ValidationError
from ray import serve
from ray.exceptions import RayActorError
from ray.serve.handle import DeploymentHandle, DeploymentResponseGenerator
from ray.serve.llm.openai_api_models import ChatCompletionRequest, CompletionRequest
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse, Response, StreamingResponse
from vllm.entrypoints.serve.engine.protocol import ErrorResponse
from vllm.exceptions import VLLMClientError

from router.assignment import Assignment, CompiledExperiment
from router.events import Event, Exposure, Score
from router.experiment import Experiment, check_live_change
from serve import admission
from serve.arena import (
    ArenaBattle,
    BattleTerms,
    Side,
    blind_error,
    check_options,
    telling_terms,
    term_pattern,
)
from serve.auth import KeyRing, Principal
from serve.best_of_n import as_stream, best_response, choice_text
from serve.config import (
    DRAIN_S,
    GATEWAY_DEPLOYMENT,
    AppConfig,
    ConfigError,
    GatewayConfig,
    RequestLimits,
    VariantConfig,
    config_revision,
)
from serve.errors import RETRY_AFTER_S, APIError, from_validation_error
from serve.metrics import merge_engine_metrics
from serve.openapi import openapi_document
from serve.protocol import (
    IDEMPOTENCY_HEADER,
    ModelCard,
    ModelList,
    feedback_answer,
    lone_surrogate,
    parse_feedback,
    unit_id,
)
from serve.relay import (
    CLIENT_CLOSED,
    Call,
    Endpoint,
    OutcomeSender,
    chunk_text,
    engine_error,
    first_item,
    is_usage_chunk,
    stream_id,
    unavailable,
)
from serve.scorer import ScoreJob

logger = logging.getLogger("ray.serve")

_REQUEST_MODELS = {"chat": ChatCompletionRequest, "completions": CompletionRequest}
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
USER_HEADER = "x-user-id"
SESSION_HEADER = "x-session-id"
EXPOSURE_CACHE_SIZE = 65_536
SEND_ON_STOP_S = 10.0  # and then its outcome events and score jobs reach their deployments
SCORE_RETRY_S = (0.5, 2.0, 5.0)  # waits before a score job is sent again to a new scorer

app = FastAPI(title="arena-serve gateway", docs_url=None, redoc_url=None, openapi_url=None)
app.add_middleware(admission.InFlightLimit)


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


async def _json_object(request: Request, max_bytes: int) -> dict[str, Any]:
    """The request's JSON object body, read no further than `max_bytes` (then a 413)."""
    declared = request.headers.get("content-length", "")
    too_large = declared.isdigit() and int(declared) > max_bytes  # then not even read
    chunks: list[bytes] = []
    size = 0
    if not too_large:
        async for chunk in request.stream():
            size += len(chunk)
            if size > max_bytes:
                too_large = True
                break
            chunks.append(chunk)
    if too_large:
        raise APIError(
            413,
            f"the request body is larger than this gateway accepts ({max_bytes:,} bytes)",
            code="body_too_large",
        )
    raw = b"".join(chunks)
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError; too deep
        raise APIError(400, "the request body is not valid JSON", code="invalid_json") from None
    if not isinstance(body, dict):
        raise APIError(400, "the request body must be a JSON object", code="invalid_json")
    # JSON may escape half of a surrogate pair (`\ud800`): valid JSON, but no text any store or
    # tokenizer takes. Only a body with such an escape is walked.
    if _SURROGATE_ESCAPE.search(raw) and (where := lone_surrogate(body)) is not None:
        raise APIError(
            400,
            f"{where}: not valid Unicode (a lone surrogate escape)",
            param=where,
            code="invalid_value",
        )
    return body


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


def _with_prompt_prefix(prompt: Any, system_prompt: str) -> Any:
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


def _check_contents(messages: Any) -> None:
    """400 for a message whose `content` is a JSON object: vLLM's models take it for an iterable
    of parts, lazily, and the request then cannot be sent to the engine at all."""
    if not isinstance(messages, list):
        return  # validation reports the problem
    for i, message in enumerate(messages):
        if isinstance(message, dict) and isinstance(message.get("content"), dict):
            raise APIError(
                400,
                f"messages.{i}.content: must be a string or a list of content parts",
                param=f"messages.{i}.content",
                code="invalid_value",
            )


def _conversation(body: dict[str, Any], endpoint: Endpoint) -> list[dict[str, str]] | None:
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


def _names(variant: VariantConfig, config: AppConfig) -> tuple[str, ...]:
    """Every name of a variant an error message could carry: its own, its engine's, and its
    model folder's (as configured, resolved, and its last part)."""
    owner = next(v for v in config.variants if v.name == variant.engine_name)
    folder = owner.model_path
    names = [variant.name, owner.name, owner.model or "", str(folder), folder.name]
    return tuple(name for name in dict.fromkeys(names) if name)


def _check_prompt(body: dict[str, Any], endpoint: Endpoint) -> None:
    """400 for a chat without messages or with none (OpenAI's answer; without this vLLM's
    request model reports a Python error's text)."""
    if endpoint != "chat":
        return
    if "messages" not in body or body["messages"] is None:
        raise APIError(400, "messages: field required", param="messages", code="invalid_value")
    if body["messages"] == []:
        raise APIError(
            400,
            "messages: must hold at least one message",
            param="messages",
            code="invalid_value",
        )


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _headers(call: Call) -> dict[str, str]:
    # x-request-id is set by the Serve proxy from the same request context.
    headers = {"x-variant": call.variant}
    if call.experiment is not None:
        headers["x-experiment"] = call.experiment
    return headers


def _describe(experiment: Experiment, now: datetime) -> dict[str, Any]:
    """An experiment as `GET /v1/experiments` lists it (forced unit ids are not shown)."""
    described = experiment.model_dump(mode="json", exclude={"forced", "pairs"})
    described["state"] = experiment.state(now)
    described["layer"] = experiment.layer_name
    described["default_variant"] = experiment.fallback_variant
    described["primary_metric"] = experiment.metric
    described["forced_units"] = len(experiment.forced)
    if experiment.mode == "arena":
        described["pairs"] = [p.model_dump(mode="json") for p in experiment.arena_pairs()]
    return described


class _ExposureCache:
    """The (variant, reason) last sent per (experiment, unit): repeats need not be sent again.

    Only an optimisation (bounded, per replica): the outcome store deduplicates exposures itself.
    """

    def __init__(self, size: int = EXPOSURE_CACHE_SIZE) -> None:
        self._size = size
        self._seen: OrderedDict[tuple[str, str], Assignment] = OrderedDict()

    def forget(self, experiment: str, unit: str) -> None:
        """The exposure may not have reached the log: send it again with the next request."""
        self._seen.pop((experiment, unit), None)

    def is_new(self, experiment: str, unit: str, assignment: Assignment) -> bool:
        key = (experiment, unit)
        if self._seen.get(key) == assignment:
            self._seen.move_to_end(key)
            return False
        self._seen[key] = assignment
        if len(self._seen) > self._size:
            self._seen.popitem(last=False)
        return True


@serve.deployment(
    name=GATEWAY_DEPLOYMENT,
    max_ongoing_requests=1024,
    ray_actor_options={"num_cpus": 0},
    user_config={"experiments": []},
    # A replica being replaced (redeploy, scale-down, shutdown) first finishes its streams.
    graceful_shutdown_timeout_s=DRAIN_S,
)
@serve.ingress(app)
class Gateway:
    """The HTTP entry point; stateless apart from its config, so it scales by replicas."""

    def __init__(
        self,
        config: AppConfig,
        variant_handles: dict[str, DeploymentHandle],
        outcome_log: DeploymentHandle,
        scorer: DeploymentHandle | None = None,
    ) -> None:
        self._variants = {v.name: v for v in config.variants}
        self._names_of = {v.name: _names(v, config) for v in config.variants}
        self._scorer = scorer
        self._scoring = config.scorer
        self._scoring_tasks: set[asyncio.Task] = set()
        self._handles = {name: h.options(stream=True) for name, h in variant_handles.items()}
        self._log = outcome_log
        self._outcomes = OutcomeSender(outcome_log)
        self._created = int(time.time())
        self._experiments: dict[str, CompiledExperiment] = {}
        self._revision: str | None = None
        self._rejected: dict[str, str] | None = None
        self._exposures = _ExposureCache()
        self._replicas = config.gateway_replicas
        self._keys = KeyRing()
        self._limits = RequestLimits()

    async def reconfigure(self, user_config: dict[str, Any]) -> None:
        """Apply new experiments live; a bad config is refused, keeping the running ones.

        With `draining` set, returns only once the requests in flight are answered and their
        records sent (at most `DRAIN_S`): Ray Serve reports the deploy done when every replica
        has, so `arena-serve serve` knows when it may stop the outcome log.
        """
        revision = config_revision(user_config)
        try:
            ranked = [v.name for v in self._variants.values() if v.best_of_n is not None]
            config = GatewayConfig.for_variants(user_config, list(self._variants), ranked)
            running = [plan.experiment for plan in self._experiments.values()]
            check_live_change(running, config.experiments)
            keys = KeyRing.build(config.auth, self._replicas).inherit(self._keys)
        except (ConfigError, ValueError) as exc:
            if self._revision is None:
                raise  # nothing to keep serving: fail the deploy with the message
            logger.error(
                "experiments revision %s refused, keeping %s: %s", revision, self._revision, exc
            )
            self._rejected = {"revision": revision, "error": str(exc)}
            return
        self._experiments = {e.name: CompiledExperiment(e) for e in config.experiments}
        self._keys, self._limits = keys, config.limits
        # Through the module: a global of this file would be copied into the replica with
        # the pickled deployment class, apart from the middleware's.
        admission.IN_FLIGHT.limit = config.limits.max_in_flight
        admission.IN_FLIGHT.draining = config.draining
        if config.draining:
            await self._drain()
        if keys.open:
            logger.warning("no API keys configured: every route is open (auth.keys)")
        self._revision, self._rejected = revision, None
        logger.info("experiments revision %s: %s", revision, ", ".join(self._experiments) or "none")

    async def _drain(self) -> None:
        """Wait for the completions in flight, then for the records and scores they sent."""
        deadline = time.monotonic() + DRAIN_S
        while admission.IN_FLIGHT.count and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        await self._sent(deadline - time.monotonic())
        if admission.IN_FLIGHT.count:
            logger.error("drained with %d requests still in flight", admission.IN_FLIGHT.count)

    async def _sent(self, timeout_s: float) -> None:
        """Wait (at most `timeout_s`) for the events and score jobs sent without waiting."""
        pending = self._outcomes.pending | self._scoring_tasks
        if pending:
            _, late = await asyncio.wait(pending, timeout=max(0.1, timeout_s))
            if late:
                logger.error("%d outcome sends or score jobs unfinished at stop", len(late))

    async def __del__(self) -> None:
        """Ray Serve calls this on a graceful stop, once this replica's requests are done."""
        await self._sent(SEND_ON_STOP_S)

    # Routes: each a few lines; the work is in the methods below.

    @app.get("/openapi.json")
    async def openapi(self) -> JSONResponse:
        """This gateway's routes, bodies and errors as OpenAPI 3.1 (`serve.openapi`)."""
        return JSONResponse(openapi_document())

    @app.get("/health")
    async def health(self) -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/metrics")
    async def metrics(self, request: Request) -> Response:
        """The gateway's metrics (from the outcome log: every replica's) and the engines'.

        An operator's route: with keys configured it needs an admin key, as reports do. The
        engines' series count each engine's tokens and requests, so a voter who could diff them
        around a battle would learn which engine wrote which side."""
        self._caller(request, admin=True)
        try:
            ours = await self._log.metrics.remote()
        except Exception as exc:
            logger.error("metrics unavailable: %r", exc)
            raise APIError(503, "metrics unavailable; retry", code="metrics_unavailable") from None
        engines = merge_engine_metrics(await self._node_metrics())
        return Response(ours + engines, media_type=CONTENT_TYPE_LATEST)

    async def _node_metrics(self) -> list[str]:
        """Each live Ray node's metrics exposition (where the vLLM engines report)."""
        nodes = await asyncio.to_thread(ray.nodes)
        urls = [
            f"http://{n['NodeManagerAddress']}:{n['MetricsExportPort']}/metrics"
            for n in nodes
            if n.get("Alive") and n.get("MetricsExportPort")
        ]
        async with httpx.AsyncClient(timeout=5.0) as client:
            answers = await asyncio.gather(*(client.get(u) for u in urls), return_exceptions=True)
        return [a.text for a in answers if isinstance(a, httpx.Response) and a.status_code == 200]

    def _caller(self, request: Request, admin: bool = False) -> Principal:
        """The key's principal (401/403 otherwise), admitted by its rate limit (429)."""
        principal = self._keys.authenticate(request.headers.get("authorization"), admin)
        self._keys.admit(principal)
        return principal

    @app.get("/v1/models")
    async def models(self, request: Request) -> ModelList:
        self._caller(request)
        cards = [
            ModelCard(
                id=name,
                created=self._created,
                arena={
                    "kind": "experiment",
                    "mode": plan.experiment.mode,
                    "unit": plan.experiment.unit,
                    "arms": [a.model_dump() for a in plan.experiment.arms],
                },
            )
            for name, plan in self._experiments.items()
        ]
        cards += [
            ModelCard(
                id=v.name,
                created=self._created,
                arena={"kind": "variant", "model": v.model, "engine": v.engine_name},
            )
            for v in self._variants.values()
        ]
        return ModelList(data=cards)

    @app.get("/v1/experiments")
    async def experiments(self, request: Request) -> dict[str, Any]:
        self._caller(request, admin=True)
        now = datetime.now(UTC)
        return {
            "object": "list",
            "revision": self._revision,
            "rejected": self._rejected,
            "data": [_describe(plan.experiment, now) for plan in self._experiments.values()],
        }

    @app.get("/v1/experiments/{name}/report")
    async def experiment_report(self, name: str, request: Request) -> JSONResponse:
        self._caller(request, admin=True)
        plan = self._experiments.get(name)
        if plan is None:
            raise APIError(
                404, f"no experiment named {name!r}", param="name", code="experiment_not_found"
            )
        try:
            report = await self._log.report.remote(plan.experiment)
        except Exception as exc:
            logger.error("report of %s failed: %r", name, exc)
            raise APIError(
                503,
                "the report could not be computed; retry",
                code="report_unavailable",
                headers={"Retry-After": RETRY_AFTER_S},
            ) from None
        return JSONResponse(report)

    @app.post("/v1/chat/completions")
    async def chat_completions(self, request: Request) -> Response:
        return await self._complete(request, "chat")

    @app.post("/v1/completions")
    async def completions(self, request: Request) -> Response:
        return await self._complete(request, "completions")

    @app.post("/v1/feedback")
    async def feedback(self, request: Request) -> JSONResponse:
        principal = self._caller(request)
        body = await _json_object(request, self._limits.max_body_bytes)
        event = parse_feedback(
            body,
            request.headers.get(IDEMPOTENCY_HEADER),
            time.time(),
            "" if self._keys.open else principal.name,
            request.headers.get(USER_HEADER),
            request.headers.get(SESSION_HEADER),
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
        answer = feedback_answer(event, result)
        return JSONResponse(
            answer.model_dump(exclude_none=True),
            status_code=201 if answer.status == "recorded" else 200,
        )

    # Completion requests.

    async def _complete(self, request: Request, endpoint: Endpoint) -> Response:
        started, ts = time.perf_counter(), time.time()
        principal = self._caller(request)
        body = await _json_object(request, self._limits.max_body_bytes)
        self._check_limits(body)
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise APIError(
                400,
                "`model` must name an experiment or a variant",
                param="model",
                code="missing_model",
            )
        user = body.get("user")
        if user is not None and not isinstance(user, str):
            raise APIError(400, "`user` must be a string", param="user", code="invalid_value")
        unit_id(user, "user")
        # Who the caller says they are: checked (and capped) once, whatever uses it.
        named = user or unit_id(request.headers.get(USER_HEADER), "X-User-Id") or None
        # The server's own ids: a client's X-Request-Id could name another request's completion
        # (or, in a `request` experiment, pick its own unit). It is kept, for tracing only.
        request_id = f"req-{uuid.uuid4().hex}"
        trace = unit_id(request.headers.get("x-request-id"), "X-Request-Id")
        stream = body.get("stream") is True
        plan = self._experiments.get(model)
        if plan is None and model not in self._variants:
            known = ", ".join([*self._experiments, *self._variants])
            raise APIError(
                404,
                f"the model {model!r} does not exist (known: {known})",
                param="model",
                code="model_not_found",
            )
        _check_prompt(body, endpoint)
        if plan is None:
            call = Call(endpoint, request_id, started, ts, model, None, named, stream)
            call.client_request_id = trace
            return await self._single(body, call)
        experiment = plan.experiment
        if experiment.mode == "arena":
            check_options(body, experiment.name)
        unit = self._unit(experiment, user, request.headers, request_id)
        assignment = plan.assign(unit, ts)
        events: list[Event] = []
        if experiment.unit == "request" or self._exposures.is_new(model, unit, assignment):
            events.append(
                Exposure(ts, request_id, model, experiment.unit, unit, assignment.variant,
                         assignment.reason, assignment.exposed)
            )  # fmt: skip
        try:
            if assignment.variant is None:
                who = BattleTerms(
                    unit_type=experiment.unit,
                    voter=(unit if experiment.unit != "request" else named),
                    principal=None if self._keys.open else principal.name,
                )
                call = Call(endpoint, request_id, started, ts, "", model, unit, stream)
                call.client_request_id = trace
                return await self._battle(body, plan, call, who, events)
            call = Call(endpoint, request_id, started, ts, assignment.variant, model, unit, stream)
            call.client_request_id = trace
            call.events = events
            return await self._single(body, call)
        except BaseException:  # refused, failed or cancelled before its events were sent
            if events and experiment.unit != "request":
                self._exposures.forget(model, unit)
            raise

    def _check_limits(self, body: dict[str, Any]) -> None:
        """400 for a request asking for more than this gateway's limits allow.

        The fields the gateway acts on must have their JSON type, as OpenAI requires: vLLM's
        request models would turn `"n": "5"` or `"stream": 1` into 5 and true after these checks
        (and after the gateway chose how to answer), so such values are refused here.
        """
        for name in ("n", "max_tokens", "max_completion_tokens"):
            value = body.get(name)
            if value is not None and not _is_int(value):
                raise APIError(400, f"`{name}` must be an integer", param=name, code="invalid_type")
        stream = body.get("stream")
        if stream is not None and not isinstance(stream, bool):
            raise APIError(400, "`stream` must be a boolean", param="stream", code="invalid_type")
        cap = self._limits.max_tokens
        for name in ("max_tokens", "max_completion_tokens"):
            value = body.get(name)
            if cap is not None and _is_int(value) and value > cap:
                raise APIError(
                    400,
                    f"`{name}` is {value}; this gateway allows at most {cap}",
                    param=name,
                    code="max_tokens_exceeded",
                )
        n = body.get("n")
        if _is_int(n) and n > self._limits.max_n:
            raise APIError(
                400,
                f"`n` is {n}; this gateway allows at most {self._limits.max_n} choices",
                param="n",
                code="n_exceeded",
            )

    def _unit(
        self, experiment: Experiment, user: str | None, headers: Mapping[str, str], request_id: str
    ) -> str:
        """The unit the experiment assigns: the user, the session or the request itself."""
        if experiment.unit == "request":
            return request_id
        if experiment.unit == "session":
            session = unit_id(headers.get(SESSION_HEADER), "X-Session-Id")
            if not session:
                raise APIError(
                    400,
                    f"experiment {experiment.name!r} assigns sessions: set the X-Session-Id header",
                    param=None,
                    code="missing_unit",
                )
            return session
        unit = user or unit_id(headers.get(USER_HEADER), "X-User-Id")
        if not unit:
            raise APIError(
                400,
                f"experiment {experiment.name!r} assigns users: set the `user` field or the "
                "X-User-Id header",
                param="user",
                code="missing_unit",
            )
        return unit

    def _engine_request(self, body: dict[str, Any], call: Call) -> Any:
        """The vLLM request for this call: the variant's defaults applied, validated."""
        variant = self._variants[call.variant]
        # The engine's served model id, and the server's request id: vLLM makes the completion
        # id from it, so no client-sent `request_id` can name another answer.
        body = {**body, "model": variant.engine_name, "request_id": call.engine_request_id}
        for name, value in variant.sampling.as_request_fields().items():
            if body.get(name) is None:
                body[name] = value
        cap = self._limits.max_tokens  # a client's own values were checked; a default is capped
        for name in ("max_tokens", "max_completion_tokens"):
            if cap is not None and _is_int(body.get(name)) and body[name] > cap:
                body[name] = cap
        if call.endpoint == "chat":
            _check_contents(body.get("messages"))
            if variant.system_prompt:
                body["messages"] = _with_system_prompt(body.get("messages"), variant.system_prompt)
        elif variant.system_prompt:
            body["prompt"] = _with_prompt_prefix(body.get("prompt"), variant.system_prompt)
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

    def _engine_call(self, call: Call, engine_request: Any) -> DeploymentResponseGenerator:
        return getattr(self._handles[call.variant], call.endpoint).remote(engine_request)

    async def _single(self, body: dict[str, Any], call: Call) -> Response:
        """One variant answers: relay its response or its stream as it comes."""
        variant = self._variants[call.variant]
        if variant.best_of_n is not None and self._scorer is not None:
            return await self._best_of_n(body, call, variant.best_of_n)
        if self._sampled():
            call.prompt = _conversation(body, call.endpoint)
        answer = await self._first_answer(body, call)
        if isinstance(answer, Response):
            return answer
        first, stream = answer
        if not isinstance(first, list):
            first.model = call.variant  # a prompt-only variant's engine answers in its owner's name
            usage = first.usage.model_dump() if getattr(first, "usage", None) else None
            await self._finish(call, first.id, 200, usage)
            if call.prompt is not None and first.choices:
                self._score_later(call, first.id, choice_text(first.choices[0].model_dump()))
            return Response(
                first.model_dump_json(), media_type="application/json", headers=_headers(call)
            )
        call.ttft_s = time.perf_counter() - call.started  # only a stream shows a first token
        return StreamingResponse(
            self._relay(call, first, stream),
            media_type="text/event-stream",
            headers=_headers(call),
        )

    async def _first_answer(
        self, body: dict[str, Any], call: Call
    ) -> tuple[Any, DeploymentResponseGenerator] | Response:
        """Call the engine; its first yield and the stream, or the error response (logged)."""
        headers = _headers(call)
        try:
            engine_request = self._engine_request(body, call)
        except APIError as exc:
            await self._finish(call, call.request_id, exc.status, error=exc.message)
            return exc.response(headers)
        stream = self._engine_call(call, engine_request)
        try:
            first = await anext(stream)
        except asyncio.CancelledError:  # the client left before the first answer
            stream.cancel()
            self._client_left(call, call.request_id)
            raise
        except Exception as exc:
            logger.warning("variant %s failed request %s: %r", call.variant, call.request_id, exc)
            await self._finish(call, call.request_id, 503, error=type(exc).__name__)
            return unavailable(call.variant, exc).response(headers)
        head = first_item(first)
        if isinstance(head, ErrorResponse):
            error = engine_error(head)
            await self._finish(call, call.request_id, error.status, error=error.message)
            return error.response(headers)
        return first, stream

    async def _best_of_n(self, body: dict[str, Any], call: Call, n: int) -> Response:
        """Generate n candidates in one engine call; answer with the one the scorer ranks best."""
        assert self._scorer is not None and self._scoring is not None
        if body.get("n") not in (None, 1):
            raise APIError(
                400,
                f"variant {call.variant!r} answers with the best of {n} candidates: `n` must be "
                "1 or absent",
                param="n",
                code="invalid_value",
            )
        wants_stream = call.stream
        if wants_stream:
            options = body.get("stream_options")
            call.wants_usage = isinstance(options, dict) and options.get("include_usage") is True
        # The engine answers whole (candidates must be scored before one is shown).
        whole = {f: v for f, v in body.items() if f not in ("stream", "stream_options")}
        call.stream = False
        answer = await self._first_answer({**whole, "n": n}, call)
        call.stream = wants_stream
        if isinstance(answer, Response):
            return answer
        payload = answer[0].model_dump() | {"model": call.variant}
        conversation = _conversation(body, call.endpoint) or []
        jobs = [
            ScoreJob(payload["id"], call.experiment, call.variant, conversation,
                     choice_text(choice), time.time())
            for choice in sorted(payload["choices"], key=lambda c: c["index"])
        ]  # fmt: skip
        scores, problem = None, None
        try:
            scores = await asyncio.wait_for(
                self._scorer.score.remote(jobs), timeout=self._scoring.timeout_s
            )
        except asyncio.CancelledError:
            self._client_left(call, payload["id"], payload.get("usage"))
            raise
        except Exception as exc:  # a slow or failed scorer must not fail the answer
            problem = f"scorer unavailable ({type(exc).__name__}); first candidate returned"
            logger.warning("best-of-%d for %s unscored: %r", n, call.request_id, exc)
        model = self._scoring.model_path.name
        response = best_response(payload, scores, model, problem)
        best = response["reward"]["score"]
        if best is not None:
            call.events.append(
                Score(time.time(), payload["id"], call.experiment, call.variant, model, best,
                      time.perf_counter() - call.started)
            )  # fmt: skip
        await self._finish(call, payload["id"], 200, payload.get("usage"))
        headers = _headers(call)
        if wants_stream:
            text = as_stream(response, call.endpoint, call.wants_usage)
            return Response(text, media_type="text/event-stream", headers=headers)
        return JSONResponse(response, headers=headers)

    def _sampled(self) -> bool:
        """Whether this completion goes to the reward scorer (its sample rate)."""
        return self._scoring is not None and random.random() < self._scoring.sample_rate

    def _score_later(self, call: Call, completion_id: str, text: str) -> None:
        """Send a finished completion to the scorer without waiting; never fails the caller."""
        if self._scorer is None or self._scoring is None or call.prompt is None:
            return
        if len(self._scoring_tasks) >= self._scoring.max_in_flight:
            logger.warning("scorer backlog full: completion %s left unscored", completion_id)
            return
        job = ScoreJob(completion_id, call.experiment, call.variant, call.prompt, text,
                       time.time(), call.battle_id)  # fmt: skip
        task = asyncio.get_running_loop().create_task(self._send_score(job))
        self._scoring_tasks.add(task)
        task.add_done_callback(self._scoring_tasks.discard)

    async def _send_score(self, job: ScoreJob) -> None:
        """Off the response path: a scorer replica that died with the call (Ray Serve starts
        another, and the handle learns of it) is tried again, a few times, then given up."""
        assert self._scorer is not None
        for wait in (*SCORE_RETRY_S, None):
            try:
                await self._scorer.score_and_log.remote(job)
                return
            except RayActorError as exc:  # the replica is gone: another may take it
                if wait is None:
                    logger.warning("completion %s not scored: %r", job.completion_id, exc)
                    return
                await asyncio.sleep(wait)
            except Exception as exc:
                logger.warning("completion %s not scored: %r", job.completion_id, exc)
                return

    async def _battle(
        self,
        body: dict[str, Any],
        plan: CompiledExperiment,
        base: Call,
        who: BattleTerms,
        events: list[Event],
    ) -> Response:
        """An arena battle: two variants answer at once, shown as choices 0 and 1, blind.

        `base` is the request's call (no variant yet); `who` says who may vote on it."""
        experiment = plan.experiment.name
        headers = {"x-experiment": experiment}
        n = body.get("n")
        if n is not None and n != 2:
            raise APIError(
                400,
                f"experiment {experiment!r} is an arena: it answers with two choices, so `n` "
                "must be 2 or absent",
                param="n",
                code="invalid_value",
            )
        battle_id = f"battle-{uuid.uuid4().hex}"
        pair = plan.draw_pair()
        names = [name for variant in pair for name in self._names_of[variant]]
        terms = telling_terms(*(self._variants[variant].identity_terms for variant in pair))
        who = dataclasses.replace(who, secrets=tuple(names), identity_terms=tuple(terms))
        prepared = []
        for index, variant in enumerate(pair):
            call = dataclasses.replace(base, variant=variant, events=[])
            call.battle_id, call.label = battle_id, "ab"[index]
            try:
                prepared.append((call, self._engine_request({**body, "n": 1}, call)))
            except APIError as exc:
                call.events = events
                await self._finish(call, call.engine_request_id, exc.status, error=exc.message)
                return blind_error(exc, index, term_pattern(names)).response(headers)
        sides = [
            Side(call.label or "", index, call, self._engine_call(call, engine_request))
            for index, (call, engine_request) in enumerate(prepared)
        ]
        if self._sampled():
            conversation = _conversation(body, base.endpoint)
            for side in sides:
                side.call.prompt = conversation
        battle = ArenaBattle(
            battle_id, experiment, base.unit or "", sides, self._outcomes, events,
            self._score_later, who,
        )  # fmt: skip
        return await battle.respond(headers | {"x-battle-id": battle_id})

    async def _relay(
        self, call: Call, first: list, rest: DeploymentResponseGenerator
    ) -> AsyncIterator[str]:
        """Pass the engine's SSE batches through; log the completion before the final [DONE]."""
        completion_id = stream_id(first[0]) if isinstance(first[0], str) else None
        completion_id = completion_id or call.request_id
        usage: dict[str, Any] | None = None
        logged = False
        status, error = 200, None
        text: list[str] | None = [] if call.prompt is not None else None
        engine = self._variants[call.variant].engine_name
        # A prompt-only variant's engine names its owner in every chunk: name the variant.
        # (Inside a chunk's text a quote is escaped, so only the envelope's field matches.)
        renamed = (f'"model":"{engine}"', f'"model":"{call.variant}"')
        batch: list | None = first
        try:
            while batch is not None:
                out = []
                for chunk in batch:
                    if isinstance(chunk, ErrorResponse):
                        problem = engine_error(chunk)
                        status, error = problem.status, problem.message
                        chunk = f"data: {json.dumps(problem.body())}\n\n"
                    elif is_usage_chunk(chunk):
                        usage = json.loads(chunk[6:]).get("usage")
                        if not call.wants_usage:
                            continue
                    elif chunk.startswith("data: [DONE]") and not logged:
                        logged = True
                        await self._finish(call, completion_id, status, usage, error)
                        if text is not None and status == 200:
                            self._score_later(call, completion_id, "".join(text))
                    elif text is not None:
                        text.append(chunk_text(chunk))
                    out.append(chunk)
                if out:
                    joined = "".join(out)
                    yield joined.replace(*renamed) if engine != call.variant else joined
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
                if error is None:
                    status, error = CLIENT_CLOSED, "client_closed"
            if not logged:
                # The client may be gone (cancelled task): send without awaiting the answer.
                call.events.append(call.completion(completion_id, status, usage, error))
                self._outcomes.later(call.events, call.request_id)

    def _client_left(
        self, call: Call, completion_id: str, usage: Mapping[str, Any] | None = None
    ) -> None:
        """Log a call whose client went away (the task is being cancelled: nothing is awaited)."""
        call.events.append(call.completion(completion_id, CLIENT_CLOSED, usage, "client_closed"))
        self._outcomes.later(call.events, call.request_id)

    async def _finish(
        self,
        call: Call,
        completion_id: str,
        status: int,
        usage: Mapping[str, Any] | None = None,
        error: str | None = None,
    ) -> None:
        """Send this call's events to the outcome log; returns once committed (`OutcomeSender`)."""
        call.events.append(call.completion(completion_id, status, usage, error))
        await self._outcomes.send(call.events, call.request_id)
