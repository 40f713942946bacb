"""Preference pairs for training a reward model, read from `arena-serve export-preferences`.

The file holds one TRL conversational preference record per line (`router.preferences`):
`prompt` (the user's messages), `chosen` and `rejected` (the assistant's answers as message
lists), `source` (`vote` or `regenerate`), `split` (`train` or `heldout`, already drawn by voter),
and, for votes, `chosen_side` (`a` or `b`: which choice the winner was shown as). Other fields
(variants, ids, voter, time) are carried by the export and not needed here.

`load_pairs` is strict about what it cannot train on and lenient about what says nothing:

- a line that is not a JSON object, a record without a needed field, or a field of the wrong
  shape is a `TrainError` naming the file and the line (the file is not the pairs file, or it
  was damaged: training on the rest would hide that);
- a blank line, and a pair whose chosen and rejected answers are the same text (no preference
  to learn; it would only add a constant to the loss), are skipped and counted.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

Split = Literal["train", "heldout"]
Side = Literal["chosen", "rejected"]
Message = dict[str, str]
NEEDED = ("prompt", "chosen", "rejected", "source", "split")
SPLITS = ("train", "heldout")


class TrainError(ValueError):
    """The training input is unusable, and why, in one line (the CLI prints it, exit status 2)."""


@dataclass(frozen=True, kw_only=True)
class Pair:
    """One judgement: the answer a user preferred and the one they did not, to one prompt."""

    line: int
    prompt: list[Message]
    chosen: list[Message]
    rejected: list[Message]
    source: str
    split: Split
    chosen_side: str | None = None

    def conversation(self, side: Side) -> tuple[list[Message], str]:
        """(messages, response) as the scorer takes them: the response is the side's last
        message, and any earlier messages of the side belong to the conversation."""
        answer = self.chosen if side == "chosen" else self.rejected
        return [*self.prompt, *answer[:-1]], answer[-1]["content"]

    def answer(self, side: Side) -> str:
        return self.conversation(side)[1]


@dataclass(frozen=True, kw_only=True)
class Pairs:
    """The usable pairs of one file, with the file's digest and what was skipped."""

    path: Path
    sha256: str
    pairs: list[Pair]
    skipped: dict[str, int] = field(default_factory=dict)

    def of_split(self, split: Split) -> list[Pair]:
        return [p for p in self.pairs if p.split == split]

    def counts(self) -> dict[str, Any]:
        """Pairs in all, per split, per source (and per split and source), lines skipped."""
        by_source = Counter(p.source for p in self.pairs)
        by_both = Counter(f"{p.split}/{p.source}" for p in self.pairs)
        return {
            "pairs": len(self.pairs),
            "train": len(self.of_split("train")),
            "heldout": len(self.of_split("heldout")),
            "by_source": dict(sorted(by_source.items())),
            "by_split_and_source": dict(sorted(by_both.items())),
            "skipped_lines": dict(sorted(self.skipped.items())),
        }


def _is_message(value: object) -> bool:
    return (
        isinstance(value, Mapping)
        and isinstance(value.get("role"), str)
        and isinstance(value.get("content"), str)
    )


def _messages(value: object, where: str, name: str, *, answer: bool) -> list[Message]:
    """A list of {role, content} string messages; an answer's last one is the assistant's."""
    if not isinstance(value, list) or not all(map(_is_message, value)) or (answer and not value):
        raise TrainError(f"{where}: {name!r} is not a list of messages with a role and a content")
    messages = [{"role": m["role"], "content": m["content"]} for m in value]
    if answer and messages[-1]["role"] != "assistant":
        raise TrainError(f"{where}: the last message of {name!r} is not the assistant's")
    return messages


def parse_pair(record: object, where: str, line: int) -> Pair:
    """One record as a `Pair`; `where` (file and line) starts every error message."""
    if not isinstance(record, dict):
        raise TrainError(f"{where}: not a JSON object")
    missing = [name for name in NEEDED if name not in record]
    if missing:
        hint = ""
        if "completion" in record and "label" in record:
            hint = " (an unpaired thumbs record: train on the pairs file, not *.unpaired.jsonl)"
        raise TrainError(f"{where}: missing field(s) {', '.join(missing)}{hint}")
    if record["split"] not in SPLITS:
        raise TrainError(f"{where}: split is 'train' or 'heldout', not {record['split']!r}")
    side = record.get("chosen_side")
    if side not in (None, "a", "b"):
        raise TrainError(f"{where}: chosen_side is 'a' or 'b', not {side!r}")
    return Pair(
        line=line,
        prompt=_messages(record["prompt"], where, "prompt", answer=False),
        chosen=_messages(record["chosen"], where, "chosen", answer=True),
        rejected=_messages(record["rejected"], where, "rejected", answer=True),
        source=str(record["source"]),
        split=record["split"],
        chosen_side=side,
    )


def load_pairs(path: str | Path) -> Pairs:
    """Every usable pair of a pairs file, in file order (`TrainError` on bad input)."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise TrainError(f"cannot read the pairs file {path}: {exc.strerror or exc}") from None
    pairs: list[Pair] = []
    skipped: Counter[str] = Counter()
    lines = raw.split(b"\n")
    if lines[-1] == b"":  # the newline that ends the last line starts no line
        lines.pop()
    for number, text in enumerate(lines, start=1):
        where = f"{path} line {number}"
        if not text.strip():
            skipped["blank"] += 1
            continue
        try:
            record = json.loads(text)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            reason = exc.msg if isinstance(exc, json.JSONDecodeError) else "not UTF-8"
            raise TrainError(f"{where}: not a JSON line ({reason})") from None
        pair = parse_pair(record, where, number)
        if pair.answer("chosen") == pair.answer("rejected"):
            skipped["identical_answers"] += 1
            continue
        pairs.append(pair)
    if not pairs:
        raise TrainError(f"{path}: no preference pairs in the file")
    return Pairs(
        path=path, sha256=hashlib.sha256(raw).hexdigest(), pairs=pairs, skipped=dict(skipped)
    )


def require_both_splits(pairs: Pairs) -> None:
    """Training needs train pairs to learn from and held-out pairs to stop on and report."""
    train, heldout = len(pairs.of_split("train")), len(pairs.of_split("heldout"))
    if not train:
        raise TrainError(f"{pairs.path}: no train pairs ({heldout} held out): nothing to learn")
    if not heldout:
        raise TrainError(
            f"{pairs.path}: no held-out pairs ({train} train): nothing to stop on or report "
            "(export with --heldout above 0, and votes from more than a few voters)"
        )
