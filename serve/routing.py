"""The route stage: what a completion request's `model` names, and the arm or pair it gets.

`model` names a variant (served as is) or an experiment, whose compiled plan assigns the
request's unit (`serve.protocol.unit_of`: its user, session or the request itself) to an arm,
or to an arena battle. The assignment's exposure is logged once per change per unit
(`ExposureCache`, an optimisation: the store deduplicates too) with the request's completion.

Experiments arrive through the gateway's `reconfigure` and are swapped whole, so one request
sees one revision.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from router.assignment import Assignment, CompiledExperiment
from router.events import Event, Exposure
from router.experiment import Experiment, experiment_revision
from serve.arena import check_options
from serve.errors import APIError
from serve.outcome_log import RAMP_CHECK_S
from serve.protocol import unit_of

EXPOSURE_CACHE_SIZE = 65_536
logger = logging.getLogger("ray.serve")


class ExposureCache:
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


@dataclass(slots=True, kw_only=True)
class Route:
    """Where an experiment request goes: an arm (`variant`) or, for an arena, a battle (None)."""

    plan: CompiledExperiment
    unit: str
    variant: str | None
    events: list[Event] = field(default_factory=list)  # the exposure, when it is new
    confirming: bool = False  # in the experiment's confirmation run (`confirm`)

    @property
    def experiment(self) -> Experiment:
        return self.plan.experiment

    @property
    def logged_as(self) -> str:
        """The experiment name the request's events carry: a confirmation run's own."""
        experiment = self.plan.experiment
        return experiment.confirmation_name if self.confirming else experiment.name


class Router:
    """The live experiments of one gateway replica, and the exposures it has logged."""

    def __init__(self, variants: Mapping[str, Any]) -> None:
        self.variants = variants
        self.experiments: dict[str, CompiledExperiment] = {}
        self._exposures = ExposureCache()

    def plan_for(self, model: str) -> CompiledExperiment | None:
        """The experiment `model` names; None for a variant; 404 for neither."""
        plan = self.experiments.get(model)
        if plan is None and model not in self.variants:
            known = ", ".join([*self.experiments, *self.variants])
            raise APIError(
                404,
                f"the model {model!r} does not exist (known: {known})",
                param="model",
                code="model_not_found",
            )
        return plan

    def assign(
        self,
        plan: CompiledExperiment,
        body: dict[str, Any],
        user: str | None,
        headers: Mapping[str, str],
        request_id: str,
        wall_ts: float,
    ) -> Route:
        """The request's unit assigned; its exposure event when the unit's assignment is new.
        An arena's refused options are a 400 before anything is assigned."""
        experiment = plan.experiment
        if experiment.mode == "arena":
            check_options(body, experiment.name)
        unit = unit_of(experiment, user, headers, request_id)
        assignment = plan.assign(unit, wall_ts)
        route = Route(
            plan=plan,
            unit=unit,
            variant=assignment.variant,
            confirming=assignment.reason == "confirm",
        )
        if experiment.unit == "request" or self._exposures.is_new(
            experiment.name, unit, assignment
        ):
            propensity = None  # a bandit arm's share when drawn, for inverse-propensity weights
            if experiment.mode == "bandit" and assignment.reason == "arm" and assignment.variant:
                propensity = plan.arm_share(assignment.variant)
            exposure = Exposure(
                ts=wall_ts,
                request_id=request_id,
                experiment=route.logged_as,
                unit_type=experiment.unit,
                unit=unit,
                variant=assignment.variant,
                reason=assignment.reason,
                exposed=assignment.exposed,
                weights_version=assignment.version,
                propensity=propensity,
            )
            route.events.append(exposure)
        return route

    def unsent(self, route: Route) -> None:
        """The request failed before its events were sent: log its exposure next time."""
        if route.events and route.experiment.unit != "request":
            self._exposures.forget(route.experiment.name, route.unit)


def describe(plan: CompiledExperiment, now: datetime) -> dict[str, Any]:
    """An experiment as `GET /v1/experiments` lists it (forced unit ids are not shown); an
    adaptive arena with the pair shares in force and their version (None: the configured
    weights)."""
    experiment = plan.experiment
    described = experiment.model_dump(mode="json", exclude={"forced", "pairs"})
    described["state"] = experiment.state(now)
    described["revision"] = experiment_revision(experiment)  # what its logs and holds name
    described["layer"] = experiment.layer_name
    described["default_variant"] = experiment.fallback_variant
    described["primary_metric"] = experiment.metric
    described["forced_units"] = len(experiment.forced)
    described["allocation_now"] = plan.allocation_at(now.timestamp())  # the ramp's step now
    described["ramp_hold"] = plan.ramp_hold  # a failing guardrail stopped the ramp
    described["when"] = [r.model_dump(mode="json", exclude_none=True) for r in experiment.when]
    if experiment.mode == "bandit":
        described["arm_shares"] = plan.arm_shares()
        described["weights_version"] = plan.weights_version
        described["arm_holds"] = plan.arm_holds  # arms a failing guardrail stopped growing
    if experiment.mode == "arena":
        described["pairs"] = [p.model_dump(mode="json") for p in experiment.arena_pairs()]
        described["pair_shares"] = [[a, b, w] for (a, b), w in plan.pair_shares().items()]
        described["weights_version"] = plan.weights_version
    return described


class LogDecisions:
    """Keeps what the outcome log decides from the data in force on one gateway replica: the
    adaptive arenas' pair weights, the bandits' arm weights (with the holds of arms a guardrail
    stopped), and the holds of ramps a guardrail stopped.

    At the start of each refresh period (``time // refresh_s``; `RAMP_CHECK_S` for ramps) it
    asks the log, which decides once for every replica, and puts the answer in force, so
    replicas switch together. While the log cannot answer, a plan keeps what it has.
    """

    TIMEOUT_S = 60.0

    def __init__(self, router: Router, log: Any) -> None:
        self._router = router
        self._log = log
        self._task: asyncio.Task | None = None
        self._wake = asyncio.Event()

    def start(self) -> None:
        """Run (again) now: after a config change, new plans get their weights at once."""
        self._wake.set()
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())

    @staticmethod
    def period_of(plan: CompiledExperiment) -> float | None:
        """How often `plan` is refreshed; None when nothing in it is decided by the log."""
        experiment = plan.experiment
        if experiment.adaptive is not None:
            return experiment.adaptive.refresh_s
        if experiment.mode == "bandit":
            return experiment.bandit_settings.refresh_s
        if experiment.ramp and experiment.guardrails and plan.ramp_hold is None:
            return RAMP_CHECK_S
        return None

    async def _run(self) -> None:
        while True:
            self._wake.clear()
            plans = [p for p in self._router.experiments.values() if self.period_of(p)]
            for plan in plans:
                await self.refresh(plan)
            periods = [period for p in plans if (period := self.period_of(p))]
            if not periods:
                await self._wake.wait()
                continue
            now = time.time()
            wait = min(period - now % period for period in periods) + 0.05
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=wait)

    async def refresh(self, plan: CompiledExperiment) -> None:
        """Put the current period's weights, or a ramp's hold, in force on `plan`."""
        experiment = plan.experiment
        try:
            if experiment.adaptive is not None or experiment.mode == "bandit":
                await self._weights(plan, self.period_of(plan) or 0.0)
            if experiment.ramp and experiment.guardrails and plan.ramp_hold is None:
                hold = await asyncio.wait_for(
                    self._log.ramp_state.remote(experiment), self.TIMEOUT_S
                )
                if hold is not None:
                    plan.hold_ramp(hold["step"], hold)
        except Exception as exc:
            logger.warning("%s not refreshed from the outcome log: %r", experiment.name, exc)

    async def _weights(self, plan: CompiledExperiment, refresh_s: float) -> None:
        if plan.weights_version == int(time.time() // refresh_s):
            return
        answer = await asyncio.wait_for(self._log.weights.remote(plan.experiment), self.TIMEOUT_S)
        if answer is None or answer["version"] == plan.weights_version:
            return
        if plan.experiment.mode == "bandit":
            plan.set_arm_weights(
                {arm: share for arm, share in answer["weights"]}, answer["version"]
            )
            plan.arm_holds = answer.get("holds") or {}
        else:
            weights = {(a, b): share for a, b, share in answer["weights"]}
            plan.set_pair_weights(weights, answer["version"])
