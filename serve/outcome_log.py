"""The OutcomeLog deployment: the writer of the outcome store, shared by every gateway replica.
One replica with SQLite; two or more with PostgreSQL, whose transactions keep them apart
(`router.store`).

Events are queued in arrival order and written by one background task with group commit: each
write takes everything queued so far in one transaction, so batches grow with load and add no
delay when idle. `record` returns once its events are queued (or, with `committed`, once
they are committed: the gateway's completions), so anything recorded before a feedback call is
written before that feedback is checked. `record_feedback` returns only after the transaction
holding its row has committed; a write that fails raises, so the gateway answers 503 rather
than a false 2xx.

When the store itself cannot write (`router.db.store_errors`: a locked file, a full disk, an
I/O error, a PostgreSQL server restarting or out of reach) the batch's feedback, and any
queued behind it, fails at once (the client retries it with its idempotency key) and every
other event stays queued, in order, for the next try after a backoff: an outage of the store
loses no exposure or completion, up to `max_pending` of them kept in memory (beyond it the
oldest go, logged). Any other failure is taken for a bad event, and the batch is written one
by one to isolate it; the store failing meanwhile carries the rest as above.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import logging
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from ray import serve
from ray.serve.handle import DeploymentHandle

from router.db import read, store_errors
from router.events import (
    ArmHold,
    Event,
    Feedback,
    FeedbackResult,
    RampHold,
    Weights,
    check_text,
)
from router.experiment import Experiment, experiment_revision
from router.store import OutcomeStore, WriteResult
from serve.config import OUTCOME_LOG_DEPLOYMENT
from serve.metrics import OutcomeMetrics, exposition_of

logger = logging.getLogger("ray.serve")

_Entry = tuple[Event | None, asyncio.Future | None]
RAMP_CHECK_S = 60.0  # how often a ramped experiment's guardrails are judged
COMMIT_WAIT_S = 2.0  # what `record(committed=True)` waits for a store that cannot write
FLUSH_ON_STOP_S = 20.0  # within Ray Serve's graceful shutdown timeout for the replica


class OutcomeWriter:
    """Queue plus group-commit loop around an `OutcomeStore`; usable without Ray (tests)."""

    RETRY_S = (0.05, 2.0)  # backoff while the store cannot write: first and longest wait

    def __init__(self, store: str, max_batch: int = 1024, max_pending: int = 1_000_000) -> None:
        self._store = OutcomeStore(store)
        self._down = store_errors()
        self._max_batch = max_batch
        self._max_pending = max_pending
        self._queue: asyncio.Queue[_Entry] = asyncio.Queue()
        self._carried: list[_Entry] = []  # kept from a batch the store could not write
        self._writing = 0  # entries of the batch being written now
        # Store calls block; one thread keeps them off the event loop and in order.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="outcome-writer")
        self._task: asyncio.Task | None = None
        self.incarnation = uuid.uuid4().hex  # tells a sender whether its events are still here

    def _ensure_running(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def record(
        self, events: list[Event], committed: bool = False, wait_s: float = COMMIT_WAIT_S
    ) -> bool:
        """Queue the events; whether they are committed. With `committed`, wait for that, at
        most `wait_s`: a store that is slow or cannot write keeps them queued (False)."""
        self._ensure_running()
        for event in events:
            try:  # what the store could not take is refused here, alone, not with its batch
                check_text(event)
            except ValueError as exc:
                logger.error("outcome event refused: %s: %s", type(event).__name__, exc)
                continue
            self._queue.put_nowait((event, None))
        if not committed:
            return False
        try:
            # Shielded: the timeout stops this caller's wait, not the flush. Its mark stays in
            # the queue behind these events, so a store that recovers commits them in order and
            # resolves the mark; cancelling it would only throw the mark's future away.
            await asyncio.wait_for(asyncio.shield(self.flush()), timeout=wait_s)
        except TimeoutError:
            return False
        return True

    async def deliver(self, events: list[Event], ticket: str | None = None) -> str | None:
        """`OutcomeSender`'s call: queue the events and wait for their commit (`record`); None
        once committed, else a ticket to call again with until they are. A ticket from this
        writer only waits (the events are queued here); one from another writer (this log was
        restarted, and lost its queue with its process) queues the events again."""
        if ticket == self.incarnation:
            committed = await self.record([], committed=True, wait_s=COMMIT_WAIT_S)
        else:
            committed = await self.record(events, committed=True, wait_s=COMMIT_WAIT_S)
        return None if committed else self.incarnation

    async def record_feedback(self, feedback: Feedback) -> FeedbackResult:
        self._ensure_running()
        done: asyncio.Future[FeedbackResult] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((feedback, done))
        return await done

    async def flush(self) -> None:
        """Return once everything queued before this call is committed."""
        self._ensure_running()
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((None, done))
        await done

    @property
    def pending(self) -> int:
        """Entries queued, carried or being written, not yet committed: events, and marks of
        waiting flushes."""
        return self._queue.qsize() + len(self._carried) + self._writing

    async def _next_batch(self) -> list[_Entry]:
        """Carried entries first, at most `max_batch`; the queue only once they are all out
        (what was queued came after them)."""
        if self._carried:
            batch = self._carried[: self._max_batch]
            self._carried = self._carried[self._max_batch :]
            if self._carried:
                return batch
        else:
            batch = [await self._queue.get()]
        while len(batch) < self._max_batch and not self._queue.empty():
            batch.append(self._queue.get_nowait())
        return batch

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        wait = self.RETRY_S[0]
        while True:
            batch = await self._next_batch()
            events = [event for event, _ in batch if event is not None]
            self._writing = len(batch)
            try:
                results = await loop.run_in_executor(self._executor, self._write, events)
            except self._down as exc:  # the store, not the events
                self._writing = 0
                self._carry(batch, exc)
                await asyncio.sleep(wait)
                wait = min(2 * wait, self.RETRY_S[1])
                continue
            except Exception:
                self._writing = 0
                logger.exception("outcome batch of %d failed; retrying one by one", len(events))
                if not await self._write_one_by_one(batch):
                    await asyncio.sleep(wait)
                    wait = min(2 * wait, self.RETRY_S[1])
                continue
            self._writing = 0
            wait = self.RETRY_S[0]
            self._resolve(batch, iter(results))

    def _carry(self, batch: list[_Entry], exc: Exception) -> None:
        """Fail the batch's feedback now (503, retried by the client), and the feedback queued
        behind it, which would otherwise wait out the outage; keep the rest, in order."""
        queued = []
        while not self._queue.empty():
            queued.append(self._queue.get_nowait())
        kept = []
        for event, done in [*batch, *self._carried, *queued]:
            if isinstance(event, Feedback):
                if done is not None and not done.done():
                    done.set_exception(exc)
            elif event is not None or (done is not None and not done.done()):
                kept.append((event, done))  # a flush mark nobody waits on is dropped
        events = sum(event is not None for event, _ in kept)
        dropped = max(0, events - self._max_pending)
        if dropped:  # the oldest events go; flush marks stay (their waiters are answered later)
            logger.error("outcome store down too long: %d oldest events lost", dropped)
            survivors = []
            for event, done in kept:
                if event is not None and dropped:
                    dropped -= 1
                    continue
                survivors.append((event, done))
            kept = survivors
        self._carried = kept
        logger.error(
            "outcome store cannot write (%s): %d events kept for the next try", exc, events
        )

    async def _write_one_by_one(self, batch: list[_Entry]) -> bool:
        """Each event alone: one that fails is lost (logged); the store failing carries this
        event and the rest (False: back off before the next try)."""
        loop = asyncio.get_running_loop()
        for i, (event, done) in enumerate(batch):
            if event is None:
                if done is not None and not done.done():
                    done.set_result(None)
                continue
            try:
                [result] = await loop.run_in_executor(self._executor, self._write, [event])
            except self._down as exc:  # the store, not this event
                self._carry(batch[i:], exc)
                return False
            except Exception as exc:
                logger.error("outcome event lost: %s: %s", type(event).__name__, exc)
                if done is not None and not done.done():
                    done.set_exception(exc)
                continue
            if done is not None and not done.done():
                done.set_result(result)
        return True

    def _write(self, events: list[Event]) -> list[WriteResult]:
        """Commit one batch (on the writer thread); the deployment counts it for /metrics."""
        return self._store.write(events)

    @staticmethod
    def _resolve(batch: list[_Entry], results) -> None:
        for event, done in batch:
            result = next(results) if event is not None else None
            if done is not None and not done.done():
                done.set_result(result)


@serve.deployment(
    name=OUTCOME_LOG_DEPLOYMENT,
    num_replicas=1,
    max_ongoing_requests=100_000,
    ray_actor_options={"num_cpus": 0},
    graceful_shutdown_timeout_s=30,
)
class OutcomeLog(OutcomeWriter):
    """Every gateway replica sends it events. One replica with SQLite, which has one writer;
    with PostgreSQL as many as `store.log_replicas` (2 by default): each takes its share of
    the calls, and the database keeps their batches apart (`router.store`).

    It also answers reports: the analysis reads the store through its own read-only
    connection, on threads of its own, so the writer never waits for it (WAL readers do not
    block the writer, nor do PostgreSQL's).
    """

    PURGE_EVERY_S = 3600.0

    def __init__(
        self, store: str, max_batch: int = 1024, retention_days: float | None = None
    ) -> None:
        super().__init__(store, max_batch)
        self._readers = ThreadPoolExecutor(max_workers=2, thread_name_prefix="outcome-report")
        self._scorer_batches: list[int] = []  # sizes seen, counted with the next batch
        self._retention_s = None if retention_days is None else retention_days * 86400
        self._purging: asyncio.Task | None = None
        # Per experiment: (its config, the refresh period) and the weights computed for them.
        self._weights: dict[str, tuple[tuple[Experiment, int], dict[str, Any] | None]] = {}
        self._weights_lock = asyncio.Lock()
        self._holds: dict[str, tuple[tuple[Experiment, int], dict[str, Any] | None]] = {}
        self._holds_lock = asyncio.Lock()  # a ramp's report never holds up a weights refresh

    def _ensure_running(self) -> None:
        super()._ensure_running()
        if self._retention_s is not None and (self._purging is None or self._purging.done()):
            self._purging = asyncio.get_running_loop().create_task(self._purge_text())

    async def _purge_text(self) -> None:
        """Delete kept text past its retention now, then hourly: on the writer's own thread,
        so the store keeps its one writer."""
        assert self._retention_s is not None
        loop = asyncio.get_running_loop()
        while True:
            before = time.time() - self._retention_s
            try:
                gone = await loop.run_in_executor(self._executor, self._store.purge_text, before)
            except Exception as exc:
                logger.warning("kept text not purged this time: %r", exc)
            else:
                if gone:
                    logger.info("purged the text of %d completions past their retention", gone)
            await asyncio.sleep(self.PURGE_EVERY_S)

    async def __del__(self) -> None:
        """A graceful stop (redeploy, shutdown) commits everything queued before the process
        exits; Ray Serve calls this once the replica has no request left."""
        try:
            await asyncio.wait_for(self.flush(), timeout=FLUSH_ON_STOP_S)
        except Exception as exc:
            logger.error("outcome log stopped with %d events unwritten: %r", self.pending, exc)

    def _write(self, events: list[Event]) -> list[WriteResult]:
        """Commit the batch and, in the same transaction, add what it counts to the store's
        `counters` (`serve.metrics`), with the scorer batches seen since the last one."""
        seen = len(self._scorer_batches)
        sizes = self._scorer_batches[:seen]

        def counts(results: list[WriteResult]) -> dict[str, float]:
            metrics = OutcomeMetrics()
            try:
                metrics.observe(events, results)
                for size in sizes:
                    metrics.scorer_batch.observe(size)
                return metrics.counts()
            except Exception:  # a metrics bug must never fail a write
                logger.exception("metrics of a batch of %d not counted", len(events))
                return {}

        results = self._store.write(events, counts=counts)
        del self._scorer_batches[:seen]
        return results

    async def metrics(self) -> str:
        """The Prometheus exposition of everything committed so far, by every gateway and log
        replica: the store's totals."""
        loop = asyncio.get_running_loop()
        totals = await loop.run_in_executor(self._readers, self._totals)
        return exposition_of(totals)

    def _totals(self) -> dict[str, float]:
        return dict(read(self._store.location, "SELECT series, value FROM counters"))

    def observe_scorer_batch(self, size: int) -> None:
        self._scorer_batches.append(size)
        self._ensure_running()

    async def report(
        self,
        experiment: Experiment,
        reps: int = 200,
        revisions: dict[str, str] | None = None,
        models_dir: Path | None = None,
    ) -> dict[str, Any]:
        """The experiment's report as JSON, over everything recorded before the call; the
        probe counts the results of the variants' current `revisions`."""
        from router.analysis import build_report

        await asyncio.wait_for(self.flush(), timeout=30)  # a store that cannot write: 503
        analyse = functools.partial(
            build_report,
            self._store.location,
            experiment,
            reps=reps,
            revisions=revisions,
            models_dir=models_dir,
        )
        report = await asyncio.get_running_loop().run_in_executor(self._readers, analyse)
        return report.model_dump(mode="json")

    async def holdout_report(self, reps: int = 200) -> dict[str, Any]:
        """The global holdout's comparison as JSON (`router.analysis.build_holdout_report`),
        over everything recorded before the call."""
        from router.analysis.report import build_holdout_report

        await asyncio.wait_for(self.flush(), timeout=30)
        analyse = functools.partial(build_holdout_report, self._store.location, reps=reps)
        report = await asyncio.get_running_loop().run_in_executor(self._readers, analyse)
        return report.model_dump(mode="json")

    async def ramp_state(self, experiment: Experiment) -> dict[str, Any] | None:
        """A ramped experiment's hold, if a guardrail stopped it: ``{"step", "allocation",
        "guardrail", "since"}``, else None. Judged once per `RAMP_CHECK_S` period from the
        report; the first failing guardrail stops the ramp at the step before the one in force
        (its last safe step; step 0 is the experiment's own allocation), logged in
        `ramp_holds` for this config, which keeps it held until the config changes."""
        if not experiment.ramp or not experiment.guardrails:
            return None
        revision = experiment_revision(experiment)
        key = (experiment, int(time.time() // RAMP_CHECK_S))
        async with self._holds_lock:
            known = self._holds.get(experiment.name)
            # A hold lasts as long as its config; no hold is judged again each period.
            fresh = known is not None and (known[1] is not None or known[0] == key)
            if known is not None and known[0][0] == experiment and fresh:
                return known[1]
            await asyncio.wait_for(self.flush(), timeout=30)
            loop = asyncio.get_running_loop()
            answer = await loop.run_in_executor(
                self._readers, self._judge_ramp, experiment, revision
            )
            if answer is not None and answer.pop("new"):
                hold = RampHold(
                    ts=answer["since"],
                    experiment=experiment.name,
                    revision=revision,
                    step=answer["step"],
                    allocation=answer["allocation"],
                    guardrail=answer["guardrail"],
                )
                await self.record([hold], committed=True)
                logger.warning(
                    "ramp of %s held at step %d (allocation %g): guardrail %s failed",
                    experiment.name,
                    hold.step,
                    hold.allocation,
                    hold.guardrail,
                )
            self._holds[experiment.name] = (key, answer)
            return answer

    def _judge_ramp(self, experiment: Experiment, revision: str) -> dict[str, Any] | None:
        """The hold logged for this config, else one made now if a guardrail fails."""
        from bisect import bisect_right

        from router.analysis import build_report

        logged = read(
            self._store.location,
            "SELECT step, allocation, guardrail, ts FROM ramp_holds "
            "WHERE experiment = ? AND revision = ?",
            (experiment.name, revision),
        )
        if logged:
            [(step, allocation, guardrail, since)] = logged
            return {
                "step": step,
                "allocation": allocation,
                "guardrail": guardrail,
                "since": since,
                "revision": revision,
                "new": False,
            }
        report = build_report(self._store.location, experiment, reps=100)
        failed = [g.metric for g in report.guardrails if g.status == "fail"]
        if not failed:
            return None
        now = time.time()
        times = [step.at.timestamp() for step in experiment.ramp]
        step = max(bisect_right(times, now) - 1, 0)  # the one before the step in force
        allocation = experiment.allocation if step == 0 else experiment.ramp[step - 1].allocation
        return {
            "step": step,
            "allocation": allocation,
            "guardrail": failed[0],
            "since": now,
            "revision": revision,
            "new": True,
        }

    async def weights(self, experiment: Experiment) -> dict[str, Any] | None:
        """The weights the data give for the current refresh period: an adaptive arena's pair
        shares (`router.adaptive`; None while its configured weights hold, too few votes) or
        a bandit's arm shares (`router.bandit`). ``{"version", "weights": [[a, b, share], ...]
        or [[arm, share], ...], "observations", "holds"}``; `version` is the period's number,
        ``time // refresh_s``. Computed once per period and config, so every gateway replica
        gets the same, and logged in `weights` the first time.

        A bandit with guardrails is judged too, from the report: an arm that fails one is held
        (`holds`: arm -> ``{"share", "version", "guardrail", "since"}``) at the share it had in
        the version before the one in force (`router.bandit.cap_shares`), logged in
        `arm_holds` once, and held for as long as the config lasts."""
        refresh_s = _refresh_s(experiment)
        key = (experiment, int(time.time() // refresh_s))
        async with self._weights_lock:  # one computation per period, however many ask
            known = self._weights.get(experiment.name)
            if known is not None and known[0] == key:
                return known[1]
            await asyncio.wait_for(self.flush(), timeout=30)
            compute = functools.partial(_compute_weights, self._store.location, experiment, key[1])
            found = await asyncio.get_running_loop().run_in_executor(self._readers, compute)
            answer = None
            if found is not None:
                listed, count, holds = found
                answer = {
                    "version": key[1],
                    "weights": listed,
                    "observations": count,
                    "holds": {arm: _listed_hold(hold) for arm, hold in holds.items()},
                }
                history = Weights(
                    ts=time.time(),
                    experiment=experiment.name,
                    version=key[1],
                    weights=json.dumps(listed),
                    observations=count,
                )
                new = [hold for hold in holds.values() if hold.version == key[1]]
                # Log replicas (PostgreSQL) each compute the period's weights; the first one
                # logged is the one every replica answers with, as propensities must match it.
                shared = self._store.postgres
                if await self.record([*new, history], committed=bool(new) or shared) and shared:
                    logged = await asyncio.get_running_loop().run_in_executor(
                        self._readers, self._logged_weights, experiment.name, key[1]
                    )
                    if logged is not None:
                        answer["weights"], answer["observations"] = logged
                for hold in new:
                    logger.warning(
                        "bandit arm %s of %s held at share %.3g: guardrail %s failed",
                        hold.arm,
                        experiment.name,
                        hold.share,
                        hold.guardrail,
                    )
            self._weights[experiment.name] = (key, answer)
            return answer

    def _logged_weights(self, experiment: str, version: int) -> tuple[list, int] | None:
        rows = read(
            self._store.location,
            "SELECT weights, observations FROM weights WHERE experiment = ? AND version = ?",
            (experiment, version),
        )
        return (json.loads(rows[0][0]), rows[0][1]) if rows else None

    async def check_health(self) -> None:
        if self._task is not None and self._task.done():
            raise RuntimeError("outcome writer loop stopped")
        self._ensure_running()  # the purge of kept text starts without waiting for traffic


def _refresh_s(experiment: Experiment) -> float:
    if experiment.adaptive is not None:
        return experiment.adaptive.refresh_s
    if experiment.mode == "bandit":
        return experiment.bandit_settings.refresh_s
    raise ValueError(f"experiment {experiment.name!r} is neither adaptive nor a bandit")


def _listed_hold(hold: ArmHold) -> dict[str, Any]:
    return {
        "share": hold.share,
        "version": hold.version,
        "guardrail": hold.guardrail,
        "since": hold.ts,
    }


def _compute_weights(
    path: str, experiment: Experiment, version: int
) -> tuple[list, int, dict[str, ArmHold]] | None:
    """(weights as listed, observations, a bandit's held arms) from the store, or None while
    the config's weights hold."""
    from router.adaptive import experiment_weights
    from router.analysis.data import votes

    if experiment.mode == "bandit":
        return _bandit_weights(path, experiment, version)
    rows = votes(path, experiment.name)
    if rows is None:
        return None
    keep = ~rows.identity_revealed  # votes that count, as in the report
    sides = [
        [names[i] for i in np.flatnonzero(keep)]
        for names in (rows.variant_a, rows.variant_b, rows.vote)
    ]
    count = int(keep.sum())
    # Look ahead as many votes as came since the last weights logged (all, the first time).
    last = read(
        path,
        "SELECT observations FROM weights WHERE experiment = ? ORDER BY version DESC LIMIT 1",
        (experiment.name,),
    )
    since = count - last[0][0] if last else count
    weights = experiment_weights(experiment, *sides, horizon=max(since, 1))
    if weights is None:
        return None
    return [[a, b, share] for (a, b), share in weights.items()], count, {}


def _bandit_weights(
    path: str, experiment: Experiment, version: int
) -> tuple[list, int, dict[str, ArmHold]]:
    """A bandit's Thompson shares for `version`, its held arms capped (`_arm_holds`)."""
    from router.analysis.data import bandit_rewards
    from router.bandit import cap_shares, thompson_weights

    settings = experiment.bandit_settings
    rewards = bandit_rewards(path, experiment.name, settings.reward, settings.reward_range)
    arms = [arm.variant for arm in experiment.arms if arm.weight > 0]
    seed = int(hashlib.sha256(f"{experiment.name}#{version}".encode()).hexdigest()[:8], 16)
    shares = thompson_weights(
        {arm: rewards.get(arm, (0.0, 0.0))[0] for arm in arms},
        {arm: rewards.get(arm, (0.0, 0.0))[1] for arm in arms},
        arms,
        min_share=settings.min_share,
        seed=seed,
    )
    holds = _arm_holds(path, experiment, version, arms) if experiment.guardrails else {}
    if holds:
        shares = cap_shares(shares, {arm: hold.share for arm, hold in holds.items()})
    count = int(sum(trials for _, trials in rewards.values()))
    return [[arm, share] for arm, share in shares.items()], count, holds


def _arm_holds(
    path: str, experiment: Experiment, version: int, arms: list[str]
) -> dict[str, ArmHold]:
    """The bandit's held arms for this config: those logged in `arm_holds`, and a new hold
    (`version` = this one) for each other arm the report now finds failing a guardrail, at
    its share in the weights version before the one in force (the config's share when the
    log has none)."""
    from router.analysis import build_report

    revision = experiment_revision(experiment)
    rows = read(
        path,
        "SELECT ts, arm, version, share, guardrail FROM arm_holds "
        "WHERE experiment = ? AND revision = ?",
        (experiment.name, revision),
    )
    logged = read(
        path,
        "SELECT weights FROM weights WHERE experiment = ? AND version < ? "
        "ORDER BY version DESC LIMIT 2",
        (experiment.name, version),
    )
    holds = {
        arm: ArmHold(
            ts=ts,
            experiment=experiment.name,
            revision=revision,
            arm=arm,
            version=held_at,
            share=share,
            guardrail=guardrail,
        )
        for ts, arm, held_at, share, guardrail in rows
        if arm in arms
    }
    report = build_report(path, experiment, reps=100)
    failing: dict[str, str] = {}
    for result in report.guardrails:
        if result.status == "fail" and result.treatment in arms:
            failing.setdefault(result.treatment, result.metric)
    configured = {arm.variant: arm.weight for arm in experiment.arms if arm.weight > 0}
    safe = dict(json.loads(logged[1][0])) if len(logged) == 2 else {}
    now = time.time()
    for arm, metric in failing.items():
        if arm in holds:
            continue
        share = safe.get(arm, configured[arm] / sum(configured.values()))
        holds[arm] = ArmHold(
            ts=now,
            experiment=experiment.name,
            revision=revision,
            arm=arm,
            version=version,
            share=float(share),
            guardrail=metric,
        )
    return holds


class OutcomeSender:
    """Sends a call's events to the outcome log and sees them committed, without ever failing
    the call or holding it up for long.

    `send` returns once the log has committed the events (so a log killed right after loses
    nothing the client saw) or, past `HOLD_S`, leaves the delivery to go on behind. The log
    itself answers after at most its own short wait when the store is slow or cannot write
    (the events stay queued there, and the sender asks again until they are committed, or
    sends them again to a log that replaced the one holding them); a log whose process died is
    retried with backoff while Ray Serve starts a new one, up to `RETRY_FOR_S`. `later` does
    not wait at all, for a caller that may be cancelled (its client left); `pending` lets a
    stopping replica see every delivery through.
    """

    HOLD_S = 10.0  # what a caller waits at most: the client's last byte waits with it
    RETRY_S = (0.1, 2.0)  # first and longest wait between tries
    RETRY_FOR_S = 120.0

    def __init__(self, log: DeploymentHandle) -> None:
        self.log = log
        self._tasks: set[asyncio.Task] = set()

    async def send(self, events: list[Event], what: str) -> None:
        """Returns once the events are committed, or after `HOLD_S`; never raises."""
        await asyncio.wait({self.later(events, what)}, timeout=self.HOLD_S)

    def later(self, events: list[Event], what: str) -> asyncio.Task:
        """Deliver from a tracked task of its own; the caller need not wait for it."""
        task = asyncio.get_running_loop().create_task(self._deliver(events, what))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _deliver(self, events: list[Event], what: str) -> None:
        deadline = time.monotonic() + self.RETRY_FOR_S
        wait = self.RETRY_S[0]
        ticket: str | None = None  # the log that holds the events queued, not yet committed
        while True:
            left = deadline - time.monotonic()
            try:
                # Unanswered while no log replica is up: Ray Serve queues the call meanwhile.
                # A log whose store stalls answers after its own short wait with a ticket: the
                # events wait there, and are sent again only if that log is gone.
                ticket = await asyncio.wait_for(self.log.deliver.remote(events, ticket), left)
                if ticket is None:
                    return
                problem: BaseException = TimeoutError("the store has not committed them yet")
                if time.monotonic() < deadline:
                    continue
            except TimeoutError:
                problem = TimeoutError(f"no log took them in {self.RETRY_FOR_S} s")
            except Exception as exc:  # the log's process died with the call
                problem = exc
            if time.monotonic() + wait >= deadline:
                state = "not confirmed" if ticket else "lost"
                logger.error("outcome events of %s %s: %r", what, state, problem)
                return
            if wait == self.RETRY_S[0]:
                logger.warning("outcome events of %s not sent (%r); retrying", what, problem)
            await asyncio.sleep(wait)
            wait = min(2 * wait, self.RETRY_S[1])

    @property
    def pending(self) -> set[asyncio.Task]:
        return set(self._tasks)
