"""Stopping a server the load tools started, with everything it started."""

from __future__ import annotations

import contextlib
import subprocess

import psutil


def stop(child: subprocess.Popen) -> None:
    """Stop a server and everything it started, so that nothing of it runs into the next one.

    SIGTERM goes to the server alone, so that it can shut down in order (Serve stops its
    replicas, each replica its engine). Its process tree is taken first: vLLM's engine
    processes outlive a killed parent (re-parented, they keep spinning), so whatever of the
    tree is left after the server exits is killed.
    """
    try:
        tree = psutil.Process(child.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        tree = []
    child.terminate()
    try:
        child.wait(timeout=120)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()
    _, alive = psutil.wait_procs(tree, timeout=30)
    for process in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.kill()
    psutil.wait_procs(alive, timeout=10)
