"""The Bradley–Terry fit of a reward model's top layers on cached backbone features.

`cache_features` runs a `SplitClassifier`'s frozen lower layers once over every sequence; `fit`
then trains its top layers and score head to minimise `-log sigmoid(r(chosen) - r(rejected))`
over the train pairs, in shuffled batches of similar-length pairs, measures the held-out pairwise
accuracy after every epoch, stops once it has not improved for `patience` epochs (an improvement
is a higher accuracy, or the same with a lower held-out loss), and leaves the best epoch's
weights in the model. The held-out scores of the untrained model (the "stand-in head") are
measured first, through the same path.

Deterministic: batch order comes from a generator seeded with `seed`, and nothing else draws
random numbers (no dropout: the model stays in eval mode, Llama's attention dropout is 0).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from tqdm import tqdm

from reward.features import SplitClassifier, plan_prefix_batches
from reward.pairs import Pair, Side, Split
from reward.pairwise import Accuracy, pairwise_accuracy
from reward.scorer import encode_tail, plan_batches, render_conversation
from reward.train_settings import Settings

# Padded tokens per scoring batch, as the scorer measured them (reward.scorer): a CPU is
# compute-bound from a few hundred tokens on, a GPU wants big batches.
TOKEN_BUDGET = {"cpu": 1024, "cuda": 16_384}
LENGTH_GROUP = 32  # batches per group of similar-length pairs (less padding per batch)


SIDES: tuple[Side, Side] = ("chosen", "rejected")


@dataclass(frozen=True, kw_only=True)
class Encoded:
    """The pairs the chat template renders, and their token ids: sequence `2 i` is pair i's
    chosen answer, `2 i + 1` its rejected one."""

    pairs: list[Pair]
    ids: list[list[int]]
    unrenderable: int

    def indices(self, split: Split) -> list[int]:
        return [i for i, pair in enumerate(self.pairs) if pair.split == split]


@dataclass(frozen=True, kw_only=True)
class Features:
    """The cached hidden states entering the trained layers, one tensor per sequence."""

    hidden: list[torch.Tensor]
    last: list[int]

    def mib(self) -> float:
        return sum(h.numel() * h.element_size() for h in self.hidden) / 2**20


@dataclass(frozen=True, kw_only=True)
class HeldOut:
    """Scores of the held-out pairs (in held-out order), their accuracy and mean loss."""

    chosen: list[float]
    rejected: list[float]
    accuracy: Accuracy
    loss: float


@dataclass(frozen=True, kw_only=True)
class Fit:
    stand_in: HeldOut
    best: HeldOut
    best_epoch: int
    history: list[dict[str, float | int | None]]
    stopped_early: bool


def encode_pairs(tokenizer: Any, pairs: Sequence[Pair], max_length: int) -> Encoded:
    """Render both answers of every pair; a pair the chat template refuses is left out."""
    kept: list[Pair] = []
    texts: list[str] = []
    for pair in pairs:
        try:
            rendered = [render_conversation(tokenizer, *pair.conversation(s)) for s in SIDES]
        except Exception:  # the template's own error (jinja2 TemplateError, ...)
            continue
        kept.append(pair)
        texts.extend(rendered)
    ids = encode_tail(tokenizer, texts, max_length) if texts else []
    return Encoded(pairs=kept, ids=ids, unrenderable=len(pairs) - len(kept))


def cache_features(
    split: SplitClassifier, ids: Sequence[Sequence[int]], budget: int, progress: bool
) -> Features:
    """Run the frozen layers once over every sequence, in batches of sequences that share
    their first tokens (`plan_prefix_batches`: each batch's shared prefix runs once)."""
    hidden: list[torch.Tensor] = [torch.empty(0)] * len(ids)
    last = [0] * len(ids)
    lengths = [len(x) for x in ids]
    with tqdm(total=sum(lengths), desc="caching features", unit="tok", disable=not progress) as bar:
        for batch in plan_prefix_batches(ids, budget):
            states, where = split.features([ids[i] for i in batch])
            for index, state, at in zip(batch, states, where, strict=True):
                hidden[index], last[index] = state, at
            bar.update(sum(lengths[i] for i in batch))
    return Features(hidden=hidden, last=last)


@torch.no_grad()
def score_sequences(
    split: SplitClassifier, features: Features, sequences: Sequence[int], budget: int
) -> list[float]:
    """Scores of the given sequences from their cached features, in that order."""
    scores = [0.0] * len(sequences)
    lengths = [features.hidden[s].shape[0] for s in sequences]
    for batch in plan_batches(lengths, budget):
        chosen = [sequences[i] for i in batch]
        got = split.scores([features.hidden[s] for s in chosen], [features.last[s] for s in chosen])
        for index, value in zip(batch, got.tolist(), strict=True):
            scores[index] = value
    return scores


def evaluate(
    split: SplitClassifier, features: Features, heldout: Sequence[int], budget: int
) -> HeldOut:
    sequences = [2 * i + side for side in (0, 1) for i in heldout]
    scores = score_sequences(split, features, sequences, budget)
    chosen, rejected = scores[: len(heldout)], scores[len(heldout) :]
    margin = torch.tensor(chosen, dtype=torch.float64) - torch.tensor(rejected, dtype=torch.float64)
    return HeldOut(
        chosen=chosen,
        rejected=rejected,
        accuracy=pairwise_accuracy(chosen, rejected),
        loss=float(-F.logsigmoid(margin).mean()),
    )


def train_batches(
    lengths: Sequence[int], batch_size: int, generator: torch.Generator
) -> list[list[int]]:
    """Shuffled batches of pair positions; within each group of `LENGTH_GROUP` batches, pairs
    of similar length share a batch (less padding), and the batches are shuffled again."""
    order = torch.randperm(len(lengths), generator=generator).tolist()
    group = batch_size * LENGTH_GROUP
    batches: list[list[int]] = []
    for start in range(0, len(order), group):
        chunk = sorted(order[start : start + group], key=lambda i: -lengths[i])
        batches += [chunk[j : j + batch_size] for j in range(0, len(chunk), batch_size)]
    shuffled = torch.randperm(len(batches), generator=generator).tolist()
    return [batches[i] for i in shuffled]


def train_step(
    split: SplitClassifier,
    optimizer: torch.optim.Optimizer,
    features: Features,
    pairs: Sequence[int],
    grad_clip: float,
) -> float:
    """One Bradley–Terry step over a batch of pairs; the batch's mean loss."""
    sequences = [2 * i for i in pairs] + [2 * i + 1 for i in pairs]
    scores = split.scores(
        [features.hidden[s] for s in sequences], [features.last[s] for s in sequences]
    )
    loss = -F.logsigmoid(scores[: len(pairs)] - scores[len(pairs) :]).mean()
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    params = [p for group in optimizer.param_groups for p in group["params"]]
    torch.nn.utils.clip_grad_norm_(params, grad_clip)
    optimizer.step()
    return loss.item()


def _improves(held: HeldOut, best: HeldOut) -> bool:
    """Higher accuracy, or the same and a lower loss."""
    now, then = held.accuracy.accuracy or 0.0, best.accuracy.accuracy or 0.0
    return now > then or (now == then and held.loss < best.loss)


class _Epochs:
    """The train pairs' batches, epoch after epoch, and the optimizer that steps over them."""

    def __init__(self, split: SplitClassifier, encoded: Encoded, settings: Settings) -> None:
        self.split, self.settings = split, settings
        self.params = split.trainable()
        self.optimizer = torch.optim.AdamW(
            self.params, lr=settings.lr, weight_decay=settings.weight_decay
        )
        self.generator = torch.Generator().manual_seed(settings.seed)
        self.train = encoded.indices("train")
        self.lengths = [
            max(len(encoded.ids[2 * i]), len(encoded.ids[2 * i + 1])) for i in self.train
        ]
        self.steps = -(-len(self.train) // settings.batch_size)

    def run(self, features: Features, bar: tqdm) -> float:
        """One pass over the train pairs; the mean of the batches' losses."""
        losses = []
        for batch in train_batches(self.lengths, self.settings.batch_size, self.generator):
            pairs = [self.train[i] for i in batch]
            losses.append(
                train_step(self.split, self.optimizer, features, pairs, self.settings.grad_clip)
            )
            bar.update(1)
        return sum(losses) / len(losses)

    def snapshot(self) -> list[torch.Tensor]:
        return [p.detach().clone() for p in self.params]

    @torch.no_grad()
    def restore(self, saved: list[torch.Tensor]) -> None:
        for param, value in zip(self.params, saved, strict=True):
            param.copy_(value)


def fit(
    split: SplitClassifier,
    features: Features,
    encoded: Encoded,
    settings: Settings,
    progress: bool,
) -> Fit:
    """Train with early stopping on held-out accuracy; the best epoch's weights stay."""
    heldout = encoded.indices("heldout")
    budget = TOKEN_BUDGET.get(split.device.type, TOKEN_BUDGET["cpu"])
    epochs = _Epochs(split, encoded, settings)
    stand_in = best = evaluate(split, features, heldout, budget)
    best_epoch, best_state, waited = 0, epochs.snapshot(), 0
    history: list[dict[str, float | int | None]] = []
    bar = tqdm(
        total=settings.epochs * epochs.steps, desc="training", unit="batch", disable=not progress
    )
    for epoch in range(1, settings.epochs + 1):
        train_loss = epochs.run(features, bar)
        held = evaluate(split, features, heldout, budget)
        history.append(
            {
                "epoch": epoch,
                "train_loss": train_loss,
                "heldout_loss": held.loss,
                "heldout_accuracy": held.accuracy.accuracy,
            }
        )
        bar.set_postfix(epoch=epoch, heldout_accuracy=f"{held.accuracy.accuracy:.3f}")
        if best_epoch == 0 or _improves(held, best):
            best, best_epoch, best_state, waited = held, epoch, epochs.snapshot(), 0
        else:
            waited += 1
            if waited >= settings.patience:
                break
    bar.close()
    epochs.restore(best_state)
    return Fit(
        stand_in=stand_in,
        best=best,
        best_epoch=best_epoch,
        history=history,
        stopped_early=len(history) < settings.epochs,
    )
