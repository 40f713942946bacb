"""An engine's queue overflowing, and processes killed under load (SIGKILL, as a crashed node
or the OOM killer does it): a variant's engine replica, a gateway replica, the reward scorer and
the outcome log.

Each test keeps chats (streamed) and feedback coming from a few threads, kills one process, and
waits for Ray Serve to replace it and for requests to succeed again. Every answer must be a
success or a clean, retryable failure (a 503 with `Retry-After` in OpenAI's shape, an error event
at the end of a stream, or, for the gateway process itself, a dropped connection or Ray Serve's
proxy answering for it), never a 500 of the gateway's or a 4xx; and every feedback the gateway
acknowledged, and every completion a client received, must be in the store afterwards.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field

import httpx
import psutil
import pytest

from tests.e2e.conftest import APP_NAME, ENGINE_ONGOING, ENGINE_QUEUED, GATEWAY_REPLICAS, App

HELLO = [{"role": "user", "content": "Say hello."}]
RECOVERY_S = 300  # a new engine replica loads its model and starts vLLM: tens of seconds
RETRYABLE = {"variant_unavailable", "variant_overloaded", "engine_error"}
RETRY_AFTER_S = 1.0


def replicas(deployment: str) -> list[psutil.Process]:
    """The live processes of a deployment's replicas, by the title Ray gives them."""
    title = f"ray::ServeReplica:{APP_NAME}:{deployment}"
    found = []
    for process in psutil.process_iter(["cmdline", "status"]):
        cmdline = process.info["cmdline"] or [""]
        if process.info["status"] == psutil.STATUS_ZOMBIE:
            continue
        if cmdline[0] == title or cmdline[0].startswith(f"{title}."):
            found.append(process)
    return found


def kill_9(process: psutil.Process) -> None:
    """SIGKILL the process and everything it started (a vLLM engine core is a child)."""
    family = [process, *process.children(recursive=True)]
    for member in family:
        with suppress(ProcessLookupError):
            os.kill(member.pid, signal.SIGKILL)
    psutil.wait_procs(family, timeout=10)


@dataclass
class Load:
    """Chats and feedback from a few threads; a tally of what came back."""

    app: App
    model: str
    threads: int = 4
    stream: bool = True
    # A gateway process that dies with a request in flight leaves Ray Serve's HAProxy to
    # answer: it turns 502/503/504 into a plain-text 500 (not configurable in Ray 2.60).
    proxy_may_answer: bool = False
    outcomes: Counter[str] = field(default_factory=Counter)
    bad: list[str] = field(default_factory=list)
    acknowledged: list[str] = field(default_factory=list)
    answered: list[str] = field(default_factory=list)  # ids of completions the client got
    successes: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)

    def _chat(self, client: httpx.Client) -> str | None:
        """One chat; its completion id when it succeeded. Tallies how it ended."""
        body = {"model": self.model, "messages": HELLO, "user": f"u-{uuid.uuid4().hex[:8]}"}
        try:
            if not self.stream:
                response = client.post("/v1/chat/completions", json=body)
                return self._judge(response.status_code, response.headers, response.text)
            with client.stream("POST", "/v1/chat/completions", json=body | {"stream": True}) as r:
                text = r.read().decode()
                return self._judge(r.status_code, r.headers, text)
        except httpx.TransportError as exc:  # the connection dropped (a gateway process died)
            self.outcomes[f"dropped {type(exc).__name__}"] += 1
            return None

    def _judge(self, status: int, headers: httpx.Headers, text: str) -> str | None:
        if status == 200 and not self.stream:
            self.outcomes["200"] += 1
            return json.loads(text)["id"]
        if status == 200:
            events = [line[6:] for line in text.splitlines() if line.startswith("data: ")]
            chunks = [json.loads(e) for e in events if e != "[DONE]"]
            if not events or events[-1] != "[DONE]":
                self.bad.append(f"stream without [DONE]: {text[-200:]!r}")
            elif errors := [c["error"] for c in chunks if "error" in c]:
                if errors[0].get("code") in RETRYABLE:
                    self.outcomes[f"stream error {errors[0]['code']}"] += 1
                else:
                    self.bad.append(f"stream error {errors[0]}")
            else:
                self.outcomes["200"] += 1
                return chunks[0]["id"]
            return None
        code = None
        with suppress(ValueError, KeyError, TypeError):
            code = json.loads(text)["error"]["code"]
        if status == 503 and code in RETRYABLE | {"log_unavailable"} and "retry-after" in headers:
            self.outcomes[f"503 {code}"] += 1
        elif self.proxy_may_answer and status == 500 and text == "Internal Server Error":
            self.outcomes["500 from the proxy"] += 1
        else:
            self.bad.append(f"{status} {text[:300]}")
        return None

    def _feedback(self, client: httpx.Client, completion_id: str) -> None:
        key = f"fault-{uuid.uuid4().hex}"
        vote = {"completion_id": completion_id, "kind": "thumbs", "value": "up"}
        try:
            response = client.post("/v1/feedback", json=vote | {"idempotency_key": key})
        except httpx.TransportError:
            return  # not acknowledged
        if response.status_code in (200, 201):
            self.acknowledged.append(key)
        elif response.status_code != 503:
            self.bad.append(f"feedback {response.status_code} {response.text[:300]}")

    def _run(self) -> None:
        with httpx.Client(base_url=self.app.base_url, timeout=120) as client:
            while not self._stop.is_set():
                completion_id = self._chat(client)
                if completion_id is None:  # as a client honouring `Retry-After` waits
                    time.sleep(RETRY_AFTER_S)  # (a variant without engine answers at once)
                    continue
                self.answered.append(completion_id)
                self.successes += 1
                self._feedback(client, completion_id)

    @contextmanager
    def running(self) -> Iterator[Load]:
        workers = [threading.Thread(target=self._run, daemon=True) for _ in range(self.threads)]
        for worker in workers:
            worker.start()
        try:
            yield self
        finally:
            self._stop.set()
            for worker in workers:
                worker.join(timeout=180)

    def wait_for_successes(self, count: int, deadline: float, what: str) -> None:
        target = self.successes + count
        while self.successes < target:
            assert time.monotonic() < deadline, f"{what}: {dict(self.outcomes)} {self.bad[:3]}"
            time.sleep(0.2)


def replaced(deployment: str, old: set[int], count: int, deadline: float) -> set[int]:
    """Wait until the deployment again has `count` live replicas, none of them in `old`."""
    while True:
        pids = {p.pid for p in replicas(deployment)}
        if len(pids) == count and not pids & old:
            return pids
        assert time.monotonic() < deadline, f"{deployment} was not replaced: {pids} {old}"
        time.sleep(0.5)


def check_records(app: App, load: Load) -> None:
    assert load.bad == [], load.bad[:5]
    with app.db() as db:
        stored = {r[0] for r in db.execute("SELECT idempotency_key FROM feedback")}
        logged = {r[0] for r in db.execute("SELECT completion_id FROM completions")}
    lost = set(load.acknowledged) - stored
    unlogged = set(load.answered) - logged
    print(
        f"{dict(load.outcomes)}; {len(load.acknowledged)} feedback acknowledged, {len(lost)} "
        f"lost; {len(load.answered)} completions answered, {len(unlogged)} not logged"
    )
    assert lost == set()
    assert unlogged == set()


def test_beyond_an_engines_queue_requests_get_503_variant_overloaded(app: App) -> None:
    """A burst far over what tiny-a's engine takes plus what the gateways queue for it: the
    admitted ones are answered, the rest refused at once with a retryable 503."""
    burst = 4 * (ENGINE_ONGOING + GATEWAY_REPLICAS * ENGINE_QUEUED)
    body = {"model": "tiny-a", "messages": HELLO, "max_tokens": 100, "ignore_eos": True}

    async def send() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=burst)
        async with httpx.AsyncClient(base_url=app.base_url, timeout=300, limits=limits) as client:
            return await asyncio.gather(
                *(client.post("/v1/chat/completions", json=body) for _ in range(burst))
            )

    answers = asyncio.run(send())
    statuses = Counter(a.status_code for a in answers)
    assert set(statuses) == {200, 503}, statuses
    assert statuses[200] >= ENGINE_ONGOING, statuses
    for refused in (a for a in answers if a.status_code == 503):
        assert refused.json()["error"]["code"] == "variant_overloaded", refused.text
        assert refused.headers["retry-after"] == "1"


@pytest.mark.slow
def test_kill_9_of_a_variant_engine(app: App) -> None:
    """In-flight and queued chats fail with a retryable 503 (or a stream's error event) while
    the engine is gone; Serve starts a new engine replica and chats succeed again."""
    deadline = time.monotonic() + RECOVERY_S
    with Load(app, "tiny-a").running() as load:
        load.wait_for_successes(8, deadline, "no chat succeeded before the kill")
        (engine,) = replicas("variant:tiny-a")
        kill_9(engine)
        replaced("variant:tiny-a", {engine.pid}, 1, deadline)
        load.wait_for_successes(8, deadline, "no chat succeeded after the engine came back")
    check_records(app, load)


@pytest.mark.slow
def test_kill_9_of_a_gateway_replica(app: App) -> None:
    """The other gateway replica keeps serving (HAProxy replays there a request the dead one
    never answered); Serve replaces the killed one."""
    deadline = time.monotonic() + RECOVERY_S
    with Load(app, "tiny-ab", proxy_may_answer=True).running() as load:
        load.wait_for_successes(8, deadline, "no chat succeeded before the kill")
        gateways = replicas("gateway")
        assert len(gateways) == 2
        kill_9(gateways[0])
        load.wait_for_successes(8, deadline, "no chat succeeded with one gateway replica")
        replaced("gateway", {gateways[0].pid}, 2, deadline)
        load.wait_for_successes(8, deadline, "no chat succeeded after the replacement")
    check_records(app, load)


@pytest.mark.slow
def test_kill_9_of_the_scorer_fails_no_user_request(app: App) -> None:
    """Best-of-n answers (they wait for scores) and scored chats all succeed while the scorer
    is gone: best-of-n falls back to its first candidate within the scoring timeout."""
    deadline = time.monotonic() + RECOVERY_S
    with (
        Load(app, "tiny-best", threads=2, stream=False).running() as best,
        Load(app, "tiny-ab", threads=2).running() as scored,
    ):
        best.wait_for_successes(4, deadline, "no best-of-n answer before the kill")
        (scorer,) = replicas("reward-scorer")
        kill_9(scorer)
        replaced("reward-scorer", {scorer.pid}, 1, deadline)
        best.wait_for_successes(4, deadline, "no best-of-n answer after the scorer came back")
        scored.wait_for_successes(4, deadline, "no chat after the scorer came back")
    for load in (best, scored):
        assert set(load.outcomes) == {"200"}, load.outcomes  # not one user request failed
        check_records(app, load)


@pytest.mark.slow
def test_kill_9_of_the_outcome_log_loses_no_acknowledged_feedback(app: App) -> None:
    """Serve starts a new log on the same store; every feedback acknowledged before or after
    the kill is in it, and any that could not be written got a 503."""
    deadline = time.monotonic() + RECOVERY_S
    with Load(app, "tiny-b").running() as load:
        load.wait_for_successes(8, deadline, "no chat succeeded before the kill")
        (log,) = replicas("outcome-log")
        before = len(load.acknowledged)
        kill_9(log)
        replaced("outcome-log", {log.pid}, 1, deadline)
        load.wait_for_successes(8, deadline, "no chat succeeded after the log came back")
        assert len(load.acknowledged) > before
    check_records(app, load)
