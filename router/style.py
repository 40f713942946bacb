"""Style of a response, for arena style control: how much markdown it uses.

LM Arena's style control regresses votes on the difference in length and in markdown elements
between the two answers, so a variant cannot climb the leaderboard by formatting alone. The
gateway counts these when it logs a battle; `router.analysis.arena` uses them.
"""

from __future__ import annotations

import re
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
