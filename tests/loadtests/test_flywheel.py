"""`make flywheel`'s known truth and figures, without a server: the config it serves, the pairs
it trains on, and what the voters' rule implies for the answers of a battle."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from loadtests import flywheel, reward_loop
from loadtests.flywheel import (
    BASE_VARIANT,
    EXPERIMENT,
    UNSEEN,
    VARIANT,
    flywheel_document,
    markdown,
    naming_figures,
    training_pairs,
    true_win_probability,
)
from loadtests.reward_loop import Battle, question
from probe.facts import CAPITALS
from serve.config import ServeFile
from serve.models import SMOLLM2_AHOY, prepare


def test_the_served_config_adds_the_adapter_on_its_base_and_an_arena_against_it(
    tmp_path: Path,
) -> None:
    [adapter] = prepare([SMOLLM2_AHOY])  # any adapter of SmolLM2 checks as the trained one would
    document = flywheel_document(reward_loop.CONFIG, tmp_path / "outcomes.db", adapter)
    served = ServeFile.from_document(document, check_model_files=True)  # adapter read and fitted
    variants = {v.name: v for v in served.app.variants}
    assert variants[VARIANT].engine == BASE_VARIANT
    assert variants[VARIANT].sampling == variants[BASE_VARIANT].sampling
    assert variants[VARIANT].system_prompt == variants[BASE_VARIANT].system_prompt
    [arena] = [e for e in served.gateway.experiments if e.name == EXPERIMENT]
    assert arena.mode == "arena"
    assert [a.variant for a in arena.arms] == [BASE_VARIANT, VARIANT]
    assert {g.metric for g in arena.guardrails} == {"sycophancy_flip_rate", "capitulation_rate"}
    # The default config's own experiments are still there.
    assert len(served.gateway.experiments) == 4


def test_training_leaves_out_every_pair_about_an_unseen_country(tmp_path: Path) -> None:
    countries = [country for country, _, _ in CAPITALS]
    assert 0 < len(UNSEEN) < len(countries) and UNSEEN.issubset(countries)
    rows = [
        {"prompt": [{"role": "user", "content": question(c)}], "chosen": [], "rejected": []}
        for c in countries
    ]
    pairs = tmp_path / "prefs.jsonl"
    pairs.write_text("".join(json.dumps(r) + "\n" for r in rows))
    left_out = training_pairs(pairs, tmp_path / "train.jsonl")
    kept = [json.loads(line) for line in (tmp_path / "train.jsonl").read_text().splitlines()]
    assert left_out == len(UNSEEN) and len(kept) == len(countries) - len(UNSEEN)
    asked = {r["prompt"][0]["content"] for r in kept}
    assert not asked & {question(c) for c in UNSEEN}


def _battle(country: str, dpo_side: str, ok_dpo: bool, ok_base: bool) -> Battle:
    a, b = (VARIANT, BASE_VARIANT) if dpo_side == "a" else (BASE_VARIANT, VARIANT)
    ok_a, ok_b = (ok_dpo, ok_base) if dpo_side == "a" else (ok_base, ok_dpo)
    return Battle(
        battle_id=f"{country}-{dpo_side}-{ok_dpo}-{ok_base}",
        voter="v",
        country=country,
        ok_a=ok_a,
        ok_b=ok_b,
        vote="a",
        preferred=None if ok_a == ok_b else "a" if ok_a else "b",
        variant_a=a,
        variant_b=b,
    )


@pytest.mark.parametrize("side", ["a", "b"])
def test_the_true_win_probability_follows_the_rule_on_each_battles_answers(side: str) -> None:
    p = 0.8
    battles = [
        _battle("France", side, True, False),  # only the adapter's names it: p
        _battle("France", side, False, True),  # only the base's: 1 - p
        _battle("France", side, True, True),  # the rule does not separate them: 1/2
        _battle("France", side, False, False),
    ]
    assert true_win_probability(battles[:1], VARIANT, p) == pytest.approx(p)
    assert true_win_probability(battles[1:2], VARIANT, p) == pytest.approx(1 - p)
    assert true_win_probability(battles, VARIANT, p) == pytest.approx((p + 1 - p + 1) / 4)
    assert true_win_probability(battles[:1], BASE_VARIANT, p) == pytest.approx(1 - p)


def test_naming_figures_split_the_questions_seen_in_training_from_the_unseen() -> None:
    unseen = sorted(UNSEEN)[0]
    seen = next(c for c, _, _ in CAPITALS if c not in UNSEEN)
    battles = [_battle(seen, "a", True, False)] * 3 + [_battle(unseen, "b", False, False)] * 2
    figures = naming_figures(battles)
    assert figures["all"][VARIANT]["value"] == pytest.approx(3 / 5)
    assert figures["seen in training"][VARIANT]["value"] == 1.0
    assert figures["seen in training"][BASE_VARIANT]["value"] == 0.0
    assert figures["unseen"][VARIANT]["n"] == 2 and figures["unseen"][VARIANT]["value"] == 0.0
    assert figures["unseen"]["difference"]["difference"] == 0.0
    assert figures["all"]["difference"]["difference"] == pytest.approx(3 / 5)


def test_the_section_states_the_figures_and_whether_the_truth_is_covered() -> None:
    battles = [_battle("France", "a", True, False)] * 6 + [_battle("France", "b", True, True)] * 4
    interval = {"value": 0.68, "low": 0.6, "high": 0.76}
    result = {
        "settings": {"pairs": "prefs.jsonl", "epochs": 2, "p": 0.8, "probe_limit": 4},
        "training": {
            "trained_on": {"train": 10, "heldout": 5},
            "best_epoch": 2,
            "heldout_preference_accuracy": 0.7,
            "seconds": 12.0,
        },
        "battles": len(battles),
        "voters": 1,
        "names_capital": naming_figures(battles),
        "true_win_probability": true_win_probability(battles, VARIANT, 0.8),
        "report": {
            "arena": {
                "head_to_head": [
                    {"treatment": VARIANT, "control": BASE_VARIANT, "probability": interval}
                ]
            },
            "probe": {
                "arms": [
                    {
                        "variant": VARIANT,
                        "accuracy": interval,
                        "sycophancy_flip_rate": interval,
                        "capitulation_rate": interval,
                    }
                ]
            },
            "guardrails": [
                {
                    "metric": "sycophancy_flip_rate",
                    "treatment": VARIANT,
                    "change": {"value": 0.01, "low": -0.05, "high": 0.07},
                    "status": "inconclusive",
                }
            ],
            "verdict": {"decision": "keep running", "reasons": ["Not enough votes."]},
        },
        "times_s": {"train": 12.0, "start": 60.0},
    }
    text = markdown(result, "python -m loadtests.flywheel")
    # 6 battles at p = 0.8 and 4 ties: (6 * 0.8 + 4 * 0.5) / 10 = 0.68, inside [0.6, 0.76].
    assert "voters' truth for these answers: 0.680 (covered: yes)" in text
    assert f"P({VARIANT} beats {BASE_VARIANT}) in the report: 0.680 [0.600, 0.760]" in text
    assert "| sycophancy_flip_rate (smollm2-dpo) | 0.010 [-0.050, 0.070] | inconclusive |" in text
    assert "Verdict: **keep running**. Not enough votes." in text
    assert flywheel.ADAPTER.name in flywheel.__doc__


@pytest.mark.parametrize("module", [flywheel, reward_loop])
def test_the_defaults_make_settings_and_a_voter_who_ignores_the_rule_is_refused(module) -> None:
    module.Settings(**vars(module._parser().parse_args([])))
    with pytest.raises(SystemExit, match="more often than not"):
        module.main(["--p", "0.4"])
