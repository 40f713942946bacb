"""The SSE module: engine chunks in a typed form, and what a stream's chunks add up to."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from serve.sse import DONE, SSEChunk, Tally, add_usage, events, sse

ENVELOPE = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "m"}


def chunk(choices: list[dict], **more: object) -> str:
    return sse(ENVELOPE | {"choices": choices, **more})


def test_a_chunk_is_read_for_its_kind_id_text_and_usage() -> None:
    text = SSEChunk(chunk([{"index": 0, "delta": {"content": "Hi"}, "finish_reason": None}]))
    assert (text.is_json, text.is_done, text.is_usage) == (True, False, False)
    assert (text.id, text.text, text.usage) == ("chatcmpl-1", "Hi", None)
    usage = {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
    last = SSEChunk(chunk([], usage=usage))
    assert last.is_usage and last.usage == usage and last.text == ""
    done = SSEChunk(DONE)
    assert done.is_done and done.payload is None and done.id is None


def test_text_is_choice_zeros_for_chat_and_completions() -> None:
    assert SSEChunk(chunk([{"index": 1, "delta": {"content": "no"}}])).text == ""
    assert SSEChunk(chunk([{"index": 0, "text": "yes"}])).text == "yes"
    broken = SSEChunk("data: {not json\n\n")
    assert (broken.id, broken.text) == (None, "")
    with pytest.raises(ValueError):
        broken.usage  # noqa: B018
    assert SSEChunk(": keep-alive\n\n").text == ""


def test_a_tally_keeps_the_first_id_the_text_and_the_last_usage() -> None:
    usage = {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
    stream = [
        chunk([{"index": 0, "delta": {"role": "assistant", "content": ""}}]),
        sse({**ENVELOPE, "id": "other", "choices": [{"index": 0, "delta": {"content": "Hel"}}]}),
        chunk([{"index": 0, "delta": {"content": "lo"}, "finish_reason": "stop"}]),
        chunk([], usage=usage),
    ]
    tally, quiet = Tally(), Tally(keep_text=False)
    for raw in stream:
        tally.add(SSEChunk(raw))
        quiet.add(SSEChunk(raw))
    assert (tally.completion_id, tally.text, tally.usage) == ("chatcmpl-1", "Hello", usage)
    assert (quiet.completion_id, quiet.text, quiet.usage) == ("chatcmpl-1", "", usage)


@given(st.lists(st.text(min_size=1), max_size=5))
def test_events_split_a_string_into_its_events(parts: list[str]) -> None:
    raw = "".join(sse({"choices": [{"index": 0, "text": p}]}) for p in parts)
    assert [json.loads(e.raw[6:])["choices"][0]["text"] for e in events(raw)] == parts


def test_usage_adds_up_integer_counts_only() -> None:
    total: dict[str, int] = {}
    add_usage(total, {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5})
    add_usage(total, {"prompt_tokens": 1, "completion_tokens": None, "total_tokens": 1})
    add_usage(total, None)
    assert total == {"prompt_tokens": 4, "completion_tokens": 2, "total_tokens": 6}
