"""Ray nodes on this machine started as an operator starts them (`ray start`), and a driver that
deploys to their cluster from a process of its own.

Each node has its own temp dir and free ports (`serve.deploy.free_port`), and Serve's side
ports are moved too, so a cluster of them runs beside the session app's (`conftest.py`) or
`make serve`'s. `ray start` runs in a session of its own, and every process it starts inherits
that session and a marker in its environment: `RayNode.processes` finds them by either (Ray's
long process titles can overwrite a process's environment block; a process may leave the
session). `ray stop` is never used: it stops every Ray process of the machine.

A pytest process holds one Ray connection at most (the session app's `ray.init`), so a test
talks to such a cluster through subprocesses only: `ray start` for the nodes, `python -m
tests.e2e.ray_nodes ADDRESS deploy FILE` and `... placement` for Serve, HTTP for the app.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from serve.config import PROJECT_ROOT
from serve.deploy import free_port, use_throughput_mode

RAY = str(Path(sys.executable).with_name("ray"))
MARKER = "ARENA_E2E_RAY_NODE"
# The GCS declares a node dead after this many missed health checks of this period (Ray's
# defaults, 5 x 3 s, would take 15 s of the test's time for each loss).
HEALTH_CHECKS = {"RAY_health_check_period_ms": "1000", "RAY_health_check_failure_threshold": "5"}


def cluster_env() -> dict[str, str]:
    """The environment of a new cluster's nodes and drivers: this process's without any Ray
    setting (the session app's side ports), Serve's high-throughput mode on fresh side ports as
    `make serve` runs it, and token authentication with a token of its own. (Left to itself, `ray
    start --head` turns token mode on where a `ray.init` once left a token in ~/.ray, and a
    worker's `ray start` does not: it could not join.)"""
    env = {name: value for name, value in os.environ.items() if not name.startswith("RAY_")}
    use_throughput_mode(env, side_ports=True)
    auth = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": uuid.uuid4().hex}
    return env | HEALTH_CHECKS | auth


NODE_PORTS = (
    "--node-manager-port",
    "--object-manager-port",
    "--dashboard-agent-listen-port",
    "--dashboard-agent-grpc-port",
    "--runtime-env-agent-port",
    "--metrics-export-port",
)


@dataclass
class RayNode:
    """One `ray start`ed node: the address of its cluster, how it was started, what it runs."""

    address: str  # the cluster's GCS, host:port
    command: list[str]  # `ray start` with its options: temp dir, ports, resources
    env: dict[str, str]
    marker: str = field(default_factory=lambda: uuid.uuid4().hex)
    session: int = 0  # the session id of `ray start`, and of all it starts

    @classmethod
    def head(cls, env: dict[str, str], resources: dict[str, float], cpus: int) -> RayNode:
        port = free_port()
        options = ["--head", f"--port={port}", "--include-dashboard=false"]
        ports = (*NODE_PORTS, "--dashboard-port", "--ray-client-server-port")
        return cls.started(f"127.0.0.1:{port}", env, options, ports, resources, cpus)

    @classmethod
    def worker(
        cls, head: RayNode, env: dict[str, str], resources: dict[str, float], cpus: int
    ) -> RayNode:
        options = [f"--address={head.address}"]
        return cls.started(head.address, env, options, NODE_PORTS, resources, cpus)

    @classmethod
    def started(
        cls,
        address: str,
        env: dict[str, str],
        options: list[str],
        ports: tuple[str, ...],
        resources: dict[str, float],
        cpus: int,
    ) -> RayNode:
        role = "head" if "--head" in options else "worker"
        command = [
            RAY,
            "start",
            *options,
            "--node-ip-address=127.0.0.1",
            f"--temp-dir={_temp_dir(role)}",
            f"--num-cpus={cpus}",
            f"--resources={json.dumps(resources)}",
            "--min-worker-port=0",  # the kernel's choice: no range shared with other clusters
            "--max-worker-port=0",
            "--disable-usage-stats",
            *(f"{option}={free_port()}" for option in ports),
        ]
        return cls(address=address, command=command, env=env)._start()

    def restarted(self) -> RayNode:
        """The same node started again (its temp dir, ports and resources), as a new node."""
        return RayNode(address=self.address, command=self.command, env=self.env)._start()

    def _start(self) -> RayNode:
        starting = subprocess.Popen(
            self.command,
            env=self.env | {MARKER: self.marker},
            cwd=PROJECT_ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        self.session = starting.pid
        output, _ = starting.communicate(timeout=120)
        assert starting.returncode == 0, f"ray start failed:\n{output}"
        return self

    @property
    def temp_dir(self) -> Path:
        [option] = [o for o in self.command if o.startswith("--temp-dir=")]
        return Path(option.removeprefix("--temp-dir="))

    def processes(self) -> list[psutil.Process]:
        """Every live process this node started: in its session, or with its marker."""
        found = []
        for process in psutil.process_iter(["status"]):
            with contextlib.suppress(psutil.Error, OSError):
                if process.info["status"] == psutil.STATUS_ZOMBIE:
                    continue
                if os.getsid(process.pid) == self.session or self._marked(process):
                    found.append(process)
        return found

    def _marked(self, process: psutil.Process) -> bool:
        with contextlib.suppress(psutil.Error):
            return process.environ().get(MARKER) == self.marker
        return False

    def lose(self) -> list[psutil.Process]:
        """SIGKILL the node's Ray processes all at once, as a lost machine stops them: its
        raylet, agents, log monitor and every worker. What the workers themselves started (a
        vLLM engine core and its worker) is left alone and returned: nothing of a lost node may
        outlive it, so each of them must end on its own."""
        processes = self.processes()
        raylets = [p for p in processes if _name(p) == "raylet"]
        assert raylets, f"no raylet among {[_name(p) for p in processes]}"
        started = {
            descendant.pid
            for raylet in raylets
            for child in _children(raylet)
            for descendant in _children(child, recursive=True)
        }
        for process in processes:
            if process.pid not in started:
                with contextlib.suppress(psutil.Error):
                    process.send_signal(signal.SIGKILL)
        return [p for p in processes if p.pid in started]

    def stop(self) -> None:
        """SIGKILL whatever of the node still runs, wait for it to end, remove its temp dir."""
        left = self.processes()
        for process in left:
            with contextlib.suppress(psutil.Error):
                process.send_signal(signal.SIGKILL)
        still_running(left, timeout_s=30)
        shutil.rmtree(self.temp_dir, ignore_errors=True)


def _temp_dir(role: str) -> Path:
    # Short: Ray's unix sockets live under it, and their paths may not exceed 107 bytes.
    return Path(tempfile.mkdtemp(prefix=f"ray-{role}-", dir="/tmp"))


def _name(process: psutil.Process) -> str:
    with contextlib.suppress(psutil.Error):
        return process.name()
    return "?"


def _children(process: psutil.Process, recursive: bool = False) -> list[psutil.Process]:
    with contextlib.suppress(psutil.Error):
        return process.children(recursive=recursive)
    return []


def describe(process: psutil.Process) -> str:
    with contextlib.suppress(psutil.Error):
        return f"{process.pid} {' '.join(process.cmdline())[:120]}"
    return f"{process.pid} (gone)"


def still_running(processes: list[psutil.Process], timeout_s: float) -> list[str]:
    """Those of `processes` still running after `timeout_s` (zombies count as ended)."""
    deadline = time.monotonic() + timeout_s
    while True:
        alive = []
        for process in processes:
            with contextlib.suppress(psutil.Error):
                if process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
                    alive.append(process)
        if not alive or time.monotonic() > deadline:
            return [describe(p) for p in alive]
        time.sleep(0.25)


def drive(env: dict[str, str], address: str, *args: str, timeout_s: float = 300) -> dict[str, Any]:
    """Run this module's driver against the cluster at `address` (`env`: its `cluster_env`);
    its JSON answer."""
    done = subprocess.run(
        [sys.executable, "-m", "tests.e2e.ray_nodes", address, *args],
        env=env,
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )
    assert done.returncode == 0, f"driver {args[0]} failed:\n{done.stderr[-4000:]}"
    return json.loads(done.stdout.strip().splitlines()[-1])


def placement() -> dict[str, Any]:
    """The alive nodes (id: resources) and each deployment's replicas (node id, pid, state)."""
    import ray
    from ray.serve.context import _get_global_client

    details = _get_global_client().get_serve_details()
    replicas = {
        name: [
            {"node_id": r.get("node_id"), "pid": r.get("pid"), "state": str(r.get("state"))}
            for r in deployment["replicas"]
        ]
        for app in details["applications"].values()
        for name, deployment in app["deployments"].items()
    }
    nodes = {n["NodeID"]: n["Resources"] for n in ray.nodes() if n["Alive"]}
    return {"nodes": nodes, "replicas": replicas}


def main(argv: list[str]) -> None:
    """`ADDRESS deploy FILE TIMEOUT_S`: deploy a Serve config (JSON) and wait until it runs;
    `ADDRESS placement`. Both print `placement()` as the last line."""
    import ray

    from serve.deploy import apply, start_serve

    address, command, *rest = argv
    ray.init(address=address, log_to_driver=False)
    if command == "deploy":
        document = json.loads(Path(rest[0]).read_text())
        apply(start_serve(document), document, timeout_s=float(rest[1]))
    print(json.dumps(placement()))


if __name__ == "__main__":
    main(sys.argv[1:])
