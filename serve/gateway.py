"""The gateway: OpenAI routes wired to `Gateway`, a plain class; `serve.app` makes it the Ray
Serve ingress deployment.

A completion request passes named stages, each in a module of its own:

1. admit (`serve.auth`, `serve.admission`): the API key and its rate limit; the in-flight limit
   is a middleware around the whole call;
2. parse and validate (`serve.parse`, by the rules in `serve.protocol`): the JSON body, the
   fields the gateway acts on, `model`, `user` and the trace id;
3. route (`serve.routing`): `model` as a variant, or an experiment whose plan assigns the unit
   an arm or an arena battle;
4. execute: one variant (`serve.single`, relaying the engine's own SSE batches), the best of n
   candidates (`serve.best_of_n`) or a blind battle of two (`serve.arena`), each through
   `serve.engines`;
5. record (`serve.records`): the exposure and completion events, queued in the outcome log
   before the client receives the end of the answer, so a feedback call on that completion id
   always finds it; scores off the response path.

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
import logging
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import httpx
import ray
from fastapi import FastAPI, Request
from prometheus_client import CONTENT_TYPE_LATEST
from ray.serve.handle import DeploymentHandle
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse, Response

from router.assignment import CompiledExperiment
from router.events import Event, ExperimentConfig, Feedback, FeedbackResult
from router.experiment import (
    Experiment,
    GlobalHoldout,
    check_live_change,
    experiment_revision,
)
from serve import admission, pages
from serve.arena import Arena, BattleTerms
from serve.auth import KeyRing, Principal
from serve.best_of_n import BestOfN
from serve.config import (
    DRAIN_S,
    AppConfig,
    ConfigError,
    GatewayConfig,
    config_revision,
    variant_revisions,
)
from serve.engines import Engines
from serve.errors import RETRY_AFTER_S, APIError
from serve.metrics import merge_engine_metrics
from serve.openapi import openapi_document
from serve.parse import Incoming, parse_completion, read_json_object
from serve.probe import Prober, parse_probe_request
from serve.protocol import (
    IDEMPOTENCY_HEADER,
    SESSION_HEADER,
    USER_HEADER,
    ModelCard,
    ModelList,
    check_prompt,
    feedback_answer,
    parse_feedback,
)
from serve.records import Call, Endpoint, Recorder
from serve.routing import LogDecisions, Route, Router, describe
from serve.single import SingleAnswer

logger = logging.getLogger("ray.serve")

FEEDBACK_WAIT_S = 10.0  # feedback on a completion not yet in the log waits for this replica's sends
SEND_ON_STOP_S = 10.0  # and then its outcome events and score jobs reach their deployments

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


def variant_names(config: AppConfig) -> dict[str, tuple[str, ...]]:
    """Every name of each variant an error message could carry: its own, its engine's, and its
    model's and adapter's folders (as configured, resolved, and the last part)."""
    names_of = {}
    for variant in config.variants:
        owner = next(v for v in config.variants if v.name == variant.engine_name)
        folder = owner.model_path
        names = [variant.name, owner.name, owner.model or "", str(folder), folder.name]
        if variant.adapter is not None and variant.adapter_path is not None:
            names += [variant.adapter, str(variant.adapter_path), variant.adapter_path.name]
        names_of[variant.name] = tuple(name for name in dict.fromkeys(names) if name)
    return names_of


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
        self._log_handle = outcome_log
        self._recorder = Recorder(outcome_log, scorer, config.scorer, config.store.keep_text)
        self._engines = Engines(self._variants, variant_handles)
        self._router = Router(self._variants)
        self._decisions = LogDecisions(self._router, outcome_log)
        self._single = SingleAnswer(self._engines, self._recorder)
        self._best_of_n = BestOfN(self._single, self._recorder)
        self._arena = Arena(self._engines, self._recorder, variant_names(config))
        self._created = int(time.time())
        self._revision: str | None = None
        self._rejected: dict[str, str] | None = None
        self._global_holdout: GlobalHoldout | None = None
        self._replicas = config.gateway_replicas
        self._keys = KeyRing()
        self._limits = self._engines.limits
        self._revisions = variant_revisions(config.variants)
        self._prober = Prober(self._engines, self._recorder, self._revisions)
        # Where the reward models' folders are: a report reads the judge's flattery check there.
        self._models_dir = config.scorer.model_path.parent if config.scorer else None

    @property
    def router(self) -> Router:
        return self._router

    @property
    def recorder(self) -> Recorder:
        return self._recorder

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
            running = [plan.experiment for plan in self._router.experiments.values()]
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
        self._router.experiments = {
            e.name: CompiledExperiment(e, config.global_holdout) for e in config.experiments
        }
        self._global_holdout = config.global_holdout
        self._decisions.start()
        self._log_configs(config.experiments)
        self._keys, self._limits = keys, config.limits
        self._engines.limits = config.limits
        # Through the module: a global of this file would be copied into the replica with
        # the pickled deployment class, apart from the middleware's.
        admission.IN_FLIGHT.limit = config.limits.max_in_flight
        admission.IN_FLIGHT.draining = config.draining
        if config.draining:
            await self._drain()
        if keys.open:
            logger.warning("no API keys configured: every route is open (auth.keys)")
        self._revision, self._rejected = revision, None
        names = ", ".join(self._router.experiments) or "none"
        logger.info("experiments revision %s: %s", revision, names)

    def _log_configs(self, experiments: Sequence[Experiment]) -> None:
        """Each experiment's config as put in force now: the store keeps a row per change (the
        weights and allocation history the sample-ratio test reads)."""
        now = time.time()
        events: list[Event] = []
        for experiment in experiments:
            config = experiment.model_dump_json(exclude={"forced"})
            revision = experiment_revision(experiment)
            events.append(
                ExperimentConfig(
                    ts=now, experiment=experiment.name, revision=revision, config=config
                )
            )
        if events:
            self._recorder.outcome_sender.later(events, "experiment configs")

    async def _drain(self) -> None:
        """Wait for the completions in flight, then for the records and scores they sent."""
        deadline = time.monotonic() + DRAIN_S
        while admission.IN_FLIGHT.count and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        await self._recorder.wait_for_sends(deadline - time.monotonic())
        if admission.IN_FLIGHT.count:
            logger.error("drained with %d requests still in flight", admission.IN_FLIGHT.count)

    async def __del__(self) -> None:
        """Ray Serve calls this on a graceful stop, once this replica's requests are done."""
        await self._recorder.wait_for_sends(SEND_ON_STOP_S)

    def _caller(self, request: Request, admin: bool = False) -> Principal:
        """The key's principal (401/403 otherwise), admitted by its rate limit (429)."""
        return admission.admit(self._keys, request.headers.get("authorization"), admin)

    # Routes: each a few lines; the stages are in the modules named above.

    @app.get("/openapi.json")
    async def openapi(self) -> JSONResponse:
        """This gateway's routes, bodies and errors as OpenAPI 3.1 (`serve.openapi`)."""
        return JSONResponse(openapi_document())

    @app.get("/health")
    async def health(self) -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/ui")
    async def ui_root(self) -> Response:
        return pages.to_index()

    @app.get("/ui/")
    async def ui_index(self) -> Response:
        """The arena page (`serve.pages`); the others are linked from it."""
        return pages.page("")

    @app.get("/ui/{name}")
    async def ui_file(self, name: str) -> Response:
        return pages.page(name)

    @app.get("/metrics")
    async def metrics(self, request: Request) -> Response:
        """The gateway's metrics (from the outcome log: every replica's) and the engines'.

        An operator's route: with keys configured it needs an admin key, as reports do. The
        engines' series count each engine's tokens and requests, so a voter who could diff them
        around a battle would learn which engine wrote which side."""
        self._caller(request, admin=True)
        try:
            ours = await self._log_handle.metrics.remote()
        except Exception as exc:
            logger.error("metrics unavailable: %r", exc)
            raise APIError(503, "metrics unavailable; retry", code="metrics_unavailable") from None
        engines = merge_engine_metrics(await node_metrics())
        return Response(ours + engines, media_type=CONTENT_TYPE_LATEST)

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
            for name, plan in self._router.experiments.items()
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
            "global_holdout": (
                self._global_holdout.model_dump(mode="json") if self._global_holdout else None
            ),
            "data": [describe(plan, now) for plan in self._router.experiments.values()],
        }

    @app.get("/v1/experiments/{name}/report")
    async def experiment_report(self, name: str, request: Request) -> JSONResponse:
        self._caller(request, admin=True)
        plan = self._router.experiments.get(name)
        if plan is None:
            raise APIError(
                404, f"no experiment named {name!r}", param="name", code="experiment_not_found"
            )
        return await _from_log(
            f"report of {name}",
            self._log_handle.report.remote(
                plan.experiment, revisions=self._revisions, models_dir=self._models_dir
            ),
        )

    @app.get("/v1/holdout/report")
    async def holdout_report(self, request: Request) -> JSONResponse:
        """The global holdout against everyone exposed (`global_holdout` in the config)."""
        self._caller(request, admin=True)
        if self._global_holdout is None:
            raise APIError(404, "no global_holdout is configured", code="holdout_not_configured")
        return await _from_log("holdout report", self._log_handle.holdout_report.remote())

    @app.post("/v1/chat/completions")
    async def chat_completions(self, request: Request) -> Response:
        return await self._complete(request, "chat")

    @app.post("/v1/completions")
    async def completions(self, request: Request) -> Response:
        return await self._complete(request, "completions")

    @app.post("/v1/feedback")
    async def feedback(self, request: Request) -> JSONResponse:
        principal = self._caller(request)
        body = await read_json_object(request, self._limits.max_body_bytes)
        event = parse_feedback(
            body,
            request.headers.get(IDEMPOTENCY_HEADER),
            time.time(),
            "" if self._keys.open else principal.name,
            request.headers.get(USER_HEADER),
            request.headers.get(SESSION_HEADER),
        )
        result = await self._record_feedback(event)
        if result.status in ("unknown_target", "unknown_replacement") and (
            await self._recorder.wait_for_outcome_sends(FEEDBACK_WAIT_S)
        ):
            # Its completion may still be on its way: a log replica that restarted gets the
            # events it missed on the sender's retry, possibly after the client's feedback.
            result = await self._record_feedback(event)
        answer = feedback_answer(event, result)
        return JSONResponse(
            answer.model_dump(exclude_none=True),
            status_code=201 if answer.status == "recorded" else 200,
        )

    async def _record_feedback(self, event: Feedback) -> FeedbackResult:
        try:
            return await self._log_handle.record_feedback.remote(event)
        except Exception as exc:
            logger.error("feedback not recorded: %s", exc)
            raise APIError(
                503,
                "the outcome log could not record the feedback; retry with the same "
                "idempotency_key",
                code="log_unavailable",
                headers={"Retry-After": RETRY_AFTER_S},
            ) from None

    @app.post("/v1/probe")
    async def probe(self, request: Request) -> JSONResponse:
        """One sycophancy-probe item against one variant (`serve.probe`): an admin route."""
        self._caller(request, admin=True)
        body = await read_json_object(request, self._limits.max_body_bytes)
        probe_request = parse_probe_request(body)
        name = probe_request.experiment
        if name is not None:
            plan = self._router.experiments.get(name)
            if plan is None:
                raise APIError(
                    404,
                    f"no experiment named {name!r}",
                    param="experiment",
                    code="experiment_not_found",
                )
            if probe_request.variant not in {arm.variant for arm in plan.experiment.arms}:
                raise APIError(
                    400,
                    f"variant: {probe_request.variant!r} is not an arm of {name!r}",
                    param="variant",
                    code="invalid_value",
                )
        result = await self._prober.run(probe_request)
        return JSONResponse(result.model_dump())

    # The completion pipeline: admit, parse, route, execute; each stage records what it must.

    async def _complete(self, request: Request, endpoint: Endpoint) -> Response:
        principal = self._caller(request)
        incoming = await parse_completion(request, endpoint, self._limits)
        plan = self._router.plan_for(incoming.model)
        check_prompt(incoming.body, endpoint)
        if plan is None:
            call = incoming.call(variant=incoming.model, experiment=None, unit=incoming.user)
            return await self._execute(incoming.body, call)
        if not plan.targets(incoming.headers, incoming.body.get("metadata")):
            # Not targeted: the default variant, outside the experiment (no exposure, and a
            # completion no analysis of it counts).
            variant = plan.experiment.fallback_variant
            call = incoming.call(variant=variant, experiment=None, unit=incoming.user)
            return await self._execute(incoming.body, call)
        route = self._router.assign(
            plan,
            incoming.body,
            incoming.user,
            incoming.headers,
            incoming.request_id,
            incoming.wall_ts,
        )
        try:
            return await self._in_experiment(incoming, route, principal)
        except BaseException:  # refused, failed or cancelled before its events were sent
            self._router.unsent(route)
            raise

    async def _in_experiment(
        self, incoming: Incoming, route: Route, principal: Principal
    ) -> Response:
        """Serve the arm the unit was assigned, or its arena battle."""
        experiment = route.experiment
        variant = route.variant
        call = incoming.call(variant=variant or "", experiment=route.logged_as, unit=route.unit)
        call.events = route.events
        if variant is not None:
            return await self._execute(incoming.body, call)
        who = BattleTerms(
            unit_type=experiment.unit,
            voter=route.unit if experiment.unit != "request" else incoming.user,
            principal=None if self._keys.open else principal.name,
        )
        return await self._arena.answer(
            incoming.body, route.plan, call, who, confirming=route.confirming
        )

    async def _execute(self, body: dict[str, Any], call: Call) -> Response:
        """One variant answers: with the best of its n candidates, or as its engine does."""
        n = self._variants[call.variant].best_of_n
        if n is not None and self._recorder.scorer_handle is not None:
            return await self._best_of_n.answer(body, call, n)
        return await self._single.answer(body, call)


async def _from_log(what: str, call: Any) -> JSONResponse:
    """A report the outcome log computes, as JSON; a 503 to retry when it cannot."""
    try:
        report = await call
    except Exception as exc:
        logger.error("%s failed: %r", what, exc)
        raise APIError(
            503,
            "the report could not be computed; retry",
            code="report_unavailable",
            headers={"Retry-After": RETRY_AFTER_S},
        ) from None
    return JSONResponse(report)


async def node_metrics() -> list[str]:
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
