"""Assignment of a unit to an experiment's arm (deterministic), and of a battle to a pair (random).

Unit assignment is a contract, pinned by `tests/router/cases.json`: changing any hash below
silently reshuffles every running experiment. Every draw hashes
``f"{salt}\\x1f{key}\\x1f{unit}"`` (UTF-8) with BLAKE2b, 8-byte digest, read big-endian as an
unsigned 64-bit integer ``x``. Keys that are not variant names start with ``#``, which a variant
name cannot, so no two draws share a string.

- **Bucket** (layers, allocation, holdout): ``x mod 10_000``, a fixed space of 10,000 buckets; a
  fraction ``f`` of the units is the first ``round(f * 10_000)`` buckets.
  The layer bucket uses the layer's name as salt (``key = "#layer"``), so every experiment of a
  layer sees the same bucket and disjoint `layer_range` slices never share a unit, while
  experiments in different layers hash independently. Allocation (``"#allocation"``) and holdout
  (``"#holdout"``) use the experiment's salt: a unit is allocated when its bucket is below
  ``round(allocation * 10_000)``, so raising the allocation only adds units. The gateway's
  global holdout (``"#global-holdout"``) uses its own salt, the same for every experiment, so
  a held-out unit is out of all of them.
- **Arm** (weighted rendezvous hashing): for each arm with weight above 0, ``u = ((x >> 11) +
  0.5) / 2**53`` with ``key = variant``; the unit goes to the arm with the largest ``log(u) /
  weight``. ``-log(u) / w`` is exponential with rate ``w``, so arm ``i`` wins with probability
  ``w_i / sum(w)``; each arm's score depends only on its own weight, so raising one arm's weight
  only moves units *into* that arm and adding an arm only takes units from the others — no unit
  ever moves between two arms whose weights did not change.

Arena battles are the exception, on purpose: a battle's pair and display order must not be
derivable by the voter, and every input of the hash above is public (the salt defaults to the
experiment's name, the arms are listed by `/v1/models`, the battle id is in the answer). So
`draw_pair` draws both from the operating system's CSPRNG (`secrets.SystemRandom`): the pair by
cumulative pair weight, then which of the two is shown first by a fair coin. Nothing about a
battle's pair is reproducible; the battle row in the outcome log is its only record.
"""

from __future__ import annotations

import math
import random
import secrets
import time
from bisect import bisect_right
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from hashlib import blake2b
from typing import Any, Literal

from router.experiment import BUCKETS, Experiment, GlobalHoldout
from router.targeting import compile_rule

_TOP_53 = 1 << 53
# Arena pairs are drawn from the OS's CSPRNG: a seeded generator (Mersenne Twister) could be
# reconstructed from enough revealed battles, and its next draws predicted.
SECURE_RANDOM: random.Random = secrets.SystemRandom()
_INV_TOP_53 = 1.0 / _TOP_53

Reason = Literal[
    "arm",  # exposed: an arm by weight
    "arena",  # exposed: arena battles, a pair drawn per request
    "holdout",  # exposed: kept on the default variant as a reference group
    "forced",  # listed in `forced` (QA); not exposed
    "not_allocated",  # outside the allocation; not exposed
    "other_experiment",  # in another experiment's slice of the layer; not exposed
    "scheduled",  # before `start`; not exposed
    "stopped",  # at or after `stop`; not exposed
    "global_holdout",  # in the gateway's global holdout: out of every experiment; not exposed
    "confirm",  # exposed: in the confirmation run (`confirm`), logged as `<name>#confirm`
]
EXPOSED_REASONS: frozenset[str] = frozenset({"arm", "arena", "holdout", "confirm"})
# Units remembered per compiled experiment: repeat visitors skip the hashes. Cleared when full.
MEMO_SIZE = 65_536


def _digest(salt: str, key: str, unit: str) -> int:
    digest = blake2b(f"{salt}\x1f{key}\x1f{unit}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def unit_interval(salt: str, key: str, unit: str) -> float:
    """A uniform draw in (0, 1) for this unit, salt and key (the arm draw of the scheme)."""
    return ((_digest(salt, key, unit) >> 11) + 0.5) / _TOP_53


def bucket(salt: str, key: str, unit: str) -> int:
    """The unit's bucket in [0, 10_000) for this salt and key."""
    return _digest(salt, key, unit) % BUCKETS


def _prefix(salt: str, key: str) -> blake2b:
    """A hasher fed with `salt \x1f key \x1f`: copied and fed the unit, it hashes the string of
    the scheme without re-hashing the prefix (blake2b buffers its input until `digest`)."""
    return blake2b(f"{salt}\x1f{key}\x1f".encode(), digest_size=8)


def _bucket(prefix: blake2b, unit: bytes) -> int:
    hasher = prefix.copy()
    hasher.update(unit)
    return int.from_bytes(hasher.digest(), "big") % BUCKETS


@dataclass(frozen=True, slots=True)
class Assignment:
    """What a unit gets: a variant (None for an arena battle, whose pair is drawn per request)."""

    variant: str | None
    reason: Reason
    version: int | None = None  # a bandit's weights version the arm was drawn by

    @property
    def exposed(self) -> bool:
        return self.reason in EXPOSED_REASONS


_ARENA = Assignment(None, "arena")
_CONFIRM_ARENA = Assignment(None, "confirm")  # an arena's confirmation battle


class CompiledExperiment:
    """An experiment reduced to what `assign` needs: bounds as ints, hash prefixes, weights.

    Built once per config (the gateway does it on every reconfigure), so one assignment costs a
    dict lookup, a few comparisons and one hash per live arm; a unit seen recently costs a
    dict lookup (the hashed steps depend on nothing but the unit id).
    """

    __slots__ = (
        "_allocation",
        "_arena",
        "_arm_hashers",
        "_arm_shares",
        "_bandit",
        "_confirm",
        "_equal_weights",
        "_fallback",
        "_fallbacks",
        "_forced",
        "_global_holdout",
        "_holdout",
        "_layer",
        "_memo",
        "_pair_cumulative",
        "_pair_shares",
        "_pairs",
        "_ramp",
        "_ramp_step",
        "_rules",
        "_salt",
        "_start",
        "_stop",
        "arm_holds",
        "experiment",
        "ramp_hold",
        "weights_version",
    )

    def __init__(self, experiment: Experiment, global_holdout: GlobalHoldout | None = None) -> None:
        self.experiment = experiment
        salt = experiment.hash_salt
        self._salt = salt
        self._fallback = experiment.fallback_variant
        self._start = experiment.start.timestamp() if experiment.start else -math.inf
        self._stop = experiment.stop.timestamp() if experiment.stop else math.inf
        lo, hi = (round(edge * BUCKETS) for edge in experiment.layer_range)
        self._layer = (
            None if (lo, hi) == (0, BUCKETS) else (_prefix(experiment.layer_name, "#layer"), lo, hi)
        )
        # Ramp steps as (time, allocation), after the experiment's own allocation from -inf.
        self._ramp = (
            (-math.inf, experiment.allocation),
            *((step.at.timestamp(), step.allocation) for step in experiment.ramp),
        )
        self._ramp_step = 0
        self.ramp_hold: dict[str, Any] | None = None  # a guardrail stopped the ramp (`hold_ramp`)
        self._allocation: tuple[blake2b, int] | None = None
        self._allocate(experiment.allocation)
        holdout = round(experiment.holdout * BUCKETS)
        self._holdout = (_prefix(salt, "#holdout"), holdout) if holdout else None
        self._global_holdout = (
            (
                _prefix(global_holdout.salt, "#global-holdout"),
                round(global_holdout.fraction * BUCKETS),
            )
            if global_holdout is not None
            else None
        )
        self._arena = experiment.mode == "arena"
        self._memo: dict[str, Assignment] = {}
        # Answers are built once: creating a frozen dataclass costs more than the hash.
        self._bandit = experiment.mode == "bandit"
        # A bandit's arms a failing guardrail stopped, as the outcome log decided them.
        self.arm_holds: dict[str, dict[str, Any]] = {}
        self._set_arms({arm.variant: arm.weight for arm in experiment.arms if arm.weight > 0})
        self._fallbacks = {
            reason: Assignment(self._fallback, reason)
            for reason in (
                "scheduled",
                "stopped",
                "other_experiment",
                "not_allocated",
                "holdout",
                "global_holdout",
            )
        }
        self._forced = {unit: Assignment(v, "forced") for unit, v in experiment.forced.items()}
        self._confirm = _confirmation(experiment)
        self._rules = tuple(compile_rule(r.attribute, *r.test) for r in experiment.when)
        pairs = experiment.arena_pairs() if self._arena else ()
        self.weights_version: int | None = None  # adaptive or bandit weights; None: the config's
        self._set_pairs({pair.variants: pair.weight for pair in pairs})

    def _set_pairs(self, weights: Mapping[tuple[str, str], float]) -> None:
        total = sum(weights.values())
        running = 0.0
        cumulative = []
        for weight in weights.values():
            running += weight
            cumulative.append(running / total)
        self._pairs, self._pair_cumulative = tuple(weights), tuple(cumulative)
        self._pair_shares = {
            tuple(sorted(pair)): weight / total for pair, weight in weights.items()
        }

    def _set_arms(self, weights: Mapping[str, float], version: int | None = None) -> None:
        """The arms' hashers: a bandit's weights version salts them, so each version draws
        every unit afresh (sticky within it), the same in every replica."""
        salt = self._salt if version is None else f"{self._salt}#v{version}"
        self._arm_hashers = tuple(
            (Assignment(variant, "arm", version), _prefix(salt, variant), 1.0 / weight)
            for variant, weight in weights.items()
        )
        total = sum(weights.values())
        self._arm_shares = {variant: weight / total for variant, weight in weights.items()}
        self._equal_weights = len(set(weights.values())) == 1

    def set_arm_weights(self, weights: Mapping[str, float], version: int) -> None:
        """A bandit's arms by these weights from now on (`router.bandit`): each of its live arms,
        above 0. Units are drawn again, by (unit, version)."""
        if not self._bandit:
            raise ValueError(f"experiment {self.experiment.name!r} is not a bandit")
        if set(weights) != set(self._arm_shares):
            raise ValueError("bandit weights must name each of the experiment's live arms")
        if not all(math.isfinite(w) and w > 0 for w in weights.values()):
            raise ValueError("bandit weights must be finite and above 0")
        self._set_arms(weights, version)
        self.weights_version = version
        self._memo.clear()

    def arm_shares(self) -> dict[str, float]:
        """Each live arm's share of new units now."""
        return dict(self._arm_shares)

    def arm_share(self, variant: str) -> float:
        """The share of new units `variant` gets now: a bandit assignment's propensity."""
        return self._arm_shares.get(variant, 0.0)

    def set_pair_weights(self, weights: Mapping[tuple[str, str], float], version: int) -> None:
        """Draw arena pairs by these weights from now on (adaptive sampling, `router.adaptive`):
        the experiment's own pairs, each with a weight above 0."""
        if not self._arena:
            raise ValueError(f"experiment {self.experiment.name!r} is not an arena experiment")
        own = {tuple(sorted(pair.variants)) for pair in self.experiment.arena_pairs()}
        if {tuple(sorted(pair)) for pair in weights} != own or len(weights) != len(own):
            raise ValueError("adaptive weights must name each of the experiment's pairs once")
        if not all(math.isfinite(w) and w > 0 for w in weights.values()):
            raise ValueError("adaptive weights must be finite and above 0")
        self._set_pairs(weights)
        self.weights_version = version

    def pair_shares(self) -> dict[tuple[str, str], float]:
        """Each pair's share of new battles now (names sorted)."""
        return dict(self._pair_shares)

    def pair_share(self, a: str, b: str) -> float:
        """The share of new battles the pair of `a` and `b` gets now: the battle's propensity."""
        return self._pair_shares.get((a, b) if a < b else (b, a), 0.0)

    def _allocate(self, fraction: float) -> None:
        allocation = round(fraction * BUCKETS)
        self._allocation = (
            None if allocation >= BUCKETS else (_prefix(self._salt, "#allocation"), allocation)
        )

    def allocation_at(self, now: float) -> float:
        """The allocation in force at `now` (the ramp's step then, or `allocation`)."""
        return self._ramp[bisect_right(self._ramp, (now, math.inf)) - 1][1]

    def _follow_ramp(self, now: float) -> None:
        """Put the ramp's step at `now` in force; remembered assignments go with the old one."""
        step = bisect_right(self._ramp, (now, math.inf)) - 1
        if step != self._ramp_step:
            self._ramp_step = step
            self._allocate(self._ramp[step][1])
            self._memo.clear()

    def hold_ramp(self, step: int, why: dict[str, Any]) -> None:
        """Stop the ramp at `step` (0: the experiment's own allocation) from now on: a
        guardrail failed (`serve.outcome_log.OutcomeLog.ramp_state`, which says `why`)."""
        if not 0 <= step < len(self._ramp):
            raise ValueError(f"ramp step {step} is not one of this experiment's")
        self._ramp = self._ramp[: step + 1]
        self._ramp_step = step
        self._allocate(self._ramp[step][1])
        self._memo.clear()
        self.ramp_hold = why

    def targets(self, headers: Mapping[str, str], metadata: Any) -> bool:
        """Whether the experiment takes a request with these attributes (its `when` rules,
        `router.targeting`); one it does not take gets the default variant outside it."""
        for rule in self._rules:  # noqa: SIM110 - `matches`, inlined: it runs per request
            if not rule(headers, metadata):
                return False
        return True

    def assign(self, unit: str, now: float | None = None) -> Assignment:
        """The variant `unit` gets and why at `now` (default: the present); the same in every
        process, forever, but for a ramp step, which only moves units in."""
        forced = self._forced.get(unit)
        if forced is not None:
            return forced
        fallbacks = self._fallbacks
        if self._start != -math.inf or self._stop != math.inf:
            now = time.time() if now is None else now
            if now < self._start:
                return fallbacks["scheduled"]
            if now >= self._stop:
                return fallbacks["stopped"]
        if len(self._ramp) > 1:
            self._follow_ramp(time.time() if now is None else now)
        known = self._memo.get(unit)
        if known is not None:
            return known
        answer = self._hashed(unit)
        if len(self._memo) >= MEMO_SIZE:
            self._memo.clear()
        self._memo[unit] = answer
        return answer

    def _hashed(self, unit: str) -> Assignment:
        """Steps 3 to 6 of the assignment (`Experiment`), after the global holdout: pure
        functions of the unit id."""
        fallbacks = self._fallbacks
        encoded = unit.encode()
        if self._global_holdout is not None:
            prefix, threshold = self._global_holdout
            if _bucket(prefix, encoded) < threshold:
                return fallbacks["global_holdout"]
        if self._layer is not None:
            prefix, lo, hi = self._layer
            if not lo <= _bucket(prefix, encoded) < hi:
                return fallbacks["other_experiment"]
        if self._allocation is not None:
            prefix, threshold = self._allocation
            allocated = _bucket(prefix, encoded)
            if allocated >= threshold:
                if self._confirm is not None and self._confirm[0] <= allocated < self._confirm[1]:
                    return self._confirmed(encoded)
                return fallbacks["not_allocated"]
        if self._holdout is not None:
            prefix, threshold = self._holdout
            if _bucket(prefix, encoded) < threshold:
                return fallbacks["holdout"]
        if self._arena:
            return _ARENA
        return self._arm(encoded)

    def _arm(
        self, unit: bytes, log: Any = math.log, from_bytes: Any = int.from_bytes
    ) -> Assignment:
        """The arm by weighted rendezvous hashing: the highest ``log(u) / weight``, ``u`` the
        unit's uniform draw for the arm (`unit_interval`). With equal weights the order of the
        scores is that of the draws, so the draws' 53-bit integers are compared without the
        logarithm (the same arm: ties, where the float arithmetic could differ, need two draws
        within 2**-52 of each other). `log` and `from_bytes` are bound once: this runs for
        every new unit."""
        hashers = self._arm_hashers
        # Start from the first live arm, so even scores of -inf (never, for valid weights) pick one.
        best: Assignment = hashers[0][0]
        if self._equal_weights:
            top = -1
            for answer, prefix, _ in hashers:
                hasher = prefix.copy()
                hasher.update(unit)
                x = from_bytes(hasher.digest(), "big") >> 11
                if x > top:
                    best, top = answer, x
            return best
        best_score = -math.inf
        for answer, prefix, inverse_weight in hashers:
            hasher = prefix.copy()
            hasher.update(unit)
            score = log(((from_bytes(hasher.digest(), "big") >> 11) + 0.5) * _INV_TOP_53)
            score *= inverse_weight
            if score > best_score:
                best, best_score = answer, score
        return best

    def _confirmed(self, unit: bytes) -> Assignment:
        """A unit of the confirmation run: an arena battle of its one pair, else the control
        or the winner at even odds."""
        if self._arena:
            return _CONFIRM_ARENA
        _, _, prefix, control, winner = self._confirm  # type: ignore[misc]
        return control if _bucket(prefix, unit) < BUCKETS // 2 else winner

    def draw_confirm_pair(self, rng: random.Random = SECURE_RANDOM) -> tuple[str, str]:
        """The two variants of a confirmation battle (the control and the winner), in the order
        shown, by a fair coin from `rng`."""
        if self._confirm is None or not self._arena:
            raise ValueError(f"experiment {self.experiment.name!r} confirms no arena winner")
        pair = (self._confirm[3].variant or "", self._confirm[4].variant or "")
        return pair if rng.random() < 0.5 else (pair[1], pair[0])

    def draw_pair(self, rng: random.Random = SECURE_RANDOM) -> tuple[str, str]:
        """The two variants of a new arena battle, in the order they are shown (choice 0, 1):
        a pair by weight, then a fair coin for the order, both from `rng` (a seeded generator
        only in simulations and tests; the gateway uses the default, the OS's CSPRNG)."""
        if not self._arena:
            raise ValueError(f"experiment {self.experiment.name!r} is not an arena experiment")
        index = min(bisect_right(self._pair_cumulative, rng.random()), len(self._pairs) - 1)
        first, second = self._pairs[index]
        if rng.random() < 0.5:
            return second, first
        return first, second


def _confirmation(
    experiment: Experiment,
) -> tuple[int, int, blake2b, Assignment, Assignment] | None:
    """The confirmation run's allocation buckets [low, high), the hash of its even odds, and
    its two answers (the control's, the winner's); None without `confirm`."""
    low, high = experiment.confirm_buckets
    if experiment.confirm is None or high <= low:
        return None
    return (
        low,
        high,
        _prefix(experiment.hash_salt, "#confirm"),
        Assignment(experiment.control, "confirm"),
        Assignment(experiment.confirm.variant, "confirm"),
    )


@lru_cache(maxsize=256)
def compile_experiment(experiment: Experiment) -> CompiledExperiment:
    return CompiledExperiment(experiment)


def assign(experiment: Experiment, unit: str, now: float | None = None) -> Assignment:
    """The variant `unit` gets in `experiment` and why (compiles and caches the experiment)."""
    return compile_experiment(experiment).assign(unit, now)


def draw_pair(experiment: Experiment, rng: random.Random = SECURE_RANDOM) -> tuple[str, str]:
    """The two variants of a new arena battle, in display order, drawn at random."""
    return compile_experiment(experiment).draw_pair(rng)
