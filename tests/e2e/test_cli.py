"""`arena-serve serve` (`make serve`) as a user runs it, in a process of its own: it prints its
ready line, and on SIGTERM it drains (the streams in flight finish and are logged) and exits."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import yaml

from loadtests.processes import stop
from serve.config import PROJECT_ROOT
from serve.deploy import free_port, use_throughput_mode
from serve.models import TINY_LLAMA, prepare
from tests.e2e.conftest import ENGINE

STREAMS = 4
BODY = {"model": "tiny", "messages": [{"role": "user", "content": "Count."}], "max_tokens": 400,
        "ignore_eos": True, "stream": True}  # fmt: skip


def write_config(folder: Path) -> Path:
    [model] = prepare([TINY_LLAMA])
    variants = [{"name": "tiny", "model": str(model), "engine_kwargs": ENGINE}]
    document = {
        "proxy_location": "HeadOnly",
        "http_options": {"host": "127.0.0.1", "port": 8000},
        "applications": [
            {
                "name": "arena-cli",
                "route_prefix": "/",
                "import_path": "serve.app:build_app",
                "args": {"store_path": str(folder / "outcomes.db"), "variants": variants},
                "deployments": [{"name": "gateway", "user_config": {"experiments": []}}],
            }
        ],
    }
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


def wait_for_line(log: Path, child: subprocess.Popen, text: str, timeout_s: float) -> str:
    deadline = time.monotonic() + timeout_s
    while True:
        for line in log.read_text().splitlines():
            if text in line:
                return line
        assert child.poll() is None, f"exited with {child.returncode}:\n{log.read_text()[-3000:]}"
        assert time.monotonic() < deadline, f"no {text!r} line:\n{log.read_text()[-3000:]}"
        time.sleep(0.5)


def test_sigterm_drains_the_streams_in_flight_logs_them_and_exits(tmp_path: Path) -> None:
    config, port, log = write_config(tmp_path), free_port(), tmp_path / "serve.log"
    env = {name: value for name, value in os.environ.items() if name != "RAY_ADDRESS"}
    use_throughput_mode(env, side_ports=True)
    with log.open("w") as out:
        child = subprocess.Popen(
            [sys.executable, "-m", "serve.cli", "serve", str(config), "--port", str(port)],
            cwd=PROJECT_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )  # fmt: skip
    try:
        ready = wait_for_line(log, child, "[serve] ready in", timeout_s=600)
        assert f"http://127.0.0.1:{port}" in ready
        base = f"http://127.0.0.1:{port}"
        started = threading.Barrier(STREAMS + 1)
        streams: list[str] = []

        def stream() -> None:
            with httpx.stream("POST", f"{base}/v1/chat/completions", json=BODY,
                              timeout=300) as response:  # fmt: skip
                lines = response.iter_lines()
                first = next(line for line in lines if line.startswith("data: {"))
                started.wait(timeout=300)
                streams.append("\n".join([first, *lines]))

        clients = [threading.Thread(target=stream) for _ in range(STREAMS)]
        for client in clients:
            client.start()
        started.wait(timeout=300)  # every stream has begun
        child.send_signal(signal.SIGTERM)
        for client in clients:
            client.join(timeout=300)
        assert child.wait(timeout=300) == 0, log.read_text()[-3000:]
    finally:
        stop(child)
    output = log.read_text()
    assert "draining" in output and "drain incomplete" not in output, output[-3000:]
    assert len(streams) == STREAMS
    ids = set()
    for text in streams:
        events = [line[6:] for line in text.splitlines() if line.startswith("data: ")]
        assert events[-1] == "[DONE]" and '"error"' not in text, text[-300:]
        ids.add(json.loads(events[0])["id"])
    db = sqlite3.connect(tmp_path / "outcomes.db")
    marks = ",".join("?" * len(ids))
    query = f"SELECT completion_id, status FROM completions WHERE completion_id IN ({marks})"
    assert dict(db.execute(query, sorted(ids)).fetchall()) == dict.fromkeys(ids, 200)
