"""One real Ray Serve app per test session: two tiny vLLM variants, one 50/50 experiment.

Started in-process with `serve.run` on a free loopback port; the outcome store is a temporary
SQLite file that the tests read directly.
"""

from __future__ import annotations

import socket
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from serve.models import TINY_LLAMA, prepare

ENGINE = {"kv_cache_memory_bytes": 128 * 1024**2, "max_model_len": 512}
SYSTEM_PROMPT = "You are variant A. Answer briefly and precisely, in plain words."


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if Path(item.fspath).is_relative_to(Path(__file__).parent):
            item.add_marker(pytest.mark.e2e)


@dataclass(frozen=True)
class App:
    base_url: str
    store_path: Path

    def db(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.store_path)
        db.row_factory = sqlite3.Row
        return db


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[App]:
    import ray
    from ray import serve

    from serve.app import build_app

    [model] = prepare([TINY_LLAMA])
    store = tmp_path_factory.mktemp("outcomes") / "outcomes.db"
    args = {
        "store_path": str(store),
        "variants": [
            {
                "name": "tiny-a",
                "model": str(model),
                "system_prompt": SYSTEM_PROMPT,
                "sampling": {"max_tokens": 6, "temperature": 0.0},
                "engine_kwargs": ENGINE,
            },
            {
                "name": "tiny-b",
                "model": str(model),
                "sampling": {"max_tokens": 4},
                "engine_kwargs": ENGINE,
            },
        ],
        "experiments": [
            {"name": "tiny-ab", "arms": [{"variant": "tiny-a"}, {"variant": "tiny-b"}]},
        ],
    }
    port = _free_port()
    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        serve.run(build_app(args), name="arena-e2e", route_prefix="/")
        base_url = f"http://127.0.0.1:{port}"
        assert httpx.get(f"{base_url}/health", timeout=30).status_code == 200
        yield App(base_url, store)
    finally:
        serve.shutdown()
        ray.shutdown()
