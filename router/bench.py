"""Assignment cost per call: `python -m router.bench` (part of `make bench`).

Times `CompiledExperiment.assign` (what the gateway calls once per experiment request) over
distinct unit ids, for the shapes of experiment the config can express, plus an arena pair draw.
Prints a markdown section (machine, command, table); `make bench` records it in
`docs/benchmarks.md`. Target: at most 2 µs per call.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

from router.assignment import CompiledExperiment
from router.experiment import Experiment

TARGET_US = 2.0


def _experiment(**settings: object) -> CompiledExperiment:
    arms = settings.pop("arms", [{"variant": "a"}, {"variant": "b"}])
    return CompiledExperiment(
        Experiment.model_validate({"name": "bench", "arms": arms, **settings})
    )


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
    "arena unit check": lambda: (_experiment(mode="arena"), "assign"),
    "arena pair draw (per battle)": lambda: (_experiment(mode="arena"), "pick_pair"),
}


def measure(units: int = 20_000, repeats: int = 7) -> list[tuple[str, float, float]]:
    """(case, µs per call for units seen the first time, µs per call for repeat units)."""
    ids = [f"user-{i:08d}" for i in range(units)]
    results = []
    for name, build in CASES.items():
        cold, warm = [], []
        for _ in range(repeats):
            plan, method = build()  # a fresh plan: nothing remembered yet
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
        "| experiment | µs per call, new unit | µs per call, repeat unit | target ≤ 2 µs |",
        "|---|---:|---:|---|",
    ]
    for name, cold, warm in results:
        verdict = "met" if cold <= TARGET_US else "met for repeat units only"
        lines.append(f"| {name} | {cold:.2f} | {warm:.2f} | {verdict} |")
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m router.bench", description=__doc__)
    parser.add_argument("--units", type=int, default=20_000)
    args = parser.parse_args(argv)
    results = measure(args.units)
    section = (
        f"Machine: {machine()}. Command: `make bench` (`python -m router.bench`); "
        f"median of 7 runs over {args.units:,} distinct unit ids, each run on a fresh "
        "compiled experiment: first every unit once (hashed), then all again (remembered; "
        "arena pairs are drawn per battle, never remembered)."
        f"\n\n{table(results)}"
    )
    print(section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
