"""One real Ray Serve app per test session: six variants on two tiny vLLM engines (two
prompt-only, one of them answering best-of-3; two a LoRA adapter on tiny-b's engine that
answers "Ahoy!", one of them best-of-2), a tiny reward scorer, two gateway replicas, four
experiments.

Deployed declaratively, as `make serve` and `serve deploy` do (`serve.deploy`), on a free loopback
port, so a test can redeploy edited experiments and see them applied live. The outcome store is a
temporary SQLite file that the tests read directly.
"""

from __future__ import annotations

import copy
import os
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from serve.models import TINY_AHOY, TINY_LLAMA, TINY_REWARD, prepare

ENGINE = {"kv_cache_memory_bytes": 128 * 1024**2, "max_model_len": 512}
# tiny-a's engine takes this many requests at once, and each gateway replica queues this many
# more for it; beyond them, 503 `variant_overloaded`.
ENGINE_ONGOING, ENGINE_QUEUED = 16, 16
SYSTEM_PROMPT = "You are variant A. Answer briefly and precisely, in plain words."
APP_NAME = "arena-e2e"
BEST_OF = 3
GATEWAY_REPLICAS = 2  # metrics and logs must be right across replicas
# An admin key the gateway reads from its environment (set before Ray starts, so its workers
# inherit it); the security tests switch keys on live, and switch them off again.
ADMIN_KEY_ENV = "ARENA_E2E_ADMIN_KEY"
ADMIN_KEY = "sk-e2e-admin-7f3a9c1e5b2d4068"
TWO_ARMS = [{"variant": "tiny-a"}, {"variant": "tiny-b"}]
EXPERIMENTS: list[dict[str, Any]] = [
    {"name": "tiny-ab", "arms": TWO_ARMS},
    {"name": "tiny-arena", "mode": "arena", "arms": TWO_ARMS},
    {
        "name": "tiny-sessions",
        "unit": "session",
        "allocation": 0.5,
        "default_variant": "tiny-b",
        "forced": {"qa-session": "tiny-a"},
        "arms": TWO_ARMS,
    },
    {"name": "tiny-requests", "unit": "request", "arms": TWO_ARMS},
]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if Path(item.fspath).is_relative_to(Path(__file__).parent):
            item.add_marker(pytest.mark.e2e)


@dataclass
class App:
    base_url: str
    store_path: Path
    document: dict[str, Any]
    client: Any  # Serve's controller client

    def db(self) -> sqlite3.Connection:
        """The outcome store, once everything the log has queued so far is committed."""
        from ray import serve

        serve.get_deployment_handle("outcome-log", APP_NAME).flush.remote().result()
        db = sqlite3.connect(self.store_path)
        db.row_factory = sqlite3.Row
        return db

    def experiments(self, headers: dict[str, str] | None = None) -> dict[str, Any]:
        return httpx.get(f"{self.base_url}/v1/experiments", headers=headers, timeout=30).json()

    def deploy_experiments(self, experiments: list[dict[str, Any]]) -> None:
        """Deploy the same file with other experiments; return once the gateway applied them."""
        self.deploy_gateway({"experiments": experiments})

    @contextmanager
    def gateway_config(self, user_config: dict[str, Any]) -> Iterator[App]:
        """The gateway with this `user_config` (keys, limits) for a while, then the session's
        own experiments again, open, for every other module."""
        self.deploy_gateway(user_config)
        try:
            yield self
        finally:
            self.deploy_gateway({"experiments": EXPERIMENTS})

    def deploy_gateway(self, user_config: dict[str, Any]) -> None:
        """Deploy the same file with another gateway `user_config`, applied live."""
        from serve.config import config_revision
        from serve.deploy import apply

        document = copy.deepcopy(self.document)
        document["applications"][0]["deployments"] = [
            {"name": "gateway", "user_config": user_config}
        ]
        apply(self.client, document, timeout_s=120)
        deadline = time.monotonic() + 60
        headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
        while self.experiments(headers)["revision"] != config_revision(user_config):
            assert time.monotonic() < deadline, "the gateway never applied the new experiments"
            time.sleep(0.2)


def serve_document(
    model: Path, reward: Path, store: Path, port: int, adapter: Path
) -> dict[str, Any]:
    variants = [
        {
            "name": "tiny-a",
            "model": str(model),
            "system_prompt": SYSTEM_PROMPT,
            "sampling": {"max_tokens": 6, "temperature": 0.0},
            "engine_kwargs": ENGINE,
            "max_ongoing_requests": ENGINE_ONGOING,
            "max_queued_requests": ENGINE_QUEUED,
        },
        {
            "name": "tiny-b",
            "model": str(model),
            "sampling": {"max_tokens": 4},
            "engine_kwargs": ENGINE,
        },
        {
            "name": "tiny-best",  # prompt-only: tiny-b's engine, its own sampling and best-of-n
            "engine": "tiny-b",
            "sampling": {"max_tokens": 5, "temperature": 1.0},
            "best_of_n": BEST_OF,
        },
        {
            "name": "tiny-ahoy",  # a LoRA adapter served by tiny-b's engine (multi-LoRA)
            "engine": "tiny-b",
            "adapter": str(adapter),
            "sampling": {"max_tokens": 6, "temperature": 0.0},
        },
        {
            "name": "tiny-terse",  # prompt-only on tiny-a's engine: a fourth arena side
            "engine": "tiny-a",
            "system_prompt": "Answer in one word.",
            "sampling": {"max_tokens": 3, "temperature": 0.0},
        },
        {
            "name": "tiny-ahoy-best",  # the same adapter, answering best-of-n
            "engine": "tiny-b",
            "adapter": str(adapter),
            "sampling": {"max_tokens": 6, "temperature": 0.05},  # near greedy: see adapters.style
            "best_of_n": 2,
        },
    ]
    scorer = {"model": str(reward), "dtype": "float32", "max_batch_size": 8, "batch_wait_s": 0.01}
    return {
        "proxy_location": "HeadOnly",
        "http_options": {"host": "127.0.0.1", "port": port},
        "applications": [
            {
                "name": APP_NAME,
                "route_prefix": "/",
                "import_path": "serve.app:build_app",
                "args": {
                    "store_path": str(store),
                    "store": {"keep_text": True},
                    "variants": variants,
                    "scorer": scorer,
                    "gateway_replicas": GATEWAY_REPLICAS,
                },
                "deployments": [{"name": "gateway", "user_config": {"experiments": EXPERIMENTS}}],
            }
        ],
    }


@pytest.fixture(scope="session")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[App]:
    import ray
    from ray import serve

    from serve.deploy import apply, free_port, start_serve, use_throughput_mode

    use_throughput_mode(side_ports=True)  # as `make serve` runs, beside any other cluster
    os.environ[ADMIN_KEY_ENV] = ADMIN_KEY
    model, reward, adapter = prepare([TINY_LLAMA, TINY_REWARD, TINY_AHOY])
    store = tmp_path_factory.mktemp("outcomes") / "outcomes.db"
    port = free_port()
    document = serve_document(model, reward, store, port, adapter)
    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False)  # 2 engines + scorer
    try:
        client = start_serve(document)
        apply(client, document, timeout_s=600)
        base_url = f"http://127.0.0.1:{port}"
        assert httpx.get(f"{base_url}/health", timeout=30).status_code == 200
        yield App(base_url, store, document, client)
    finally:
        serve.shutdown()
        ray.shutdown()
