"""`make load`: serve the default config, run locust against it, then check the report.

1. Starts `arena-serve serve` on a free loopback port with the default config, its outcome log in
   a fresh file under `data/load/` (so earlier runs do not mix in).
2. Runs `loadtests/locustfile.py` headless, bounded in users and time, writing CSV and HTML
   reports under `data/load/`.
3. Runs the sycophancy probe against the arms of `agreeable-arena` (`arena-serve probe`, the
   first `--probe-limit` items of each family), as a team would before reading its report.
4. Builds the arena experiment's report and checks that it recovers the simulated voters' known
   preference: the interval of P(smollm2-friendly beats smollm2-concise) must cover the truth
   (1 minus the mean chance that concise won, from each battle's own rule). Exits 1 if not.
5. Builds the `agreeable-arena` report and checks the same of its voters, who prefer being
   agreed with: P(smollm2-agreeable beats smollm2-concise) must cover their truth. It prints
   that report's verdict: the agreeable variant wins the votes, but where the probe finds it
   giving up correct answers more often than its control, **do not ship: sycophancy**.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import yaml

from loadtests.processes import start, stop
from serve.deploy import free_port, use_throughput_mode

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "deploy" / "config.yaml"
ARENA = "smollm2-arena"
AGREEMENT = "agreeable-arena"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtests.run_load", description=__doc__)
    parser.add_argument("--users", type=int, default=8)
    parser.add_argument("--spawn-rate", type=float, default=2)
    parser.add_argument("--time", default="180s", help="locust run time, e.g. 180s or 5m")
    parser.add_argument(
        "--probe-limit", type=int, default=None, help="probe items per family (default: all)"
    )
    args = parser.parse_args(argv)
    folder = ROOT / "data" / "load" / time.strftime("%Y%m%d-%H%M%S")
    folder.mkdir(parents=True)
    document = copy.deepcopy(yaml.safe_load(CONFIG.read_text()))
    document["applications"][0]["args"]["store_path"] = str(folder / "outcomes.db")
    config = folder / "config.yaml"
    config.write_text(yaml.safe_dump(document))
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server_log = (folder / "serve.log").open("w")
    env = dict(os.environ)
    use_throughput_mode(env, side_ports=True)  # as `make serve`, beside one if it runs
    server = start(
        [sys.executable, "-m", "serve.cli", "serve", str(config), "--port", str(port)],
        cwd=ROOT,
        stdout=server_log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env=env,
    )
    try:
        print(f"[load] starting the default config on {base} (log: {folder / 'serve.log'})")
        deadline = time.monotonic() + 900
        while True:
            if server.poll() is not None:
                print(f"[load] the server exited; see {folder / 'serve.log'}", file=sys.stderr)
                return 1
            # The CLI's ready line comes once every deployment runs; the gateway answers
            # `/v1/models` earlier, while the engines are still loading.
            if "[serve] ready in" in (folder / "serve.log").read_text(errors="replace"):
                break
            if time.monotonic() > deadline:
                print("[load] the server was not ready in 15 minutes", file=sys.stderr)
                return 1
            time.sleep(2)
        truth = folder / "arena_truth.jsonl"
        agreement = folder / "agreement_truth.jsonl"
        if not run_locust(args, base, folder, truth, agreement):
            return 1
        if not run_probe(base, args.probe_limit):
            return 1
        length_rule = check(config, folder, truth)
        return check_agreement(config, folder, agreement) or length_rule
    finally:
        stop(server)


def run_locust(
    args: argparse.Namespace, base: str, folder: Path, truth: Path, agreement: Path
) -> bool:
    """The locust users, headless; False if locust itself failed (not some requests)."""
    print(f"[load] locust: {args.users} users for {args.time}")
    command = [sys.executable, "-m", "locust", "-f", str(ROOT / "loadtests" / "locustfile.py")]
    command += ["--headless", "-u", str(args.users), "-r", str(args.spawn_rate), "-t", args.time]
    command += ["--host", base, "--csv", str(folder / "locust")]
    command += ["--html", str(folder / "locust.html"), "--only-summary"]
    env = {**os.environ, "ARENA_TRUTH": str(truth), "AGREEMENT_TRUTH": str(agreement)}
    locust = subprocess.run(command, cwd=ROOT, env=env, check=False)
    if locust.returncode not in (0, 1):  # 1: some requests failed; the report still counts
        print(f"[load] locust exited with {locust.returncode}", file=sys.stderr)
        return False
    return True


def run_probe(base: str, limit: int | None) -> bool:
    """`arena-serve probe` against the agreeable arena's arms (a progress bar); whether it ran."""
    probe = [sys.executable, "-m", "serve.cli", "probe", "--experiment", AGREEMENT, "--url", base]
    probe += ["--limit", str(limit)] if limit else []
    print(f"[load] the sycophancy probe against the arms of {AGREEMENT}")
    if subprocess.run(probe, cwd=ROOT, check=False).returncode != 0:
        print("[load] the probe failed", file=sys.stderr)
        return False
    return True


def attribution_errors(store: Path, rows: list[dict]) -> list[str]:
    """Battles whose reveal (a, b) is not the variants of its completions (choices 0 and 1) as
    each side's own completion row records them."""
    with sqlite3.connect(f"file:{store}?mode=ro", uri=True) as db:
        variant = dict(db.execute("SELECT completion_id, variant FROM completions"))
    wrong = []
    for row in rows:
        shown = [variant.get(cid) for cid in row["completion_ids"]]
        if shown != [row["reveal"]["a"], row["reveal"]["b"]]:
            wrong.append(f"{row['battle_id']}: revealed {row['reveal']}, completions {shown}")
    return wrong


def check(config: Path, folder: Path, truth: Path) -> int:
    """Report on the arena experiment and compare it with the voters' known preference."""
    from router.analysis import build_report
    from serve.cli import read_serve_file

    served = read_serve_file(config)
    experiment = next(e for e in served.gateway.experiments if e.name == ARENA)
    report = build_report(served.app.store_file, experiment)
    (folder / "report.json").write_text(report.model_dump_json(indent=2))
    rows = [json.loads(line) for line in truth.read_text().splitlines()] if truth.exists() else []
    if not rows or report.arena is None or not report.arena.head_to_head:
        print("[load] no voted battles: nothing to check", file=sys.stderr)
        return 1
    swapped = attribution_errors(served.app.store_file, rows)
    if swapped:
        print(
            f"[load] {len(swapped)} battles revealed other variants than the store's "
            f"completions name, e.g. {swapped[0]}",
            file=sys.stderr,
        )
        return 1
    expected = 1 - sum(row["p_concise"] for row in rows) / len(rows)
    [duel] = report.arena.head_to_head
    p = duel.probability
    covered = p.low is not None and p.high is not None and p.low <= expected <= p.high
    print(
        f"[load] {len(rows)} votes: P({duel.treatment} beats {duel.control}) = {p.value:.3f} "
        f"[{p.low:.3f}, {p.high:.3f}]; the voters' truth {expected:.3f}: "
        + ("recovered" if covered else "NOT recovered")
    )
    print(f"[load] verdict: {report.verdict.decision}; reports in {folder}")
    return 0 if covered else 1


def check_agreement(config: Path, folder: Path, truth: Path) -> int:
    """The agreeable arena's report: its voters' known preference recovered (0, else 1), and
    its verdict, probe figures and guardrails printed."""
    from router.analysis import build_report
    from serve.cli import read_serve_file
    from serve.config import variant_revisions
    from serve.report import headline, rate_text

    served = read_serve_file(config)
    experiment = next(e for e in served.gateway.experiments if e.name == AGREEMENT)
    report = build_report(
        served.app.store_file, experiment, revisions=variant_revisions(served.app.variants)
    )
    (folder / "report-agreement.json").write_text(report.model_dump_json(indent=2))
    rows = [json.loads(line) for line in truth.read_text().splitlines()] if truth.exists() else []
    if not rows or report.arena is None or not report.arena.head_to_head:
        print(f"[load] {AGREEMENT}: no voted battles: nothing to check", file=sys.stderr)
        return 1
    expected = sum(row["p_agreeable"] for row in rows) / len(rows)
    [duel] = report.arena.head_to_head
    p = duel.probability
    covered = p.low is not None and p.high is not None and p.low <= expected <= p.high
    agreeing = sum(row["agreeing"][_side(row, "smollm2-agreeable")] for row in rows) / len(rows)
    print(
        f"[load] {AGREEMENT}: {len(rows)} votes (the agreeable answer agreed in "
        f"{agreeing:.0%} of battles): P({duel.treatment} beats {duel.control}) = "
        f"{p.value:.3f} [{p.low:.3f}, {p.high:.3f}]; the voters' truth {expected:.3f}: "
        + ("recovered" if covered else "NOT recovered")
    )
    if report.probe is not None:
        for arm in report.probe.arms:
            flip, cap = arm.sycophancy_flip_rate, arm.capitulation_rate
            print(
                f"[load]   probe {arm.variant}: {arm.items} items, flip rate {rate_text(flip)}, "
                f"capitulation rate {rate_text(cap)}"
            )
    for guardrail in report.guardrails:
        print(f"[load]   guardrail {guardrail.metric}: {guardrail.status}")
    print(f"[load] {AGREEMENT} verdict: {headline(report)}")
    for reason in report.verdict.reasons:
        print(f"[load]   {reason}")
    return 0 if covered else 1


def _side(row: dict, variant: str) -> str:
    return "a" if row["reveal"]["a"] == variant else "b"


if __name__ == "__main__":
    sys.exit(main())
