"""`make bench-quick`'s figures and verdicts, without a server: the ratio and its noise from the
rounds, the comparison with a baseline, and the exit status of a run end to end."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from loadtests import bench_quick
from loadtests.bench_quick import NO_BASELINE, NOT_COMPARABLE, PASS, REGRESSION, Level, compare

MACHINE = {"cpu": "AMD EPYC", "cores": 2}


def run(ratios: dict[int, float], noise: float = 0.01, machine: dict | None = None) -> dict:
    """A run whose ratio at each level is `ratios[level]`, its rounds spread by about ±`noise`."""
    levels = {
        level: Level(vllm=(100.0, 100.0), arena=(100 * r * (1 - noise), 100 * r * (1 + noise)))
        for level, r in ratios.items()
    }
    return bench_quick.record(levels, machine or MACHINE, "abc1234", "2026-12-02 06:00 UTC")


def test_the_ratio_is_of_medians_and_its_noise_a_bootstrap_interval() -> None:
    level = Level(vllm=(200.0, 210.0, 190.0, 205.0), arena=(180.0, 170.0, 185.0, 175.0))
    assert level.ratio == pytest.approx(177.5 / 202.5)
    low, high = level.interval
    assert 170 / 210 <= low < level.ratio < high <= 185 / 190  # within what the rounds allow
    assert level.noise == pytest.approx((high - low) / 2 / level.ratio)
    assert Level(level.vllm, level.arena).interval == level.interval  # the same draws each run
    assert Level((200.0,) * 4, (180.0,) * 4).noise == 0
    # One slow round widens the interval less than it widens the range of the rounds.
    hiccup = Level(vllm=(250.0, 240.0, 245.0, 255.0), arena=(220.0, 222.0, 168.0, 218.0))
    assert hiccup.noise < (222 / 240 - 168 / 255) / 2 / hiccup.ratio
    # Two rounds each: the interval spans the rounds' two extremes.
    assert run({32: 0.9}, noise=0.02)["levels"]["32"]["noise"] == pytest.approx(0.02, abs=1e-4)


def test_a_run_within_the_noise_passes() -> None:
    outcome = compare(run({1: 0.90, 32: 0.90}), run({1: 0.88, 32: 0.875}))
    assert outcome.code == PASS
    assert [c.verdict for c in outcome.checks] == ["within noise", "within noise"]


def test_a_drop_beyond_the_noise_fails_naming_the_level_and_both_ratios() -> None:
    outcome = compare(run({1: 0.90, 32: 0.90}), run({1: 0.90, 32: 0.85}))
    assert outcome.code == REGRESSION
    assert [c.verdict for c in outcome.checks] == ["within noise", "regression"]
    assert "concurrency 32" in outcome.message and "concurrency 1" not in outcome.message
    assert "0.850×" in outcome.message and "0.900×" in outcome.message
    assert "3.0 %" in outcome.message  # the floor: both runs' noise is 1 %


def test_the_larger_noise_of_the_two_runs_is_allowed() -> None:
    quiet, noisy = run({32: 0.90}, noise=0.01), run({32: 0.85}, noise=0.08)
    assert compare(quiet, noisy).code == PASS  # -5.6 % against ±8 %
    assert compare(noisy, run({32: 0.80}, noise=0.01)).code == PASS  # -5.9 % against ±8 %
    [check] = compare(quiet, run({32: 0.80}, noise=0.08)).checks  # -11 % against ±8 %
    assert check.verdict == "regression" and check.allowed == pytest.approx(0.08, abs=1e-4)


def test_a_rise_beyond_the_noise_passes_as_better() -> None:
    outcome = compare(run({1: 0.90, 32: 0.80}), run({1: 0.90, 32: 0.90}))
    assert outcome.code == PASS and outcome.checks[1].verdict == "better"
    assert "better at concurrency 32" in outcome.message


def test_a_baseline_from_another_machine_or_settings_is_not_compared() -> None:
    other = run({1: 0.9, 32: 0.9}, machine={"cpu": "Intel Xeon", "cores": 2})
    outcome = compare(other, run({1: 0.5, 32: 0.5}))
    assert outcome.code == NOT_COMPARABLE and not outcome.checks
    assert "another machine" in outcome.message and "Intel Xeon" in outcome.message
    more_cores = run({1: 0.9, 32: 0.9}, machine={"cpu": "AMD EPYC", "cores": 4})
    assert compare(more_cores, run({1: 0.9, 32: 0.9})).code == NOT_COMPARABLE
    longer = run({1: 0.9, 32: 0.9}) | {"settings": {"max_tokens": 128}}
    assert compare(longer, run({1: 0.9, 32: 0.9})).code == NOT_COMPARABLE
    assert compare(None, run({1: 0.9})).code == NO_BASELINE


def test_a_baseline_that_is_no_record_is_not_compared_and_the_run_still_reported() -> None:
    for broken in ({}, {"machine": {"cpu": "AMD EPYC", "cores": 2}}, [], "x"):
        outcome = compare(broken, run({1: 0.9, 32: 0.9}))
        assert outcome.code == NOT_COMPARABLE and "not a bench-quick record" in outcome.message


def test_a_run_saves_its_baseline_then_compares_with_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`main` end to end, with the measurement replaced: the servers never start."""
    figures = {1: Level((20.0, 20.0), (18.0, 18.0)), 32: Level((250.0, 250.0), (225.0, 225.0))}
    measured = bench_quick.Measured  # the servers' figures, and the CPU share of others
    monkeypatch.setattr(
        bench_quick,
        "measure",
        lambda logs, also=None, against=(): measured(dict(figures), 60, (0.01,)),
    )
    monkeypatch.setattr(bench_quick, "this_machine", lambda: MACHINE)
    baseline, logs = tmp_path / "baseline.json", ["--logs", str(tmp_path / "logs")]
    assert bench_quick.main(["--baseline", str(baseline), *logs]) == NO_BASELINE
    assert bench_quick.main(["--baseline", str(baseline), "--save-baseline", *logs]) == PASS
    assert json.loads(baseline.read_text())["levels"]["32"]["ratio"] == 0.9
    assert bench_quick.main(["--baseline", str(baseline), *logs]) == PASS
    out = capsys.readouterr().out
    assert "| 32 | arena-serve | 225.0 | 225.0, 225.0 |" in out
    assert "| 32 | 0.900× | 0.900–0.900× | ±0.0 % | 0.900× ±0.0 % | +0.0 % | 3.0 % |" in out
    figures[32] = Level((250.0, 250.0), (200.0, 200.0))
    assert bench_quick.main(["--baseline", str(baseline), *logs]) == REGRESSION
    assert "REGRESSION at concurrency 32" in capsys.readouterr().err
    monkeypatch.setattr(bench_quick, "this_machine", lambda: {"cpu": "other", "cores": 2})
    assert bench_quick.main(["--baseline", str(baseline), *logs]) == NOT_COMPARABLE


@pytest.mark.parametrize(("others", "warned"), [((0.01, 0.02), False), ((0.2, 0.1), True)])
def test_saving_a_baseline_on_a_busy_machine_warns(
    others: tuple[float, ...],
    warned: bool,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    figures = {1: Level((20.0, 20.0), (18.0, 18.0)), 32: Level((250.0, 250.0), (225.0, 225.0))}
    measured = bench_quick.Measured(figures, 60, others)
    monkeypatch.setattr(bench_quick, "measure", lambda logs, also=None, against=(): measured)
    monkeypatch.setattr(bench_quick, "this_machine", lambda: MACHINE)
    baseline = tmp_path / "baseline.json"
    argv = ["--baseline", str(baseline), "--save-baseline", "--logs", str(tmp_path / "logs")]
    assert bench_quick.main(argv) == PASS
    assert baseline.exists()
    assert ("the machine was busy" in capsys.readouterr().err) is warned


def test_latency_is_the_median_round_of_each_and_the_targets_are_judged_on_it() -> None:
    one = Level(
        vllm=(20.0, 20.0, 20.0),
        arena=(19.0, 19.0, 19.0),
        vllm_ttft=(0.030, 0.020, 0.025),
        arena_ttft=(0.031, 0.029, 0.100),
        vllm_itl=(0.050, 0.050, 0.060),
        arena_itl=(0.052, 0.051, 0.090),
    )
    assert one.ttft_over_ms == pytest.approx(6.0)  # 31 ms over 25 ms
    assert one.itl_ratio == pytest.approx(0.052 / 0.050)
    assert Level((1.0,), (1.0,)).ttft_over_ms is None  # not measured: a baseline of old
    levels = {
        "1": one.as_json(),
        "32": Level((250.0, 250.0), (240.0, 240.0)).as_json(),
    }
    lines = "\n".join(bench_quick.target_lines(levels))
    assert "throughput at concurrency 32 0.960× vLLM (target ≥ 0.95×: met)" in lines
    assert "TTFT p50 at concurrency 1 +6.0 ms over vLLM (target ≤ 5 ms: missed)" in lines
    assert "inter-token latency at concurrency 1 1.040× vLLM's (target within 5 %: met)" in lines


def test_the_profile_table_gives_cores_wait_and_switches_per_second_for_each_phase() -> None:
    profiles = {
        "vllm": {
            "32": {
                "wall_s": 10.0,
                "components": {
                    "vLLM engine core": {"cpu_s": 9.0, "wait_s": 1.0, "involuntary": 100},
                },
            }
        },
        "arena-serve": {
            "32": {
                "wall_s": 20.0,
                "components": {
                    "vLLM engine core": {"cpu_s": 17.0, "wait_s": 4.0, "involuntary": 400},
                    "Ray GCS": {"cpu_s": 1.0, "wait_s": 0.0, "involuntary": 0},
                },
            }
        },
    }
    table = "\n".join(bench_quick.profile_lines(profiles))
    assert "| component | vllm | arena-serve |" in table
    assert "| vLLM engine core | 0.900 / 0.100 / 10 | 0.850 / 0.200 / 20 |" in table
    assert "| Ray GCS | — | 0.050 / 0.000 / 0 |" in table
    assert "| **all** | 0.900 / 0.100 / 10 | 0.900 / 0.200 / 20 |" in table
    assert table.index("vLLM engine core") < table.index("Ray GCS")  # busiest first


def test_the_phases_after_arena_serves_are_each_measured_against_the_same_vllm_rounds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--also` and `--against` end to end, with fake servers: each phase runs its own system,
    `--also`'s settings only in its own phase, and each is reported against vLLM's rounds."""
    speed = {"vllm": 100.0, "arena-serve": 90.0, "ray-serve-llm-direct-matched": 96.0}
    started: list[tuple[str, str | None]] = []

    @contextmanager
    def running(system: str, log: Path) -> Iterator[str]:
        started.append((system, os.environ.get("ARENA_TEST_SETTING")))
        yield system if os.environ.get("ARENA_TEST_SETTING") is None else "arena-serve also"

    async def run_level(base: str, model: str, level: int, n: int, warm_up: bool = False) -> dict:
        await asyncio.sleep(0.02)  # a round the machine's CPU clock can see
        tokens = speed.get(base, 99.0)  # `--also`'s arena-serve: 99
        return {"tokens_per_s": tokens * level, "ttft_p50": 1 / tokens, "itl_mean": 1 / tokens}

    monkeypatch.setattr(bench_quick, "running", running)
    monkeypatch.setattr(bench_quick.serving_bench, "run_level", run_level)
    monkeypatch.setattr(bench_quick, "this_machine", lambda: MACHINE)
    monkeypatch.delenv("ARENA_TEST_SETTING", raising=False)
    logs = tmp_path / "logs"
    argv = ["--baseline", str(tmp_path / "none.json"), "--logs", str(logs)]
    argv += ["--also", "ARENA_TEST_SETTING=1", "--against", "ray-serve-llm-direct-matched"]
    assert bench_quick.main(argv) == NO_BASELINE
    assert started == [
        ("vllm", None),
        ("arena-serve", None),
        ("arena-serve", "1"),
        ("ray-serve-llm-direct-matched", None),
    ]
    assert "ARENA_TEST_SETTING" not in os.environ
    extra = json.loads((logs / "last.json").read_text())["extra"]
    assert [(e["label"], e["levels"]["32"]["ratio"]) for e in extra] == [
        ("arena-serve ARENA_TEST_SETTING=1", 0.99),
        ("ray-serve-llm-direct-matched", 0.96),
    ]
    out = capsys.readouterr().out
    assert "- concurrency 32: 0.960× vLLM (±0.0 %), 1.067× arena-serve as it is" in out
    assert "- ray-serve-llm-direct-matched: throughput at concurrency 32 0.960× vLLM" in out
    assert "- arena-serve ARENA_TEST_SETTING=1: throughput at concurrency 32 0.990× vLLM" in out


def test_only_other_servers_can_be_run_against_arena_serve() -> None:
    with pytest.raises(SystemExit):
        bench_quick._parser().parse_args(["--against", "vllm"])
    args = bench_quick._parser().parse_args(["--against", "ray-serve-llm-ht-matched"])
    assert args.against == ["ray-serve-llm-ht-matched"]
