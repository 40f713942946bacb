"""Router benchmarks: `python -m router.bench` (part of `make bench`).

1. Assignment cost per call: `CompiledExperiment.assign` (what the gateway calls once per
   experiment request) over distinct unit ids, for the shapes of experiment the config can
   express, plus an arena pair draw. Target: at most 2 µs per call (3 µs for a new unit of a
   targeted experiment or a bandit).
2. Report time: `build_report` over a simulated outcome log of about a million events (A/B, 100k
   users), and over an arena log of 100k voted battles, the log built once and kept under
   `data/bench/`.

Prints a markdown section (machine, command, tables); `make bench` records it in
`docs/benchmarks.md`.
"""

from __future__ import annotations

import argparse
import functools
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from router.assignment import CompiledExperiment
from router.experiment import Experiment

TARGET_US = 2.0
TARGET_DECISIONS_US = 3.0  # issue 20: a new unit of a targeted or a bandit experiment


def _experiment(**settings: object) -> CompiledExperiment:
    arms = settings.pop("arms", [{"variant": "a"}, {"variant": "b"}])
    return CompiledExperiment(
        Experiment.model_validate(
            {"name": "bench", "arms": arms, "default_variant": arms[0]["variant"], **settings}
        )
    )


def _bandit(weights: dict[str, float], version: int) -> CompiledExperiment:
    plan = _experiment(mode="bandit")
    plan.set_arm_weights(weights, version)
    return plan


CASES: dict[str, Callable[[], tuple[CompiledExperiment, str]]] = {
    "A/B, 2 arms": lambda: (_experiment(), "assign"),
    "A/B, 5 arms": lambda: (
        _experiment(arms=[{"variant": f"v{i}", "weight": i + 1} for i in range(5)]),
        "assign",
    ),
    "A/B, 2 arms, layer slice + allocation + holdout": lambda: (
        _experiment(layer="chat", layer_range=(0.0, 0.9), allocation=0.99, holdout=0.01),
        "assign",
    ),
    "A/B, 2 arms, start and stop set": lambda: (
        _experiment(start="2020-01-01T00:00:00Z", stop="2100-01-01T00:00:00Z"),
        "assign",
    ),
    "A/B, 2 arms, targeted (header in a list, metadata number)": lambda: (
        _experiment(
            when=[
                {"attribute": "header.x-country", "in": ["DE", "AT", "CH", "FR"]},
                {"attribute": "metadata.tenure_days", "gte": 30},
            ]
        ),
        "targeted",
    ),
    "bandit, 2 arms, weights version 7": lambda: (_bandit({"a": 0.3, "b": 0.7}, 7), "assign"),
    "arena unit check": lambda: (_experiment(mode="arena"), "assign"),
    "arena pair draw (per battle; OS CSPRNG)": lambda: (_experiment(mode="arena"), "draw_pair"),
}


# A request's headers as the gateway reads them (lower-case names) and its metadata.
HEADERS = {
    "host": "127.0.0.1:8000",
    "user-agent": "OpenAI/Python 1.99.0",
    "content-type": "application/json",
    "authorization": "Bearer sk-bench",
    "x-country": "DE",
}
METADATA = {"tenure_days": "120", "app": "web"}


def _targeted(plan: CompiledExperiment, unit: str) -> object:
    return plan.targets(HEADERS, METADATA) and plan.assign(unit)


TARGETS_US = {name: TARGET_DECISIONS_US for name in CASES if "targeted" in name or "bandit" in name}


def measure(units: int = 20_000, repeats: int = 7) -> list[tuple[str, float, float]]:
    """(case, µs per call for units seen the first time, µs per call for repeat units)."""
    ids = [f"user-{i:08d}" for i in range(units)]
    results = []
    for name, build in CASES.items():
        cold, warm = [], []
        for _ in range(repeats):
            plan, method = build()  # a fresh plan: nothing remembered yet
            if method == "draw_pair":  # per battle, not per unit: the unit id is not an input
                call = lambda _unit, draw=plan.draw_pair: draw()  # noqa: E731
            elif method == "targeted":  # the rules, then the assignment (what the gateway does)
                call = functools.partial(_targeted, plan)
            else:
                call = getattr(plan, method)
            for timings in (cold, warm):  # the second pass sees the same units again
                started = time.perf_counter()
                for unit in ids:
                    call(unit)
                timings.append(time.perf_counter() - started)
        results.append(
            (name, statistics.median(cold) / units * 1e6, statistics.median(warm) / units * 1e6)
        )
    return results


def table(results: list[tuple[str, float, float]]) -> str:
    lines = [
        "| experiment | µs per call, new unit | µs per call, repeat unit | target |",
        "|---|---:|---:|---|",
    ]
    for name, cold, warm in results:
        target = TARGETS_US.get(name, TARGET_US)
        if cold <= target:
            verdict = "met"
        elif warm <= target and warm < cold / 2:
            verdict = "met for repeat units only"
        else:
            verdict = "missed"
        lines.append(f"| {name} | {cold:.2f} | {warm:.2f} | ≤ {target:g} µs: {verdict} |")
    return "\n".join(lines)


def report_times(units: int = 100_000, battles: int = 100_000) -> str:
    """Seconds to build each report over a large simulated log (built once, then reused)."""
    from router.analysis import build_report
    from router.analysis.simulate import Arm, Traffic, simulate_ab, simulate_arena
    from router.store import TABLES, OutcomeStore

    folder = Path(__file__).resolve().parent.parent / "data" / "bench"
    folder.mkdir(parents=True, exist_ok=True)
    ab = Experiment.model_validate(
        {
            "name": "bench-ab",
            "arms": [{"variant": "a"}, {"variant": "b"}],
            "guardrails": [
                {"metric": "reward_score", "max_decrease": 0.1},
                {"metric": "ttft_p95_s", "max_increase": 0.1, "relative": True},
            ],
        }
    )
    arena = Experiment.model_validate(
        {"name": "bench-arena", "mode": "arena", "arms": [{"variant": v} for v in "abcd"]}
    )
    lines = ["| log | events | report seconds |", "|---|---:|---:|"]
    for experiment, name in ((ab, f"ab-{units}.db"), (arena, f"arena-{battles}.db")):
        path = folder / name
        if not path.exists():
            partial = path.with_suffix(".partial")
            partial.unlink(missing_ok=True)
            if experiment.mode == "ab":
                simulate_ab(
                    partial, experiment, Traffic(units=units, arms={"b": Arm(thumbs_up=0.21)})
                )
            else:
                ratings = {"a": 1000, "b": 1030, "c": 980, "d": 1010}
                rewards = dict.fromkeys(ratings, 0.0)
                simulate_arena(
                    partial, experiment, battles=battles, ratings=ratings, rewards=rewards
                )
            partial.rename(path)
        store = OutcomeStore(path)
        events = sum(store.count(table) for table in TABLES if table != "assignments")
        store.close()
        started = time.perf_counter()
        build_report(path, experiment)
        seconds = time.perf_counter() - started
        kind = f"A/B, {units:,} users" if experiment.mode == "ab" else f"arena, {battles:,} votes"
        lines.append(f"| {kind} | {events:,} | {seconds:.1f} |")
    return "\n".join(lines)


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}; Python {platform.python_version()} ({sys.implementation.name}), one thread"


def simulation_main(
    module: str,
    description: str,
    settings_type: Callable[..., Any],
    run: Callable[[Any], Any],
    markdown: Callable[[Any, Any, str, float], str],
    argv: list[str] | None = None,
) -> int:
    """The command line of a simulation with one option, `--runs`: run it, print its markdown
    (with the command that made it and how long it took)."""
    parser = argparse.ArgumentParser(prog=f"python -m {module}", description=description)
    default = settings_type().runs
    parser.add_argument("--runs", type=int, default=default)
    args = parser.parse_args(argv)
    settings = settings_type(runs=args.runs)
    started = time.monotonic()
    found = run(settings)
    command = f"python -m {module}" + (f" --runs {args.runs}" if args.runs != default else "")
    print(markdown(found, settings, command, time.monotonic() - started))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m router.bench", description=__doc__)
    parser.add_argument("--units", type=int, default=20_000)
    args = parser.parse_args(argv)
    results = measure(args.units)
    reports = report_times()
    section = (
        f"Machine: {machine()}. Command: `make bench` (`python -m router.bench`); "
        f"median of 7 runs over {args.units:,} distinct unit ids, each run on a fresh "
        "compiled experiment: first every unit once (hashed), then all again (remembered; "
        "arena pairs are drawn per battle, never remembered)."
        f"\n\n{table(results)}\n\n"
        "Report time over large simulated logs (`router.analysis.build_report`, 200 bootstrap "
        f"replicates, style control on for the arena):\n\n{reports}"
    )
    print(section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
