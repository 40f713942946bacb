"""Deploy a Ray Serve config file from Python, the way `serve run` / `serve deploy` do, and wait.

Deploying the file declaratively (rather than `serve.run` on a built app) is what makes live
changes live: Ray Serve compares the new file with the running one, and when only the gateway's
`user_config` changed it calls `Gateway.reconfigure` on the running replicas, engines untouched.
`arena-serve serve` (`make serve`) and the end-to-end tests both go through here.

Uses Serve's controller client (`ray.serve._private`), as Serve's own CLI does; ray is pinned to
2.60.x in pyproject.
"""

from __future__ import annotations

import asyncio
import copy
import os
import random
import socket
import time
from collections.abc import Callable, MutableMapping
from pathlib import Path
from typing import Any

from ray import serve
from ray.serve._private.api import serve_start
from ray.serve._private.client import ServeControllerClient
from ray.serve.schema import ApplicationStatus, ServeDeploySchema

from serve.config import DRAIN_S, GATEWAY_DEPLOYMENT, OUTCOME_LOG_DEPLOYMENT

# Ray Serve's high-throughput mode (Ray >= 2.55; Ray's guide "Enable High Throughput on Ray
# Serve"): HAProxy, in C, takes the HTTP port in place of Serve's Python proxy and forwards to each
# gateway replica's own HTTP server (direct ingress); replicas call each other over gRPC and run
# user code on their own event loop. Measured here it takes Serve's share of a 2-core machine
# from a third to under a tenth (docs/benchmarks.md). Ray's processes read it when they start.
THROUGHPUT_MODE = {"RAY_SERVE_ENABLE_HA_PROXY": "1", "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1"}
# HAProxy replays a request on another gateway replica when the one it went to closed without
# answering (its process died), not only when it could not connect (Ray's default, which keeps
# non-idempotent requests from running twice). For this gateway a replay costs at worst a
# completion logged that no client saw (the replica died between the commit and the reply):
# records are written as a request ends, and feedback carries its idempotency key.
HAPROXY_RETRY_ON = {"RAY_SERVE_HAPROXY_RETRY_ON": "conn-failure empty-response"}
# A gateway replica being stopped stays reachable this long before it closes its listener, so
# the load balancer in front can drop it first (Ray's default, 30 s, is sized for cloud load
# balancers). HAProxy on the same node drops it within a reload, and retries a refused
# connection on another replica; with 30 s every stop of `make serve` took 34-48 s, the
# controller giving up on the gateway ("Controller failed to shut down within 30.0s").
DIRECT_INGRESS_DRAIN = {"RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "2"}
# Ray's parts a running app has no use for, quieter (docs/benchmarks.md, issue 23): usage stats
# off (Ray's record of what a cluster runs, reported to Anyscale where enabled: `ray.init` turns
# them off by itself, a cluster from `ray start` such as KubeRay's does not), and with them the
# detached actor Ray Serve LLM keeps for its share (`serve.variant`); and the Serve controller's
# reconciling loop every 0.5 s instead of 0.1 s, its largest use of CPU, idle or not (0.03 cores
# of 2, 0.01 after): a deploy, a reconfigure or a replica's restart waits up to 0.4 s more at
# each step.
QUIET_RAY = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_SERVE_CONTROL_LOOP_INTERVAL_S": "0.5"}
# The fixed ports the mode also binds (HAProxy's stats and metrics, Serve's fallback proxy).
SIDE_PORTS = (
    "RAY_SERVE_HAPROXY_STATS_PORT",
    "RAY_SERVE_HAPROXY_METRICS_PORT",
    "RAY_SERVE_FALLBACK_PROXY_HTTP_PORT",
)


# Ray's workers take ports 10002-19999 by default (`ray start --min-worker-port/--max-worker-port`).
FREE_PORTS_FROM = 20_000
_handed_out: set[int] = set()


def _ephemeral_low() -> int:
    """The first port of the kernel's range for outgoing connections (Linux; else IANA's)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 49152


def free_port() -> int:
    """A port that is free now and stays free until a server started later binds it.

    A port the kernel hands out for binding to port 0 lies in its ephemeral range, where any
    outgoing connection (Ray opens many while it starts) can take it first: seen as HAProxy's
    "Address already in use" on a side port. So the port comes from between Ray's worker ports
    and that range, at random, never the same one twice in a process; only if none there is free
    does it fall back to the kernel's choice.
    """
    candidates = [p for p in range(FREE_PORTS_FROM, _ephemeral_low()) if p not in _handed_out]
    for port in random.sample(candidates, k=min(len(candidates), 64)):
        with socket.socket() as probe:
            try:
                probe.bind(("0.0.0.0", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def use_throughput_mode(
    env: MutableMapping[str, str] = os.environ, *, side_ports: bool = False
) -> None:
    """Turn the mode on for the Ray cluster this process starts (call before `ray.init`), with
    Ray's unneeded parts quieter (`QUIET_RAY`).

    A variable the environment already sets wins (`RAY_SERVE_ENABLE_HA_PROXY=0` opts out).
    `side_ports` moves the mode's fixed side ports to free ones, so that a test or benchmark
    cluster can run beside another (`make serve`) on the same machine.
    """
    for name, value in (
        THROUGHPUT_MODE | HAPROXY_RETRY_ON | DIRECT_INGRESS_DRAIN | QUIET_RAY
    ).items():
        env.setdefault(name, value)
    if side_ports:
        for name in SIDE_PORTS:
            env.setdefault(name, str(free_port()))


class DeployError(RuntimeError):
    """An application failed to deploy; the message is Serve's (it names the bad field)."""


def start_serve(document: dict[str, Any]) -> ServeControllerClient:
    """Start Serve (its proxy and controller) with the file's HTTP options; Ray must be up."""
    schema = ServeDeploySchema.model_validate(document)
    return serve_start(
        http_options=schema.http_options.model_dump(),
        proxy_location=schema.proxy_location,
    )


def apply(
    client: ServeControllerClient,
    document: dict[str, Any],
    timeout_s: float = 900.0,
    progress: Callable[[str], None] | None = None,
) -> None:
    """Deploy `document` and return once every application in it is RUNNING."""
    schema = ServeDeploySchema.model_validate(document)
    client.deploy_apps(schema)  # returns once the controller holds the new target
    wait_running([app.name for app in schema.applications], timeout_s, progress)


def _value(status: Any) -> str:
    return str(getattr(status, "value", status))


def wait_running(
    names: list[str], timeout_s: float, progress: Callable[[str], None] | None = None
) -> None:
    """Poll Serve until every named application is RUNNING; `DeployError` with Serve's reasons."""
    deadline = time.monotonic() + timeout_s
    last = ""
    while True:
        applications = serve.status().applications
        states = {name: applications.get(name) for name in names}
        failed = [
            (name, app)
            for name, app in states.items()
            if app is not None
            and app.status in (ApplicationStatus.DEPLOY_FAILED, ApplicationStatus.UNHEALTHY)
        ]
        if failed:
            reasons = []
            for name, app in failed:
                reasons.append(f"{name}: {_value(app.status)}: {app.message}")
                reasons += [
                    f"  {dep}: {deployment.message}"
                    for dep, deployment in app.deployments.items()
                    if deployment.message and _value(deployment.status) != "HEALTHY"
                ]
            raise DeployError("\n".join(reasons))
        if all(
            app is not None and app.status == ApplicationStatus.RUNNING for app in states.values()
        ):
            return
        pending = sorted(
            f"{dep} ({_value(deployment.status).lower()})"
            for app in states.values()
            if app is not None
            for dep, deployment in app.deployments.items()
            if _value(deployment.status) != "HEALTHY"
        )
        summary = f"waiting for {', '.join(pending)}" if pending else ""
        if progress is not None and summary and summary != last:
            progress(summary)
            last = summary
        if time.monotonic() > deadline:
            raise DeployError(f"not running after {timeout_s:.0f} s: {summary}")
        time.sleep(0.5)


def draining(document: dict[str, Any]) -> dict[str, Any]:
    """The same file with each gateway's `user_config` set to drain (`GatewayConfig.draining`)."""
    document = copy.deepcopy(document)
    for application in document["applications"]:
        deployments = application.setdefault("deployments", [])
        gateway = next((d for d in deployments if d.get("name") == GATEWAY_DEPLOYMENT), None)
        if gateway is None:
            gateway = {"name": GATEWAY_DEPLOYMENT}
            deployments.append(gateway)
        gateway["user_config"] = {**(gateway.get("user_config") or {}), "draining": True}
    return document


def drain_and_shutdown(
    client: ServeControllerClient,
    document: dict[str, Any],
    progress: Callable[[str], None] = print,
) -> None:
    """Finish what the apps have taken on, then shut Serve down.

    Ray Serve stops every deployment of an app at once, so on a plain shutdown the outcome log
    can stop before a gateway's last streams end, and their records are lost. Here the gateways
    first refuse new completions and finish the ones in flight (their `reconfigure` returns
    once done, so the deploy returns once every replica is), then the log commits what it has,
    then Serve shuts down. A step that fails is reported through `progress`; the shutdown
    happens regardless.
    """
    try:
        apply(client, draining(document), timeout_s=DRAIN_S + 60)
    except Exception as exc:
        progress(f"drain incomplete ({type(exc).__name__}: {exc}); shutting down anyway")
    names = [application["name"] for application in document["applications"]]
    asyncio.run(_flush_and_shutdown(names, progress))


async def _flush_and_shutdown(apps: list[str], progress: Callable[[str], None]) -> None:
    # In one event loop: in throughput mode a handle's router runs on its caller's loop, and
    # Serve's shutdown closes the handles it made.
    try:
        for app in apps:
            log = serve.get_deployment_handle(OUTCOME_LOG_DEPLOYMENT, app)
            await asyncio.wait_for(log.flush.remote(), timeout=30)
    except Exception as exc:
        progress(f"drain incomplete: the log did not flush ({type(exc).__name__}: {exc})")
    progress("shutting down")
    await serve.shutdown_async()
