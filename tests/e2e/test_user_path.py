"""The design's own entry point, as a user runs it: `ray start --head` with its default
resources, then `serve deploy deploy/config.yaml`, then a scored chat.

On a 2-core machine the default config used to ask for 3 logical CPUs (two engines and the
scorer): the scorer waited for a CPU forever, the app never became healthy and nothing was
scored. Now it fits, and a config that does not fit is refused at deploy with the reason.

The cluster is a second one beside the session's app, on ports of its own, in Ray Serve's
default mode; everything it starts is stopped afterwards (found by `loadtests.processes`'
marker: `ray start --block` takes its processes down with it on SIGTERM, the marker finds any
that outlive it).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psutil
import yaml

from loadtests.processes import MARKER, _marked, start, stop
from serve.config import PROJECT_ROOT
from serve.deploy import (
    DIRECT_INGRESS_DRAIN,
    HAPROXY_RETRY_ON,
    SIDE_PORTS,
    THROUGHPUT_MODE,
    free_port,
)

CONFIG = PROJECT_ROOT / "deploy" / "config.yaml"
RAY = str(Path(sys.executable).with_name("ray"))
SERVE = str(Path(sys.executable).with_name("serve"))


def clean_env() -> dict[str, str]:
    """This machine's environment without the session cluster's address, Serve modes or auth
    mode (the session's `ray.init` set it in this process)."""
    drop = {
        "RAY_ADDRESS",
        "RAY_AUTH_MODE",
        MARKER,
        *SIDE_PORTS,
        *THROUGHPUT_MODE,
        *HAPROXY_RETRY_ON,
        *DIRECT_INGRESS_DRAIN,
    }
    return {name: value for name, value in os.environ.items() if name not in drop}


def cli_env(env: dict[str, str]) -> dict[str, str]:
    """The serve CLI's environment, as the README says: once a local `ray.init` has left a
    token in ~/.ray/auth_token, `ray start --head` turns token auth on, and the CLI sends the
    token only with RAY_AUTH_MODE=token."""
    token = Path.home() / ".ray" / "auth_token"
    return env | {"RAY_AUTH_MODE": "token"} if token.is_file() else env


def user_config(folder: Path, port: int) -> Path:
    """The default config file, with its log in `folder` and its HTTP port free: nothing else
    of it changed."""
    document = yaml.safe_load(CONFIG.read_text())
    document["http_options"]["port"] = port
    document["applications"][0]["args"]["store_path"] = str(folder / "outcomes.db")
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


def serve_status(dashboard: str, env: dict[str, str]) -> str:
    done = subprocess.run(
        [SERVE, "status", "--address", dashboard],
        capture_output=True,
        text=True,
        env=cli_env(env),
    )
    return done.stdout + done.stderr


def test_ray_start_then_serve_deploy_of_the_default_config_serves_a_scored_chat(
    tmp_path: Path,
) -> None:
    env = clean_env()
    ports = {
        name: free_port()
        for name in (
            "port",
            "dashboard-port",
            "ray-client-server-port",
            "node-manager-port",
            "object-manager-port",
            "metrics-export-port",
            "dashboard-agent-listen-port",
            "dashboard-agent-grpc-port",
            "runtime-env-agent-port",
        )
    }
    temp = tempfile.mkdtemp(prefix="ray-", dir="/tmp")  # short: Ray's socket paths must be
    head = start(
        [
            RAY,
            "start",
            "--head",
            "--block",
            "--disable-usage-stats",
            f"--temp-dir={temp}",
            *(f"--{name}={port}" for name, port in ports.items()),
        ],
        env,
        stdout=(tmp_path / "ray.log").open("w"),
        stderr=subprocess.STDOUT,
    )
    dashboard = f"http://127.0.0.1:{ports['dashboard-port']}"
    http_port = free_port()
    base = f"http://127.0.0.1:{http_port}"
    try:
        deadline = time.monotonic() + 120
        while not _up(dashboard):
            assert head.poll() is None, (tmp_path / "ray.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "the head node's dashboard never came up"
            time.sleep(1)
        cpus = psutil.cpu_count() or 1
        deployed = subprocess.run(
            [SERVE, "deploy", str(user_config(tmp_path, http_port)), "--address", dashboard],
            capture_output=True,
            text=True,
            env=cli_env(env),
            cwd=tmp_path,
        )
        assert deployed.returncode == 0, deployed.stdout + deployed.stderr
        deadline = time.monotonic() + 600
        while "status: RUNNING" not in (status := serve_status(dashboard, env)):
            assert "DEPLOY_FAILED" not in status, status
            assert time.monotonic() < deadline, f"not healthy on {cpus} CPUs:\n{status}"
            time.sleep(2)
        answer = httpx.post(
            f"{base}/v1/chat/completions",
            json={
                "model": "smollm2-arena",
                "user": "first-user",
                "max_tokens": 16,
                "messages": [{"role": "user", "content": "Name a colour."}],
            },
            timeout=120,
        )
        assert answer.status_code == 200, answer.text
        sides = answer.json()["arena"]["completion_ids"]
        store = tmp_path / "outcomes.db"
        deadline = time.monotonic() + 180
        while len(scored := _scored(store, sides)) < 2:
            assert time.monotonic() < deadline, f"scored {scored} of {sides}"
            time.sleep(1)
    finally:
        subprocess.run(
            [SERVE, "shutdown", "-y", "--address", dashboard],
            env=cli_env(env),
            capture_output=True,
            timeout=120,
        )
        stop(head)
    assert not _marked(head.marker), "processes of the cluster outlived it"  # type: ignore[attr-defined]


def _up(dashboard: str) -> bool:
    """Whether the dashboard answers (a 401 is an answer: token auth is on)."""
    try:
        return httpx.get(f"{dashboard}/api/version", timeout=5).status_code < 500
    except httpx.HTTPError:
        return False


def _scored(store: Path, completion_ids: list[str]) -> list[str]:
    import sqlite3

    if not store.exists():
        return []
    db = sqlite3.connect(store)
    try:
        marks = ",".join("?" * len(completion_ids))
        rows = db.execute(
            f"SELECT completion_id FROM scores WHERE completion_id IN ({marks})", completion_ids
        ).fetchall()
    except sqlite3.OperationalError:  # the log has not made its tables yet
        return []
    finally:
        db.close()
    return [r[0] for r in rows]
