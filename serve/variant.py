"""The VariantServer: Ray Serve LLM's `LLMServer` with the first token sent at once.

`LLMServer` gathers a stream's SSE chunks and yields them in batches every
`stream_batching_interval_ms` (50 ms): fewer messages between replicas, so less CPU per token.
But its first batch also waits the whole interval, which adds up to 50 ms (25 ms on average) to
every time to first token. Here the first chunks go out the moment the engine yields them and
only the rest is batched, so batching saves the same per-token work without costing TTFT.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any, TypeVar

from ray.serve.llm import LLMServer

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


class VariantServer(LLMServer):
    """The engine deployment of a variant (or of several prompt-only variants sharing it)."""

    def _batch_output_stream(self, generator: AsyncIterator[Any]) -> AsyncIterator[list[Any]]:
        interval_ms = self._get_batch_interval_ms()
        if not interval_ms:
            return super()._batch_output_stream(generator)
        return first_then_batched(generator, interval_ms / 1000)
