"""`arena-serve serve` (`make serve`) as a user runs it, in a process of its own: it prints its
ready line, runs the engines at Ray's workers' niceness 0 with Ray's own processes below them,
and on SIGTERM it drains (the streams in flight finish and are logged) and exits."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import yaml

from loadtests.processes import stop
from serve.config import PROJECT_ROOT
from serve.deploy import SIDE_PORTS, free_port, use_throughput_mode
from serve.models import TINY_LLAMA, prepare
from serve.priority import DEFAULT_NICENESS, NICENESS_ENV
from tests.e2e.conftest import ENGINE
from tests.e2e.streams import check_finished_and_logged, streams_in_flight

STREAMS = 4


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


def niceness_of(root: int, name: str) -> set[int]:
    """The niceness of the processes under `root` whose command line's first word (its file name)
    begins with `name` (Ray retitles an actor's process with the method it runs)."""
    found = set()
    for process in psutil.Process(root).children(recursive=True):
        try:
            words = process.cmdline()
            if words and Path(words[0]).name.startswith(name):
                found.add(process.nice())
        except psutil.Error:
            continue
    return found


def test_engines_run_above_ray_and_sigterm_drains_the_streams_and_exits(tmp_path: Path) -> None:
    config, port, log = write_config(tmp_path), free_port(), tmp_path / "serve.log"
    # Not the session app's cluster, nor its side ports (this process set them for it), nor
    # a niceness someone set for Ray here.
    drop = {"RAY_ADDRESS", "RAY_worker_niceness", NICENESS_ENV, *SIDE_PORTS}
    env = {name: value for name, value in os.environ.items() if name not in drop}
    use_throughput_mode(env, side_ports=True)
    with log.open("w") as out:
        child = subprocess.Popen(
            [sys.executable, "-m", "serve.cli", "serve", str(config), "--port", str(port)],
            cwd=PROJECT_ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    try:
        ready = wait_for_line(log, child, "[serve] ready in", timeout_s=600)
        assert f"http://127.0.0.1:{port}" in ready and f"http://127.0.0.1:{port}/ui/" in ready
        for engine_or_gateway in (
            "VLLM::Worker",
            "VLLM::EngineCore",
            "ray::ServeReplica:arena-cli:",
        ):
            assert niceness_of(child.pid, engine_or_gateway) == {0}, engine_or_gateway
        for rays_own in ("gcs_server", "ray::ServeController"):
            assert niceness_of(child.pid, rays_own) == {DEFAULT_NICENESS}, rays_own
        assert psutil.Process(child.pid).nice() == DEFAULT_NICENESS
        with streams_in_flight(f"http://127.0.0.1:{port}", "tiny", STREAMS) as texts:
            child.send_signal(signal.SIGTERM)
        assert child.wait(timeout=300) == 0, log.read_text()[-3000:]
    finally:
        stop(child)
    output = log.read_text()
    assert "draining" in output and "drain incomplete" not in output, output[-3000:]
    check_finished_and_logged(texts, STREAMS, tmp_path / "outcomes.db")
