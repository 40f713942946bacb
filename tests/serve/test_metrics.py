"""Metrics: counted from committed events, labelled by config only, merged with the engines'."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from router.events import Battle, Completion, Exposure, Feedback, FeedbackResult, Score
from serve.metrics import OutcomeMetrics, merge_engine_metrics


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def completion(cid: str, status: int = 200, stream: bool = True) -> Completion:
    return Completion(
        ts=1.0,
        completion_id=cid,
        request_id="r",
        experiment="exp",
        variant="a",
        unit="alice",
        endpoint="chat",
        stream=stream,
        status=status,
        ttft_s=0.2 if stream else None,
        latency_s=1.2,
        prompt_tokens=7,
        completion_tokens=11,
    )


def test_completions_are_counted_with_bounded_labels() -> None:
    metrics = OutcomeMetrics()
    events = [completion("c1"), completion("c2"), completion("c3", status=503)]
    metrics.observe(events, [None] * 3)
    found = samples(metrics.exposition())
    labels = (("endpoint", "chat"), ("experiment", "exp"), ("variant", "a"))
    assert (
        found[
            (
                "arena_requests_total",
                (*labels[:1], ("experiment", "exp"), ("status", "2xx"), ("variant", "a")),
            )
        ]
        == 2
    )
    assert (
        found[
            (
                "arena_requests_total",
                (*labels[:1], ("experiment", "exp"), ("status", "5xx"), ("variant", "a")),
            )
        ]
        == 1
    )
    exp_variant = (("experiment", "exp"), ("variant", "a"))
    assert found[("arena_completion_tokens_total", exp_variant)] == 22
    assert found[("arena_prompt_tokens_total", exp_variant)] == 14
    assert found[("arena_time_to_first_token_seconds_count", exp_variant)] == 2
    assert found[("arena_inter_token_latency_seconds_sum", exp_variant)] == 2 * (1.0 / 10)
    assert not any("alice" in str(key) or "c1" in str(key) for key in found), "no per-user labels"


def test_feedback_assignments_battles_and_scores() -> None:
    metrics = OutcomeMetrics()
    events = [
        Exposure(
            ts=1.0,
            request_id="r",
            experiment="exp",
            unit_type="user",
            unit="alice",
            variant="a",
            reason="arm",
            exposed=True,
        ),
        Battle(
            ts=1.0,
            battle_id="b1",
            request_id="r",
            experiment="duel",
            unit="alice",
            variant_a="a",
            variant_b="b",
            completion_a="b1-a",
            completion_b="b1-b",
        ),
        Score(
            ts=2.0,
            completion_id="c1",
            experiment="exp",
            variant="a",
            model="rm",
            score=0.7,
            latency_s=0.4,
        ),
        Feedback(ts=3.0, kind="thumbs", idempotency_key="k1", completion_id="c1", value="up"),
        Feedback(ts=3.0, kind="thumbs", idempotency_key="k1", completion_id="c1", value="up"),
        Feedback(ts=3.0, kind="vote", idempotency_key="k2", battle_id="b1", value="tie"),
    ]
    results = [
        None,
        None,
        None,
        FeedbackResult(status="recorded", feedback_id=1, target=("exp", "a")),
        FeedbackResult(status="replayed", feedback_id=1, target=("exp", "a")),
        FeedbackResult(
            status="recorded",
            feedback_id=2,
            reveal=("a", "b"),
            experiment="duel",
            target=("duel", None),
        ),
    ]
    metrics.observe(events, results)
    metrics.scorer_batch.observe(8)
    found = samples(metrics.exposition())
    assert (
        found[
            (
                "arena_assignments_total",
                (("experiment", "exp"), ("reason", "arm"), ("variant", "a")),
            )
        ]
        == 1
    )
    assert found[("arena_battles_total", (("experiment", "duel"),))] == 1
    thumbs = (("experiment", "exp"), ("kind", "thumbs"), ("value", "up"), ("variant", "a"))
    assert found[("arena_feedback_total", thumbs)] == 1  # the replay is not counted
    vote = (("experiment", "duel"), ("kind", "vote"), ("value", "tie"), ("variant", ""))
    assert found[("arena_feedback_total", vote)] == 1
    # Negative buckets: prometheus_client exposes no _sum (it could decrease), only buckets.
    assert found[("arena_reward_score_count", (("experiment", "exp"), ("variant", "a")))] == 1
    assert found[("arena_scorer_batch_size_count", ())] == 1


NODE = """# HELP ray_vllm_num_requests_running Running requests.
# TYPE ray_vllm_num_requests_running gauge
ray_vllm_num_requests_running{{model_name="v",node="{node}"}} 2.0
# HELP ray_vllm_e2e_request_latency_seconds Latency.
# TYPE ray_vllm_e2e_request_latency_seconds histogram
ray_vllm_e2e_request_latency_seconds_bucket{{le="1.0",node="{node}"}} 3.0
ray_vllm_e2e_request_latency_seconds_count{{node="{node}"}} 3.0
ray_vllm_e2e_request_latency_seconds_sum{{node="{node}"}} 1.5
# HELP ray_serve_num_http_requests Not an engine metric.
# TYPE ray_serve_num_http_requests counter
ray_serve_num_http_requests_total 9.0
"""


def test_engine_metrics_of_several_nodes_merge_into_one_valid_exposition() -> None:
    merged = merge_engine_metrics([NODE.format(node="n1"), NODE.format(node="n2")])
    families = {f.name: f for f in text_string_to_metric_families(merged)}  # parses: valid
    assert set(families) == {
        "ray_vllm_num_requests_running",
        "ray_vllm_e2e_request_latency_seconds",
    }
    assert len(families["ray_vllm_num_requests_running"].samples) == 2
    assert merged.count("# TYPE ray_vllm_num_requests_running") == 1
    assert "ray_serve" not in merged
    assert merge_engine_metrics([]) == ""


def test_every_series_of_a_dashboard_panel_has_a_name_of_its_own() -> None:
    import json
    from pathlib import Path

    dashboard = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "arena-serve.json"
    for panel in json.loads(dashboard.read_text())["panels"]:
        targets = panel.get("targets", [])
        if len(targets) > 1:
            legends = [t.get("legendFormat", "__auto") for t in targets]
            assert "__auto" not in legends and len(set(legends)) == len(legends), panel["title"]


def test_what_the_store_already_held_is_not_counted_again(tmp_path: object) -> None:
    """Two gateway replicas each send a unit's unchanged exposure (each its own cache), and a
    retried delivery sends a completion twice: one row each in the store, counted once."""
    import asyncio
    from pathlib import Path

    from serve.outcome_log import OutcomeLog

    path = Path(str(tmp_path)) / "o.db"

    def exposure(request_id: str) -> Exposure:
        return Exposure(
            ts=1.0,
            request_id=request_id,
            experiment="exp",
            unit_type="user",
            unit="alice",
            variant="a",
            reason="arm",
            exposed=True,
        )

    async def run() -> str:
        log = OutcomeLog.func_or_class(str(path))
        await log.record([exposure("r1"), completion("c1")], committed=True)  # replica 1
        await log.record([exposure("r2")], committed=True)  # replica 2: the same assignment
        await log.record([completion("c1")], committed=True)  # a retried delivery
        return await log.metrics()

    found = samples(asyncio.run(run()))
    assignments = [v for (name, _), v in found.items() if name == "arena_assignments_total"]
    requests = [v for (name, _), v in found.items() if name == "arena_requests_total"]
    assert assignments == [1.0] and requests == [1.0]
    tokens = found[("arena_completion_tokens_total", (("experiment", "exp"), ("variant", "a")))]
    assert tokens == 11


def test_no_series_tells_which_variant_wrote_an_arena_side() -> None:
    """A `copy` on side a's completion (no key needed) bumped arena_feedback_total for that
    side's variant: a scrape diff named side a in every battle. Arena sides are counted under
    the experiment with variant "(arena)"; the report attributes them, after the votes."""
    from dataclasses import replace

    metrics = OutcomeMetrics()
    side = replace(completion("b1-a"), experiment="duel", variant="secret-a", battle_id="b1")
    events = [
        side,
        replace(side, completion_id="b1-b", variant="secret-b", completion_tokens=3),
        Score(
            ts=2.0,
            completion_id="b1-a",
            experiment="duel",
            variant="secret-a",
            model="rm",
            score=0.7,
            latency_s=0.4,
            battle_id="b1",
        ),
        Feedback(ts=3.0, kind="copy", idempotency_key="k1", completion_id="b1-a"),
    ]
    results = [
        None,
        None,
        None,
        FeedbackResult(status="recorded", feedback_id=1, target=("duel", None), in_battle=True),
    ]
    metrics.observe(events, results)
    text = metrics.exposition()
    assert "secret" not in text
    found = samples(text)
    arena = (("experiment", "duel"), ("variant", "(arena)"))
    assert found[("arena_completion_tokens_total", arena)] == 11 + 3
    assert found[("arena_reward_score_count", arena)] == 1
    copy = (("experiment", "duel"), ("kind", "copy"), ("value", ""), ("variant", "(arena)"))
    assert found[("arena_feedback_total", copy)] == 1
