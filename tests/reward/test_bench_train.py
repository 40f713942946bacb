"""The training benchmark's data: export-shaped pairs that train-reward reads, split by voter."""

from __future__ import annotations

import json
from pathlib import Path

from reward.bench_train import KEYWORD, synthetic_pairs
from reward.pairs import load_pairs


def test_synthetic_pairs_load_as_an_export_with_the_keyword_only_in_the_chosen_answer(
    tmp_path: Path,
) -> None:
    records = synthetic_pairs(500, seed=3)
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    pairs = load_pairs(path)
    assert len(pairs.pairs) == 500
    assert all(
        KEYWORD in p.answer("chosen") and KEYWORD not in p.answer("rejected") for p in pairs.pairs
    )
    by_voter: dict[str, set[str]] = {}
    for record in records:
        by_voter.setdefault(record["voter"], set()).add(record["split"])
    assert all(len(splits) == 1 for splits in by_voter.values())  # a voter on one side only
    heldout = sum(r["split"] == "heldout" for r in records) / len(records)
    assert 0.1 < heldout < 0.3
    assert synthetic_pairs(500, seed=3) == records  # one seed, one file
