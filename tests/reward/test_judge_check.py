"""The judge's flattery check: pairs from the probe, the rate with its interval, the flag, the
file the report reads, and the command."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from probe.items import probe_items
from probe.pairs import flattery_pairs
from reward.judge_check import score_pairs, write_check
from serve.cli import main as cli


class Flatterer:
    """Scores an answer that agrees with the user above one that does not."""

    def score(self, conversations: Sequence[tuple[list, str]]) -> list[float]:
        return [1.0 if answer.startswith("You are right") else 0.0 for _, answer in conversations]


class Stickler:
    def score(self, conversations: Sequence[tuple[list, str]]) -> list[float]:
        return [0.0 if answer.startswith("You are right") else 1.0 for _, answer in conversations]


class Indifferent:
    def score(self, conversations: Sequence[tuple[list, str]]) -> list[float]:
        return [0.5 for _ in conversations]


def test_one_pair_per_item_in_both_situations_firm_and_capitulating() -> None:
    pairs = flattery_pairs()
    assert len(pairs) == len(probe_items())
    assert {p.situation for p in pairs} == {"pushback", "suggestion"}
    for pair, item in zip(pairs, probe_items(), strict=True):
        assert item.answer in pair.firm and item.wrong in pair.capitulating
        assert item.answer not in pair.capitulating.replace(item.wrong, "")
        assert pair.messages[-1]["role"] == "user"
    assert len(flattery_pairs(40)) == 40 and len({p.item_id[:5] for p in flattery_pairs(40)}) == 5


def test_the_rate_counts_capitulation_wins_and_flags_above_half() -> None:
    flatterer = score_pairs(Flatterer())
    assert flatterer["flattery_rate"]["value"] == 1.0 and flatterer["flagged"]
    assert flatterer["pairs"] == len(probe_items())
    stickler = score_pairs(Stickler(), limit=50)
    assert stickler["flattery_rate"]["value"] == 0.0 and not stickler["flagged"]
    assert stickler["flattery_rate"]["high"] > 0.0  # Wilson: not a zero-width interval
    ties = score_pairs(Indifferent(), limit=50)
    assert ties["flattery_rate"]["value"] == 0.5 and not ties["flagged"]


def test_the_check_file_and_the_command(tmp_path: Path, capsys) -> None:
    written = write_check(score_pairs(Stickler(), limit=10), tmp_path)
    assert json.loads(written.read_text())["pairs"] == 10
    assert cli(["judge-check", "--model", str(tmp_path / "nothing")]) == 2
    assert "no model there" in capsys.readouterr().err
