"""How long Ctrl-C on `make serve` takes with nothing in flight: `python -m loadtests.stop_time`.

Starts `arena-serve serve` on the default config (its log in a temporary folder, a free port),
as `make serve` runs it, waits for its ready line, sends one chat and lets it finish, then sends
SIGINT (what Ctrl-C sends) and times the exit: the drain, the log's last commit, Serve's and
Ray's shutdown. Repeats `--runs` times and prints markdown with the machine and command
(`make bench-stop` records it in docs/benchmarks.md). The target is 15 s at most.
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import yaml

from loadtests.processes import start, stop
from serve.deploy import free_port, use_throughput_mode

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "deploy" / "config.yaml"
TARGET_S = 15.0


def one_stop(folder: Path) -> tuple[float, str]:
    """Seconds from SIGINT to exit, and the lines the server printed while stopping."""
    document = copy.deepcopy(yaml.safe_load(CONFIG.read_text()))
    document["applications"][0]["args"]["store_path"] = str(folder / "outcomes.db")
    config = folder / "config.yaml"
    config.write_text(yaml.safe_dump(document))
    port, log = free_port(), folder / "serve.log"
    env = dict(os.environ)
    use_throughput_mode(env, side_ports=True)
    server = start(
        [sys.executable, "-m", "serve.cli", "serve", str(config), "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 900
        while "[serve] ready in" not in log.read_text(errors="replace"):
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the server did not start:\n{log.read_text()[-2000:]}")
            time.sleep(1)
        chat = {
            "model": "smollm2-arena",
            "user": "stop-time",
            "max_tokens": 8,
            "messages": [{"role": "user", "content": "Hi"}],
        }
        httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions", json=chat, timeout=120)
        time.sleep(3)  # nothing in flight
        before = len(log.read_text(errors="replace"))
        started = time.perf_counter()
        server.send_signal(signal.SIGINT)
        server.wait(timeout=300)
        took = time.perf_counter() - started
        said = log.read_text(errors="replace")[before:]
        return took, said
    finally:
        stop(server)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtests.stop_time", description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args(argv)
    times, refused = [], 0
    for run in range(args.runs):
        with tempfile.TemporaryDirectory(prefix="stop-time-") as tmp:
            took, said = one_stop(Path(tmp))
        times.append(took)
        refused += "failed to shut down" in said
        print(f"[stop] run {run + 1}: {took:.1f} s", file=sys.stderr)
    print(
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores. "
        f"Command: `python -m loadtests.stop_time --runs {args.runs}` (the default config, "
        "one chat, then SIGINT with nothing in flight).\n"
    )
    print('| runs | seconds to exit (each) | median | target | "failed to shut down" warnings |')
    print("|---:|---|---:|---|---:|")
    each = ", ".join(f"{t:.1f}" for t in times)
    median = statistics.median(times)
    verdict = "met" if max(times) <= TARGET_S else "missed"
    print(f"| {args.runs} | {each} | {median:.1f} | ≤ {TARGET_S:.0f} s: {verdict} | {refused} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
