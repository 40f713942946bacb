"""Markdown counts and the style record of an answer, for style control."""

from __future__ import annotations

import pytest

from router.style import Markdown, Style, markdown_counts, style_of


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", Markdown(0, 0, 0)),
        ("Plain words, no markdown at all.", Markdown(0, 0, 0)),
        ("# Title\n## Sub\n#no-space is not a header", Markdown(2, 0, 0)),
        ("- a\n* b\n+ c\n1. d\n2) e\n  - nested", Markdown(0, 6, 0)),
        ("**bold** and __bold__ but ** not ** and a*b*c", Markdown(0, 0, 2)),
        ("# Plan\n\n1. **Boil** water\n2. Add *tea*\n", Markdown(1, 2, 1)),
        ("3 * 4 = 12\n-5 degrees", Markdown(0, 0, 0)),
    ],
)
def test_markdown_counts(text: str, expected: Markdown) -> None:
    assert markdown_counts(text) == expected


def test_style_of_counts_the_markdown_and_keeps_the_tokens() -> None:
    text = "# Plan\n\n1. **Boil** water\n2. Add *tea*\n"
    assert style_of(text, 12) == Style(tokens=12, headers=1, list_items=2, bold=1)
    assert style_of("", None) == Style()
