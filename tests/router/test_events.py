"""Events are built by keyword only: a swapped pair of positional values would pass unnoticed."""

from __future__ import annotations

import dataclasses

import pytest

from router.events import Battle, Completion, Exposure, Feedback, FeedbackResult, Score
from router.style import Style


@pytest.mark.parametrize(
    "cls", [Exposure, Completion, Battle, Score, Feedback, FeedbackResult, Style]
)
def test_every_field_is_keyword_only(cls: type) -> None:
    assert all(f.kw_only for f in dataclasses.fields(cls))
    with pytest.raises(TypeError, match="positional"):
        cls(1.0)


def test_a_battle_keeps_one_style_per_side() -> None:
    battle = Battle(
        ts=1.0,
        battle_id="b1",
        request_id="r1",
        experiment="duel",
        unit="alice",
        variant_a="a",
        variant_b="b",
        completion_a="b1-a",
        completion_b="b1-b",
        style_b=Style(tokens=9, list_items=3),
    )
    assert battle.style_a == Style()
    assert (battle.style_b.tokens, battle.style_b.list_items) == (9, 3)
