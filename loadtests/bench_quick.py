"""The hot path's quick guard: `python -m loadtests.bench_quick` (`make bench-quick`).

Measures arena-serve's throughput as a ratio to vLLM's own server at concurrency 1 and 32 and
compares it with a stored baseline (`loadtests/bench_quick_baseline.json`); 5 to 7 minutes on
2 cores when nothing else runs, more than half of it the two servers starting. Run it before and
after a change to the request path; save and commit a new baseline (`--save-baseline`) when a
change is meant to move the ratio, or on another machine.

What runs. The `vllm` and `arena-serve` systems of `loadtests.serving_bench` (the same servers,
engine settings, streamed chats and client, the servers in the client's session), in three
phases: vLLM, then arena-serve (vLLM kept running, idle: it takes no measurable CPU), then vLLM
again once arena-serve has stopped. A phase is a number of rounds (`ROUNDS`); a round is one
wave of 32 chats at concurrency 32, then 3 chats one at a time, 64 tokens each, and gives each
level one figure in tokens/s. Each server's first round follows a warm-up wave. The vLLM phases
bracket arena-serve's, so a machine that slows down or speeds up during the run (other
processes, the host) widens vLLM's spread instead of passing for a change in arena-serve. The
report also gives the share of the CPU that other processes took during the rounds.

The ratio, per level: the median of arena-serve's rounds over the median of vLLM's.

Its noise: half the width of the ratio's 90 % bootstrap interval (each system's rounds drawn
again with replacement, the ratio of the medians each time; fixed draws, so the same rounds
always give the same interval), as a fraction of the ratio. It is the uncertainty of the
ratio this run measured, from the spread of its own rounds; one slow round widens it less than
it widens the range of the rounds.

A regression at a level: the ratio fell below the baseline's by more than the noise allows,
`1 - ratio / baseline ratio > max(baseline's noise, this run's noise, FLOOR)`, FLOOR = 3 %.
The larger of the two runs' noise, not their sum: a drop as large as either run's own
uncertainty fails. The floor keeps a run whose rounds happened to agree closely from failing on
a change smaller than any single run can resolve here. A rise beyond the same allowance passes
and is reported as better. In repeated runs of one tree on this 2-core machine the noise was
7-13 % at concurrency 32 and 7-17 % at concurrency 1, and the ratios of those runs stayed within
it of each other (docs/benchmarks.md): one run catches a drop of about 10 % or more. To judge a
smaller change (the 3 % of the issue), run old and new back to back several times and compare
the medians of their ratios.

Exit status: 0 within the noise of the baseline, or better; 1 a regression at some level (the
message names the level, both ratios and the drop allowed); 2 no baseline to compare with; 3 a
baseline that is not comparable: measured on another machine (another CPU model or core count)
or with other request settings, so that its ratios mean nothing here; 4 a server did not start
or a request failed (see the logs). `--save-baseline` writes this run as the baseline (after
showing how it compares with the old one) and exits 0.

Latency, beside throughput: each round's TTFT p50 and mean inter-token latency; the report gives
arena-serve's TTFT p50 over vLLM's (ms) and its inter-token latency as a ratio, each the median
round's of each system, and judges the gateway's targets on them (`TARGETS`: throughput at
concurrency 32 at least 0.95× vLLM's, TTFT p50 at concurrency 1 at most 5 ms over, inter-token
latency at concurrency 1 within 5 %). Only throughput is compared with the baseline.

`--also NAME=VALUE ...` runs arena-serve a second time, with those environment variables set
(its servers inherit them), in a phase of its own between the first and vLLM's second: a change
behind a setting is measured side by side with the version without it, in one run, against the
same vLLM rounds (the report gives both ratios and their quotient). `--against SYSTEM ...` does
the same with other servers of `loadtests.serving_bench` (Ray Serve LLM's own app, say), each in
a phase of its own after those.

Where the CPU went (`loadtests.cpu_profile`): around each measured round, every thread of the
run's process tree is read from /proc (CPU time, run-queue wait, context switches) and summed by
component (vLLM's engine core and worker, each Serve replica by deployment, Ray's GCS, raylet,
agents, HAProxy, the load generator). last.json keeps it; `--profile` also prints it, per level,
as cores used, run-queue wait per second and involuntary switches per second for each phase.

Prints markdown: the machine, command and commit, each system's tokens/s per level and round,
the ratios with their noise, the baseline's, the latencies, the targets and the verdict; the
run's figures also go to data/bench/quick/last.json. It writes nothing to docs/benchmarks.md: it
is a guard, run often.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import Any

import httpx
import psutil

from loadtests import cpu_profile, serving_bench
from loadtests.serving_bench import (
    KNOWN_SYSTEMS,
    MAX_TOKENS,
    ROOT,
    STORE_ENV,
    cpu_model,
    model_of,
    running,
)
from serve.config import cpu_engine_dtype

BASELINE = ROOT / "loadtests" / "bench_quick_baseline.json"
SYSTEMS = ("vllm", "arena-serve")
LEVELS = (32, 1)  # in a round's order: the first round's warm-up at 32 warms level 1 too
REQUESTS = {1: 3, 32: 32}  # concurrency -> requests per round
ROUNDS = {"vllm-before": 2, "arena-serve": 4, "vllm-after": 2}  # phase -> rounds
FLOOR = 0.03  # the least drop this guard calls a regression
RESAMPLES = 2000  # bootstrap draws for a ratio's interval
BUSY = 0.05  # others' mean share of the CPU above which the report calls the machine busy

PASS, REGRESSION, NO_BASELINE, NOT_COMPARABLE, FAILED = 0, 1, 2, 3, 4


# The figures: pure, and what the baseline file holds.


@dataclass(frozen=True)
class Level:
    """One level's rounds, in tokens/s: vLLM's (both phases) and arena-serve's; and each round's
    time to first token (p50 of its chats) and mean inter-token latency, in seconds, where
    measured."""

    vllm: tuple[float, ...]
    arena: tuple[float, ...]
    vllm_ttft: tuple[float, ...] = ()
    arena_ttft: tuple[float, ...] = ()
    vllm_itl: tuple[float, ...] = ()
    arena_itl: tuple[float, ...] = ()

    @property
    def ttft_over_ms(self) -> float | None:
        """arena-serve's TTFT p50 over vLLM's, in ms: the median round's of each."""
        if not (self.vllm_ttft and self.arena_ttft):
            return None
        return 1e3 * (statistics.median(self.arena_ttft) - statistics.median(self.vllm_ttft))

    @property
    def itl_ratio(self) -> float | None:
        """arena-serve's inter-token latency over vLLM's: the median round's of each."""
        if not (self.vllm_itl and self.arena_itl):
            return None
        return statistics.median(self.arena_itl) / statistics.median(self.vllm_itl)

    @property
    def ratio(self) -> float:
        return statistics.median(self.arena) / statistics.median(self.vllm)

    @cached_property
    def interval(self) -> tuple[float, float]:
        """The ratio's 90 % bootstrap interval: each system's rounds drawn again with
        replacement, `RESAMPLES` times (the same draws every run), the ratio of the medians
        each time; its 5th and 95th percentiles."""
        draw = random.Random(0).choices
        ratios = sorted(
            statistics.median(draw(self.arena, k=len(self.arena)))
            / statistics.median(draw(self.vllm, k=len(self.vllm)))
            for _ in range(RESAMPLES)
        )
        return ratios[int(0.05 * RESAMPLES)], ratios[int(0.95 * RESAMPLES) - 1]

    @property
    def noise(self) -> float:
        """Half the interval's width, as a fraction of the ratio."""
        low, high = self.interval
        return (high - low) / (2 * self.ratio)

    def as_json(self) -> dict[str, object]:
        figures: dict[str, object] = {
            "ratio": round(self.ratio, 4),
            "noise": round(self.noise, 4),
            "low": round(self.interval[0], 4),
            "high": round(self.interval[1], 4),
            "vllm_tokens_per_s": [round(x, 2) for x in self.vllm],
            "arena_serve_tokens_per_s": [round(x, 2) for x in self.arena],
        }
        latencies = [
            ("ttft_over_ms", self.ttft_over_ms, "ttft_s", self.vllm_ttft, self.arena_ttft, 4),
            ("itl_ratio", self.itl_ratio, "itl_s", self.vllm_itl, self.arena_itl, 5),
        ]
        for name, value, rounds, vllm, arena, digits in latencies:
            if value is not None:  # measured (a baseline of before latencies has none)
                figures[name] = round(value, digits - 2)
                figures[f"vllm_{rounds}"] = [round(x, digits) for x in vllm]
                figures[f"arena_serve_{rounds}"] = [round(x, digits) for x in arena]
        return figures


def settings() -> dict[str, object]:
    """What a ratio depends on besides the code and the machine: runs with other settings are
    not compared."""
    return {
        "max_tokens": MAX_TOKENS,
        "requests_per_round": {str(c): REQUESTS[c] for c in LEVELS},
        "rounds": dict(ROUNDS),
        "dtype": cpu_engine_dtype(),
    }


def this_machine() -> dict[str, object]:
    return {"cpu": cpu_model(), "cores": os.cpu_count()}


def commit() -> str:
    """The checkout's commit, `+dirty` where tracked files differ from it."""

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True)
        return done.stdout.strip() if done.returncode == 0 else ""

    head = git("rev-parse", "--short", "HEAD") or "unknown"
    return head + ("+dirty" if git("status", "--porcelain", "--untracked-files=no") else "")


def record(
    levels: dict[int, Level],
    machine: dict[str, object],
    at: str,
    date: str,
    others: tuple[float, ...] = (),
) -> dict:
    """A run as the baseline file holds it."""
    return {
        "machine": machine,
        "commit": at,
        "date": date,
        "settings": settings(),
        "levels": {str(c): levels[c].as_json() for c in sorted(levels)},
        "others_cpu": {
            "mean": round(statistics.fmean(others), 4) if others else None,
            "max": round(max(others), 4) if others else None,
        },
    }


@dataclass(frozen=True)
class Check:
    level: int
    baseline: float
    ratio: float
    allowed: float  # the largest drop, as a fraction of the baseline ratio, within the noise

    @property
    def change(self) -> float:
        return self.ratio / self.baseline - 1

    @property
    def verdict(self) -> str:
        if -self.change > self.allowed:
            return "regression"
        return "better" if self.change > self.allowed else "within noise"


@dataclass(frozen=True)
class Outcome:
    code: int
    message: str
    checks: tuple[Check, ...] = ()


def compare(baseline: Any, run: dict, floor: float = FLOOR) -> Outcome:
    """This run (`record`) against the baseline (the same shape, or None when there is none)."""
    if baseline is None:
        return Outcome(NO_BASELINE, "no baseline to compare with: run with --save-baseline")
    if not isinstance(baseline, dict) or not {"machine", "settings", "levels"} <= set(baseline):
        return Outcome(
            NOT_COMPARABLE,
            "the baseline file is not a bench-quick record (machine, settings, levels): save "
            "one with --save-baseline",
        )
    if baseline["machine"] != run["machine"]:
        theirs, ours = baseline["machine"], run["machine"]
        return Outcome(
            NOT_COMPARABLE,
            f"the baseline was measured on another machine ({theirs['cpu']}, {theirs['cores']} "
            f"cores; this one: {ours['cpu']}, {ours['cores']} cores): its ratios say nothing "
            "here; save one for this machine with --save-baseline",
        )
    if baseline["settings"] != run["settings"]:
        return Outcome(
            NOT_COMPARABLE,
            f"the baseline ran other settings ({json.dumps(baseline['settings'])}; this run: "
            f"{json.dumps(run['settings'])}); save a new one with --save-baseline",
        )
    checks = []
    for level, then in baseline["levels"].items():
        now = run["levels"].get(level)
        if now is None:
            return Outcome(NOT_COMPARABLE, f"this run has no concurrency {level}")
        allowed = max(then["noise"], now["noise"], floor)
        checks.append(Check(int(level), then["ratio"], now["ratio"], allowed))
    failed = [c for c in checks if c.verdict == "regression"]
    if failed:
        message = "; ".join(
            f"REGRESSION at concurrency {c.level}: arena-serve / vLLM {c.ratio:.3f}×, baseline "
            f"{c.baseline:.3f}× ({100 * c.change:+.1f} %, more than the {100 * c.allowed:.1f} % "
            "drop the noise allows)"
            for c in failed
        )
        return Outcome(REGRESSION, message, tuple(checks))
    better = [c for c in checks if c.verdict == "better"]
    message = "within the noise of the baseline at every level" + (
        f"; better at concurrency {', '.join(str(c.level) for c in better)} (a new baseline "
        "may be worth saving)"
        if better
        else ""
    )
    return Outcome(PASS, message, tuple(checks))


def is_busy(run: dict) -> bool:
    """Whether other processes took more than `BUSY` of the CPU during the run's rounds."""
    mean = run["others_cpu"]["mean"]
    return mean is not None and mean > BUSY


def load_baseline(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.exists() else None


# The report.


def _minutes(seconds: float) -> str:
    return f"{int(seconds // 60)} min {seconds % 60:02.0f} s"


def _others_lines(run: dict) -> list[str]:
    """The paragraph on the CPU share other processes took (none where it was not measured)."""
    others = run["others_cpu"]
    if others["mean"] is None:
        return []
    busy = is_busy(run)
    return [
        "",
        f"Other processes (and the host, as steal time) took {100 * others['mean']:.0f} % "
        f"of the machine's CPU during the rounds on average, {100 * others['max']:.0f} % at "
        "most in one"
        + (": the machine was busy, and the noise above is mostly theirs." if busy else "."),
    ]


def _round_rows(run: dict) -> list[str]:
    """The table of each system's tokens/s per level: the median and every round."""

    def listed(rounds: list[float]) -> str:
        return ", ".join(f"{x:.1f}" for x in rounds)

    rows = ["| concurrency | system | tokens/s (median) | each round |", "|---:|---|---:|---|"]
    for level, figures in run["levels"].items():
        vllm, arena = figures["vllm_tokens_per_s"], figures["arena_serve_tokens_per_s"]
        split = ROUNDS["vllm-before"]
        rows += [
            f"| {level} | vllm | {statistics.median(vllm):.1f} | before: {listed(vllm[:split])}; "
            f"after: {listed(vllm[split:])} |",
            f"| {level} | arena-serve | {statistics.median(arena):.1f} | {listed(arena)} |",
        ]
    return rows


# The gateway's targets against vLLM's own server (issue 23): throughput at concurrency 32 at
# least this ratio; TTFT p50 at concurrency 1 at most this many ms over; ITL at concurrency 1
# within this fraction.
TARGETS = {"throughput_32": 0.95, "ttft_1_ms": 5.0, "itl_1": 0.05}


def target_lines(levels: dict[str, dict], label: str = "arena-serve") -> list[str]:
    """The targets, met or not, from a run's levels (as `record` writes them)."""
    lines = []
    if (top := levels.get("32")) is not None:
        met = top["ratio"] >= TARGETS["throughput_32"]
        lines.append(
            f"- {label}: throughput at concurrency 32 {top['ratio']:.3f}× vLLM (target "
            f"≥ {TARGETS['throughput_32']}×: {'met' if met else 'missed'})"
        )
    one = levels.get("1", {})
    if "ttft_over_ms" in one:
        met = one["ttft_over_ms"] <= TARGETS["ttft_1_ms"]
        lines.append(
            f"- {label}: TTFT p50 at concurrency 1 {one['ttft_over_ms']:+.1f} ms over vLLM "
            f"(target ≤ {TARGETS['ttft_1_ms']:.0f} ms: {'met' if met else 'missed'})"
        )
    if "itl_ratio" in one:
        met = abs(one["itl_ratio"] - 1) <= TARGETS["itl_1"]
        lines.append(
            f"- {label}: inter-token latency at concurrency 1 {one['itl_ratio']:.3f}× vLLM's "
            f"(target within {100 * TARGETS['itl_1']:.0f} %: {'met' if met else 'missed'})"
        )
    return lines


def _latency_rows(levels: dict[str, dict], label: str) -> list[str]:
    rows = []
    for level, figures in levels.items():
        if "ttft_over_ms" not in figures:
            continue
        rows.append(
            f"| {level} | {label} | {1e3 * statistics.median(figures['vllm_ttft_s']):.1f} | "
            f"{1e3 * statistics.median(figures['arena_serve_ttft_s']):.1f} | "
            f"{figures['ttft_over_ms']:+.1f} ms | "
            f"{1e3 * statistics.median(figures['vllm_itl_s']):.2f} | "
            f"{1e3 * statistics.median(figures['arena_serve_itl_s']):.2f} | "
            f"{figures['itl_ratio']:.3f}× |"
        )
    return rows


def profile_lines(profiles: dict[str, dict]) -> list[str]:
    """Where the CPU went, per level: each component's cores (CPU seconds per second of the
    rounds), run-queue wait (seconds per second) and involuntary context switches per second,
    for each phase's server."""
    lines: list[str] = []
    phases = [name for name in profiles if profiles[name]]
    levels = sorted({level for name in phases for level in profiles[name]}, key=int, reverse=True)
    for level in levels:
        lines += [
            "",
            f"Concurrency {level}: cores used / run-queue wait (s per s) / involuntary "
            "switches per s",
            "",
            "| component | " + " | ".join(phases) + " |",
            "|---|" + "---:|" * len(phases),
        ]
        per = {name: profiles[name].get(level) for name in phases}
        names = sorted(
            {c for p in per.values() if p for c in p["components"]},
            key=lambda c: (
                -max(
                    (p["components"].get(c, {}).get("cpu_s", 0) / p["wall_s"])
                    for p in per.values()
                    if p and p["wall_s"]
                )
            ),
        )

        def cell(profile: dict | None, name: str | None) -> str:
            if not profile or not profile["wall_s"]:
                return "—"
            if name and name not in profile["components"]:
                return "—"
            wall = profile["wall_s"]
            parts = [profile["components"][name]] if name else list(profile["components"].values())
            cpu = sum(u["cpu_s"] for u in parts) / wall
            wait = sum(u["wait_s"] for u in parts) / wall
            switches = sum(u["involuntary"] for u in parts) / wall
            return f"{cpu:.3f} / {wait:.3f} / {switches:.0f}"

        for name in names:
            lines.append(f"| {name} | " + " | ".join(cell(per[p], name) for p in phases) + " |")
        lines.append("| **all** | " + " | ".join(cell(per[p], None) for p in phases) + " |")
    return lines


def _latency_and_target_lines(run: dict) -> list[str]:
    """The latency table, the ratios of the phases after arena-serve's, and the targets."""
    extra = run.get("extra", [])
    lines = [
        "",
        "| concurrency | system | vLLM TTFT p50 ms | TTFT p50 ms | over vLLM | vLLM ITL ms | "
        "ITL ms | ITL vs vLLM |",
        "|---:|---|---:|---:|---:|---:|---:|---:|",
        *_latency_rows(run["levels"], "arena-serve"),
    ]
    for other in extra:
        lines += _latency_rows(other["levels"], other["label"])
    for other in extra:
        lines += ["", f"{other['label']} (a phase of its own, after arena-serve's):", ""]
        lines += [
            f"- concurrency {level}: {f['ratio']:.3f}× vLLM (±{100 * f['noise']:.1f} %), "
            f"{f['ratio'] / run['levels'][level]['ratio']:.3f}× arena-serve as it is"
            for level, f in other["levels"].items()
        ]
    lines += ["", "Targets (medians of the rounds):", "", *target_lines(run["levels"])]
    for other in extra:
        lines += target_lines(other["levels"], other["label"])
    return lines


def report(
    run: dict, baseline: dict | None, outcome: Outcome, wall_s: float, start_s: float
) -> str:
    machine = run["machine"]
    lines = [
        f"Machine: {machine['cpu']}, {machine['cores']} cores. Command: `make bench-quick` "
        f"(`python -m loadtests.bench_quick`), commit {run['commit']}, {run['date']}. "
        f"vLLM's OpenAI server, then arena-serve (one A/B experiment on one engine, as "
        f"`make bench-serving` runs it), then vLLM again (kept running, idle, meanwhile); each "
        f"round {REQUESTS[32]} streamed chats at concurrency 32 (one wave), then {REQUESTS[1]} "
        f"at concurrency 1, {MAX_TOKENS} tokens each (ignore_eos); rounds: vLLM "
        f"{ROUNDS['vllm-before']} + {ROUNDS['vllm-after']}, arena-serve {ROUNDS['arena-serve']}, "
        "the first of each server after a warm-up wave at concurrency 32.",
        "",
        *_round_rows(run),
    ]
    lines += [
        "",
        "| concurrency | arena-serve / vLLM | 90 % interval | noise | baseline | change | "
        "allowed drop | verdict |",
        "|---:|---:|---|---:|---|---:|---:|---|",
    ]
    checks = {str(c.level): c for c in outcome.checks}  # none unless comparable
    for level, figures in run["levels"].items():
        row = (
            f"| {level} | {figures['ratio']:.3f}× | {figures['low']:.3f}–{figures['high']:.3f}× "
            f"| ±{100 * figures['noise']:.1f} % |"
        )
        if (check := checks.get(level)) and baseline:
            then = baseline["levels"][level]
            row += (
                f" {then['ratio']:.3f}× ±{100 * then['noise']:.1f} % | "
                f"{100 * check.change:+.1f} % | {100 * check.allowed:.1f} % | {check.verdict} |"
            )
        else:
            row += " — | — | — | — |"
        lines.append(row)
    lines += _latency_and_target_lines(run)
    where = (
        f"baseline of commit {baseline['commit']}, {baseline['date']}"
        if baseline
        else "no baseline"
    )
    lines += _others_lines(run)
    lines += [
        "",
        f"Verdict ({where}): {outcome.message} (exit {outcome.code}).",
        f"Wall time: {_minutes(wall_s)}, of which {_minutes(start_s)} starting the servers.",
    ]
    return "\n".join(lines)


# The run.


_BEGAN = time.monotonic()


def _progress(text: str) -> None:
    print(
        f"[bench-quick {_minutes(time.monotonic() - _BEGAN)}] {text}", file=sys.stderr, flush=True
    )


def _our_cpu() -> dict[int, float]:
    """CPU seconds so far of this process and everything it started (the servers, Ray, vLLM)."""
    ours = {}
    me = psutil.Process()
    for process in [me, *me.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):
            times = process.cpu_times()
            ours[process.pid] = times.user + times.system
    return ours


def _machine_cpu() -> tuple[float, float]:
    """The machine's busy and total CPU seconds so far (guest time is already in user time)."""
    times = psutil.cpu_times()
    total = sum(times) - getattr(times, "guest", 0.0) - getattr(times, "guest_nice", 0.0)
    return total - times.idle - getattr(times, "iowait", 0.0), total


@contextmanager
def others_share(into: list[float]) -> Iterator[None]:
    """Append to `into` the share of the machine's CPU that anything but this run used meanwhile:
    other processes, and the host (steal time, on a virtual machine)."""
    ours, (busy, total) = _our_cpu(), _machine_cpu()
    yield
    ours_now, (busy_now, total_now) = _our_cpu(), _machine_cpu()
    used = sum(cpu - ours.get(pid, 0.0) for pid, cpu in ours_now.items())
    if total_now > total:
        into.append(max(0.0, busy_now - busy - used) / (total_now - total))


Round = dict[str, float]  # `serving_bench.run_level`'s figures for one round at one level


@dataclass
class Profile:
    """Where the CPU went during a system's measured rounds at one level (warm-ups left out):
    each component's usage (`loadtests.cpu_profile`) and the rounds' wall time."""

    wall_s: float = 0.0
    usage: dict[str, cpu_profile.Usage] = field(default_factory=dict)

    def as_json(self) -> dict[str, object]:
        return {
            "wall_s": round(self.wall_s, 3),
            "components": {
                name: {
                    "cpu_s": round(u.cpu_s, 3),
                    "wait_s": round(u.wait_s, 3),
                    "voluntary": u.voluntary,
                    "involuntary": u.involuntary,
                    "threads": sorted(u.threads),
                }
                for name, u in sorted(self.usage.items(), key=lambda item: -item[1].cpu_s)
            },
        }


def phase(
    base: str,
    system: str,
    rounds: int,
    into: dict[int, list[Round]],
    others: list[float],
    profiles: dict[int, Profile],
    warm_up: bool = True,
    label: str | None = None,
) -> None:
    """`rounds` rounds against `base` (the first after a warm-up wave), each level's figures
    appended to `into`, the share of the CPU other processes took during each to `others`, and
    where this process tree's CPU went to `profiles`; `label` names the phase in the progress
    lines (`system` by default)."""
    for i in range(rounds):
        for level in LEVELS:
            first = warm_up and i == 0 and level == LEVELS[0]
            run = serving_bench.run_level(
                base, model_of(system), level, REQUESTS[level], warm_up=first
            )
            before = cpu_profile.snapshot()
            began = time.monotonic()
            with others_share(others):
                figures = asyncio.run(run)
            wall = time.monotonic() - began
            if not first:
                profile = profiles.setdefault(level, Profile())
                profile.wall_s += wall
                cpu_profile.merge(
                    profile.usage, cpu_profile.difference(before, cpu_profile.snapshot())
                )
            into[level].append(figures)
            tokens = figures["tokens_per_s"]
            _progress(
                f"{label or system} c={level} round {i + 1}/{rounds}: {tokens:.1f} tok/s "
                f"(others: {100 * others[-1]:.0f} % of the CPU)"
            )


def level_of(vllm: list[Round], arena: list[Round]) -> Level:
    def each(rounds: list[Round], key: str) -> tuple[float, ...]:
        return tuple(r[key] for r in rounds if not math.isnan(r[key]))  # NaN: no ITL

    return Level(
        each(vllm, "tokens_per_s"),
        each(arena, "tokens_per_s"),
        each(vllm, "ttft_p50"),
        each(arena, "ttft_p50"),
        each(vllm, "itl_mean"),
        each(arena, "itl_mean"),
    )


@dataclass(frozen=True)
class Measured:
    levels: dict[int, Level]
    starting_s: float  # spent starting the servers
    others: tuple[float, ...]  # the CPU share others took, each round of each level
    profiles: dict[str, dict[int, Profile]] = field(default_factory=dict)  # phase -> level ->
    # The phases after arena-serve's (`--also`, `--against`), by label: each against vLLM.
    extra: dict[str, dict[int, Level]] = field(default_factory=dict)


@contextmanager
def environment(settings: dict[str, str]) -> Iterator[None]:
    """This process's environment (which the servers it starts inherit) with `settings`."""
    saved = {name: os.environ.get(name) for name in settings}
    os.environ.update(settings)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def measure(
    logs: Path, also: dict[str, str] | None = None, against: Sequence[str] = ()
) -> Measured:
    """Each level's rounds from the phases: vLLM, arena-serve (then arena-serve again with the
    environment `also`, where given, then each system of `against`), vLLM again."""
    vllm, arena = _rounds(), _rounds()
    others: list[float] = []
    profiles: dict[str, dict[int, Profile]] = {"vllm": {}, "arena-serve": {}}
    starting = 0.0

    @contextmanager
    def server(system: str, label: str) -> Iterator[str]:
        nonlocal starting
        _progress(f"{label}: starting")
        began = time.monotonic()
        with running(system, logs / f"{label.replace(' ', '_')}.log") as base:
            starting += time.monotonic() - began
            _progress(f"{label}: ready in {time.monotonic() - began:.0f} s")
            yield base
            began = time.monotonic()
        _progress(f"{label}: stopped in {time.monotonic() - began:.0f} s")

    phases = [("arena-serve", "arena-serve", {}, arena)]  # system, label, environment, rounds
    extra: dict[str, dict[int, list[Round]]] = {}
    if also:
        label = f"arena-serve {also_label(also)}"
        phases.append(("arena-serve", label, also, extra.setdefault(label, _rounds())))
    phases += [(system, system, {}, extra.setdefault(system, _rounds())) for system in against]
    with (
        tempfile.TemporaryDirectory(prefix="bench-quick-") as store,
        server("vllm", "vllm") as vllm_base,
    ):
        phase(vllm_base, "vllm", ROUNDS["vllm-before"], vllm, others, profiles["vllm"])
        for i, (system, label, settings, rounds) in enumerate(phases):
            os.environ[STORE_ENV] = str(Path(store) / f"outcomes-{i}.db")  # an outcome log's
            with environment(settings), server(system, label) as base:
                into = profiles.setdefault(label, {})
                phase(base, system, ROUNDS["arena-serve"], rounds, others, into, label=label)
        # Still warm: its engine kept its memory while the others ran.
        phase(vllm_base, "vllm", ROUNDS["vllm-after"], vllm, others, profiles["vllm"], False)
    levels = {level: level_of(vllm[level], arena[level]) for level in LEVELS}
    extra_levels = {
        label: {level: level_of(vllm[level], rounds[level]) for level in LEVELS}
        for label, rounds in extra.items()
    }
    return Measured(levels, starting, tuple(others), profiles, extra_levels)


def _rounds() -> dict[int, list[Round]]:
    return {level: [] for level in LEVELS}


def also_label(settings: dict[str, str]) -> str:
    return " ".join(f"{name}={value}" for name, value in settings.items())


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m loadtests.bench_quick",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--baseline", type=Path, default=BASELINE, help="the baseline file")
    parser.add_argument(
        "--save-baseline",
        action="store_true",
        help="write this run as the baseline (after showing how it compares with the old one)",
    )
    parser.add_argument("--logs", type=Path, default=ROOT / "data" / "bench" / "quick")
    parser.add_argument(
        "--also",
        nargs="+",
        metavar="NAME=VALUE",
        help="run arena-serve a second time with these environment variables set, in a phase of "
        "its own after the first, and show both against the same vLLM rounds: a change measured "
        "side by side with the version without it (not compared with the baseline)",
    )
    parser.add_argument(
        "--against",
        nargs="+",
        metavar="SYSTEM",
        choices=[name for name in KNOWN_SYSTEMS if name not in SYSTEMS],
        help="run each of these `loadtests.serving_bench` systems in a phase of its own after "
        "arena-serve's (and --also's), against the same vLLM rounds: arena-serve side by side "
        "with another server, such as Ray Serve LLM's own (not compared with the baseline)",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="also print where the CPU went during each server's rounds (always in last.json)",
    )
    return parser


def with_details(run: dict, measured: Measured) -> dict:
    """`run` (as `record` makes it) with where the CPU went, and the levels of the phases after
    arena-serve's (`--also`, `--against`)."""
    full = run | {
        "profile": {
            name: {str(level): p.as_json() for level, p in levels.items()}
            for name, levels in measured.profiles.items()
        }
    }
    if measured.extra:
        full["extra"] = [
            {"label": label, "levels": {str(c): levels[c].as_json() for c in sorted(levels)}}
            for label, levels in measured.extra.items()
        ]
    return full


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        also = dict(item.split("=", 1) for item in args.also or ())
    except ValueError:
        parser.error("--also takes NAME=VALUE pairs")
    args.logs.mkdir(parents=True, exist_ok=True)
    began = time.monotonic()
    try:
        measured = measure(args.logs, also, args.against or ())
    except (RuntimeError, httpx.HTTPError) as error:
        print(f"bench-quick: no measurement: {error} (server logs in {args.logs})", file=sys.stderr)
        return FAILED
    date = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    run = record(measured.levels, this_machine(), commit(), date, measured.others)
    baseline = load_baseline(args.baseline)
    outcome = compare(baseline, run)
    full = with_details(run, measured)
    (args.logs / "last.json").write_text(json.dumps(full, indent=2) + "\n")
    text = report(full, baseline, outcome, time.monotonic() - began, measured.starting_s)
    if args.profile:
        text += "\n\nWhere the CPU went during the rounds:\n" + "\n".join(
            profile_lines(full["profile"])
        )
    print(text)
    if args.save_baseline:
        args.baseline.write_text(json.dumps(run, indent=2) + "\n")
        print(f"\nBaseline saved: {args.baseline} (commit it).")
        if is_busy(run):
            print(
                "bench-quick: warning: the machine was busy during this run; a baseline "
                "measured on a quiet machine compares better",
                file=sys.stderr,
            )
        return PASS
    if outcome.code != PASS:
        print(f"bench-quick: {outcome.message}", file=sys.stderr)
    return outcome.code


if __name__ == "__main__":
    sys.exit(main())
