"""`serve.priority`: Ray's own processes lowered below the engines and the request path, on a
real process tree named as Ray and vLLM name theirs."""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil
import pytest

from serve import priority
from serve.priority import niceness, on_request_path, yield_to_engines

KEPT = [
    "VLLM::EngineCore",
    "VLLM::Worker",
    "/venv/bin/python -m vllm.entrypoints.openai.api_server --model m",
    "ray::ServeReplica:arena:variant:smollm2",
    "ray::ServeReplica:arena:gateway",
    "ray::ServeReplica:arena:outcome-log",
    "ray::ServeReplica:arena:reward-scorer",
    "/usr/sbin/haproxy -f /tmp/ray/haproxy.cfg",
    "/venv/lib/python3.11/site-packages/ray/core/src/ray/raylet/raylet --node_ip_address=1",
    "ray::IDLE",
]
LOWERED = [
    "ray::ServeController",
    "ray::ProxyActor",
    "ray::HAProxyManager",
    "ray::DashboardAgent",
    "/venv/lib/python3.11/site-packages/ray/core/src/ray/gcs/gcs_server --log_dir=/tmp",
    "/venv/bin/python -u /venv/lib/python3.11/site-packages/ray/_private/log_monitor.py",
    "/venv/bin/python -u /venv/lib/python3.11/site-packages/ray/dashboard/agent.py --x",
    "ray::ServeReplica:arena:gatewayish",  # not the gateway: a deployment of another name
]


@pytest.mark.parametrize("cmdline", KEPT)
def test_the_request_path_and_the_engines_keep_their_priority(cmdline: str) -> None:
    assert on_request_path(cmdline)


@pytest.mark.parametrize("cmdline", LOWERED)
def test_rays_own_processes_are_lowered(cmdline: str) -> None:
    assert not on_request_path(cmdline)


@pytest.mark.parametrize(
    ("setting", "expected"),
    [(None, priority.DEFAULT_NICENESS), ("0", 0), ("5", 5), ("40", 19), ("-3", 0), ("x", 10)],
)
def test_the_niceness_comes_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, setting: str | None, expected: int
) -> None:
    if setting is None:
        monkeypatch.delenv(priority.NICENESS_ENV, raising=False)
    else:
        monkeypatch.setenv(priority.NICENESS_ENV, setting)
    assert niceness() == expected


@contextmanager
def tree(names: list[str], folder: Path) -> Iterator[tuple[int, dict[str, psutil.Process]]]:
    """A shell whose children sleep under the command lines `names` (argv[0] set with exec -a;
    the script in a file, so that the shell's own command line names none of them): its pid and
    its children by name. Everything of it is killed afterwards."""
    script = folder / "tree.sh"
    script.write_text(" ".join(f"(exec -a '{name}' sleep 60) &" for name in names) + " wait\n")
    root = subprocess.Popen(["bash", str(script)])
    try:
        deadline = time.monotonic() + 10
        while True:
            children = {p.cmdline()[0]: p for p in psutil.Process(root.pid).children()}
            if set(children) >= set(names):
                break
            assert time.monotonic() < deadline, "the tree did not start"
            time.sleep(0.05)
        yield root.pid, children
    finally:
        for process in psutil.Process(root.pid).children(recursive=True):
            process.kill()
        root.kill()
        root.wait()


def test_a_tree_is_reniced_but_its_request_path_is_not(tmp_path: Path) -> None:
    names = ["VLLM::Worker", "ray::ServeReplica:arena:gateway", "ray::ServeController"]
    with tree(names, tmp_path) as (root, children):
        changed = {p.pid for p in yield_to_engines(root, to=7)}
        assert changed == {root, children["ray::ServeController"].pid}  # and the driver itself
        assert children["ray::ServeController"].nice() == 7
        assert children["VLLM::Worker"].nice() == 0
        assert children["ray::ServeReplica:arena:gateway"].nice() == 0
        assert yield_to_engines(root, to=7) == []  # done already
        assert yield_to_engines(root, to=3) == []  # never raised back
        assert psutil.Process(root).nice() == 7


def test_niceness_zero_changes_nothing(tmp_path: Path) -> None:
    with tree(["ray::ServeController"], tmp_path) as (root, children):
        assert yield_to_engines(root, to=0) == []
        assert children["ray::ServeController"].nice() == 0


def test_another_request_path_can_be_kept(tmp_path: Path) -> None:
    """A benchmark of another server on Ray keeps that server's replicas instead."""
    names = ["ray::ServeReplica:llm:LLMServer:smollm2", "ray::ServeController"]
    keep = re.compile(r"LLMServer")
    with tree(names, tmp_path) as (root, children):
        assert {p.pid for p in yield_to_engines(root, to=7, keep=keep)} == {
            root,
            children["ray::ServeController"].pid,
        }
        assert children["ray::ServeReplica:llm:LLMServer:smollm2"].nice() == 0
