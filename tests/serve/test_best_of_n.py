"""Best-of-n: the best candidate is chosen, its score reported; no scores never fail the answer."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from serve.best_of_n import as_stream, best_response, pick_best


def payload(texts: list[str], chat: bool = True) -> dict:
    def choice(i: int, text: str) -> dict:
        body = {"message": {"role": "assistant", "content": text}} if chat else {"text": text}
        return {"index": i, "finish_reason": "length", **body}

    return {
        "id": "chatcmpl-1",
        "object": "chat.completion" if chat else "text_completion",
        "created": 7,
        "model": "v",
        "choices": [choice(i, t) for i, t in enumerate(texts)],
        "usage": {"prompt_tokens": 3, "completion_tokens": 9, "total_tokens": 12},
    }


@given(st.lists(st.floats(-1e6, 1e6), min_size=1, max_size=16))
def test_pick_best_is_the_first_maximum(scores: list[float]) -> None:
    best = pick_best(scores)
    assert scores[best] == max(scores) and best == scores.index(max(scores))


@pytest.mark.parametrize("scores", [None, [], [math.nan, None, math.inf]])
def test_without_usable_scores_the_first_candidate_wins(scores: list[float] | None) -> None:
    assert pick_best(scores) == 0


@given(
    st.lists(
        st.one_of(st.none(), st.floats(-1e6, 1e6), st.sampled_from([math.nan, math.inf])),
        min_size=1,
        max_size=8,
    )
)
def test_the_best_finite_score_wins_and_the_answer_is_json(scores: list[float | None]) -> None:
    answer = best_response(payload([str(i) for i in range(len(scores))]), scores, "rm")
    json.dumps(answer, allow_nan=False)  # what Starlette's JSONResponse requires
    finite = [s for s in scores if s is not None and math.isfinite(s)]
    reward = answer["reward"]
    if finite:
        assert reward["score"] == max(finite) and scores.index(max(finite)) == reward["chosen"]
        assert "error" not in reward
    else:
        assert reward["score"] is None and reward["chosen"] == 0 and "error" in reward
    stream = as_stream(answer, "chat", wants_usage=False)
    for event in stream.removesuffix("data: [DONE]\n\n").split("\n\n")[:-1]:
        json.loads(event.removeprefix("data: "), parse_constant=lambda c: pytest.fail(c))


def test_best_response_keeps_one_choice_and_reports_scores() -> None:
    answer = best_response(payload(["x", "y", "z"]), [0.1, 0.9, 0.5], "rm")
    assert answer["choices"] == [
        {"index": 0, "finish_reason": "length", "message": {"role": "assistant", "content": "y"}}
    ]
    assert answer["reward"] == {
        "model": "rm",
        "score": 0.9,
        "best_of": 3,
        "scores": [0.1, 0.9, 0.5],
        "chosen": 1,
    }
    assert answer["usage"]["completion_tokens"] == 9  # every candidate's tokens


def test_an_unscored_answer_says_why() -> None:
    answer = best_response(payload(["x", "y"]), None, "rm", "scorer unavailable")
    assert answer["choices"][0]["message"]["content"] == "x"
    assert answer["reward"]["score"] is None and answer["reward"]["error"] == "scorer unavailable"


@pytest.mark.parametrize("chat", [True, False])
@pytest.mark.parametrize("usage", [True, False])
def test_as_stream_is_a_well_formed_sse_answer(chat: bool, usage: bool) -> None:
    answer = best_response(payload(["one", "two"], chat), [0.0, 1.0], "rm")
    text = as_stream(answer, "chat" if chat else "completions", usage)
    events = [e.removeprefix("data: ") for e in text.strip().split("\n\n")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert len(chunks) == (3 if usage else 2)
    first = chunks[0]["choices"][0]
    assert (first["delta"]["content"] if chat else first["text"]) == "two"
    assert chunks[0]["reward"]["score"] == 1.0
    assert chunks[1]["choices"][0]["finish_reason"] == "length"
    assert ("usage" in chunks[-1]) == usage


def test_a_streamed_best_of_n_answer_carries_the_chosen_tool_calls_and_logprobs() -> None:
    """Streamed, the chosen candidate lost its tool calls and log probabilities: a client
    asking for either got an answer without them."""
    calls = [
        {
            "id": "call-7",
            "type": "function",
            "function": {"name": "weather", "arguments": '{"city": "Paris"}'},
        }
    ]
    logprobs = {
        "content": [{"token": "Hi", "logprob": -0.2, "bytes": [72, 105], "top_logprobs": []}]
    }
    whole = payload(["", "Hi"])
    whole["choices"][0]["message"]["tool_calls"] = calls
    whole["choices"][0]["finish_reason"] = "tool_calls"
    whole["choices"][1]["logprobs"] = logprobs
    for best, expected in ((0, "tool_calls"), (1, "logprobs")):
        scores = [1.0, 0.0] if best == 0 else [0.0, 1.0]
        chunks = [
            json.loads(e.removeprefix("data: "))
            for e in as_stream(best_response(whole, scores, "rm"), "chat", False)
            .removesuffix("data: [DONE]\n\n")
            .strip()
            .split("\n\n")
        ]
        first = chunks[0]["choices"][0]
        if expected == "tool_calls":
            assert first["delta"]["tool_calls"] == [{"index": 0, **calls[0]}]
            assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"
        else:
            assert first["logprobs"] == logprobs and "tool_calls" not in first["delta"]
    completions = payload(["a", "b"], chat=False)
    completions["choices"][1]["logprobs"] = {"tokens": ["b"], "token_logprobs": [-0.1]}
    text = as_stream(best_response(completions, [0.0, 1.0], "rm"), "completions", False)
    first = json.loads(text.split("\n\n")[0].removeprefix("data: "))["choices"][0]
    assert first["logprobs"] == {"tokens": ["b"], "token_logprobs": [-0.1]}
