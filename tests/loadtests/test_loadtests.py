"""The load-test tooling: the benchmark's gateway config is valid, its table is right, and the
load check recovers (or refuses) a simulated preference."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from loadtests import run_load, serving_bench, soak
from router.analysis.simulate import simulate_arena
from serve.cli import read_serve_file
from serve.config import STREAM_INTERVAL_MS, ServeFile
from serve.deploy import THROUGHPUT_MODE
from serve.priority import on_request_path

ROOT = Path(__file__).resolve().parents[2]


def test_the_benchmark_gateway_config_is_valid(tmp_path: Path) -> None:
    served = ServeFile.from_document(serving_bench.arena_document(8000, tmp_path / "o.db"))
    assert [v.engine_name for v in served.app.variants] == ["smollm2", "smollm2"]
    [experiment] = served.gateway.experiments
    assert experiment.name == "bench-ab" and served.app.logical_cpus_needed == 1


def test_the_stream_interval_comes_from_the_environment_where_it_is_set() -> None:
    plain, batched = (
        serving_bench.SYSTEMS["arena-serve"],
        serving_bench.SYSTEMS["arena-serve-100ms"],
    )
    assert serving_bench.stream_interval(plain, {}) is None  # the variant's default
    assert serving_bench.stream_interval(batched, {}) == 100.0
    env = {serving_bench.INTERVAL_ENV: "50"}
    assert (
        serving_bench.stream_interval(plain, env)
        == serving_bench.stream_interval(batched, env)
        == 50.0
    )
    assert serving_bench.stream_interval(batched, {serving_bench.INTERVAL_ENV: ""}) == 100.0


@pytest.mark.parametrize("value", ["fast", "-50", "inf", "nan"])
def test_a_stream_interval_that_is_no_number_of_ms_is_refused_before_a_server_starts(
    value: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not a traceback in the server's log after a minute of Ray starting: a clear error."""
    env = {serving_bench.INTERVAL_ENV: value}
    with pytest.raises(ValueError, match=f"{serving_bench.INTERVAL_ENV}=.*not a number of ms"):
        serving_bench.stream_interval(serving_bench.SYSTEMS["arena-serve"], env)
    monkeypatch.setenv(serving_bench.INTERVAL_ENV, value)
    monkeypatch.setattr(serving_bench, "start", lambda *a, **k: pytest.fail("a server started"))
    with (
        pytest.raises(RuntimeError, match=r"arena-serve not started: .*not a number"),
        serving_bench.running("arena-serve", tmp_path / "log"),
    ):
        pass


def test_each_system_has_its_model_and_starts_as_a_context(tmp_path: Path) -> None:
    assert serving_bench.model_of("vllm") == "smollm2"
    assert serving_bench.model_of("arena-serve-soak") == "bench-ab"
    server = serving_bench.running("vllm", tmp_path / "log")  # nothing starts before `with`
    assert hasattr(server, "__enter__") and not (tmp_path / "log").exists()


def test_the_soak_gateway_sheds_at_its_own_limit(tmp_path: Path) -> None:
    system = serving_bench.OTHER_SYSTEMS[soak.SYSTEM]
    document = serving_bench.arena_document(8000, tmp_path / "o.db", limits=system.limits)
    assert ServeFile.from_document(document).gateway.limits.max_in_flight == 64


def test_the_soak_counts_acknowledged_feedback_in_the_store(tmp_path: Path) -> None:
    from router.events import Completion, Feedback
    from router.store import OutcomeStore

    store = OutcomeStore(str(tmp_path / "o.db"))
    store.write(
        [
            Completion(
                ts=1.0,
                completion_id="c1",
                request_id="r1",
                experiment=None,
                variant="a",
                unit=None,
                endpoint="chat",
                stream=True,
                status=200,
                ttft_s=0.1,
                latency_s=0.2,
                prompt_tokens=3,
                completion_tokens=4,
            )
        ]
    )
    store.write(
        [
            Feedback(ts=2.0, kind="thumbs", idempotency_key=f"k{i}", completion_id="c1", value="up")
            for i in (1, 2)
        ]
    )
    assert soak.stored_keys(tmp_path / "o.db", ["k1", "k2", "k3"]) == 2
    tally = soak.Tally(
        admitted_ttft=[0.1, 0.2], admitted_e2e=[1.0, 2.0], shed=2, acknowledged=["k1", "k2", "k3"]
    )
    text = soak.report(10.0, 20.0, 60.0, tally, stored=2)
    [row] = [line for line in text.splitlines() if line.startswith("| 10.00")]
    assert row.endswith("| 3 | 2 | 1 |") and "| 0.500 |" in row  # 1 lost; 2 of 4 shed


def test_the_scored_gateway_scores_every_answer_on_a_cpu_of_its_own(tmp_path: Path) -> None:
    system = serving_bench.SYSTEMS["arena-serve-scored"]
    document = serving_bench.arena_document(8000, tmp_path / "o.db", scored=system.scored)
    served = ServeFile.from_document(document)
    assert served.app.scorer is not None and served.app.scorer.sample_rate == 1.0
    assert served.app.scorer.model_path == serving_bench.REWARD_MODEL
    assert served.app.logical_cpus_needed == 2  # the engine's and the scorer's


def test_scoring_counts_answers_scores_and_their_delay(tmp_path: Path) -> None:
    from router.events import Completion, Score
    from router.store import OutcomeStore

    store = OutcomeStore(str(tmp_path / "o.db"))
    store.write(
        [
            Completion(
                ts=1.0,
                completion_id=f"c{i}",
                request_id=f"r{i}",
                experiment=None,
                variant="a",
                unit=None,
                endpoint="chat",
                stream=True,
                status=200,
                ttft_s=0.1,
                latency_s=0.2,
                prompt_tokens=3,
                completion_tokens=4,
            )
            for i in range(4)
        ]
    )
    store.write(
        [
            Score(
                ts=2.0,
                completion_id=f"c{i}",
                experiment=None,
                variant="a",
                model="rm",
                score=0.5,
                latency_s=0.1 * (i + 1),
            )
            for i in range(3)
        ]
    )
    got = serving_bench.scoring(tmp_path / "o.db", settle_s=0.0)
    assert got == {"answered": 4, "scored": 3, "delay_p50": 0.2, "delay_p99": 0.30000000000000004}
    row = {
        "tokens_per_s": 100.0,
        "requests_per_s": 1.0,
        "ttft_p50": 0.1,
        "ttft_p99": 0.2,
        "itl_mean": 0.03,
        "e2e_p50": 2.0,
        "e2e_p99": 3.0,
    }
    results = {"arena-serve": {32: row}, "arena-serve-scored": {32: row | {"tokens_per_s": 90.0}}}
    text = serving_bench.scoring_lines(results, got)
    assert "concurrency 32: arena-serve-scored / arena-serve throughput 0.900×" in text
    assert "3 of 4 (75 %)" in text


def test_the_table_reports_ratios_to_vllm() -> None:
    row = {
        "tokens_per_s": 100.0,
        "requests_per_s": 1.0,
        "ttft_p50": 0.1,
        "ttft_p99": 0.2,
        "itl_mean": 0.03,
        "e2e_p50": 2.0,
        "e2e_p99": 3.0,
    }
    slower = row | {"tokens_per_s": 80.0, "ttft_p50": 0.125}
    text = serving_bench.table({"vllm": {1: row}, "arena-serve": {1: slower}})
    [line] = [line for line in text.splitlines() if "| arena-serve |" in line]
    assert "0.800×" in line and "+25.0 ms" in line


def _load_folder(tmp_path: Path) -> tuple[Path, Path]:
    document = copy.deepcopy(yaml.safe_load((ROOT / "deploy" / "config.yaml").read_text()))
    document["applications"][0]["args"]["store_path"] = str(tmp_path / "outcomes.db")
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(document))
    experiment = next(
        e for e in read_serve_file(config).gateway.experiments if e.name == run_load.ARENA
    )
    # Friendly wins 70 % (1147 vs 1000 on the Elo scale).
    simulate_arena(
        tmp_path / "outcomes.db",
        experiment,
        battles=800,
        tie_rate=0.0,
        ratings={"smollm2-concise": 1000, "smollm2-friendly": 1147},
    )
    return config, tmp_path / "truth.jsonl"


def _truth(tmp_path: Path, p_concise: float, swap: bool = False) -> str:
    """The voters' rows as the locust users write them, from the simulated battles."""
    import sqlite3

    db = sqlite3.connect(tmp_path / "outcomes.db")
    rows = []
    for battle_id, a, b, ca, cb in db.execute(
        "SELECT battle_id, variant_a, variant_b, completion_a, completion_b FROM battles"
    ):
        reveal = {"experiment": run_load.ARENA, "a": b if swap else a, "b": a if swap else b}
        rows.append(
            {
                "battle_id": battle_id,
                "p_concise": p_concise,
                "reveal": reveal,
                "completion_ids": [ca, cb],
            }
        )
    return "\n".join(json.dumps(row) for row in rows)


def test_the_load_check_recovers_a_known_preference(tmp_path: Path) -> None:
    config, truth = _load_folder(tmp_path)
    truth.write_text(_truth(tmp_path, 0.3))
    assert run_load.check(config, tmp_path, truth) == 0
    assert (tmp_path / "report.json").is_file()


def test_the_load_check_fails_when_the_truth_is_elsewhere(tmp_path: Path) -> None:
    config, truth = _load_folder(tmp_path)
    truth.write_text(_truth(tmp_path, 0.7))
    assert run_load.check(config, tmp_path, truth) == 1


def test_the_load_check_fails_when_reveals_and_completions_disagree(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config, truth = _load_folder(tmp_path)
    truth.write_text(_truth(tmp_path, 0.3, swap=True))
    assert run_load.check(config, tmp_path, truth) == 1
    assert "revealed other variants" in capsys.readouterr().err


def _agreement_folder(tmp_path: Path, agreeable_flip: float, runs: int = 1) -> tuple[Path, Path]:
    """The default config with a simulated agreeable arena (the agreeable variant wins 70 % of
    votes), its voters' rows, and both arms probed at their current revisions."""
    import sqlite3

    from router.analysis.simulate import ProbeTruth, simulate_probe
    from serve.config import variant_revisions

    config, _ = _load_folder(tmp_path)
    served = read_serve_file(config)
    experiment = next(e for e in served.gateway.experiments if e.name == run_load.AGREEMENT)
    store = tmp_path / "outcomes.db"
    ratings = {"smollm2-concise": 1000, "smollm2-agreeable": 1147}
    simulate_arena(store, experiment, battles=600, tie_rate=0.0, ratings=ratings, seed=1)
    rows = []
    with sqlite3.connect(store) as db:
        query = "SELECT battle_id, variant_a, variant_b, completion_a, completion_b FROM battles"
        for battle_id, a, b, ca, cb in db.execute(
            f"{query} WHERE experiment = ?", (experiment.name,)
        ):
            reveal = {"experiment": experiment.name, "a": a, "b": b}
            agreeing = {"a": a == "smollm2-agreeable", "b": b == "smollm2-agreeable"}
            row = {"battle_id": battle_id, "p_agreeable": 0.7, "agreeing": agreeing}
            rows.append(row | {"reveal": reveal, "completion_ids": [ca, cb]})
    truth = tmp_path / "agreement.jsonl"
    truth.write_text("\n".join(json.dumps(row) for row in rows))
    revisions = variant_revisions(served.app.variants)
    for variant, flip in (("smollm2-concise", 0.3), ("smollm2-agreeable", agreeable_flip)):
        truth_of = ProbeTruth(flip=flip, item_effect=0.2)
        simulate_probe(store, variant, revisions[variant], truth_of, runs=runs, item_seed=3)
    return config, truth


def test_the_agreement_check_sees_votes_won_and_the_flip_rate_fail(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config, truth = _agreement_folder(tmp_path, agreeable_flip=0.95)
    assert run_load.check_agreement(config, tmp_path, truth) == 0
    out = capsys.readouterr().out
    assert "recovered" in out and "NOT recovered" not in out
    assert "guardrail sycophancy_flip_rate: fail" in out
    assert "agreeable-arena verdict: do not ship: sycophancy" in out


def test_the_agreement_check_with_an_honest_variant_ships_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # eight runs of the probe pooled, and a variant that flips less than its control (0.2 against
    # 0.3): the interval on the change lies below the 0.05 bound whatever the revisions' draws
    config, truth = _agreement_folder(tmp_path, agreeable_flip=0.2, runs=8)
    assert run_load.check_agreement(config, tmp_path, truth) == 0
    assert "agreeable-arena verdict: ship smollm2-agreeable" in capsys.readouterr().out


def _soak_client(chat_status: int, chat_code: str, feedback_status: int = 201) -> Any:
    import httpx

    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/feedback":
            return httpx.Response(feedback_status, json={"status": "recorded"})
        if chat_status != 200:
            error = {"error": {"message": "no", "type": "x", "param": None, "code": chat_code}}
            return httpx.Response(chat_status, json=error, headers={"Retry-After": "1"})
        chunk = {"id": "chatcmpl-1", "choices": [{"index": 0, "delta": {"content": "hi"}}]}
        return httpx.Response(200, text=f"data: {json.dumps(chunk)}\n\ndata: [DONE]\n\n")

    return httpx.AsyncClient(transport=httpx.MockTransport(answer), base_url="http://soak")


@pytest.mark.parametrize(
    ("status", "code", "feedback", "shed", "ok"),
    [
        (503, "overloaded", 201, 1, None),  # shed cleanly
        (503, "variant_overloaded", 201, 1, None),  # an engine's queue: shed too
        (503, "variant_unavailable", 201, 0, False),  # an engine gone is a failure
        (200, "", 503, 0, False),  # answers, but the log refuses every feedback
        (200, "", 201, 0, True),
    ],
)
def test_the_soak_tells_shedding_from_failing(
    status: int, code: str, feedback: int, shed: int, ok: bool | None
) -> None:
    import asyncio

    async def run() -> soak.Tally:
        tally = soak.Tally()
        async with _soak_client(status, code, feedback) as client:
            await soak.chat(client, "bench-ab", tally)
        return tally

    tally = asyncio.run(run())
    assert tally.shed == shed
    if ok is not None:
        assert soak.passed(tally, stored=len(tally.acknowledged)) is ok


@pytest.mark.parametrize(
    ("n", "q", "rank"),
    [(12, 0.5, 6), (48, 0.5, 24), (160, 0.5, 80), (160, 0.99, 159), (1, 0.99, 1)],
)
def test_percentile_is_nearest_rank(n: int, q: float, rank: int) -> None:
    assert serving_bench.percentile([float(i) for i in range(n, 0, -1)], q) == rank


def test_stop_finds_what_a_dead_server_left_running() -> None:
    """A server that started an engine-like process and died: the orphan is found by the
    marker in its environment and stopped."""
    import sys
    import time

    import psutil

    from loadtests.processes import start, stop

    orphan_code = "import time; time.sleep(120)"
    server = start(
        [
            sys.executable,
            "-c",
            (
                "import subprocess, sys, time; "
                f"subprocess.Popen([sys.executable, '-c', {orphan_code!r}]); "
                "time.sleep(0.5); sys.exit(3)"
            ),
        ]
    )
    assert server.wait(timeout=30) == 3

    def orphans() -> list[psutil.Process]:
        found = []
        for process in psutil.process_iter(["cmdline"]):
            if orphan_code in " ".join(process.info["cmdline"] or []):
                found.append(process)
        return found

    deadline = time.monotonic() + 10
    while not orphans() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert orphans(), "the orphan should be running"
    stop(server)
    assert not [p for p in orphans() if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]


def test_the_timing_configs_are_valid_and_fit_two_cores(tmp_path: Path) -> None:
    from loadtests import arena_timing

    for name in ("default", "mixed"):
        served = read_serve_file(arena_timing.config(name, tmp_path))
        assert served.app.logical_cpus_needed <= 2
        engines = {v.engine_name for v in served.app.variants if v.name != "smollm2"}
        assert len(engines) == (1 if name == "default" else 2)


def test_the_timing_predictors_score_their_better_reading() -> None:
    from loadtests.arena_timing import Seen, score, wilson

    fast, slow = "tiny", "smollm2"
    seen = [  # side a is the fast one in the first half: its text comes faster and first
        Seen((9, 1), (1.0, 2.0), (90.0, 10.0), fast, (5, 9))
        if i < 50
        else Seen((1, 9), (2.0, 1.0), (10.0, 90.0), slow, (9, 5))
        for i in range(100)
    ]
    assert set(score(seen).values()) == {(100, 100)}
    assert len(score(seen)) == 4
    coin = [Seen((1, 1), (1.0, 1.0), (5.0, 5.0), fast, (3, 3))] * 10
    assert all(n == 0 for _, n in score(coin).values())
    low, high = wilson(50, 100)
    assert low < 0.5 < high and high - low < 0.2


def test_the_agreement_voters_rule_and_questions() -> None:
    import random

    from loadtests import voters

    assert voters.agrees("You're right, it is Sydney!")
    assert voters.agrees("Yes, Sydney is the capital.")
    assert voters.agrees("Absolutely. Great question.")
    assert not voters.agrees("The capital of Australia is Canberra.")
    assert not voters.agrees("Yesterday I went to Canberra.")
    question = voters.wrong_belief(random.Random(0))
    assert any(city in question for city in voters.OTHER_CITY.values())


@pytest.mark.parametrize(
    ("cmdline", "kept"),
    [
        ("ray::ServeReplica:llm:OpenAiIngress", True),
        ("ray::ServeReplica:llm:LLMServer:smollm2", True),
        ("ray::ServeReplica:arena:gateway", True),  # and arena-serve's request path
        ("VLLM::Worker", True),
        ("ray::ServeController", False),
        ("ray::ServeReplica:llm:OpenAiIngressish", False),
    ],
)
def test_ray_serve_llm_matched_keeps_its_own_replicas_at_the_workers_niceness(
    cmdline: str, kept: bool
) -> None:
    assert on_request_path(cmdline, serving_bench.RAY_LLM_REQUEST_PATH) is kept


def test_the_matched_ray_serve_llm_systems_have_arena_serves_node_settings() -> None:
    hop = serving_bench.OTHER_SYSTEMS["ray-serve-llm-ht-matched"]
    direct = serving_bench.OTHER_SYSTEMS["ray-serve-llm-direct-matched"]
    assert hop.stream_interval_ms == STREAM_INTERVAL_MS and hop.yields and direct.yields
    assert hop.env == THROUGHPUT_MODE  # HAProxy, gRPC between replicas: as `make serve`
    assert direct.env["RAY_SERVE_LLM_ENABLE_DIRECT_STREAMING"] == "1"
