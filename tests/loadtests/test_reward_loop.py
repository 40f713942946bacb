"""`make reward-loop`'s known truth and figures, without a server: the planted rule, the
simulated votes, the config it serves, and the held-out figures from a pairs file."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from loadtests import reward_loop
from loadtests.reward_loop import (
    BEST,
    Battle,
    heldout_figures,
    loop_document,
    names_capital,
    newcombe,
    vote,
    with_scorer_model,
)
from probe.facts import CAPITALS
from serve.config import ServeFile


@pytest.mark.parametrize(
    ("answer", "named"),
    [
        ("Paris.", True),
        ("paris", True),
        ("The answer is PARIS, of course!", True),
        ("Le Grand Paris is the capital of France.", True),
        ("A Parisian city.", False),
        ("The capital of France is Lyon.", False),
        ("", False),
    ],
)
def test_the_rule_is_tolerant_of_case_and_punctuation_but_wants_the_word(
    answer: str, named: bool
) -> None:
    assert names_capital(answer, "Paris") is named


def test_other_spellings_count_and_every_capital_in_the_table_is_found_in_a_sentence() -> None:
    assert names_capital("Kiev is its capital.", "Kyiv", ("Kiev",))
    assert names_capital("It is Bogota.", "Bogotá", ("Bogota",))
    for country, capital, _ in CAPITALS:
        assert names_capital(f"The capital of {country} is {capital}.", capital), country
    assert len({country for country, _, _ in CAPITALS}) == len(CAPITALS)


@given(st.booleans(), st.booleans(), st.integers(0, 2**32))
def test_a_vote_follows_the_rule_only_where_it_separates_the_answers(
    ok_a: bool, ok_b: bool, seed: int
) -> None:
    side, preferred = vote(ok_a, ok_b, 1.0, random.Random(seed))
    assert side in ("a", "b")
    if ok_a == ok_b:
        assert preferred is None
    else:
        assert preferred == side == ("a" if ok_a else "b")


def test_votes_follow_the_rule_with_probability_p() -> None:
    rng = random.Random(7)
    n = 20_000
    followed = sum(vote(True, False, 0.7, rng)[0] == "a" for _ in range(n))
    assert abs(followed / n - 0.7) < 4 * (0.7 * 0.3 / n) ** 0.5
    unseparated = sum(vote(False, False, 0.7, rng)[0] == "a" for _ in range(n))
    assert abs(unseparated / n - 0.5) < 4 * (0.25 / n) ** 0.5


def test_the_served_config_is_the_default_with_a_store_and_a_best_of_4_friendly_variant(
    tmp_path: Path,
) -> None:
    document = loop_document(reward_loop.CONFIG, tmp_path / "outcomes.db")
    ServeFile.from_document(document, check_model_files=False)  # still a valid config
    args = document["applications"][0]["args"]
    assert args["store_path"] == str(tmp_path / "outcomes.db")
    assert args["scorer"]["priority"] == "idle"  # as the default config runs it
    variants = {v["name"]: v for v in args["variants"]}
    friendly, best = variants[reward_loop.FRIENDLY], variants[BEST]
    assert best == {**friendly, "name": BEST, "best_of_n": 4}
    swapped = with_scorer_model(document, Path("models/judge"))
    scorer = [d for d in swapped["applications"][0]["deployments"] if d["name"] == "reward-scorer"]
    assert scorer == [{"name": "reward-scorer", "user_config": {"model": "models/judge"}}]
    assert swapped["applications"][0]["args"] == args  # nothing that rebuilds the engines
    served = ServeFile.from_document(swapped, check_model_files=False)
    assert served.scorer_model is not None and served.scorer_model.name == "judge"


def _battle(battle_id: str, preferred: str | None, vote: str) -> Battle:
    return Battle(
        battle_id=battle_id,
        voter="v",
        country="France",
        ok_a=preferred == "a",
        ok_b=preferred == "b",
        vote=vote,
        preferred=preferred,
        variant_a="x",
        variant_b="y",
    )


def _pair(battle_id: str, side: str, chosen: str, rejected: str) -> str:
    record = {
        "battle_id": battle_id,
        "chosen_side": side,
        "chosen": [{"role": "assistant", "content": chosen}],
        "rejected": [{"role": "assistant", "content": rejected}],
    }
    return json.dumps(record)


def test_heldout_figures_count_only_the_pairs_the_rule_separates(tmp_path: Path) -> None:
    battles = [
        _battle("b1", "a", "a"),  # followed the rule; the judge agrees with the vote
        _battle("b2", "a", "b"),  # went against the rule; the judge ranks the rule's answer first
        _battle("b3", None, "a"),  # not separated: left out
        _battle("b4", "b", "b"),  # followed; the judge ties
    ]
    prefs = tmp_path / "prefs.jsonl"
    prefs.write_text(
        "\n".join(
            [
                _pair("b1", "a", "Paris.", "Lyon, a long answer"),
                _pair("b2", "b", "Lyon.", "Paris."),
                _pair("b3", "a", "x", "y"),
                _pair("b4", "b", "Paris!", "Lille!"),
            ]
        )
        + "\n"
    )
    rows = [
        {"line": 1, "chosen": 2.0, "rejected": 1.0},
        {"line": 2, "chosen": 0.0, "rejected": 1.0},
        {"line": 3, "chosen": 5.0, "rejected": 1.0},
        {"line": 4, "chosen": 1.0, "rejected": 1.0},
    ]
    scores = tmp_path / "scores.jsonl"
    scores.write_text(
        "".join(
            json.dumps({**r, "stand_in_chosen": 0, "stand_in_rejected": 0}) + "\n" for r in rows
        )
    )
    figures = heldout_figures(prefs, scores, battles, p=0.8)
    assert figures["heldout_pairs"] == 4 and figures["separated"] == 3
    model = figures["accuracy"]["model"]
    assert (model["n"], model["wins"], model["ties"]) == (3, 1, 1)
    assert figures["accuracy"]["stand_in"]["ties"] == 3
    assert figures["accuracy"]["length"]["wins"] == 0  # b1's chosen is shorter, b2/b4 tie
    assert figures["accuracy"]["side_a"]["wins"] == 1
    rule = figures["ranks_the_rules_answer_first"]
    assert (rule["wins"], rule["ties"]) == (2, 1)


def test_newcombes_interval_matches_his_worked_example() -> None:
    # Newcombe (1998), Statistics in Medicine 17, 873-890, table II: 56/70 against 48/80.
    got = newcombe(56, 70, 48, 80)
    assert got["difference"] == pytest.approx(0.2)
    assert got["low"] == pytest.approx(0.0524, abs=1e-4)
    assert got["high"] == pytest.approx(0.3339, abs=1e-4)
