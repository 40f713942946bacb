"""A process that `multiprocessing` started (vLLM's engine core, its workers) ends once its parent
is gone, as `serve.vllm_fixes.exit_with_parent` makes it; never while the parent lives."""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import time
from pathlib import Path

import psutil

from serve import vllm_fixes

SPAWN = multiprocessing.get_context("spawn")  # as vLLM starts its engine core


def engine_core(pid_file: Path) -> None:
    """Stands in for the engine core: loads the plugin's watch, says who it is, keeps busy."""
    vllm_fixes.exit_with_parent()
    pid_file.write_text(str(os.getpid()))
    time.sleep(120)


def frontend(pid_file: Path) -> None:
    """Stands in for the Ray replica that starts the core."""
    SPAWN.Process(target=engine_core, args=(pid_file,), daemon=True).start()
    time.sleep(120)


def ended(pid: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.1)
    return False


def test_a_child_ends_with_its_parent_and_not_before(tmp_path: Path) -> None:
    pid_file = tmp_path / "core.pid"
    parent = SPAWN.Process(target=frontend, args=(pid_file,))
    parent.start()
    try:
        deadline = time.monotonic() + 60
        while not pid_file.exists() or not pid_file.read_text():
            assert time.monotonic() < deadline, "the child never started"
            time.sleep(0.1)
        core = int(pid_file.read_text())
        assert not ended(core, timeout_s=3 * vllm_fixes.PARENT_CHECK_S), "stopped too early"
        os.kill(parent.pid, signal.SIGKILL)  # no clean-up of its children: as a node lost
        parent.join()
        limit = vllm_fixes.PARENT_CHECK_S + vllm_fixes.PARENT_GONE_GRACE_S + 5
        assert ended(core, timeout_s=limit), "the child outlived its parent"
    finally:
        parent.kill()
        if pid_file.exists() and pid_file.read_text():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid_file.read_text()), signal.SIGKILL)


def test_no_watch_outside_a_multiprocessing_child() -> None:
    assert multiprocessing.parent_process() is None
    assert vllm_fixes.exit_with_parent() is False
