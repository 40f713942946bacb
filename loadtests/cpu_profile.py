"""Where a benchmark's CPU goes: each thread's CPU time, run-queue wait and context switches,
read from /proc before and after a measured window, summed by the component it belongs to.

Linux's scheduler statistics, not a sampling profiler, so nothing runs during the window: a
snapshot reads `/proc/<pid>/task/<tid>/schedstat` (time on a CPU, time runnable but waiting
for one, in ns) and `status` (voluntary and involuntary context switches) of every thread of
this process and of everything it started (the servers, Ray's processes, vLLM's engines). A
thread that started during the window counts from zero; one that ended during it is lost,
which is why the windows are rounds, with the servers long up.

`component` names a process by what it is (vLLM's engine core, a Ray Serve replica by its
deployment, Ray's GCS, raylet, agents, HAProxy, the load generator), so that the same rows
line up across systems.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import psutil

PROC = Path("/proc")


@dataclass(frozen=True)
class ThreadStat:
    cpu_ns: int  # time on a CPU
    wait_ns: int  # time runnable, waiting in a run queue
    voluntary: int  # context switches: it blocked
    involuntary: int  # context switches: it was preempted


@dataclass
class Usage:
    """A component's totals over a window."""

    cpu_s: float = 0.0
    wait_s: float = 0.0
    voluntary: int = 0
    involuntary: int = 0
    threads: set[str] = field(default_factory=set)  # busy threads' names

    def add(self, other: Usage) -> None:
        self.cpu_s += other.cpu_s
        self.wait_s += other.wait_s
        self.voluntary += other.voluntary
        self.involuntary += other.involuntary
        self.threads |= other.threads


# (pid, tid) -> (component, thread name, figures)
Snapshot = dict[tuple[int, int], tuple[str, str, ThreadStat]]

_RULES: tuple[tuple[str, str], ...] = (
    (r"VLLM::EngineCore|EngineCore", "vLLM engine core"),
    (r"VLLM::Worker", "vLLM worker (the model)"),
    (r"vllm\.entrypoints\.openai\.api_server|VLLM::APIServer|APIServer", "vLLM API server"),
    (r"ray::ServeReplica:[^:\s]+:(\S+)", r"Serve replica \1"),
    (r"ray::ServeController", "Serve controller"),
    (r"ray::IDLE", "Ray idle workers"),
    (r"ray::(\w+)", r"Ray actor \1"),
    (r"haproxy", "HAProxy"),
    (r"gcs_server", "Ray GCS"),
    (r"raylet", "Ray raylet"),
    (r"dashboard/agent\.py", "Ray dashboard agent"),
    (r"runtime_env/agent|runtime_env_agent", "Ray runtime-env agent"),
    (r"log_monitor\.py", "Ray log monitor"),
    (r"dashboard/dashboard\.py", "Ray dashboard"),
    (r"_private/monitor\.py|autoscaler", "Ray monitor"),
    (r"loadtests\.serving_bench serve", "server driver (ray.init)"),
    (r"resource_tracker|multiprocessing", "Python multiprocessing helpers"),
)


def component(cmdline: str, me: bool = False) -> str:
    """A process's component, from its command line (or process title)."""
    if me:
        return "load generator (client)"
    for pattern, name in _RULES:
        if match := re.search(pattern, cmdline):
            return match.expand(name)
    words = cmdline.split()
    return Path(words[0]).name if words else "other"


def _read_thread(task: Path) -> ThreadStat | None:
    try:
        cpu, wait, _ = (int(x) for x in (task / "schedstat").read_text().split())
        status = (task / "status").read_text()
    except (OSError, ValueError):
        return None
    switches = dict(re.findall(r"^(\w*ctxt_switches):\s+(\d+)", status, re.M))
    return ThreadStat(
        cpu,
        wait,
        int(switches.get("voluntary_ctxt_switches", 0)),
        int(switches.get("nonvoluntary_ctxt_switches", 0)),
    )


def _cmdline(pid: int) -> str:
    try:
        raw = (PROC / str(pid) / "cmdline").read_bytes()
    except OSError:
        return ""
    return raw.replace(b"\0", b" ").decode(errors="replace").strip()


def processes(root: int | None = None) -> list[int]:
    """`root` (this process by default) and everything it started."""
    me = psutil.Process(root)
    pids = [me.pid]
    with contextlib.suppress(psutil.Error):
        pids += [p.pid for p in me.children(recursive=True)]
    return pids


def snapshot(pids: Iterable[int] | None = None) -> Snapshot:
    """Every thread of `pids` (this process's tree by default), with its component."""
    own = os.getpid()
    taken: Snapshot = {}
    for pid in processes() if pids is None else pids:
        name = component(_cmdline(pid), me=pid == own)
        with contextlib.suppress(OSError):
            for task in (PROC / str(pid) / "task").iterdir():
                stat = _read_thread(task)
                if stat is None:
                    continue
                try:
                    comm = (task / "comm").read_text().strip()
                except OSError:
                    comm = "?"
                taken[(pid, int(task.name))] = (name, comm, stat)
    return taken


def difference(before: Snapshot, after: Snapshot, busy_s: float = 0.01) -> dict[str, Usage]:
    """Each component's usage between two snapshots (threads that started meanwhile from zero).
    A thread is listed among its component's busy ones where it ran at least `busy_s`."""
    zero = ThreadStat(0, 0, 0, 0)
    usage: dict[str, Usage] = {}
    for key, (name, comm, now) in after.items():
        then = before.get(key, (name, comm, zero))[2]
        cpu = (now.cpu_ns - then.cpu_ns) / 1e9
        part = Usage(
            cpu,
            (now.wait_ns - then.wait_ns) / 1e9,
            now.voluntary - then.voluntary,
            now.involuntary - then.involuntary,
            {comm} if cpu >= busy_s else set(),
        )
        usage.setdefault(name, Usage()).add(part)
    return usage


def merge(into: dict[str, Usage], usage: dict[str, Usage]) -> None:
    for name, part in usage.items():
        into.setdefault(name, Usage()).add(part)
