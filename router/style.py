"""Style of a response, for arena style control: how much markdown it uses.

LM Arena's style control regresses votes on the difference in length and in markdown elements
between the two answers, so a variant cannot climb the leaderboard by formatting alone. The
gateway counts these when it logs a battle (one `Style` per side of a `Battle`);
`router.analysis.arena` uses them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import NamedTuple

_HEADER = re.compile(r"^\s{0,3}#{1,6}\s+\S", re.MULTILINE)
_LIST_ITEM = re.compile(r"^\s*(?:[-*+]|\d+[.)])\s+\S", re.MULTILINE)
_BOLD = re.compile(r"(\*\*|__)(?=\S)(.+?)(?<=\S)\1", re.DOTALL)


class Markdown(NamedTuple):
    headers: int
    list_items: int
    bold: int


def markdown_counts(text: str) -> Markdown:
    """Headers, list items and bold spans in `text` (CommonMark-ish, good enough to control for)."""
    return Markdown(
        len(_HEADER.findall(text)), len(_LIST_ITEM.findall(text)), len(_BOLD.findall(text))
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class Style:
    """One answer's style, as logged with its battle: completion tokens (None where the engine
    reported no usage) and markdown headers, list items and bold spans."""

    tokens: int | None = None
    headers: int = 0
    list_items: int = 0
    bold: int = 0


def style_of(text: str, tokens: int | None) -> Style:
    """The style of an answer of `text` that took `tokens` completion tokens."""
    markdown = markdown_counts(text)
    return Style(
        tokens=tokens,
        headers=markdown.headers,
        list_items=markdown.list_items,
        bold=markdown.bold,
    )
