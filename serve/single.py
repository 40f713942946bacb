"""The execute stage for one variant: call its engine and relay the answer as it comes.

A whole answer is returned as the engine made it, renamed for a prompt-only variant. A stream
is relayed batch by batch, never re-buffered (`relay`): the completion is logged, and committed,
before the client receives the final `[DONE]`, so a feedback call on its id always finds it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

from starlette.responses import Response, StreamingResponse

from router.experiment import CONFIRM_SUFFIX
from serve.engines import (
    Engines,
    EngineStream,
    choice_text,
    conversation,
    engine_error,
    first_error,
    is_error,
    unavailable,
)
from serve.errors import APIError
from serve.records import CLIENT_CLOSED, Call, Recorder
from serve.sse import DONE, SSEChunk, Tally, sse

logger = logging.getLogger("ray.serve")


def answer_headers(call: Call) -> dict[str, str]:
    # x-request-id is set by the Serve proxy from the same request context.
    headers = {"x-variant": call.variant}
    if call.experiment is not None:  # the experiment called (a confirmation run is its own)
        headers["x-experiment"] = call.experiment.removesuffix(CONFIRM_SUFFIX)
    return headers


class SingleAnswer:
    """One variant answers a request."""

    def __init__(self, engines: Engines, recorder: Recorder) -> None:
        self._engines = engines
        self._recorder = recorder

    async def answer(self, body: dict[str, Any], call: Call) -> Response:
        """Relay the variant's response, or its stream as it comes."""
        self._recorder.read_text(call, lambda: conversation(body, call.endpoint))
        started = await self.first_answer(body, call)
        if isinstance(started, Response):
            return started
        first, stream = started
        if not isinstance(first, list):
            first.model = call.variant  # a prompt-only variant's engine answers in its owner's name
            usage = first.usage.model_dump() if getattr(first, "usage", None) else None
            text = choice_text(first.choices[0].model_dump()) if first.choices else None
            await self._recorder.record(call, first.id, 200, usage, text=text)
            if text is not None:
                self._recorder.score_later(call, first.id, text)
            return Response(
                first.model_dump_json(), media_type="application/json", headers=answer_headers(call)
            )
        call.ttft_s = call.elapsed_s()  # only a stream shows a first token
        return StreamingResponse(
            self.relay(call, first, stream),
            media_type="text/event-stream",
            headers=answer_headers(call),
        )

    async def first_answer(
        self, body: dict[str, Any], call: Call
    ) -> tuple[Any, EngineStream] | Response:
        """Call the engine; its first yield and the stream, or the error response (logged)."""
        headers = answer_headers(call)
        try:
            engine_request = self._engines.request(body, call)
        except APIError as exc:
            await self._recorder.record(call, call.request_id, exc.status, error=exc.message)
            return exc.response(headers)
        stream = self._engines.start(call, engine_request)
        try:
            first = await anext(stream)
        except asyncio.CancelledError:  # the client left before the first answer
            stream.cancel()
            self._recorder.record_later(call, call.request_id)
            raise
        except Exception as exc:
            logger.warning("variant %s failed request %s: %r", call.variant, call.request_id, exc)
            await self._recorder.record(call, call.request_id, 503, error=type(exc).__name__)
            return unavailable(call.variant, exc).response(headers)
        error = first_error(first)
        if error is not None:
            await self._recorder.record(call, call.request_id, error.status, error=error.message)
            return error.response(headers)
        return first, stream

    async def _record_end(self, call: Call, tally: Tally, status: int, error: str | None) -> None:
        """The stream's end reached: log it (committed before the client's [DONE]), score it."""
        completion_id = tally.completion_id or call.request_id
        text = tally.text if tally.keep_text else None
        await self._recorder.record(call, completion_id, status, tally.usage, error, text=text)
        if text is not None and status == 200:
            self._recorder.score_later(call, completion_id, text)

    async def relay(self, call: Call, first: list, rest: EngineStream) -> AsyncIterator[str]:
        """Pass the engine's SSE batches through; log the completion before the final [DONE]."""
        tally = Tally(keep_text=call.prompt is not None)
        logged = False
        status, error = 200, None
        engine = self._engines.variants[call.variant].served_model
        # A prompt-only variant's engine names its owner in every chunk: name the variant.
        # (Inside a chunk's text a quote is escaped, so only the envelope's field matches.)
        renamed = (f'"model":"{engine}"', f'"model":"{call.variant}"')
        batch: list | None = first
        try:
            while batch is not None:
                out = []
                for item in batch:
                    if is_error(item):
                        problem = engine_error(item)
                        status, error = problem.status, problem.message
                        out.append(sse(problem.body(), compact=False))
                        continue
                    chunk = SSEChunk(item)
                    if chunk.is_done:
                        if not logged:
                            logged = True
                            await self._record_end(call, tally, status, error)
                    else:
                        tally.add(chunk)
                        if chunk.is_usage and not call.wants_usage:
                            continue
                    out.append(item)
                if out:
                    joined = "".join(out)
                    yield joined.replace(*renamed) if engine != call.variant else joined
                batch = await anext(rest, None)
        except Exception as exc:
            logger.warning("stream of %s from %s broke: %r", call.request_id, call.variant, exc)
            status, error = 503, type(exc).__name__
            problem = APIError(
                503,
                f"variant {call.variant!r} failed mid-stream; retry",
                code="variant_unavailable",
            )
            yield sse(problem.body(), compact=False) + DONE
        finally:
            if batch is not None:  # ended early (client gone): stop the engine's generation
                rest.cancel()
                if error is None:
                    status, error = CLIENT_CLOSED, "client_closed"
            if not logged:
                # The client may be gone (cancelled task): send without awaiting the answer.
                completion_id = tally.completion_id or call.request_id
                self._recorder.record_later(call, completion_id, status, tally.usage, error)
