"""A real two-node Ray cluster on this machine (issue 22): a variant's engine on a worker node,
the gateway on the head, the outcome log's two replicas one on each node writing to a real
PostgreSQL (tests/pg.py), and the worker node lost under a feedback load, then back.

Placement is the operator's, by custom resources: the head offers `head`, the worker `engines`,
and the Serve config file puts each deployment where one is (`deployments:` overrides). While
the engine's node is gone, a request to its variant gets a 503 with `Retry-After` in OpenAI's
shape within a bounded time, never a hang; feedback is still recorded (by the log replica on the
head: the one on the worker died with it, under load); and nothing the lost node ran outlives
it, vLLM's engine processes included. Once the node
is started again (its temp dir, ports and resources), the variant serves again, and every
acknowledged feedback is in the store.

Its own cluster, not the session app's (see `tests.e2e.ray_nodes`).
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from router.store import OutcomeStore
from serve.deploy import free_port
from serve.models import TINY_LLAMA, prepare
from tests.e2e.conftest import ENGINE
from tests.e2e.ray_nodes import RayNode, cluster_env, drive, still_running
from tests.pg import PgServer

APP = "arena-multinode"
VARIANT = "tiny-a"
ENGINE_DEPLOYMENT = f"variant:{VARIANT}"
HEAD, ENGINES = {"head": 1}, {"engines": 1}
ON_HEAD = {"num_cpus": 0, "resources": {"head": 0.01}}
HELLO = [{"role": "user", "content": "Say hello."}]
DEPLOY_S = 240  # a vLLM engine starts in about a minute on 2 cores
ENDED_S = 20  # what the lost node's workers started must be gone by then
UNAVAILABLE_S = 45  # a request to the lost engine is answered 503 by then (Ray notices: seconds)
RECOVERY_S = 180  # the new node's engine replica starts and serves


def serve_document(model: Path, store: str, port: int) -> dict[str, Any]:
    variant = {
        "name": VARIANT,
        "model": str(model),
        "sampling": {"max_tokens": 4, "temperature": 0.0},
        "engine_kwargs": ENGINE,
    }
    return {
        "proxy_location": "HeadOnly",
        "http_options": {"host": "127.0.0.1", "port": port},
        "applications": [
            {
                "name": APP,
                "route_prefix": "/",
                "import_path": "serve.app:build_app",
                "args": {"store": {"url": store, "log_replicas": 2}, "variants": [variant]},
                "deployments": [
                    {"name": "gateway", "ray_actor_options": ON_HEAD},
                    # One log replica per node: losing the worker kills one of them.
                    {"name": "outcome-log", "max_replicas_per_node": 1},
                    # The engine replica's placement group: its CPU, on a node with `engines`.
                    {"name": ENGINE_DEPLOYMENT, "placement_group_bundles": [{"CPU": 1, **ENGINES}]},
                ],
            }
        ],
    }


@pytest.fixture
def nodes() -> Iterator[list[RayNode]]:
    """The cluster's nodes, head first; every one of them stopped at the end, and checked."""
    started: list[RayNode] = []
    try:
        yield started
    finally:
        for node in reversed(started):
            node.stop()
        stray = [process for node in started for process in node.processes()]
        assert not stray, f"processes of the test's nodes survived their stop: {stray}"


def chat(base_url: str, stream: bool = False, timeout_s: float = 60) -> httpx.Response:
    body = {"model": VARIANT, "messages": HELLO, "user": "u-multinode", "stream": stream}
    try:
        return httpx.post(f"{base_url}/v1/chat/completions", json=body, timeout=timeout_s)
    except httpx.TimeoutException:
        pytest.fail(f"a chat got no answer within {timeout_s} s")


def completion_id(response: httpx.Response) -> str:
    assert response.status_code == 200, response.text
    if response.headers["content-type"].startswith("text/event-stream"):
        first = next(line for line in response.text.splitlines() if line.startswith("data: "))
        return json.loads(first.removeprefix("data: "))["id"]
    return response.json()["id"]


def thumbs(base_url: str, completion: str, acknowledged: list[str]) -> None:
    """Feedback on `completion`; its idempotency key kept when the gateway acknowledged it."""
    key = f"multinode-{uuid.uuid4().hex}"
    vote = {"completion_id": completion, "kind": "thumbs", "value": "up", "idempotency_key": key}
    response = httpx.post(f"{base_url}/v1/feedback", json=vote, timeout=60)
    assert response.status_code in (200, 201), response.text
    acknowledged.append(key)


def check_unavailable(response: httpx.Response) -> None:
    """A retryable 503 in OpenAI's error shape."""
    assert response.status_code == 503, f"{response.status_code} {response.text[:300]}"
    assert response.headers.get("retry-after") == "1"
    error = response.json()["error"]
    assert error["type"] == "service_unavailable_error"
    assert error["code"] == "variant_unavailable", error


def node_with(placed: dict[str, Any], resource: str) -> str:
    [node_id] = [n for n, resources in placed["nodes"].items() if resource in resources]
    return node_id


def replica_nodes(placed: dict[str, Any], deployment: str) -> list[str]:
    return [r["node_id"] for r in placed["replicas"][deployment]]


class FeedbackLoad:
    """Thumbs on answered completions, one after another from a thread, each with a new key,
    until stopped: the keys the gateway acknowledged (2xx), and how many it refused (503: a log
    replica died with the call; a client retries those with the same key)."""

    def __init__(self, base_url: str, completions: list[str]) -> None:
        self.acknowledged: list[str] = []
        self.refused = 0
        self.unexpected: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(base_url, completions))
        self._thread.start()

    def _run(self, base_url: str, completions: list[str]) -> None:
        with httpx.Client(base_url=base_url, timeout=60) as client:
            while not self._stop.is_set():
                key = f"load-{uuid.uuid4().hex}"
                body = {
                    "completion_id": completions[len(self.acknowledged) % 2],
                    "kind": "thumbs",
                    "value": "up",
                    "idempotency_key": key,
                }
                response = client.post("/v1/feedback", json=body)
                if response.status_code in (200, 201):
                    self.acknowledged.append(key)
                elif response.status_code == 503:
                    self.refused += 1
                else:
                    self.unexpected.append(f"{response.status_code} {response.text[:200]}")
                time.sleep(0.02)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=90)


def test_engines_on_a_lost_worker_node(
    nodes: list[RayNode], tmp_path: Path, pg_server: PgServer
) -> None:
    started = time.monotonic()
    [model] = prepare([TINY_LLAMA])
    store, port = pg_server.create_database(), free_port()
    base_url = f"http://127.0.0.1:{port}"
    document = tmp_path / "serve.json"
    document.write_text(json.dumps(serve_document(model, store, port)))
    env = cluster_env()
    nodes.append(RayNode.head(env, HEAD, cpus=1))
    nodes.append(RayNode.worker(nodes[0], env, ENGINES, cpus=1))
    placed = drive(
        env, nodes[0].address, "deploy", str(document), str(DEPLOY_S), timeout_s=DEPLOY_S + 60
    )
    deployed = time.monotonic()
    head, worker = node_with(placed, "head"), node_with(placed, "engines")
    assert replica_nodes(placed, ENGINE_DEPLOYMENT) == [worker]
    assert replica_nodes(placed, "gateway") == [head]
    assert sorted(replica_nodes(placed, "outcome-log")) == sorted([head, worker])

    acknowledged: list[str] = []
    answered = [completion_id(chat(base_url)), completion_id(chat(base_url, stream=True))]
    for completion in answered:
        thumbs(base_url, completion, acknowledged)

    load = FeedbackLoad(base_url, answered)
    time.sleep(2)
    lost_at = time.monotonic()
    orphans = nodes[1].lose()
    assert orphans, "the engine replica started no process of its own (no vLLM engine core?)"
    left = still_running(orphans, ENDED_S)
    assert not left, f"the lost node's engine processes outlived it: {left}"
    ended_s = time.monotonic() - lost_at

    for stream in (False, True):
        check_unavailable(chat(base_url, stream=stream, timeout_s=UNAVAILABLE_S))
    unavailable_s = time.monotonic() - lost_at
    assert unavailable_s < UNAVAILABLE_S
    thumbs(base_url, answered[0], acknowledged)  # the log replica on the head takes it

    nodes.append(nodes[1].restarted())
    rejoined = time.monotonic()
    deadline = time.monotonic() + RECOVERY_S
    while (response := chat(base_url, timeout_s=RECOVERY_S)).status_code != 200:
        check_unavailable(response)
        assert time.monotonic() < deadline, "the variant never served again"
        time.sleep(1)
    recovery_s = time.monotonic() - rejoined
    thumbs(base_url, completion_id(response), acknowledged)
    load.stop()
    placed = drive(env, nodes[0].address, "placement")
    assert replica_nodes(placed, ENGINE_DEPLOYMENT) == [node_with(placed, "engines")]

    with contextlib.closing(OutcomeStore(store)) as db:
        keys = {row["idempotency_key"] for row in db.rows("feedback")}
    acknowledged += load.acknowledged
    assert not load.unexpected, load.unexpected
    assert len(load.acknowledged) > 20, "the load sent too little to tell"
    assert set(acknowledged) <= keys, set(acknowledged) - keys
    print(
        f"\ntwo nodes: deployed in {deployed - started:.0f} s, the lost node's engine "
        f"processes ended {ended_s:.1f} s after it, both 503s within {unavailable_s:.1f} s of "
        f"the loss, serving {recovery_s:.0f} s after the node rejoined, "
        f"{len(load.acknowledged)} feedback acknowledged under load ({load.refused} refused), "
        f"{time.monotonic() - started:.0f} s in all"
    )
