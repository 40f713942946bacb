"""Best-of-n: a variant generates k candidates in one engine call; the reward model picks one.

The gateway asks the engine for `n = k` choices, sends them to the RewardScorer (awaited, with a
timeout), and answers with the highest-scored candidate as `choices[0]`, its score in a `reward`
object beside the other candidates' scores. A scorer that is down or slow never fails the
answer: the first candidate is returned, with `reward.score` null and the reason. Usage counts
every candidate, since every candidate was generated.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import Any

from starlette.responses import JSONResponse, Response

from router.events import Score
from serve.engines import choice_text, conversation
from serve.errors import APIError
from serve.records import Call, Endpoint, Recorder
from serve.scorer import Scored, ScoreJob, usable_scores
from serve.single import SingleAnswer, answer_headers
from serve.sse import DONE, sse

logger = logging.getLogger("ray.serve")


class BestOfN:
    """A variant that answers with the best of n candidates, as the reward scorer ranks them."""

    def __init__(self, single: SingleAnswer, recorder: Recorder) -> None:
        self._single = single
        self._recorder = recorder
        # The model the scorer last said it scores with (it may be swapped live); named in an
        # answer the scorer could not rank.
        config = recorder.scorer_config
        self._model = config.model_path.name if config is not None else ""

    async def answer(self, body: dict[str, Any], call: Call, n: int) -> Response:
        """Generate n candidates in one engine call; answer with the one the scorer ranks best."""
        if body.get("n") not in (None, 1):
            raise APIError(
                400,
                f"variant {call.variant!r} answers with the best of {n} candidates: `n` must be "
                "1 or absent",
                param="n",
                code="invalid_value",
            )
        wants_stream = call.stream
        if wants_stream:
            options = body.get("stream_options")
            call.wants_usage = isinstance(options, dict) and options.get("include_usage") is True
        # The engine answers whole (candidates must be scored before one is shown).
        whole = {f: v for f, v in body.items() if f not in ("stream", "stream_options")}
        call.stream = False
        started = await self._single.first_answer({**whole, "n": n}, call)
        call.stream = wants_stream
        if isinstance(started, Response):
            return started
        payload = started[0].model_dump() | {"model": call.variant}
        scored, problem = await self._scores(body, call, payload)
        if scored is not None:
            self._model = scored.model
        scores = scored.scores if scored is not None else None
        model = self._model
        response = best_response(payload, scores, model, problem)
        best = response["reward"]["score"]
        if best is not None:
            score = Score(
                ts=time.time(),
                completion_id=payload["id"],
                experiment=call.experiment,
                variant=call.variant,
                model=model,
                score=best,
                latency_s=call.elapsed_s(),
            )
            call.events.append(score)
        self._recorder.read_text(call, lambda: conversation(body, call.endpoint))
        shown = choice_text(response["choices"][0])
        await self._recorder.record(call, payload["id"], 200, payload.get("usage"), text=shown)
        headers = answer_headers(call)
        if wants_stream:
            text = as_stream(response, call.endpoint, call.wants_usage)
            return Response(text, media_type="text/event-stream", headers=headers)
        return JSONResponse(response, headers=headers)

    async def _scores(
        self, body: dict[str, Any], call: Call, payload: dict[str, Any]
    ) -> tuple[Scored | None, str | None]:
        """The candidates' scores, or None and why (a slow or failed scorer must not fail the
        answer: the first candidate is returned)."""
        recorder = self._recorder
        assert recorder.scorer_handle is not None and recorder.scorer_config is not None
        messages = conversation(body, call.endpoint) or []
        jobs = [
            ScoreJob(
                completion_id=payload["id"],
                experiment=call.experiment,
                variant=call.variant,
                messages=messages,
                response=choice_text(choice),
                ended=time.time(),
            )
            for choice in sorted(payload["choices"], key=lambda c: c["index"])
        ]
        try:
            scored = await asyncio.wait_for(
                recorder.scorer_handle.score.remote(jobs), timeout=recorder.scorer_config.timeout_s
            )
        except asyncio.CancelledError:
            recorder.record_later(call, payload["id"], usage=payload.get("usage"))
            raise
        except Exception as exc:
            logger.warning("best-of-%d for %s unscored: %r", len(jobs), call.request_id, exc)
            return None, f"scorer unavailable ({type(exc).__name__}); first candidate returned"
        return scored, None


def pick_best(scores: Sequence[float | None] | None) -> int:
    """The index of the highest finite score (the first on ties; 0 when none is finite)."""
    finite = [(s, -i) for i, s in enumerate(usable_scores(scores or [])) if s is not None]
    return -max(finite)[1] if finite else 0


def best_response(
    payload: dict[str, Any],
    scores: Sequence[float | None] | None,
    model: str,
    problem: str | None = None,
) -> dict[str, Any]:
    """The engine's n-choice response reduced to its best choice, with the `reward` object."""
    shown = None if scores is None else usable_scores(scores)
    best = pick_best(shown)
    choices = sorted(payload["choices"], key=lambda c: c["index"])
    score = shown[best] if shown else None
    if shown and score is None and problem is None:
        problem = "no candidate could be scored; first candidate returned"
    reward: dict[str, Any] = {
        "model": model,
        "score": score,
        "best_of": len(choices),
        "scores": shown if shown else None,
        "chosen": choices[best]["index"],
    }
    if problem is not None:
        reward["error"] = problem
    return {**payload, "choices": [{**choices[best], "index": 0}], "reward": reward}


def as_stream(response: dict[str, Any], endpoint: Endpoint, wants_usage: bool) -> str:
    """A chosen answer as an SSE stream (best-of-n cannot stream before it has scored): its
    text, tool calls (each with its `index`, as OpenAI streams them) and log probabilities in
    the first chunk, its finish reason in the second."""
    [choice] = response["choices"]
    envelope = {
        "id": response["id"],
        "object": "chat.completion.chunk" if endpoint == "chat" else "text_completion",
        "created": response["created"],
        "model": response["model"],
    }
    if endpoint == "chat":
        delta: dict[str, Any] = {"role": "assistant", "content": choice_text(choice)}
        calls = (choice.get("message") or {}).get("tool_calls")
        if calls:
            delta["tool_calls"] = [{"index": i, **call} for i, call in enumerate(calls)]
        first = {"index": 0, "delta": delta, "finish_reason": None}
        last = {"index": 0, "delta": {}, "finish_reason": choice.get("finish_reason")}
    else:
        first = {"index": 0, "text": choice_text(choice), "finish_reason": None}
        last = {"index": 0, "text": "", "finish_reason": choice.get("finish_reason")}
    if choice.get("logprobs") is not None:
        first["logprobs"] = choice["logprobs"]
    events = [
        sse(envelope | {"choices": [first], "reward": response["reward"]}),
        sse(envelope | {"choices": [last]}),
    ]
    if wants_usage:
        events.append(sse(envelope | {"choices": [], "usage": response.get("usage")}))
    return "".join(events) + DONE
