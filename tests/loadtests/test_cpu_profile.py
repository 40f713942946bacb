"""`loadtests.cpu_profile`: components named from command lines, and each thread's CPU time, run
queue wait and context switches between two snapshots of /proc."""

from __future__ import annotations

import os
import threading
import time

import pytest

from loadtests import cpu_profile
from loadtests.cpu_profile import ThreadStat, component, difference, snapshot


@pytest.mark.parametrize(
    ("cmdline", "expected"),
    [
        ("VLLM::EngineCore", "vLLM engine core"),
        ("VLLM::Worker", "vLLM worker (the model)"),
        (
            "/venv/bin/python -m vllm.entrypoints.openai.api_server --model m",
            "vLLM API server",
        ),
        ("ray::ServeReplica:arena:gateway", "Serve replica gateway"),
        ("ray::ServeReplica:arena:smollm2 ", "Serve replica smollm2"),
        ("ray::ServeController", "Serve controller"),
        ("ray::IDLE", "Ray idle workers"),
        (
            "/venv/lib/python3.11/site-packages/ray/core/src/ray/gcs/gcs_server --log_dir=/tmp",
            "Ray GCS",
        ),
        ("/venv/lib/python3.11/site-packages/ray/core/src/ray/raylet/raylet --x", "Ray raylet"),
        ("/venv/bin/python -u /venv/lib/ray/dashboard/agent.py --node-ip 1", "Ray dashboard agent"),
        ("/usr/sbin/haproxy -f /tmp/haproxy.cfg", "HAProxy"),
        (
            "/venv/bin/python -m loadtests.serving_bench serve arena-serve 20001",
            "server driver (ray.init)",
        ),
        ("/opt/unknown/tool --flag", "tool"),
        ("", "other"),
    ],
)
def test_components_are_named_by_what_the_process_is(cmdline: str, expected: str) -> None:
    assert component(cmdline) == expected
    assert component(cmdline, me=True) == "load generator (client)"


def test_a_difference_counts_new_threads_from_zero_and_drops_ended_ones() -> None:
    before = {
        (1, 1): ("engine", "core", ThreadStat(1_000_000_000, 10, 5, 1)),
        (1, 2): ("engine", "gone", ThreadStat(5, 5, 5, 5)),
        (2, 2): ("gateway", "loop", ThreadStat(0, 0, 0, 0)),
    }
    after = {
        (1, 1): ("engine", "core", ThreadStat(3_000_000_000, 500_000_010, 6, 4)),
        (2, 2): ("gateway", "loop", ThreadStat(1_000_000, 0, 2, 0)),
        (2, 3): ("gateway", "new", ThreadStat(250_000_000, 50_000_000, 1, 2)),
    }
    usage = difference(before, after)
    assert usage["engine"].cpu_s == pytest.approx(2.0)
    assert usage["engine"].wait_s == pytest.approx(0.5)
    assert (usage["engine"].voluntary, usage["engine"].involuntary) == (1, 3)
    assert usage["engine"].threads == {"core"}
    assert usage["gateway"].cpu_s == pytest.approx(0.251)
    assert usage["gateway"].involuntary == 2
    assert usage["gateway"].threads == {"new"}  # 1 ms of "loop" is below busy_s
    merged: dict[str, cpu_profile.Usage] = {}
    cpu_profile.merge(merged, usage)
    cpu_profile.merge(merged, usage)
    assert merged["engine"].cpu_s == pytest.approx(4.0)


def test_a_snapshot_of_this_process_sees_a_busy_thread() -> None:
    """The spinning thread's own figures, by its thread id: the rest of this process (a test
    session's Ray driver, say) may be busy too, and only adds to the component's total."""
    stop = threading.Event()
    tids: list[int] = []

    def spin() -> None:
        tids.append(threading.get_native_id())
        while not stop.is_set():
            sum(range(1000))

    worker = threading.Thread(target=spin, name="spinner")
    before = snapshot([os.getpid()])
    began = time.monotonic()
    worker.start()
    time.sleep(0.3)
    after = snapshot([os.getpid()])
    wall = time.monotonic() - began
    stop.set()
    worker.join()
    key = (os.getpid(), tids[0])
    assert key in after and key not in before  # it started during the window: from zero
    name, _, spun = after[key]
    assert name == "load generator (client)"
    assert 0.05 < spun.cpu_ns / 1e9 <= wall + 0.05  # one thread: at most the window
    assert spun.voluntary + spun.involuntary > 0
    usage = difference(before, after)
    assert set(usage) == {"load generator (client)"}
    mine = usage["load generator (client)"]
    assert mine.cpu_s >= spun.cpu_ns / 1e9
    assert mine.threads  # the spinning thread (Python leaves its OS name as the process's)


def test_a_snapshot_of_this_process_tree_includes_its_children() -> None:
    import subprocess
    import sys

    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(5)"])
    try:
        time.sleep(0.2)
        taken = snapshot()
        assert any(pid == child.pid for pid, _ in taken)
        assert {name for name, _, _ in taken.values()} >= {"load generator (client)"}
    finally:
        child.kill()
        child.wait()
