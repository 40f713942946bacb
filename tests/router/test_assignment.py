"""Assignment: deterministic forever (cases.json), proportional to weights, monotone in weights."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import binomtest, chisquare

from router import Arm, Experiment, assign

CASES = json.loads((Path(__file__).parent / "cases.json").read_text())


def experiment(weights: dict[str, float], salt: str = "s", name: str = "exp") -> Experiment:
    return Experiment(
        name=name, salt=salt, arms=tuple(Arm(variant=v, weight=w) for v, w in weights.items())
    )


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c['experiment']['name']}:{c['unit']}")
def test_pinned_cases(case: dict) -> None:
    """The contract: a changed hash would silently reshuffle every running experiment."""
    assert assign(Experiment.model_validate(case["experiment"]), case["unit"]) == case["variant"]


def test_same_answer_in_another_process() -> None:
    exp = experiment({"a": 1, "b": 1, "c": 2})
    units = [f"user-{i}" for i in range(200)]
    here = [assign(exp, u) for u in units]
    code = (
        "import json,sys; from router import Arm, Experiment, assign\n"
        "e = Experiment.model_validate_json(sys.argv[1])\n"
        "print(json.dumps([assign(e, f'user-{i}') for i in range(200)]))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, exp.model_dump_json()],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONHASHSEED": "123", "PATH": ""},
    )
    assert json.loads(out.stdout) == here


@settings(max_examples=50, deadline=None)
@given(unit=st.text(min_size=1, max_size=64), salt=st.text(min_size=1, max_size=16))
def test_same_unit_same_arm(unit: str, salt: str) -> None:
    exp = experiment({"a": 1, "b": 3}, salt=salt)
    assert len({assign(exp, unit) for _ in range(5)}) == 1


@pytest.mark.parametrize(
    "weights",
    [{"a": 1, "b": 1}, {"a": 1, "b": 3}, {"a": 5, "b": 3, "c": 2}, {"a": 0.01, "b": 0.99}],
)
def test_proportions_follow_weights(weights: dict[str, float]) -> None:
    exp = experiment(weights, salt="proportions")
    n = 40_000
    counts = {v: 0 for v in weights}
    for i in range(n):
        counts[assign(exp, f"u{i}")] += 1
    total = sum(weights.values())
    expected = [n * w / total for w in weights.values()]
    assert chisquare(list(counts.values()), expected).pvalue > 0.001


def test_zero_weight_arm_gets_nobody() -> None:
    exp = experiment({"a": 1, "paused": 0, "b": 1})
    assert {assign(exp, f"u{i}") for i in range(2000)} == {"a", "b"}


def test_salt_reshuffles_independently() -> None:
    a, b = experiment({"x": 1, "y": 1}, salt="one"), experiment({"x": 1, "y": 1}, salt="two")
    n = 20_000
    agree = sum(assign(a, f"u{i}") == assign(b, f"u{i}") for i in range(n))
    assert binomtest(agree, n, 0.5).pvalue > 0.001


def test_salt_defaults_to_name() -> None:
    named = Experiment(name="exp", arms=(Arm(variant="a"), Arm(variant="b")))
    salted = named.model_copy(update={"salt": "exp"})
    assert all(assign(named, f"u{i}") == assign(salted, f"u{i}") for i in range(500))


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
    before = experiment(dict(zip(names, weights, strict=True)))
    raised = list(weights)
    raised[index] *= factor
    after = experiment(dict(zip(names, raised, strict=True)))
    for i in range(500):
        old, new = assign(before, f"u{i}"), assign(after, f"u{i}")
        assert old == new or new == names[index]


def test_adding_an_arm_only_takes_units() -> None:
    before = experiment({"a": 1, "b": 1})
    after = experiment({"a": 1, "b": 1, "c": 1})
    for i in range(2000):
        old, new = assign(before, f"u{i}"), assign(after, f"u{i}")
        assert old == new or new == "c"
