"""Targeting rules (`router.targeting`, `Experiment.when`): each test, what a missing or
oversized attribute does, and the config's checks."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from router.assignment import CompiledExperiment
from router.experiment import Experiment, Rule
from router.targeting import MAX_VALUE, compile_rule, matches

ARMS = [{"variant": "a"}, {"variant": "b"}]


def rule(**spec: object) -> tuple:
    parsed = Rule.model_validate(spec)
    return (compile_rule(parsed.attribute, *parsed.test),)


def experiment(*rules: dict) -> CompiledExperiment:
    return CompiledExperiment(
        Experiment(name="t", arms=ARMS, default_variant="a", when=list(rules))
    )


text = st.text(max_size=20)
numbers = st.floats(allow_nan=False, allow_infinity=False, width=32)


@given(text, text)
def test_equals_and_not_equals_compare_the_whole_string(value: str, operand: str) -> None:
    headers = {"x-plan": value}
    assert matches(rule(attribute="header.x-plan", equals=operand), headers, None) == (
        value == operand
    )
    assert matches(rule(attribute="header.x-plan", not_equals=operand), headers, None) == (
        value != operand
    )


@given(text, st.lists(text, min_size=1, max_size=5))
def test_in_and_not_in_are_complements_when_the_attribute_is_there(
    value: str, operands: list[str]
) -> None:
    metadata = {"plan": value}
    inside = matches(rule(attribute="metadata.plan", **{"in": operands}), {}, metadata)
    outside = matches(rule(attribute="metadata.plan", not_in=operands), {}, metadata)
    assert inside == (value in operands) and outside == (not inside)


@given(numbers, numbers)
def test_numeric_comparisons_read_the_value_as_a_number(value: float, bound: float) -> None:
    metadata = {"n": repr(value)}
    for operator, expected in (
        ("lt", value < bound),
        ("lte", value <= bound),
        ("gt", value > bound),
        ("gte", value >= bound),
    ):
        assert matches(rule(attribute="metadata.n", **{operator: bound}), {}, metadata) == expected


@pytest.mark.parametrize("value", ["", "ten", "1e999", "nan", "-inf", "0x10"])
def test_a_value_that_is_no_finite_number_fails_every_comparison(value: str) -> None:
    for operator in ("lt", "lte", "gt", "gte"):
        for bound in (-1e300, 0.0, 1e300):
            assert not matches(rule(attribute="metadata.n", **{operator: bound}), {}, {"n": value})


def test_regex_searches_and_anchors_match_the_whole_value() -> None:
    loose, whole = (
        rule(attribute="header.x-v", regex=r"2\."),
        rule(attribute="header.x-v", regex=r"^2\.\d+$"),
    )
    assert matches(loose, {"x-v": "v2.1"}, None) and not matches(whole, {"x-v": "v2.1"}, None)
    assert matches(whole, {"x-v": "2.10"}, None)


@pytest.mark.parametrize(
    "spec",
    [
        {"equals": "x"},
        {"not_equals": "x"},
        {"in": ["x"]},
        {"not_in": ["x"]},
        {"regex": ".*"},
        {"gte": 0},
        {"lt": 0},
    ],
)
def test_a_missing_attribute_fails_every_rule(spec: dict) -> None:
    assert not matches(rule(attribute="header.x-country", **spec), {}, None)
    assert not matches(rule(attribute="metadata.country", **spec), {}, {"other": "x"})
    assert not matches(rule(attribute="metadata.country", **spec), {}, "not a dict")


def test_an_oversized_value_fails_every_rule() -> None:
    long = "x" * (MAX_VALUE + 1)
    assert not matches(rule(attribute="header.x-a", regex="x"), {"x-a": long}, None)
    assert matches(rule(attribute="header.x-a", regex="x"), {"x-a": long[:MAX_VALUE]}, None)


def test_header_names_are_case_insensitive_in_the_config() -> None:
    plan = experiment({"attribute": "header.X-Country", "in": ["DE"]})
    assert plan.targets({"x-country": "DE"}, None) and not plan.targets({"x-country": "de"}, None)


def test_every_rule_must_hold_and_no_rules_take_every_request() -> None:
    plan = experiment(
        {"attribute": "header.x-country", "in": ["DE", "FR"]},
        {"attribute": "metadata.plan", "equals": "pro"},
    )
    assert plan.targets({"x-country": "FR"}, {"plan": "pro"})
    assert not plan.targets({"x-country": "FR"}, {"plan": "free"})
    assert not plan.targets({"x-country": "US"}, {"plan": "pro"})
    assert CompiledExperiment(Experiment(name="all", arms=ARMS)).targets({}, None)


@given(
    st.dictionaries(st.sampled_from(["x-country", "x-plan"]), text),
    st.none() | st.dictionaries(text, text),
)
def test_targeting_is_deterministic(headers: dict, metadata: dict | None) -> None:
    plan = experiment({"attribute": "header.x-country", "regex": "^[A-Z]{2}$"})
    again = experiment({"attribute": "header.x-country", "regex": "^[A-Z]{2}$"})
    assert plan.targets(headers, metadata) == again.targets(headers, metadata)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"attribute": "header.x", "equals": "a", "in": ["a"]}, "exactly one test"),
        ({"attribute": "header.x"}, "exactly one test"),
        ({"attribute": "header.x", "regex": "("}, "not a regular expression"),
        ({"attribute": "cookie.x", "equals": "a"}, "attribute"),
        ({"attribute": "header.x", "in": []}, "in"),
        ({"attribute": "header.x", "gte": math.inf}, "gte"),
        ({"attribute": "header.x", "contains": "a"}, "contains"),
    ],
)
def test_bad_rules_are_refused_with_the_field_named(spec: dict, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        Experiment(name="t", arms=ARMS, default_variant="a", when=[spec])


def test_a_targeted_experiment_names_its_default_variant() -> None:
    with pytest.raises(ValidationError, match=r"default_variant: required when targeting"):
        Experiment(name="t", arms=ARMS, when=[{"attribute": "header.x", "equals": "a"}])
