"""Targeting: an experiment's `when:` rules over a request's attributes.

A rule names an attribute and one test; an experiment takes a request only when all its rules
hold. Attributes:

- ``header.NAME``: an HTTP header (``header.x-country``, ``header.x-plan``), any case;
- ``metadata.KEY``: a key of the OpenAI request's ``metadata`` object (strings).

Tests, one per rule:

- ``equals: "pro"``, ``not_equals: "free"``: the value is (is not) this string;
- ``in: [DE, FR]``, ``not_in: [US]``: the value is (is not) one of these strings;
- ``regex: "^2\\."``: Python's `re.search` finds the pattern in the value (anchor it with ``^``
  and ``$`` to match the whole value);
- ``lt``, ``lte``, ``gt``, ``gte``: the value, read as a decimal number, compares so with
  this number (a value that is no finite number fails).

A request without the attribute fails every rule that names it, ``not_equals`` and ``not_in``
included: a rule tests what a request says, never what it leaves out. Values longer than
`MAX_VALUE` characters fail every rule (OpenAI's own bound for metadata values), which also
bounds what a regular expression is run on.

The rules are compiled once per config (`compile_rule`) into closures that each read their
attribute and test it (one call per rule per request: targeting runs on every request of a
targeted experiment); a request that fails them is served the default variant outside the
experiment (`router.assignment`).
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Mapping
from math import isfinite
from typing import Any

MAX_VALUE = 512
ATTRIBUTE_PATTERN = r"^(header\.[A-Za-z0-9!#$%&'*+.^_`|~-]{1,128}|metadata\.[^\s]{1,64})$"
OPERATORS = ("equals", "not_equals", "in", "not_in", "regex", "lt", "lte", "gt", "gte")

Test = Callable[[str], bool]
# A compiled rule: (headers, metadata) -> whether the request passes it.
Rule = Callable[[Mapping[str, str], Any], bool]


_COMPARISONS = {"lt": operator.lt, "lte": operator.le, "gt": operator.gt, "gte": operator.ge}


def _compare(name: str, bound: float) -> Test:
    compare = _COMPARISONS[name]

    def test(value: str) -> bool:
        try:
            number = float(value)
        except ValueError:
            return False
        return compare(number, bound) and isfinite(number)

    return test


def make_test(name: str, operand: Any) -> Test:
    """The test one rule applies to an attribute's value (operands already validated)."""
    if name == "equals":
        return operand.__eq__
    if name == "not_equals":
        return operand.__ne__
    if name == "in":
        return frozenset(operand).__contains__
    if name == "not_in":
        excluded = frozenset(operand)
        return lambda value: value not in excluded
    if name == "regex":
        return lambda value, search=re.compile(operand).search: search(value) is not None
    if name in _COMPARISONS:
        return _compare(name, float(operand))
    raise ValueError(f"unknown operator {name!r}")


def compile_rule(attribute: str, test: str, operand: Any) -> Rule:
    """One rule as a closure over its attribute's name and test."""
    kind, _, name = attribute.partition(".")
    check = make_test(test, operand)
    if kind == "header":
        name = name.lower()

        def header_rule(headers: Mapping[str, str], metadata: Any) -> bool:
            value = headers.get(name)
            return isinstance(value, str) and len(value) <= MAX_VALUE and check(value)

        return header_rule

    def metadata_rule(headers: Mapping[str, str], metadata: Any) -> bool:
        value = metadata.get(name) if isinstance(metadata, dict) else None
        return isinstance(value, str) and len(value) <= MAX_VALUE and check(value)

    return metadata_rule


def matches(rules: tuple[Rule, ...], headers: Mapping[str, str], metadata: Any) -> bool:
    """Whether a request with these headers (a case-insensitive mapping, or lower-case keys)
    and `metadata` (the body's field: a dict of strings, or None) passes every rule."""
    for rule in rules:  # noqa: SIM110 - all() over a generator costs more per request
        if not rule(headers, metadata):
            return False
    return True
