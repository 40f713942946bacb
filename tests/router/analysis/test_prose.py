"""The verdict's words: API clients read `verdict.reasons`, so each code's sentence is pinned."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from router.analysis import prose
from router.analysis.schema import SampleRatio
from router.analysis.verdict import (
    Evidence,
    FixedHorizon,
    GuardrailStatus,
    Missing,
    Primary,
    Sequential,
    Treatment,
    Votes,
    decide,
)
from tests.router.test_verdict import evidence_of

CASES = json.loads((Path(__file__).parents[1] / "verdict_cases.json").read_text(encoding="utf-8"))
MISMATCH = SampleRatio(
    groups=["a", "b"],
    counts=[1780, 2220],
    expected=[2000.0, 2000.0],
    p_value=3.48e-12,
    mismatch=True,
)
SEQUENTIAL = Sequential(change=0.105, difference=0.1, cs_low=0.0724, cs_high=0.138, p_value=8e-16)


def words(
    primary: Primary,
    guardrails: tuple[tuple[str, GuardrailStatus], ...] = (),
    metric: str = "thumbs_up_rate",
    **evidence: Any,
) -> list[str]:
    e = Evidence(
        metric=metric,
        higher_is_better=True,
        control="a",
        treatments=(Treatment(name="b", primary=primary, guardrails=guardrails),),
        **evidence,
    )
    return prose.reasons(e, decide(e), MISMATCH)


def test_a_sample_ratio_mismatch() -> None:
    assert words(SEQUENTIAL, sample_ratio_mismatch=True) == [
        "sample-ratio mismatch (p = 3.48e-12): counts [1780, 2220] against expected [2000, 2000]; "
        "assignment or logging is broken (or the weights changed during the experiment: the test "
        "assumes they did not), so no comparison can be trusted"
    ]


def test_no_treatment() -> None:
    e = Evidence(metric="thumbs_up_rate", higher_is_better=True, control="a")
    assert prose.reasons(e, decide(e), None) == ["no treatment has units yet"]


def test_better_with_guardrails_passing_and_pending() -> None:
    evidence = "thumbs_up_rate +0.105 (always-valid p 8e-16, confidence sequence 0.0724 to 0.138)"
    assert words(SEQUENTIAL, (("reward_score", "pass"),)) == [
        f"b: better than a, every guardrail passing: {evidence}"
    ]
    pending = (
        ("reward_score", "inconclusive"),
        ("error_rate", "pass"),
        ("ttft_p95_s", "inconclusive"),
    )
    assert words(SEQUENTIAL, pending) == [
        f"b: better than a ({evidence}), but guardrails reward_score, ttft_p95_s are not yet "
        "conclusive"
    ]


def test_a_failed_guardrail_and_the_sycophancy_pattern() -> None:
    failed = (("reward_score", "fail"), ("error_rate", "fail"))
    assert words(SEQUENTIAL, failed) == [
        "b: fails guardrail reward_score, error_rate; thumbs_up_rate +0.105 (always-valid p "
        "8e-16, confidence sequence 0.0724 to 0.138)",
        "b: sycophancy: wins on thumbs_up_rate while failing reward_score, the sycophancy "
        "pattern (preferred, but judged worse)",
    ]
    flips = (("sycophancy_flip_rate", "fail"), ("capitulation_rate", "pass"))
    assert words(SEQUENTIAL, flips)[1] == (
        "b: sycophancy: wins on thumbs_up_rate while failing sycophancy_flip_rate, the sycophancy "
        "pattern (preferred, but it gives up correct answers when the user pushes back)"
    )


def test_worse_and_no_difference_with_a_fixed_horizon_interval() -> None:
    worse = FixedHorizon(change=-0.2, low=-0.3, high=-0.1, p_value=None)
    assert words(worse, metric="copy_rate") == [
        "b: worse than a: copy_rate -0.2 (interval -0.3 to -0.1, p n/a)"
    ]
    even = FixedHorizon(change=0.019, low=-0.0442, high=0.0823, p_value=0.555)
    assert words(even, metric="ttft_p95_s") == [
        "b: no significant difference yet: ttft_p95_s +0.019 (interval -0.0442 to 0.0823, p 0.555)"
    ]


@pytest.mark.parametrize(
    ("primary", "said"),
    [
        (Missing("no_votes"), "no votes yet"),
        (Missing("no_battles"), "no battles against the control"),
        (Missing("no_data"), "no vote_win_rate data"),
        (
            Votes(probability=0.9, low=0.8, high=0.95, voters=1),
            "1 voters so far; a decision needs 10 (each voter has their own taste)",
        ),
        (
            Votes(probability=0.504, low=0.486, high=0.522, voters=400),
            "wins 50.4 % of votes against a (interval 48.6 %–52.2 %)",
        ),
    ],
)
def test_what_the_votes_say(primary: Primary, said: str) -> None:
    assert words(primary, metric="vote_win_rate") == [f"b: no significant difference yet: {said}"]


def test_the_best_of_several() -> None:
    e = Evidence(
        metric="thumbs_up_rate",
        higher_is_better=True,
        control="a",
        alpha=0.025,
        treatments=(
            Treatment(name="b", primary=SEQUENTIAL),
            Treatment(name="c", primary=SEQUENTIAL),
        ),
    )
    assert prose.reasons(e, decide(e), None)[-1] == (
        "c: the best primary estimate of the 2 that could ship"
    )


def test_every_pinned_case_has_one_sentence_per_reason() -> None:
    for case in CASES:
        e = evidence_of(case["evidence"])
        ruling = decide(e)
        said = prose.reasons(e, ruling, MISMATCH)
        assert len(said) == len(ruling.reasons) and all(said)
        for reason, sentence in zip(ruling.reasons, said, strict=True):
            assert reason.treatment is None or sentence.startswith(reason.treatment)
