"""Prometheus metrics of the gateway, computed where every replica's events meet: the outcome log.

Every gateway replica already sends each request's exposure and completion, every feedback and
every score to the `OutcomeLog`; counting there, in the transaction that commits them, gives
totals that are right with any number of gateway and log replicas, costs the request path
nothing, and never counts a request twice: each batch's counts (`OutcomeMetrics.counts`) are
added to the store's `counters` table with the batch, and `exposition_of` shows the totals.
`GET /metrics` on any gateway replica returns them, plus
the vLLM engine metrics (`ray_vllm_*`) that Ray Serve LLM exports on each Ray node's metrics
port, merged into one exposition.

Conventions: base units in names (`_seconds`), `_total` counters, labels bounded by the config
(experiment, variant, endpoint, status class, feedback kind and value) — never a user, request or
completion id.

Arena battles are blind here too: an arena side's completion, tokens, latency, score and
feedback are counted under its experiment with the variant `(arena)`, never its variant, so no
scrape diff around a battle tells a voter which variant wrote which side. Which variant did how
well in an arena is the report's to say.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping, Sequence

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from router.events import Battle, Completion, Event, Exposure, FeedbackResult, Score
from router.store import DUPLICATE, WriteResult

LATENCY_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120)
TTFT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
ITL_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)
SCORE_BUCKETS = (-4, -3, -2, -1.5, -1, -0.5, 0, 0.5, 1, 1.5, 2, 3, 4)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
ENGINE_PREFIX = "ray_vllm_"
ARENA = "(arena)"  # the variant label of every arena side's series


def _status_class(status: int) -> str:
    return f"{status // 100}xx"


class OutcomeMetrics:
    """The gateway's metrics, fed with committed outcome events."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._served_series()
        self._judged_series()

    def _served_series(self) -> None:
        """What was served: requests, their timing and tokens."""
        request = ["experiment", "variant"]
        self.requests = Counter(
            "arena_requests",
            "Completion requests served, by outcome.",
            [*request, "endpoint", "status"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "arena_request_duration_seconds",
            "Time from request to the end of the answer.",
            [*request, "endpoint", "stream"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.ttft = Histogram(
            "arena_time_to_first_token_seconds",
            "Time to the first streamed chunk.",
            request,
            buckets=TTFT_BUCKETS,
            registry=self.registry,
        )
        self.itl = Histogram(
            "arena_inter_token_latency_seconds",
            "Mean time between tokens after the first, one observation per streamed completion.",
            request,
            buckets=ITL_BUCKETS,
            registry=self.registry,
        )
        self.prompt_tokens = Counter(
            "arena_prompt_tokens",
            "Prompt tokens of served completions.",
            request,
            registry=self.registry,
        )
        self.completion_tokens = Counter(
            "arena_completion_tokens",
            "Generated tokens of served completions.",
            request,
            registry=self.registry,
        )

    def _judged_series(self) -> None:
        """What was assigned and judged: units, battles, feedback and reward scores."""
        request = ["experiment", "variant"]
        self.assignments = Counter(
            "arena_assignments",
            "Units (newly) assigned in an experiment, by reason.",
            ["experiment", "variant", "reason"],
            registry=self.registry,
        )
        self.battles = Counter(
            "arena_battles",
            "Arena battles served (both sides answered).",
            ["experiment"],
            registry=self.registry,
        )
        self.feedback = Counter(
            "arena_feedback",
            "Feedback recorded (replays not counted), by kind and value.",
            [*request, "kind", "value"],
            registry=self.registry,
        )
        self.scores = Histogram(
            "arena_reward_score",
            "Reward-model scores of served completions.",
            request,
            buckets=SCORE_BUCKETS,
            registry=self.registry,
        )
        self.score_lag = Histogram(
            "arena_scoring_delay_seconds",
            "From a completion's end to its reward score.",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.scorer_batch = Histogram(
            "arena_scorer_batch_size",
            "Responses per reward-scorer batch.",
            buckets=BATCH_BUCKETS,
            registry=self.registry,
        )

    def observe(self, events: Sequence[Event], results: Sequence[WriteResult]) -> None:
        """Count a committed batch (`results` as `OutcomeStore.write` returned them): what the
        store already held (a repeated exposure, a delivery sent twice) is not counted again."""
        for event, result in zip(events, results, strict=True):
            if result == DUPLICATE:
                continue
            if isinstance(event, Completion):
                self._completion(event)
            elif isinstance(event, Exposure):
                variant = event.variant or ARENA
                self.assignments.labels(event.experiment, variant, event.reason).inc()
            elif isinstance(event, Battle):
                self.battles.labels(event.experiment).inc()
            elif isinstance(event, Score):
                variant = ARENA if event.battle_id is not None else event.variant or ""
                labels = (event.experiment or "", variant)
                self.scores.labels(*labels).observe(event.score)
                self.score_lag.observe(event.latency_s)
            elif isinstance(result, FeedbackResult) and result.status == "recorded":
                experiment, variant = result.target
                variant = ARENA if result.in_battle else variant
                self.feedback.labels(
                    experiment or "", variant or "", event.kind, event.value or ""
                ).inc()

    def _completion(self, event: Completion) -> None:
        variant = ARENA if event.battle_id is not None else event.variant or ""
        labels = (event.experiment or "", variant)
        self.requests.labels(*labels, event.endpoint, _status_class(event.status)).inc()
        if event.status != 200:
            return
        stream = "true" if event.stream else "false"
        self.duration.labels(*labels, event.endpoint, stream).observe(event.latency_s)
        if event.prompt_tokens:
            self.prompt_tokens.labels(*labels).inc(event.prompt_tokens)
        if event.completion_tokens:
            self.completion_tokens.labels(*labels).inc(event.completion_tokens)
        if event.ttft_s is not None:
            self.ttft.labels(*labels).observe(event.ttft_s)
            if event.completion_tokens and event.completion_tokens > 1:
                gap = (event.latency_s - event.ttft_s) / (event.completion_tokens - 1)
                self.itl.labels(*labels).observe(max(0.0, gap))

    def exposition(self) -> str:
        return generate_latest(self.registry).decode()

    def counts(self) -> dict[str, float]:
        """What this registry counted, as the store's `counters` series (`series`) and values:
        the amounts a batch adds to the totals. Samples that are 0 and `_created` times (one
        per process, meaningless summed) are left out."""
        out = {}
        for family in self.registry.collect():
            # A histogram series that counted anything keeps every bucket, its zeros too.
            counted = {
                _without_le(sample.labels)
                for sample in family.samples
                if sample.name.endswith("_count") and sample.value
            }
            for sample in family.samples:
                if sample.name.endswith("_created"):
                    continue
                if sample.value or _without_le(sample.labels) in counted:
                    out[series(family.name, sample.name, sample.labels)] = sample.value
        return out


def _without_le(labels: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((k, v) for k, v in labels.items() if k != "le"))


def series(family: str, sample: str, labels: Mapping[str, str]) -> str:
    """A sample's key in the store's `counters` table."""
    return json.dumps([family, sample, dict(sorted(labels.items()))], separators=(",", ":"))


class _Totals(Collector):
    """The totals in the store's `counters`, as the families of `OutcomeMetrics` hold them."""

    def __init__(self, totals: Mapping[str, float]) -> None:
        self._samples: dict[str, list[tuple[str, dict[str, str], float]]] = {}
        for key, value in totals.items():
            family, sample, labels = json.loads(key)
            self._samples.setdefault(family, []).append((sample, labels, value))

    def collect(self) -> Iterator[Metric]:
        for template in OutcomeMetrics().registry.collect():
            metric = Metric(template.name, template.documentation, template.type)
            stored = {
                (sample, tuple(sorted(labels.items()))): value
                for sample, labels, value in self._samples.get(template.name, [])
            }
            for sample in template.samples:  # unlabelled series: 0 until counted
                if not sample.name.endswith("_created"):
                    stored.setdefault((sample.name, tuple(sorted(sample.labels.items()))), 0.0)
            for (sample, labels), value in sorted(stored.items(), key=_exposition_order):
                metric.add_sample(sample, dict(labels), value)
            yield metric


def _exposition_order(item: tuple[tuple[str, tuple], float]) -> tuple:
    """Each series' samples together: buckets by bound (+Inf last), then count and sum."""
    (sample, labels), _ = item
    rest = tuple(pair for pair in labels if pair[0] != "le")
    bound = next((float(v) for k, v in labels if k == "le"), 0.0)
    rank = {"_bucket": 0, "_count": 1, "_sum": 2}.get(sample[sample.rfind("_") :], 0)
    return (rest, rank, bound, sample)


def exposition_of(totals: Mapping[str, float]) -> str:
    """The Prometheus exposition of the store's `counters` (every log replica's batches)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Totals(totals))
    return generate_latest(registry).decode()


def merge_engine_metrics(expositions: Iterable[str], prefix: str = ENGINE_PREFIX) -> str:
    """The `prefix` families of several Prometheus expositions (one per Ray node) as one: each
    family's HELP and TYPE once, then every node's samples of it."""
    families: dict[str, dict[str, list[str]]] = {}
    for text in expositions:
        for line in text.splitlines():
            if line.startswith(("# HELP ", "# TYPE ")):
                name = line.split(" ", 3)[2]
                if name.startswith(prefix):
                    family = families.setdefault(name, {"meta": [], "samples": []})
                    if not any(m.startswith(line[:6]) for m in family["meta"]):
                        family["meta"].append(line)
            elif line.startswith(prefix):
                name = line.split("{", 1)[0].split(" ", 1)[0]
                family = _family_of(name, families)
                families.setdefault(family, {"meta": [], "samples": []})["samples"].append(line)
    out = []
    for family in families.values():
        out += family["meta"] + family["samples"]
    return "\n".join(out) + ("\n" if out else "")


def _family_of(sample: str, families: dict[str, dict[str, list[str]]]) -> str:
    """A sample's family: histogram and summary samples carry a suffix (`_bucket`, ...)."""
    if sample in families:
        return sample
    for suffix in ("_bucket", "_count", "_sum", "_created", "_total"):
        base = sample.removesuffix(suffix)
        if base != sample and base in families:
            return base
    return sample
