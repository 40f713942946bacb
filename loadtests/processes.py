"""Starting and stopping a server the load tools run, with everything it starts."""

from __future__ import annotations

import contextlib
import os
import subprocess
import uuid
from typing import Any

import psutil

# Every process a server starts inherits this variable (Ray's raylet and workers, vLLM's engine
# processes): how `stop` finds them once the server itself is gone and they were re-parented.
MARKER = "ARENA_SERVE_LOADTEST_SERVER"


def start(command: list[str], env: dict[str, str] | None = None, **popen: Any) -> subprocess.Popen:
    """`subprocess.Popen` with a marker in the environment that `stop` finds its processes by."""
    marked = dict(os.environ if env is None else env)
    marked[MARKER] = uuid.uuid4().hex
    child = subprocess.Popen(command, env=marked, **popen)
    child.marker = marked[MARKER]  # type: ignore[attr-defined]
    return child


def _marked(marker: str | None) -> list[psutil.Process]:
    """The processes (of this user) whose environment carries `marker`."""
    if marker is None:
        return []
    found = []
    for process in psutil.process_iter():
        with contextlib.suppress(psutil.Error):
            if process.environ().get(MARKER) == marker:
                found.append(process)
    return found


def stop(child: subprocess.Popen) -> None:
    """Stop a server and everything it started, so that nothing of it runs into the next one.

    SIGTERM goes to the server alone, so that it can shut down in order (Serve stops its
    replicas, each replica its engine). Its process tree is taken first: vLLM's engine
    processes outlive a killed parent (re-parented, they keep spinning), so whatever of the
    tree is left after the server exits is killed — found by the marker `start` set where the
    server already died and took the tree's links with it.
    """
    try:  # before `poll`, which reaps a dead server: its pid could then be anyone's
        tree = psutil.Process(child.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        tree = []
    dead = child.poll() is not None  # nothing of it shuts down in order now: no grace
    child.terminate()
    try:
        child.wait(timeout=120)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()
    seen = {process.pid for process in tree}
    tree += [p for p in _marked(getattr(child, "marker", None)) if p.pid not in seen]
    _, alive = psutil.wait_procs(tree, timeout=0 if dead else 30)
    for process in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.kill()
    psutil.wait_procs(alive, timeout=10)
