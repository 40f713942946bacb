"""Score an experiment's kept history with one reward model (`arena-serve rescore`).

After a live swap the new model scores new answers only; the report compares variants on one
model's scores, so the history needs that model's scores too. This reads the text the store kept
of the experiment's answered completions (`store.keep_text`), scores each with the model, and
writes `Score` events under the model's id (its folder name), in batches, each committed on its
own: an interrupted run keeps what it wrote, and running it again scores only the rest. Swapping
back and rescoring with the earlier model is the same command.

It writes to the store while a server may be writing too: SQLite serialises the two writers
(each batch is one short transaction, waiting on the other's lock).
"""

from __future__ import annotations

import json
import math
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from router.events import Score
from router.store import OutcomeStore

BATCH = 32  # conversations per committed batch


class Scorer(Protocol):
    """What scores: `reward.scorer.RewardScorer`, or a stand-in in tests."""

    def score(
        self, conversations: Sequence[tuple[Sequence[Mapping[str, Any]], str]]
    ) -> Sequence[float | None]: ...


_HISTORY = """
SELECT t.completion_id, t.messages, t.answer, c.experiment, c.variant, c.battle_id, c.ts,
       c.latency_s, s.model IS NOT NULL AS scored
FROM transcripts t JOIN completions c USING (completion_id)
LEFT JOIN scores s ON s.completion_id = t.completion_id AND s.model = ?
WHERE c.experiment = ? AND c.status = 200
ORDER BY c.ts, t.completion_id
"""


@dataclass(frozen=True)
class Job:
    completion_id: str
    messages: list[dict[str, str]]
    answer: str
    experiment: str
    variant: str | None
    battle_id: str | None
    ended: float  # Unix time the completion ended


def history(store: OutcomeStore, experiment: str, model: str, force: bool) -> tuple[list[Job], int]:
    """The experiment's answered completions with kept text that `model` has not scored (all of
    them with `force`), and how many it had scored already."""
    jobs, done = [], 0
    for row in store.query(_HISTORY, (model, experiment)):
        if row["scored"] and not force:
            done += 1
            continue
        jobs.append(
            Job(
                completion_id=row["completion_id"],
                messages=json.loads(row["messages"]),
                answer=row["answer"],
                experiment=row["experiment"],
                variant=row["variant"],
                battle_id=row["battle_id"],
                ended=row["ts"] + row["latency_s"],
            )
        )
    return jobs, done


def scores_of(jobs: Sequence[Job], values: Sequence[float | None], model: str) -> list[Score]:
    """`Score` events for the jobs the model could score (a finite value)."""
    now = time.time()
    return [
        Score(
            ts=now,
            completion_id=job.completion_id,
            experiment=job.experiment,
            variant=job.variant,
            model=model,
            score=value,
            latency_s=max(0.0, now - job.ended),
            battle_id=job.battle_id,
        )
        for job, value in zip(jobs, values, strict=True)
        if value is not None and math.isfinite(value)
    ]


def rescore(
    store_path: str | Path,
    experiment: str,
    scorer: Scorer,
    model: str,
    *,
    force: bool = False,
    progress: bool = True,
) -> Counter[str]:
    """Score the experiment's kept history with `scorer`, writing `Score` events named `model`.
    Returns the counts: scored, unscorable, already scored, and without text."""
    from tqdm import tqdm

    store = OutcomeStore(store_path)
    counts: Counter[str] = Counter()
    try:
        jobs, counts["already_scored"] = history(store, experiment, model, force)
        answered = store.query(
            "SELECT COUNT(*) AS n FROM completions WHERE experiment = ? AND status = 200",
            (experiment,),
        )[0]["n"]
        counts["without_text"] = answered - len(jobs) - counts["already_scored"]
        bar = tqdm(total=len(jobs), desc=f"rescore {experiment}", disable=not progress)
        for start in range(0, len(jobs), BATCH):
            batch = jobs[start : start + BATCH]
            values = scorer.score([(job.messages, job.answer) for job in batch])
            events = scores_of(batch, values, model)
            store.write(events)
            counts["scored"] += len(events)
            counts["unscorable"] += len(batch) - len(events)
            bar.update(len(batch))
        bar.close()
    finally:
        store.close()
    return counts
