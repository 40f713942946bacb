"""Preference data from the outcome log, in TRL's conversational formats.

What users said becomes training data (`arena-serve export-preferences`):

- **pairs from votes** (`source: vote`): a battle voted `a` or `b`, the winner's answer
  `chosen` and the loser's `rejected`. Ties and `both_bad` say nothing of which is better: they
  are counted and left out, as are battles whose vote does not count (an answer named a model,
  `identity_revealed`);
- **pairs from regenerations** (`source: regenerate`): a `regenerate` that names the answer
  which replaced the judged one (`new_completion_id`); the replacement is chosen, the
  regenerated answer rejected. A pair whose two prompts differ is left out (counted);
- **unpaired records from thumbs** (`source: thumbs`): `prompt`, `completion`, `label`
  (TRL's unpaired preference format, for KTO-style training).

Only answers whose text the store kept (`store.keep_text`) can be exported. Every record names
its experiment, both variants (or the one, for thumbs), the time of the judgement, and the voter
as an HMAC of their id under the store's own secret: records of one voter can be grouped, and
nobody without the store can tell who they were. The train / held-out split is by that hash, so
all of one voter's judgements fall on one side (a voter's taste never leaks from training into
the held-out figure), and it is the same on every export of the store.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from router.db import exists, open_errors, redact
from router.store import OutcomeStore

Split = Literal["train", "heldout"]
DEFAULT_HELDOUT = 0.2


class ExportError(ValueError):
    """Nothing to export, and why (the message says what to change)."""


def voter_hash(secret: bytes, voter: str) -> str:
    """A voter id as exported: HMAC-SHA256 under the store's secret, 16 hex digits."""
    return hmac.new(secret, voter.encode(), hashlib.sha256).hexdigest()[:16]


def split_of(hashed_voter: str, heldout: float) -> Split:
    """The voter's side of the split: a fixed share `heldout` of voters is held out."""
    return "heldout" if int(hashed_voter[:8], 16) / 2**32 < heldout else "train"


def _assistant(text: str) -> list[dict[str, str]]:
    return [{"role": "assistant", "content": text}]


@dataclass
class Export:
    """The records of one experiment, and the count of what was left out and why."""

    pairs: list[dict[str, Any]] = field(default_factory=list)
    unpaired: list[dict[str, Any]] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)

    def summary(self) -> dict[str, int]:
        """Every count, with the records per source and split."""
        records = [*self.pairs, *self.unpaired]
        by_source = Counter(f"{r['source']}_records" for r in records)
        by_split = Counter(f"{r['split']}_records" for r in records)
        return dict(sorted((self.counts + by_source + by_split).items()))


_VOTES = """
SELECT f.ts, f.value, f."user", b.battle_id, b.unit, b.voter, b.identity_revealed,
       b.variant_a, b.variant_b, b.completion_a, b.completion_b,
       ta.messages AS messages_a, ta.answer AS answer_a,
       tb.messages AS messages_b, tb.answer AS answer_b
FROM feedback f JOIN battles b ON b.battle_id = f.battle_id
LEFT JOIN transcripts ta ON ta.completion_id = b.completion_a
LEFT JOIN transcripts tb ON tb.completion_id = b.completion_b
WHERE f.kind = 'vote' AND b.experiment = ?
ORDER BY f.ts, f.id
"""

_THUMBS = """
SELECT f.ts, f.value, f."user", c.completion_id, c.variant, c.unit, t.messages, t.answer
FROM feedback f JOIN completions c ON c.completion_id = f.completion_id
LEFT JOIN transcripts t ON t.completion_id = c.completion_id
WHERE f.kind = 'thumbs' AND c.experiment = ?
ORDER BY f.ts, f.id
"""

_REGENERATIONS = """
SELECT f.ts, f."user", o.unit, f.new_completion_id,
       o.completion_id AS old_id, o.variant AS old_variant,
       n.variant AS new_variant,
       t_o.messages AS old_messages, t_o.answer AS old_answer,
       t_n.messages AS new_messages, t_n.answer AS new_answer
FROM feedback f JOIN completions o ON o.completion_id = f.completion_id
LEFT JOIN completions n ON n.completion_id = f.new_completion_id
LEFT JOIN transcripts t_o ON t_o.completion_id = o.completion_id
LEFT JOIN transcripts t_n ON t_n.completion_id = f.new_completion_id
WHERE f.kind = 'regenerate' AND o.experiment = ?
ORDER BY f.ts, f.id
"""


class _Reader:
    """Turns the store's rows into records: hashes voters, splits them, counts what is left
    out."""

    def __init__(self, store: OutcomeStore, experiment: str, heldout: float) -> None:
        self.store, self.experiment, self.heldout = store, experiment, heldout
        self.secret = store.voter_secret()
        self.out = Export()

    def _common(self, ts: float, voter: str) -> dict[str, Any]:
        hashed = voter_hash(self.secret, voter)
        return {
            "experiment": self.experiment,
            "voter": hashed,
            "ts": ts,
            "split": split_of(hashed, self.heldout),
        }

    def _pair(
        self,
        *,
        source: str,
        prompt: str,
        chosen: tuple[str, str, str],
        rejected: tuple[str, str, str],
        common: dict[str, Any],
    ) -> None:
        """`chosen` and `rejected` are (variant, completion id, answer text)."""
        self.out.pairs.append(
            {
                "prompt": json.loads(prompt),
                "chosen": _assistant(chosen[2]),
                "rejected": _assistant(rejected[2]),
                "source": source,
                "chosen_variant": chosen[0],
                "rejected_variant": rejected[0],
                "chosen_id": chosen[1],
                "rejected_id": rejected[1],
                **common,
            }
        )

    def votes(self) -> None:
        for row in self.store.query(_VOTES, (self.experiment,)):
            counts = self.out.counts
            counts["votes"] += 1
            if row["value"] in ("tie", "both_bad"):
                counts[f"votes_{row['value']}"] += 1
                continue
            if row["identity_revealed"]:
                counts["votes_not_counted_identity_revealed"] += 1
                continue
            if row["answer_a"] is None or row["answer_b"] is None:
                counts["votes_without_text"] += 1
                continue
            sides = {
                "a": (row["variant_a"], row["completion_a"], row["answer_a"]),
                "b": (row["variant_b"], row["completion_b"], row["answer_b"]),
            }
            winner, loser = ("a", "b") if row["value"] == "a" else ("b", "a")
            voter = row["voter"] or row["user"] or row["unit"]
            self._pair(
                source="vote",
                prompt=row["messages_a"],
                chosen=sides[winner],
                rejected=sides[loser],
                common={
                    "battle_id": row["battle_id"],
                    "chosen_side": winner,  # which choice it was shown as: a (0) or b (1)
                    **self._common(row["ts"], voter),
                },
            )

    def regenerations(self) -> None:
        for row in self.store.query(_REGENERATIONS, (self.experiment,)):
            counts = self.out.counts
            counts["regenerations"] += 1
            if row["new_completion_id"] is None:
                counts["regenerations_without_replacement"] += 1
                continue
            if row["old_answer"] is None or row["new_answer"] is None:
                counts["regenerations_without_text"] += 1
                continue
            if json.loads(row["old_messages"]) != json.loads(row["new_messages"]):
                counts["regenerations_with_another_prompt"] += 1
                continue
            self._pair(
                source="regenerate",
                prompt=row["old_messages"],
                chosen=(row["new_variant"], row["new_completion_id"], row["new_answer"]),
                rejected=(row["old_variant"], row["old_id"], row["old_answer"]),
                common=self._common(row["ts"], row["user"] or row["unit"]),
            )

    def thumbs(self) -> None:
        for row in self.store.query(_THUMBS, (self.experiment,)):
            counts = self.out.counts
            counts["thumbs"] += 1
            if row["answer"] is None:
                counts["thumbs_without_text"] += 1
                continue
            self.out.unpaired.append(
                {
                    "prompt": json.loads(row["messages"]),
                    "completion": _assistant(row["answer"]),
                    "label": row["value"] == "up",
                    "source": "thumbs",
                    "variant": row["variant"],
                    "completion_id": row["completion_id"],
                    **self._common(row["ts"], row["user"] or row["unit"] or ""),
                }
            )


def _known(store: OutcomeStore, experiment: str) -> bool:
    for table in ("battles", "completions"):
        if store.query(f"SELECT 1 AS x FROM {table} WHERE experiment = ? LIMIT 1", (experiment,)):
            return True
    return False


def export_preferences(
    store_path: str | Path, experiment: str, heldout: float = DEFAULT_HELDOUT
) -> Export:
    """The experiment's preference records; `ExportError` when there is nothing to export."""
    if not 0 <= heldout < 1:
        raise ExportError(f"the held-out share is a fraction in [0, 1), not {heldout}")
    path = redact(store_path)
    try:
        found = exists(store_path)
    except ValueError as exc:  # env:NAME unset
        raise ExportError(str(exc)) from None
    if not found:
        raise ExportError(f"no outcome log at {path}")
    try:
        store = OutcomeStore(store_path)
    except open_errors() as exc:
        raise ExportError(f"{path} is not an arena-serve outcome log ({exc})") from None
    try:
        if not _known(store, experiment):
            raise ExportError(f"the outcome log {path} holds nothing of experiment {experiment!r}")
        reader = _Reader(store, experiment, heldout)
        reader.votes()
        reader.regenerations()
        reader.thumbs()
    finally:
        store.close()
    out = reader.out
    judged = out.counts["votes"] + out.counts["thumbs"] + out.counts["regenerations"]
    if not judged:
        raise ExportError(
            f"experiment {experiment!r} has no votes, thumbs or regenerations to export"
        )
    if not out.pairs and not out.unpaired:
        raise ExportError(
            f"nothing to export from experiment {experiment!r}: of {judged} judgements none has "
            f"a preference with its text kept ({_left_out(out.counts)}). Text is kept only with "
            "store.keep_text: true in the config, from then on, for store.retention_days."
        )
    return out


def _left_out(counts: Counter[str]) -> str:
    reasons = {k: v for k, v in counts.items() if k not in ("votes", "thumbs", "regenerations")}
    return ", ".join(f"{k}: {v}" for k, v in sorted(reasons.items())) or "none"


def write_jsonl(records: list[dict[str, Any]], path: Path) -> None:
    """Write the records as JSON lines, atomically: a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    with partial.open("w", encoding="utf-8") as file:
        for record in records:
            file.write(json.dumps(record, ensure_ascii=False) + "\n")
    partial.replace(path)


def unpaired_path(out: Path) -> Path:
    """Where the thumbs go beside the pairs file: `prefs.jsonl` -> `prefs.unpaired.jsonl`."""
    return out.with_name(f"{out.stem}.unpaired{out.suffix or '.jsonl'}")
