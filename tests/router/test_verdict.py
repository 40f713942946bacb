"""The verdict: pinned case by case (verdict_cases.json), plus properties over any evidence.

`verdict_cases.json` is a list of hand-written cases, each ``{"why", "evidence", "decision",
"variant", "reasons", "sycophancy"}``: `decide(evidence)` gives that decision, that variant, those
reasons (``[code, treatment, primary reading]``, in order) and that sycophancy list. `evidence`
is `Evidence`'s fields, each treatment's primary metric tagged by its ``"kind"``: ``votes``,
``sequential``, ``fixed_horizon`` or ``missing``. Between them the cases reach every reason code
and every reading; a rule that changes changes a case, on purpose.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from router.analysis.verdict import (
    PRIMARY_READINGS,
    REASON_CODES,
    Evidence,
    FixedHorizon,
    Missing,
    Primary,
    Ruling,
    Sequential,
    Treatment,
    Votes,
    decide,
)

CASES = json.loads((Path(__file__).parent / "verdict_cases.json").read_text(encoding="utf-8"))
KINDS: dict[str, type] = {
    "votes": Votes,
    "sequential": Sequential,
    "fixed_horizon": FixedHorizon,
    "missing": Missing,
}


def primary_of(document: dict[str, Any]) -> Primary:
    fields = dict(document)
    return KINDS[fields.pop("kind")](**fields)


def evidence_of(document: dict[str, Any]) -> Evidence:
    treatments = tuple(
        Treatment(
            name=t["name"],
            primary=primary_of(t["primary"]),
            guardrails=tuple((metric, status) for metric, status in t["guardrails"]),
        )
        for t in document["treatments"]
    )
    confirmation = document.get("confirmation")
    return Evidence(
        **{
            **document,
            "treatments": treatments,
            "confirmation": evidence_of(confirmation) if confirmation is not None else None,
        }
    )


def outcome(ruling: Ruling) -> dict[str, Any]:
    return {
        "decision": ruling.decision,
        "variant": ruling.variant,
        "reasons": [[r.code, r.treatment, r.primary] for r in ruling.reasons],
        "sycophancy": list(ruling.sycophancy),
    }


@pytest.mark.parametrize("case", CASES, ids=[case["why"] for case in CASES])
def test_pinned_cases(case: dict[str, Any]) -> None:
    expected = {key: case[key] for key in ("decision", "variant", "reasons", "sycophancy")}
    assert outcome(decide(evidence_of(case["evidence"]))) == expected


def test_the_cases_reach_every_code_reading_and_kind() -> None:
    reasons = [reason for case in CASES for reason in case["reasons"]]
    assert {code for code, _, _ in reasons} == set(REASON_CODES)
    assert {reading for _, _, reading in reasons if reading is not None} == set(PRIMARY_READINGS)
    kinds = {t["primary"]["kind"] for c in CASES for t in c["evidence"]["treatments"]}
    assert kinds == set(KINDS)
    keys = {"why", "evidence", "decision", "variant", "reasons", "sycophancy"}
    assert all(set(case) == keys and case["why"] for case in CASES)
    assert len({case["why"] for case in CASES}) == len(CASES)


# Properties over any evidence.

BOUND = st.none() | st.floats(-1, 1)
P_VALUE = st.none() | st.floats(0, 1)
PRIMARIES = st.one_of(
    st.builds(Votes, probability=BOUND, low=BOUND, high=BOUND, voters=st.integers(0, 30)),
    st.builds(
        Sequential, change=BOUND, difference=BOUND, cs_low=BOUND, cs_high=BOUND, p_value=P_VALUE
    ),
    st.builds(FixedHorizon, change=BOUND, low=BOUND, high=BOUND, p_value=P_VALUE),
    st.builds(Missing, reading=st.sampled_from(["no_votes", "no_battles", "no_data"])),
)
GUARDRAILS = st.lists(
    st.tuples(
        st.sampled_from(["reward_score", "error_rate"]),
        st.sampled_from(["pass", "fail", "inconclusive"]),
    ),
    max_size=3,
).map(tuple)


@st.composite
def evidence(draw: st.DrawFn, mismatch: bool | None = None) -> Evidence:
    names = draw(st.lists(st.sampled_from("bcdefg"), unique=True, max_size=4))
    return Evidence(
        metric="m",
        higher_is_better=draw(st.booleans()),
        control="a",
        alpha=draw(st.sampled_from([0.05, 0.025, 0.0125])),
        sample_ratio_mismatch=draw(st.booleans()) if mismatch is None else mismatch,
        treatments=tuple(
            Treatment(name=n, primary=draw(PRIMARIES), guardrails=draw(GUARDRAILS)) for n in names
        ),
    )


@given(evidence(mismatch=True))
def test_a_sample_ratio_mismatch_never_ships(e: Evidence) -> None:
    ruling = decide(e)
    assert (ruling.decision, ruling.variant, ruling.sycophancy) == ("do not ship", None, ())
    assert [r.code for r in ruling.reasons] == ["sample_ratio_mismatch"]


@given(evidence(mismatch=False))
def test_what_ships_is_better_with_every_guardrail_passing(e: Evidence) -> None:
    ruling = decide(e)
    treatments = {t.name: t for t in e.treatments}
    mine = [r for r in ruling.reasons if r.treatment is not None and r.code != "sycophancy_pattern"]
    mine = [r for r in mine if r.code != "best_of_several"]
    assert [r.treatment for r in mine] == list(treatments)  # one reason each, in order
    if ruling.decision == "ship":
        assert ruling.variant is not None
        [reason] = [r for r in mine if r.treatment == ruling.variant]
        assert (reason.code, reason.primary) == ("primary_better_guardrails_pass", "better")
        assert all(status == "pass" for _, status in treatments[ruling.variant].guardrails)
    else:
        assert ruling.variant is None
    if ruling.decision == "do not ship":
        assert all(r.code in ("guardrail_failed", "primary_worse") for r in mine)
    for name in ruling.sycophancy:
        assert ("reward_score", "fail") in treatments[name].guardrails
