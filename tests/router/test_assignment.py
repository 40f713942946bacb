"""Assignment: deterministic forever (cases.json), proportional, exclusive in a layer, monotone;
arena pairs drawn at random, in proportion to their weights, and derivable from nothing public.

`cases.json` is one list of pinned unit cases, generated once from the implementation and never
to be regenerated (a changed hash silently reshuffles every running experiment):
``{"experiment", "unit", "variant"}``: `assign(experiment, unit)` gives `variant`. The cases
added with layers, allocation, holdout, forced units, schedules and arena also carry
``"reason"`` (where absent, as in the first 30 cases, the reason is ``"arm"``) and, for scheduled
experiments, ``"now"`` (an aware ISO 8601 time, passed as a timestamp). Arena pairs are no longer
pinned: they were a public hash of the battle id, which let a voter name each side before voting.

Statistical tests of assignment use fixed units, so they are deterministic: each either always
passes or always fails, with a 1-in-1000 threshold against an honest implementation. Those of
arena pairs draw from a seeded generator where they check proportions, and from the gateway's own
source (the OS's CSPRNG) where they check that no public value predicts a side.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import random
import subprocess
import sys
import time
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from functools import cache
from hashlib import blake2b
from itertools import combinations
from pathlib import Path

import numpy as np
import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from scipy.stats import binomtest, chi2_contingency, chisquare

from router import Arm, Assignment, CompiledExperiment, Experiment, Pair, assign, draw_pair
from router.assignment import BUCKETS, EXPOSED_REASONS, bucket, unit_interval

CASES = json.loads((Path(__file__).parent / "cases.json").read_text(encoding="utf-8"))
UNIT_CASES = CASES

P_MIN = 0.001
# Every reason an assignment can give, and whether it counts the unit as exposed.
REASONS = {
    "arm": True,
    "arena": True,
    "holdout": True,
    "forced": False,
    "not_allocated": False,
    "other_experiment": False,
    "scheduled": False,
    "stopped": False,
}
T0 = datetime(2026, 3, 1, tzinfo=UTC)


def experiment(
    weights: dict[str, float], salt: str = "s", name: str = "exp", **fields
) -> Experiment:
    """An experiment of these arms; where some units get the default variant, it is the first
    arm's unless `fields` names one (an implicit default is refused: it follows arm order)."""
    arms = tuple(Arm(variant=v, weight=w) for v, w in weights.items())
    fields.setdefault("default_variant", next(iter(weights)))
    return Experiment(name=name, salt=salt, arms=arms, **fields)


def units(n: int, prefix: str = "u") -> list[str]:
    return [f"{prefix}{i}" for i in range(n)]


def assert_binomial(count: int, n: int, p: float) -> None:
    assert binomtest(count, n, p).pvalue > P_MIN, f"{count}/{n} is not a fraction {p}"


def timestamp(iso: str | None) -> float | None:
    return None if iso is None else datetime.fromisoformat(iso).timestamp()


# --- An independent reading of the scheme documented in `router.assignment` -------------------


def _x(salt: str, key: str, unit: str) -> int:
    digest = blake2b(f"{salt}\x1f{key}\x1f{unit}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def _u(salt: str, key: str, unit: str) -> float:
    return ((_x(salt, key, unit) >> 11) + 0.5) / 2**53


def _bound(fraction: float) -> int:
    # The implementation's bucket bounds: round(fraction * 10_000). (The docstring's "below
    # allocation * 10_000" reads the same for fractions on the bucket grid.)
    return round(fraction * 10_000)


def reference_assign(exp: Experiment, unit: str, now: float) -> tuple[str | None, str]:
    """The documented order and hashes, written from the docstrings without the module's code."""
    if unit in exp.forced:
        return exp.forced[unit], "forced"
    fallback = exp.default_variant if exp.default_variant is not None else exp.arms[0].variant
    if exp.start is not None and now < exp.start.timestamp():
        return fallback, "scheduled"
    if exp.stop is not None and now >= exp.stop.timestamp():
        return fallback, "stopped"
    layer = exp.layer if exp.layer is not None else f"experiment:{exp.name}"
    lo, hi = (_bound(edge) for edge in exp.layer_range)
    if not lo <= _x(layer, "#layer", unit) % 10_000 < hi:
        return fallback, "other_experiment"
    salt = exp.salt if exp.salt is not None else exp.name
    if _x(salt, "#allocation", unit) % 10_000 >= _bound(exp.allocation):
        return fallback, "not_allocated"
    if _x(salt, "#holdout", unit) % 10_000 < _bound(exp.holdout):
        return fallback, "holdout"
    if exp.mode == "arena":
        return None, "arena"
    scores = [
        (math.log(_u(salt, arm.variant, unit)) / arm.weight, -i, arm.variant)
        for i, arm in enumerate(exp.arms)
        if arm.weight > 0
    ]
    return max(scores)[2], "arm"


@st.composite
def experiments(draw: st.DrawFn, mode: str = "ab") -> Experiment:
    n = draw(st.integers(2, 4))
    names = [f"v{i}" for i in range(n)]
    weights = draw(
        st.lists(st.sampled_from([0.0, 1.0]) | st.floats(0.01, 100), min_size=n, max_size=n)
    )
    assume(sum(w > 0 for w in weights) >= (2 if mode == "arena" else 1))
    edges = sorted(draw(st.lists(st.floats(0, 1), min_size=2, max_size=2, unique=True)))
    assume(round(edges[0] * BUCKETS) != round(edges[1] * BUCKETS))  # else the slice is empty
    fields: dict = {
        "name": draw(st.sampled_from(["exp", "other"])),
        "mode": mode,
        "salt": draw(st.none() | st.text(min_size=1, max_size=8)),
        "layer": draw(st.none() | st.sampled_from(["l1", "l2"])),
        "layer_range": draw(st.sampled_from([(0.0, 1.0), tuple(edges)])),
        "allocation": draw(st.sampled_from([1.0, 0.5]) | st.floats(0.0001, 1)),
        "holdout": draw(st.sampled_from([0.0, 0.1]) | st.floats(0.0001, 0.99)),
        "arms": tuple(Arm(variant=v, weight=w) for v, w in zip(names, weights, strict=True)),
        "default_variant": draw(st.none() | st.sampled_from(["v1", "prod"])),
        "forced": draw(st.dictionaries(st.sampled_from(["qa", "u1", ""]), st.sampled_from(names))),
    }
    if draw(st.booleans()):
        fields["start"] = T0
        fields["stop"] = T0 + timedelta(days=draw(st.integers(1, 30)))
    if fields["default_variant"] is None:  # required where some units get it
        probe = Experiment.model_construct(**{**fields, "layer_range": fields["layer_range"]})
        if Experiment.fallback_reasons.fget(probe):  # type: ignore[attr-defined]
            fields["default_variant"] = "v0"
    if mode == "arena" and draw(st.booleans()):
        live = [v for v, w in zip(names, weights, strict=True) if w > 0]
        pairs = draw(st.lists(st.sampled_from(list(combinations(live, 2))), min_size=1, max_size=4))
        fields["pairs"] = tuple(Pair(variants=p, weight=draw(st.floats(0.1, 10))) for p in pairs)
    return Experiment(**fields)


# --- Pinned cases ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "case", UNIT_CASES, ids=lambda c: f"{c['experiment']['name']}:{c['unit']}:{c.get('now')}"
)
def test_pinned_cases(case: dict) -> None:
    """The contract: a changed hash would silently reshuffle every running experiment."""
    exp = Experiment.model_validate(case["experiment"])
    got = assign(exp, case["unit"], timestamp(case.get("now")))
    assert (got.variant, got.reason) == (case["variant"], case.get("reason", "arm"))


def test_pinned_cases_cover_every_hash() -> None:
    """The 30 original arm cases stay, and every draw of the scheme is pinned by some case."""
    assert sum("reason" not in c for c in UNIT_CASES) == 30
    assert len(UNIT_CASES) >= 30 + 15
    assert {c.get("reason", "arm") for c in UNIT_CASES} == set(REASONS)
    assert any("layer" in c["experiment"] for c in UNIT_CASES)
    assert all(set(c) <= {"experiment", "unit", "variant", "reason", "now"} for c in CASES)


def test_pinned_cases_follow_the_documented_scheme() -> None:
    for case in UNIT_CASES:
        exp = Experiment.model_validate(case["experiment"])
        now = timestamp(case.get("now"))
        expected = (case["variant"], case.get("reason", "arm"))
        assert reference_assign(exp, case["unit"], time.time() if now is None else now) == expected


# --- Determinism -----------------------------------------------------------------------------

CROSS_PROCESS = [
    experiment({"a": 1, "b": 1, "c": 2}),
    experiment(
        {"a": 1, "b": 3, "paused": 0},
        salt="layered",
        layer="ranking",
        layer_range=(0.2, 0.8),
        allocation=0.7,
        holdout=0.2,
        default_variant="prod",
        forced={"user-3": "b", "user-5": "prod", "user-7": "paused"},
    ),
    experiment(
        {"a": 1, "b": 1},
        name="timed",
        start=T0,
        stop=T0 + timedelta(days=7),
        forced={"user-1": "b"},
    ),
    experiment({"a": 1, "b": 2, "c": 3}, name="arena", mode="arena", holdout=0.1),
]
CROSS_NOW = [(T0 + timedelta(days=d)).timestamp() for d in (-1, 1, 8)]
# The same computation runs here and in a fresh interpreter with another hash seed.
CHILD = """
import json, sys
from router import Experiment, assign
exps = [Experiment.model_validate_json(e) for e in json.loads(sys.argv[1])]
out = [
    [[a.variant, a.reason] for a in (assign(e, f"user-{i}", now) for i in range(300))]
    for e in exps
    for now in json.loads(sys.argv[2])
]
print(json.dumps(out))
"""


def test_same_answer_in_another_process() -> None:
    here = [
        [[a.variant, a.reason] for a in (assign(e, f"user-{i}", now) for i in range(300))]
        for e in CROSS_PROCESS
        for now in CROSS_NOW
    ]
    reasons = {answer[1] for answers in here[: 3 * len(CROSS_PROCESS)] for answer in answers}
    assert reasons == set(REASONS)  # the comparison covers every step of the assignment
    specs = json.dumps([e.model_dump_json() for e in CROSS_PROCESS])
    out = subprocess.run(
        [sys.executable, "-c", CHILD, specs, json.dumps(CROSS_NOW)],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONHASHSEED": "123", "PATH": ""},
    )
    assert json.loads(out.stdout) == here


@settings(max_examples=50, deadline=None)
@given(unit=st.text(min_size=1, max_size=64), salt=st.text(min_size=1, max_size=16))
def test_same_unit_same_arm(unit: str, salt: str) -> None:
    exp = experiment({"a": 1, "b": 3}, salt=salt, holdout=0.3, allocation=0.8)
    answers = {assign(exp, unit) for _ in range(3)} | {CompiledExperiment(exp).assign(unit)}
    assert len(answers) == 1


@settings(max_examples=150, deadline=None)
@given(
    exp=experiments("ab") | experiments("arena"),
    unit_list=st.lists(st.text(max_size=20), min_size=1, max_size=10),
    days=st.integers(-2, 40),
)
def test_assignment_follows_the_documented_scheme(
    exp: Experiment, unit_list: list[str], days: int
) -> None:
    now = (T0 + timedelta(days=days)).timestamp()
    compiled = CompiledExperiment(exp)
    for unit in [*unit_list, "qa", "u1", ""]:
        expected = reference_assign(exp, unit, now)
        got = compiled.assign(unit, now)
        assert (got.variant, got.reason) == expected
        assert assign(exp, unit, now) == got


@settings(max_examples=50, deadline=None)
@given(salt=st.text(min_size=1, max_size=8), key=st.text(max_size=8), unit=st.text(max_size=20))
def test_bucket_and_unit_interval_are_the_documented_hash(salt: str, key: str, unit: str) -> None:
    assert bucket(salt, key, unit) == _x(salt, key, unit) % BUCKETS
    assert 0 <= bucket(salt, key, unit) < BUCKETS == 10_000
    assert unit_interval(salt, key, unit) == _u(salt, key, unit)
    assert 0 < unit_interval(salt, key, unit) < 1


@pytest.mark.parametrize(("reason", "exposed"), REASONS.items())
def test_exposed_reasons(reason: str, exposed: bool) -> None:
    assert Assignment("v", reason).exposed is exposed
    assert (reason in EXPOSED_REASONS) is exposed


# --- Arms ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "weights",
    [{"a": 1, "b": 1}, {"a": 1, "b": 3}, {"a": 5, "b": 3, "c": 2}, {"a": 0.01, "b": 0.99}],
)
def test_proportions_follow_weights(weights: dict[str, float]) -> None:
    compiled = CompiledExperiment(experiment(weights, salt="proportions"))
    n = 40_000
    counts = Counter(compiled.assign(u).variant for u in units(n))
    assert set(counts) <= set(weights)
    total = sum(weights.values())
    expected = [n * w / total for w in weights.values()]
    assert chisquare([counts[v] for v in weights], expected).pvalue > P_MIN


def test_zero_weight_arm_gets_nobody() -> None:
    exp = experiment({"a": 1, "paused": 0, "b": 1})
    assert {assign(exp, u) for u in units(2000)} == {Assignment("a", "arm"), Assignment("b", "arm")}


def test_salt_reshuffles_independently() -> None:
    a = CompiledExperiment(experiment({"x": 1, "y": 1}, salt="one"))
    b = CompiledExperiment(experiment({"x": 1, "y": 1}, salt="two"))
    n = 20_000
    agree = sum(a.assign(u) == b.assign(u) for u in units(n))
    assert_binomial(agree, n, 0.5)


def test_salt_defaults_to_name() -> None:
    named = Experiment(
        name="exp", arms=(Arm(variant="a"), Arm(variant="b")), allocation=0.5, default_variant="a"
    )
    salted = named.model_copy(update={"salt": "exp"})
    other = named.model_copy(update={"salt": "other"})
    answers = [assign(named, u) for u in units(500)]
    assert answers == [assign(salted, u) for u in units(500)]
    assert answers != [assign(other, u) for u in units(500)]


@settings(max_examples=30, deadline=None)
@given(
    weights=st.lists(st.floats(0.1, 10), min_size=2, max_size=5),
    index=st.integers(0, 4),
    factor=st.floats(1.01, 20),
)
def test_raising_a_weight_only_moves_units_into_that_arm(
    weights: list[float], index: int, factor: float
) -> None:
    index %= len(weights)
    names = [f"v{i}" for i in range(len(weights))]
    before = CompiledExperiment(experiment(dict(zip(names, weights, strict=True))))
    raised = list(weights)
    raised[index] *= factor
    after = CompiledExperiment(experiment(dict(zip(names, raised, strict=True))))
    for unit in units(500):
        old, new = before.assign(unit).variant, after.assign(unit).variant
        assert old == new or new == names[index]


def test_adding_an_arm_only_takes_units() -> None:
    before = CompiledExperiment(experiment({"a": 1, "b": 1}))
    after = CompiledExperiment(experiment({"a": 1, "b": 1, "c": 1}))
    taken = 0
    for unit in units(2000):
        old, new = before.assign(unit).variant, after.assign(unit).variant
        assert old == new or new == "c"
        taken += new == "c"
    assert_binomial(taken, 2000, 1 / 3)


@pytest.mark.parametrize("weight", [1e-308, 5e-7, 1e7])
def test_weights_outside_the_supported_range_are_refused(weight: float) -> None:
    with pytest.raises(ValidationError, match="weight"):
        experiment({"a": weight, "b": 1.0})


def test_extreme_supported_weights_still_pick_an_arm() -> None:
    exp = experiment({"a": 1e-6, "b": 1e6})
    assert {assign(exp, u).reason for u in units(2000)} == {"arm"}


# --- Allocation and holdout ------------------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(
    low=st.floats(0.0001, 1),
    high=st.floats(0.0001, 1),
    holdout=st.sampled_from([0.0, 0.25]),
    layered=st.booleans(),
)
def test_raising_allocation_only_adds_units(
    low: float, high: float, holdout: float, layered: bool
) -> None:
    low, high = sorted((low, high))
    fields = {"holdout": holdout, "layer": "l", "layer_range": (0.1, 0.9)} if layered else {}
    before = CompiledExperiment(experiment({"a": 1, "b": 2}, allocation=low, **fields))
    after = CompiledExperiment(experiment({"a": 1, "b": 2}, allocation=high, **fields))
    for unit in units(400):
        old, new = before.assign(unit), after.assign(unit)
        if old.reason != "not_allocated":
            assert new == old  # allocated units keep their arm (or holdout)
        elif new != old:
            assert new.exposed


@pytest.mark.parametrize(("allocation", "n"), [(0.3, 20_000), (0.05, 20_000), (0.999, 20_000)])
def test_allocation_fraction(allocation: float, n: int) -> None:
    compiled = CompiledExperiment(experiment({"a": 1, "b": 1}, salt="alloc", allocation=allocation))
    exposed = sum(compiled.assign(u).exposed for u in units(n))
    assert_binomial(exposed, n, allocation)


@pytest.mark.parametrize(("default", "fallback"), [("a", "a"), ("b", "b"), ("prod", "prod")])
def test_units_outside_allocation_get_the_default(default: str, fallback: str) -> None:
    compiled = CompiledExperiment(
        experiment({"a": 1, "b": 1}, allocation=0.3, default_variant=default)
    )
    outside = [a for a in map(compiled.assign, units(5000)) if a.reason == "not_allocated"]
    assert_binomial(len(outside), 5000, 0.7)
    assert {(a.variant, a.exposed) for a in outside} == {(fallback, False)}


def test_holdout() -> None:
    compiled = CompiledExperiment(
        experiment(
            {"a": 1, "b": 3}, salt="held", allocation=0.5, holdout=0.2, default_variant="prod"
        )
    )
    n = 40_000
    answers = [compiled.assign(u) for u in units(n)]
    reasons = Counter(a.reason for a in answers)
    assert set(reasons) == {"arm", "holdout", "not_allocated"}
    allocated = reasons["arm"] + reasons["holdout"]
    assert_binomial(allocated, n, 0.5)
    assert_binomial(reasons["holdout"], allocated, 0.2)
    held = {(a.variant, a.exposed) for a in answers if a.reason == "holdout"}
    assert held == {("prod", True)}
    arms = Counter(a.variant for a in answers if a.reason == "arm")
    assert chisquare(
        [arms["a"], arms["b"]], [reasons["arm"] / 4, reasons["arm"] * 3 / 4]
    ).pvalue > (P_MIN)


@settings(max_examples=30, deadline=None)
@given(low=st.just(0.0) | st.floats(0.0001, 0.99), high=st.just(0.0) | st.floats(0.0001, 0.99))
def test_raising_holdout_only_moves_units_into_holdout(low: float, high: float) -> None:
    low, high = sorted((low, high))
    before = CompiledExperiment(experiment({"a": 1, "b": 1}, holdout=low, allocation=0.6))
    after = CompiledExperiment(experiment({"a": 1, "b": 1}, holdout=high, allocation=0.6))
    for unit in units(400):
        old, new = before.assign(unit), after.assign(unit)
        assert new == old or (old.reason == "arm" and new.reason == "holdout")


@cache
def unit_in_bucket(salt: str, key: str, target: int) -> str:
    """Some unit whose bucket (by the documented hash) is `target`."""
    return next(
        u for u in map("b{}".format, itertools.count()) if _x(salt, key, u) % 10_000 == target
    )


# Fractions on the 1/10_000 grid, some of which miss their bucket count in floating point
# (0.57 * 10_000 == 5699.999999999999, 0.07 * 10_000 == 700.0000000000001).
GRID = [(0.0001, 1), (0.0003, 3), (0.07, 700), (0.1 + 0.2, 3000), (0.57, 5700), (0.9999, 9999)]


@pytest.mark.parametrize(("fraction", "buckets"), GRID)
def test_bucket_bounds_are_exact(fraction: float, buckets: int) -> None:
    """A fraction f of the units is exactly the buckets below f * 10_000 (as an integer)."""
    allocated = experiment({"a": 1, "b": 1}, salt="bounds", allocation=fraction)
    held = experiment({"a": 1, "b": 1}, salt="bounds", holdout=fraction)
    last_in, first_out = buckets - 1, buckets
    assert assign(allocated, unit_in_bucket("bounds", "#allocation", last_in)).reason == "arm"
    out = assign(allocated, unit_in_bucket("bounds", "#allocation", first_out))
    assert out.reason == "not_allocated"
    assert assign(held, unit_in_bucket("bounds", "#holdout", last_in)).reason == "holdout"
    assert assign(held, unit_in_bucket("bounds", "#holdout", first_out)).reason == "arm"
    low, high = (0.0, fraction) if fraction > 0.5 else (fraction, 1.0)
    sliced = experiment({"a": 1, "b": 1}, salt="own", layer="edges", layer_range=(low, high))
    lo, hi = (0, buckets) if fraction > 0.5 else (buckets, 10_000)
    inside = [lo, hi - 1]
    outside = [b for b in (lo - 1, hi) if 0 <= b < 10_000]
    for b in inside:
        assert assign(sliced, unit_in_bucket("edges", "#layer", b)).reason == "arm", b
    for b in outside:
        assert assign(sliced, unit_in_bucket("edges", "#layer", b)).reason == "other_experiment"


# --- Layers ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "slices",
    [
        [((0.0, 0.3), 1.0), ((0.3, 1.0), 1.0)],
        [((0.0, 0.2), 1.0), ((0.25, 0.6), 0.5), ((0.6, 0.9), 0.8)],
    ],
    ids=["two-covering", "three-with-gap"],
)
def test_experiments_in_one_layer_share_no_unit(
    slices: list[tuple[tuple[float, float], float]],
) -> None:
    compiled = [
        CompiledExperiment(
            experiment(
                {"a": 1, "b": 1},
                name=f"e{i}",
                salt=f"salt-{i}",
                layer="shared",
                layer_range=layer_range,
                allocation=allocation,
                holdout=0.1,
            )
        )
        for i, (layer_range, allocation) in enumerate(slices)
    ]
    n = 50_000
    in_slice = [0] * len(slices)
    exposed = [0] * len(slices)
    covered = 0
    for unit in units(n):
        answers = [c.assign(unit) for c in compiled]
        assert sum(a.exposed for a in answers) <= 1, unit
        inside = [a.reason != "other_experiment" for a in answers]
        assert sum(inside) <= 1, unit
        covered += any(inside)
        for i, a in enumerate(answers):
            in_slice[i] += inside[i]
            exposed[i] += a.exposed
    for i, ((start, end), allocation) in enumerate(slices):
        assert_binomial(in_slice[i], n, end - start)
        assert_binomial(exposed[i], in_slice[i], allocation)
    width = sum(end - start for (start, end), _ in slices)
    assert covered == n if math.isclose(width, 1.0) else covered < n


@pytest.mark.parametrize(
    ("layer", "layer_salt"), [("shared", "shared"), (None, "experiment:exp")], ids=["named", "own"]
)
def test_layer_slice_is_the_layer_bucket_range(layer: str | None, layer_salt: str) -> None:
    """The slice is [start, end) of the bucket salted with the layer's name (not the salt), so
    every experiment of a layer sees the same bucket; without a layer, "experiment:NAME"."""
    compiled = CompiledExperiment(
        experiment({"a": 1, "b": 1}, salt="own", layer=layer, layer_range=(0.25, 0.5))
    )
    for unit in units(3000):
        inside = 2500 <= _x(layer_salt, "#layer", unit) % 10_000 < 5000
        assert (compiled.assign(unit).reason != "other_experiment") == inside


def test_other_experiment_units_get_the_default() -> None:
    compiled = CompiledExperiment(
        experiment({"a": 1, "b": 1}, layer="l", layer_range=(0.5, 1.0), default_variant="prod")
    )
    outside = [a for a in map(compiled.assign, units(2000)) if a.reason == "other_experiment"]
    assert_binomial(len(outside), 2000, 0.5)
    assert {(a.variant, a.exposed) for a in outside} == {("prod", False)}


def _crosstab(a: CompiledExperiment, b: CompiledExperiment, n: int) -> np.ndarray:
    counts = Counter(
        (x.variant if x.exposed else "-", y.variant if y.exposed else "-")
        for x, y in ((a.assign(u), b.assign(u)) for u in units(n))
    )
    rows = sorted({k[0] for k in counts})
    cols = sorted({k[1] for k in counts})
    return np.array([[counts[r, c] for c in cols] for r in rows])


@pytest.mark.parametrize(
    ("first", "second"),
    [
        (
            {"layer": "ranking", "layer_range": (0.0, 0.5)},
            {"layer": "prompt", "layer_range": (0.2, 0.9)},
        ),
        ({}, {}),
        ({"allocation": 0.5}, {"layer": "ranking", "layer_range": (0.5, 1.0)}),
    ],
    ids=["two-layers", "own-layers", "own-and-named"],
)
def test_experiments_in_different_layers_are_independent(first: dict, second: dict) -> None:
    a = CompiledExperiment(experiment({"x": 1, "y": 2}, name="first", salt="one", **first))
    b = CompiledExperiment(
        experiment({"x": 1, "y": 1, "z": 1}, name="second", salt="two", **second)
    )
    table = _crosstab(a, b, 100_000)
    assert table.shape[0] >= 2 and table.shape[1] >= 3
    assert chi2_contingency(table).pvalue > P_MIN


def test_the_crosstab_detects_dependence() -> None:
    """Control for the test above: one layer's disjoint slices are strongly dependent."""
    arms = {"x": 1, "y": 1}
    a = experiment(arms, name="first", salt="one", layer="l", layer_range=(0.0, 0.5))
    b = experiment(arms, name="second", salt="two", layer="l", layer_range=(0.5, 1.0))
    table = _crosstab(CompiledExperiment(a), CompiledExperiment(b), 2000)
    assert chi2_contingency(table).pvalue < 1e-6


# --- Forced units and schedule ---------------------------------------------------------------

FORCED = {"qa-a": "a", "qa-paused": "paused", "qa-prod": "prod"}


@pytest.mark.parametrize(
    "fields",
    [
        {"allocation": 0.0001},
        {"layer": "l", "layer_range": (0.9, 0.9001)},
        {"holdout": 0.9999},
        {"start": T0 + timedelta(days=365)},
        {"stop": T0 - timedelta(days=365)},
        {
            "mode": "arena",
            "allocation": 0.0001,
            "arms": (Arm(variant="a"), Arm(variant="paused", weight=0), Arm(variant="c")),
        },
    ],
    ids=["allocation", "layer", "holdout", "scheduled", "stopped", "arena"],
)
def test_forced_units_are_honored_regardless(fields: dict) -> None:
    spec = {
        "name": "forced",
        "arms": (Arm(variant="a"), Arm(variant="paused", weight=0), Arm(variant="b")),
        "default_variant": "prod",
        "forced": FORCED,
        **fields,
    }
    compiled = CompiledExperiment(Experiment(**spec))
    now = T0.timestamp()
    for unit, variant in FORCED.items():
        assert compiled.assign(unit, now) == Assignment(variant, "forced")
        assert not compiled.assign(unit, now).exposed
    others = Counter(compiled.assign(u, now).reason for u in units(200))
    assert others["arm"] + others["arena"] < 10  # the experiment itself lets almost nobody in


@pytest.mark.parametrize("default", ["b", "prod"])
def test_schedule(default: str) -> None:
    stop = T0 + timedelta(days=7)
    compiled = CompiledExperiment(
        experiment({"a": 1, "b": 1}, start=T0, stop=stop, default_variant=default)
    )
    fallback = default
    expected = [
        (T0 - timedelta(microseconds=1), "scheduled"),
        (T0, "arm"),
        (stop - timedelta(microseconds=1), "arm"),
        (stop, "stopped"),
        (stop + timedelta(days=300), "stopped"),
    ]
    for now, reason in expected:
        answers = [compiled.assign(u, now.timestamp()) for u in units(200)]
        assert {a.reason for a in answers} == {reason}, now
        if reason == "arm":
            assert {a.variant for a in answers} == {"a", "b"}
        else:
            assert {(a.variant, a.exposed) for a in answers} == {(fallback, False)}


def test_schedule_defaults_to_the_clock() -> None:
    future = experiment({"a": 1, "b": 1}, start=datetime.now(UTC) + timedelta(days=1))
    past = experiment({"a": 1, "b": 1}, stop=datetime.now(UTC) - timedelta(seconds=1))
    running = experiment(
        {"a": 1, "b": 1},
        start=datetime.now(UTC) - timedelta(days=1),
        stop=datetime.now(UTC) + timedelta(days=1),
    )
    assert assign(future, "u").reason == "scheduled"
    assert assign(past, "u").reason == "stopped"
    assert assign(running, "u").reason == "arm"


DAY_US = 86_400_000_000


@settings(max_examples=100, deadline=None)
@given(offset=st.integers(-3 * DAY_US, 10 * DAY_US), unit=st.text(max_size=8))
@example(offset=-1, unit="u").via("the last instant before start")
@example(offset=0, unit="u").via("start")
@example(offset=7 * DAY_US - 1, unit="u").via("the last instant before stop")
@example(offset=7 * DAY_US, unit="u").via("stop")
def test_assignment_agrees_with_state(offset: int, unit: str) -> None:
    exp = experiment({"a": 1, "b": 1}, start=T0, stop=T0 + timedelta(days=7))
    now = T0 + timedelta(microseconds=offset)
    reason = assign(exp, unit, now.timestamp()).reason
    state = exp.state(now)
    assert reason == {"running": "arm"}.get(state, state)


# --- Arena -----------------------------------------------------------------------------------


def test_arena_assign_returns_no_variant() -> None:
    exp = experiment({"a": 1, "b": 1}, mode="arena", holdout=0.2, allocation=0.5)
    answers = Counter(assign(exp, u) for u in units(4000))
    assert set(answers) == {
        Assignment(None, "arena"),
        Assignment("a", "holdout"),
        Assignment("a", "not_allocated"),
    }
    assert_binomial(answers[Assignment(None, "arena")], 4000, 0.5 * 0.8)
    assert Assignment(None, "arena").exposed


def _pair_counts(exp: Experiment, n: int, seed: int = 7) -> tuple[Counter, Counter]:
    """Counts per pair (as configured: its variants' arm order) and how often it was swapped."""
    compiled = CompiledExperiment(exp)
    rng = random.Random(seed)
    configured = [p.variants for p in exp.arena_pairs()]
    pairs: Counter = Counter()
    swapped: Counter = Counter()
    for _ in range(n):
        first, second = compiled.draw_pair(rng)
        assert first != second
        key = (first, second) if (first, second) in configured else (second, first)
        assert key in configured
        pairs[key] += 1
        swapped[key] += key != (first, second)
    return pairs, swapped


@pytest.mark.parametrize(
    ("exp", "expected"),
    [
        (
            experiment({"a": 1, "b": 2, "c": 3, "paused": 0}, mode="arena"),
            {("a", "b"): 2, ("a", "c"): 3, ("b", "c"): 6},
        ),
        (
            experiment(
                {"a": 1, "b": 1, "c": 1, "d": 1},
                mode="arena",
                pairs=(
                    Pair(variants=("a", "b")),
                    Pair(variants=("c", "a"), weight=4),
                    Pair(variants=("d", "b"), weight=0.5),
                ),
            ),
            {("a", "b"): 1, ("c", "a"): 4, ("d", "b"): 0.5},
        ),
        (
            experiment({"a": 0.9, "b": 0.1}, mode="arena", salt="two-arms"),
            {("a", "b"): 1},
        ),
    ],
    ids=["default-pairs", "explicit-pairs", "two-arms"],
)
def test_arena_pairs_follow_pair_weights(exp: Experiment, expected: dict) -> None:
    n = 30_000
    pairs, swapped = _pair_counts(exp, n)
    assert set(pairs) == set(expected)
    if len(expected) > 1:
        total = sum(expected.values())
        observed = [pairs[p] for p in expected]
        assert chisquare(observed, [n * w / total for w in expected.values()]).pvalue > P_MIN
    for pair, count in pairs.items():
        assert_binomial(swapped[pair], count, 0.5)


def test_the_gateways_draws_follow_pair_weights_too() -> None:
    """The default source (the OS's CSPRNG, as the gateway draws): a 1-in-a-million threshold,
    since these draws cannot be repeated."""
    exp = experiment({"a": 1, "b": 3}, mode="arena")
    n = 20_000
    draws = Counter(draw_pair(exp) for _ in range(n))
    assert set(draws) == {("a", "b"), ("b", "a")}
    assert binomtest(draws[("a", "b")], n, 0.5).pvalue > 1e-6


@pytest.mark.parametrize("weight", [1e-6, 1e6])
def test_arena_with_extreme_weights_compiles(weight: float) -> None:
    exp = experiment({"a": weight, "b": weight}, mode="arena")
    assert set(CompiledExperiment(exp).draw_pair()) == {"a", "b"}


def test_a_seeded_source_repeats_its_draws_and_the_default_does_not() -> None:
    exp = experiment({"a": 1, "b": 2, "c": 3}, mode="arena")
    seeded = [draw_pair(exp, random.Random(3)) for _ in range(2)]
    assert seeded[0] == seeded[1]
    assert len({tuple(draw_pair(exp) for _ in range(64)) for _ in range(2)}) == 2


def test_every_pair_and_order_is_drawn() -> None:
    exp = experiment({"a": 1, "b": 1, "c": 1}, mode="arena")
    seen = {draw_pair(exp) for _ in range(400)}
    assert len(seen) == 6  # three pairs, both orders


def _public_predictors(salt: str, experiment_name: str, arms: tuple[str, str]) -> dict:
    """Guesses of side a's variant from what a voter sees before voting: the battle id (and the
    side completion ids, which the gateway makes the same way), hashed every way the old scheme
    or a careless one would, plus the experiment's public salt and arm order."""
    first, second = arms

    def by_bit(bit: bool) -> str:
        return second if bit else first

    def blake(text: str) -> int:
        return int.from_bytes(blake2b(text.encode(), digest_size=8).digest(), "big")

    return {
        "the old public hash of the order": lambda battle: by_bit(_u(salt, "#order", battle) < 0.5),
        "the old hash, salted with the name": lambda battle: by_bit(
            _u(experiment_name, "#order", battle) < 0.5
        ),
        "blake2b of the battle id, low bit": lambda battle: by_bit(bool(blake(battle) & 1)),
        "sha256 of the battle id, low bit": lambda battle: by_bit(
            bool(hashlib.sha256(battle.encode()).digest()[-1] & 1)
        ),
        "the battle id's last hex digit": lambda battle: by_bit(int(battle[-1], 16) % 2 == 1),
        "the battle id's first hex digit": lambda battle: by_bit(int(battle[7], 16) >= 8),
        "always the first arm": lambda battle: first,
        "always the second arm": lambda battle: second,
    }


def test_no_public_value_predicts_side_a() -> None:
    """4,000 battles drawn as the gateway draws them (battle id from uuid4, pair and order from
    the OS's CSPRNG): no predictor built from public values names side a's variant in more than
    55 % of them (an honest coin: 50 % with a standard deviation of 0.8 %)."""
    exp = experiment(
        {"smollm2-concise": 1, "smollm2-friendly": 1}, name="smollm2-arena", salt=None, mode="arena"
    )
    arms = ("smollm2-concise", "smollm2-friendly")
    predictors = _public_predictors(exp.hash_salt, exp.name, arms)
    right = Counter()
    n = 4_000
    for _ in range(n):
        battle = f"battle-{uuid.uuid4().hex}"
        side_a, _ = draw_pair(exp)
        for name, predict in predictors.items():
            right[name] += predict(battle) == side_a
    worst = max(predictors, key=lambda name: right[name])
    assert right[worst] / n <= 0.55, f"{worst} names side a in {right[worst]} of {n} battles"
