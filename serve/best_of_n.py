"""Best-of-n: a variant generates k candidates in one engine call; the reward model picks one.

The gateway asks the engine for `n = k` choices, sends them to the RewardScorer (awaited, with a
timeout), and answers with the highest-scored candidate as `choices[0]`, its score in a `reward`
object beside the other candidates' scores. A scorer that is down or slow never fails the
answer: the first candidate is returned, with `reward.score` null and the reason. Usage counts
every candidate, since every candidate was generated.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from serve.relay import DONE, Endpoint, sse
from serve.scorer import usable_scores


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


def choice_text(choice: dict[str, Any]) -> str:
    message = choice.get("message")
    if isinstance(message, dict):
        return message.get("content") or ""
    return choice.get("text") or ""


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
