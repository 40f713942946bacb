"""Pairwise accuracy on held-out preference pairs, with its interval, and the baselines a trained
reward model has to beat on the same pairs.

Accuracy is the share of pairs whose chosen answer scores above the rejected one; a tie counts
half (it is a coin flip between the two), and the number of ties is reported beside it. The 95 %
interval is Wilson's score interval for a binomial share, applied to that share (half-counted
ties included) over the number of pairs: it stays inside [0, 1] and is honest at small n and at
shares near 0 or 1, where the normal approximation is not. It treats pairs as independent; pairs
of one voter are not quite, so read it as a lower bound on the uncertainty.

The baselines:

- `length_only`: the longer answer (in characters) wins, ties half;
- `stand_in_head`: the base model's scores before training (for a base without a one-label
  head, the newly initialised head), through the same rendering and pooling;
- `always_side_a`: for vote pairs, the share whose winner was shown as choice `a`; pairs without
  a side (regenerations) are left out of it, and counted.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from statistics import NormalDist
from typing import Any

from reward.pairs import Pair

Z95 = NormalDist().inv_cdf(0.975)


def wilson_interval(share: float, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson's score interval for a binomial share observed over `n` trials."""
    if n <= 0:
        raise ValueError("an interval needs at least one trial")
    centre = (share + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * ((share * (1 - share) / n + z * z / (4 * n * n)) ** 0.5)
    # It always holds the share; min and max only undo rounding (1 - 1e-16 at a share of 1).
    return max(0.0, min(share, centre - half)), min(1.0, max(share, centre + half))


@dataclass(frozen=True, kw_only=True)
class Accuracy:
    """Wins, ties and losses over `n` pairs; `accuracy` counts a tie half. With no pairs the
    share and its interval are None."""

    n: int
    wins: int
    ties: int
    accuracy: float | None
    low: float | None
    high: float | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def accuracy_of(wins: int, ties: int, n: int) -> Accuracy:
    if n == 0:
        return Accuracy(n=0, wins=0, ties=0, accuracy=None, low=None, high=None)
    share = (wins + ties / 2) / n
    low, high = wilson_interval(share, n)
    return Accuracy(n=n, wins=wins, ties=ties, accuracy=share, low=low, high=high)


def pairwise_accuracy(chosen: Sequence[float], rejected: Sequence[float]) -> Accuracy:
    """How often the chosen answer's score beats the rejected one's (ties half)."""
    if len(chosen) != len(rejected):
        raise ValueError("one chosen and one rejected score per pair")
    wins = sum(c > r for c, r in zip(chosen, rejected, strict=True))
    ties = sum(c == r for c, r in zip(chosen, rejected, strict=True))
    return accuracy_of(wins, ties, len(chosen))


def length_only(pairs: Sequence[Pair]) -> Accuracy:
    """The longer answer, in characters, wins."""
    return pairwise_accuracy(
        [float(len(p.answer("chosen"))) for p in pairs],
        [float(len(p.answer("rejected"))) for p in pairs],
    )


def always_side_a(pairs: Sequence[Pair]) -> tuple[Accuracy, int]:
    """The share of sided (vote) pairs won by choice `a`, and how many pairs had no side."""
    sided = [p for p in pairs if p.chosen_side is not None]
    wins = sum(p.chosen_side == "a" for p in sided)
    return accuracy_of(wins, 0, len(sided)), len(pairs) - len(sided)
