"""Deterministic assignment of a unit to an arm: pure functions, no state, no I/O.

The scheme (a contract, pinned by `tests/router/cases.json`; changing it reshuffles every running
experiment):

1. For each arm, hash ``f"{salt}\\x1f{variant}\\x1f{unit}"`` (UTF-8) with BLAKE2b, 8-byte digest,
   read big-endian as an unsigned 64-bit integer ``x``.
2. Map its top 53 bits into the open interval (0, 1): ``u = ((x >> 11) + 0.5) / 2**53``.
3. The unit goes to the arm with the largest ``log(u) / weight`` (arms of weight 0 never win).

This is weighted rendezvous hashing: ``-log(u) / w`` is an exponential variable of rate ``w``, and
the smallest of independent exponentials is arm ``i`` with probability ``w_i / sum(w)``. Because
each arm's score depends only on that arm's own weight, raising one arm's weight can only move
units *into* that arm, lowering it only moves units *out*, and adding an arm only takes units from
the others — no unit is ever moved between two arms whose weights did not change.
"""

from __future__ import annotations

import math
from functools import lru_cache
from hashlib import blake2b

from router.experiment import Experiment

_TOP_53 = 1 << 53


def unit_interval(salt: str, variant: str, unit: str) -> float:
    """The arm's uniform draw in (0, 1) for this unit (steps 1 and 2 of the scheme)."""
    digest = blake2b(f"{salt}\x1f{variant}\x1f{unit}".encode(), digest_size=8).digest()
    return ((int.from_bytes(digest, "big") >> 11) + 0.5) / _TOP_53


@lru_cache(maxsize=1024)
def _live_arms(experiment: Experiment) -> tuple[tuple[str, float], ...]:
    return tuple((arm.variant, 1.0 / arm.weight) for arm in experiment.arms if arm.weight > 0)


def assign(experiment: Experiment, unit: str) -> str:
    """The variant that `unit` sees in `experiment`; the same in every process, forever."""
    salt = experiment.hash_salt
    best_variant = ""
    best_score = -math.inf
    for variant, inverse_weight in _live_arms(experiment):
        score = math.log(unit_interval(salt, variant, unit)) * inverse_weight
        if score > best_score:
            best_variant, best_score = variant, score
    return best_variant
