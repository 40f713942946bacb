"""Ray's own processes yield the CPU to the engines and the request path.

A CPU engine keeps its cores busy all the time under load: vLLM's worker computes on the cores
it binds, and its engine core spins on the one it leaves "for the scheduler" (a shared-memory
queue whose reader spins between messages; making it sleep loses vLLM's notifications, see
docs/benchmarks.md). Everything else on the machine takes its CPU from them. Measured with
`make bench-quick --profile` on 2 cores, Ray's control plane (GCS, the Serve controller, the
dashboard and runtime-env agents, the log monitor, Serve's fallback proxy and HAProxy manager,
the telemetry agent, idle workers) held about a tenth of a core during the rounds, at the same
priority as the engine, and every context switch to one of them could stall a model step.

So once the app is up, `make serve` lowers those processes' priority (`NICENESS_ENV`, default
`DEFAULT_NICENESS`): they still get the CPU whenever the engines leave some, and at once when
nothing else wants it, but the kernel's scheduler no longer weighs them as the engine's equals.
What stays at the workers' niceness: vLLM's processes, the engine replicas (they relay tokens),
the gateway replicas, HAProxy, the outcome log (a feedback call waits for its commit), the
scorer (which runs its forwards at idle priority itself), idle workers (Ray may hand one a
replica) and the raylet, whose niceness Ray adds to every worker it starts later. Processes
started after the call (a replica restarted) keep the niceness Ray gives them, so `make serve`
calls it again every `RENICE_EVERY_S`.

Lowering a process's priority needs no privilege; raising it back does, so nothing here ever
lowers a niceness.
"""

from __future__ import annotations

import contextlib
import os
import re

import psutil

NICENESS_ENV = "ARENA_SERVE_RAY_NICENESS"
DEFAULT_NICENESS = 10
RENICE_EVERY_S = 30.0
# Ray's niceness for the workers it starts (Ray's default, 15, would put the engines below Ray's
# own daemons, which it starts at 0): `make serve` starts them at 0, as vLLM's own server runs.
WORKER_NICENESS = {"RAY_worker_niceness": "0"}

# The processes that keep their niceness, by command line (or process title).
REQUEST_PATH = re.compile(
    r"VLLM::|vllm\.entrypoints"  # vLLM's engine core, workers and servers
    r"|ray::ServeReplica:[^:\s]+:(variant:|gateway\b|outcome-log\b|reward-scorer\b)"
    r"|haproxy"
    r"|ray::IDLE"  # a worker Ray may yet hand a replica
    r"|/raylet/raylet\b"  # Ray adds its niceness to every worker it starts
)


def niceness() -> int:
    """The niceness Ray's own processes get (`NICENESS_ENV`; 0 leaves them alone)."""
    value = os.environ.get(NICENESS_ENV, "").strip()
    try:
        return max(0, min(19, int(value))) if value else DEFAULT_NICENESS
    except ValueError:
        return DEFAULT_NICENESS


def on_request_path(cmdline: str, keep: re.Pattern[str] = REQUEST_PATH) -> bool:
    return keep.search(cmdline) is not None


def yield_to_engines(
    root: int | None = None, to: int | None = None, keep: re.Pattern[str] = REQUEST_PATH
) -> list[psutil.Process]:
    """Lower to niceness `to` (default `niceness()`) every process under `root` (this process by
    default; the Ray node it started) whose command line `keep` does not match (the request
    path), and `root` itself; the processes whose niceness changed."""
    to = niceness() if to is None else to
    if to <= 0:
        return []
    top = psutil.Process(root)
    changed = []
    for process in [top, *top.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):
            if on_request_path(_cmdline(process), keep) or process.nice() >= to:
                continue
            process.nice(to)
            changed.append(process)
    return changed


def _cmdline(process: psutil.Process) -> str:
    return " ".join(process.cmdline())
