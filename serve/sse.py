"""Server-sent events as the engines write them and the gateway relays them.

vLLM's `LLMServer` yields a stream as batches (lists) of SSE strings, each `data: {json}\\n\\n`
or `data: [DONE]\\n\\n`. `SSEChunk` is one of them in a typed form: the relay, the arena merge
and best-of-n read a chunk's kind, id, first-choice text and usage through it, and the JSON is
parsed only when one of them asks (a plain relay passes most chunks on without parsing them).
`Tally` adds up what a stream said: its completion id, the text of choice 0, and usage.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

DATA = "data: "
DONE = "data: [DONE]\n\n"
USAGE_FIELDS = ("prompt_tokens", "completion_tokens", "total_tokens")


def sse(payload: Mapping[str, Any], *, compact: bool = True) -> str:
    """One SSE event holding `payload` as JSON: compact, as vLLM writes its own chunks, or with
    `json.dumps`'s spaces, as the gateway writes an error in a stream."""
    text = json.dumps(payload, separators=(",", ":")) if compact else json.dumps(payload)
    return f"{DATA}{text}\n\n"


class SSEChunk:
    """One SSE event string of an engine's stream."""

    __slots__ = ("__dict__", "raw")

    def __init__(self, raw: str) -> None:
        self.raw = raw

    @property
    def is_done(self) -> bool:
        return self.raw.startswith("data: [DONE]")

    @property
    def is_json(self) -> bool:
        return self.raw.startswith("data: {")

    @cached_property
    def is_usage(self) -> bool:
        """The usage-only chunk vLLM sends last (`choices` empty), told without parsing."""
        return self.is_json and '"choices":[]' in self.raw and '"usage"' in self.raw

    @cached_property
    def payload(self) -> dict[str, Any] | None:
        """The event's JSON object: None for [DONE] and keep-alives, a ValueError for an
        object that does not parse (a stream the gateway cannot read is a broken stream)."""
        if not self.is_json:
            return None
        value = json.loads(self.raw[len(DATA) :])
        return value if isinstance(value, dict) else None

    @property
    def choices(self) -> list[dict[str, Any]]:
        return (self.payload or {}).get("choices") or []

    @property
    def usage(self) -> dict[str, Any] | None:
        return (self.payload or {}).get("usage")

    @property
    def id(self) -> str | None:
        """The completion id; None where the chunk has none or does not parse."""
        return self._readable().get("id")

    @property
    def text(self) -> str:
        """The text this chunk adds to choice 0 ("" if none: with `n` > 1 the engine streams
        each choice in chunks of its own)."""
        choices = self._readable().get("choices") or []
        if not choices or choices[0].get("index", 0) != 0:
            return ""
        return delta_text(choices[0])

    def _readable(self) -> dict[str, Any]:
        """The payload, or {} where it does not parse: for what only informs the records."""
        try:
            return self.payload or {}
        except ValueError:
            return {}


def delta_text(choice: Mapping[str, Any]) -> str:
    """The text of a streamed choice: a chat delta's content or a completion's text."""
    delta = choice.get("delta")
    if isinstance(delta, dict):
        return delta.get("content") or ""
    return choice.get("text") or ""


def events(item: str) -> Iterator[SSEChunk]:
    """The SSE events in one string an engine yielded (usually one; split to be sure)."""
    for part in item.split("\n\n"):
        if part:
            yield SSEChunk(f"{part}\n\n")


def add_usage(total: dict[str, int], usage: Mapping[str, Any] | None) -> None:
    """Add one answer's token counts into `total` (an arena sums its two sides)."""
    for name in USAGE_FIELDS:
        value = (usage or {}).get(name)
        if isinstance(value, int):
            total[name] = total.get(name, 0) + value


@dataclass(slots=True)
class Tally:
    """What a stream has said so far: its completion id, choice 0's text, and its usage."""

    keep_text: bool = True
    completion_id: str | None = None
    usage: dict[str, Any] | None = None
    parts: list[str] = field(default_factory=list)

    def add(self, chunk: SSEChunk) -> None:
        if self.completion_id is None and chunk.is_json:
            self.completion_id = chunk.id
        if chunk.is_usage:
            self.usage = chunk.usage
        elif self.keep_text:
            self.parts.append(chunk.text)

    @property
    def text(self) -> str:
        return "".join(self.parts)
