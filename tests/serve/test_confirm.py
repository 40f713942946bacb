"""A confirmation run on the serving path: a unit in it is served the winner or the control
(an arena, a battle of that pair), and every event of its request carries the run's own name,
so the experiment's analysis never counts it; the client still sees the experiment it called."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from router.assignment import CompiledExperiment
from router.events import Battle, Completion, Exposure
from router.experiment import Experiment
from tests.serve.fake_gateway import make

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")  # Gateway.__del__ unawaited
HI = [{"role": "user", "content": "Hi"}]


def config(mode: str) -> dict[str, Any]:
    return {
        "name": "explore",
        "mode": mode,
        "arms": [{"variant": v} for v in "abc"],
        "default_variant": "a",
        "allocation": 0.3,
        "confirm": {"variant": "c"},
    }


def unit_with(mode: str, reason: str) -> str:
    plan = CompiledExperiment(Experiment.model_validate(config(mode)))
    return next(f"u{i}" for i in range(10_000) if plan.assign(f"u{i}").reason == reason)


@pytest.mark.parametrize("mode", ["ab", "arena"])
def test_a_units_events_carry_the_runs_name(mode: str) -> None:
    async def test() -> list[list[Any]]:
        fake = await make([config(mode)], variants=("a", "b", "c"))
        logged = []
        for reason in ("confirm", "arena" if mode == "arena" else "arm"):
            user = unit_with(mode, reason)
            status, text, _ = await fake.call(
                "complete", {"model": "explore", "user": user, "messages": HI}
            )
            assert status == 200, text
            assert '"model":"explore"' in text.replace(" ", "") or mode == "ab"  # as called
            await fake.settled()
            logged.append(list(fake.log.events))
            fake.log.events.clear()
        return logged

    run, explored = asyncio.run(test())
    exposure = next(e for e in run if isinstance(e, Exposure))
    assert (exposure.experiment, exposure.reason, exposure.exposed) == (
        "explore#confirm",
        "confirm",
        True,
    )
    completions = [e for e in run if isinstance(e, Completion)]
    assert completions and {c.experiment for c in completions} == {"explore#confirm"}
    if mode == "arena":
        battle = next(e for e in run if isinstance(e, Battle))
        assert battle.experiment == "explore#confirm" and battle.pair_share == 1.0
        assert {battle.variant_a, battle.variant_b} == {"a", "c"}
        assert battle.weights_version is None
    else:
        assert {c.variant for c in completions} <= {"a", "c"}
    assert {e.experiment for e in explored if isinstance(e, Exposure | Completion)} == {"explore"}


def test_the_response_names_the_experiment_called() -> None:
    async def test() -> dict[str, str]:
        fake = await make([config("ab")], variants=("a", "b", "c"))
        user = unit_with("ab", "confirm")
        status, _, headers = await fake.call(
            "complete", {"model": "explore", "user": user, "messages": HI}
        )
        assert status == 200
        return headers

    headers = asyncio.run(test())
    assert headers["x-experiment"] == "explore" and headers["x-variant"] in ("a", "c")


def test_the_printed_report_shows_the_run_and_the_explorations_own_verdict(tmp_path: Any) -> None:
    from rich.console import Console

    from router.analysis import build_report
    from router.analysis.simulate import Arm, Traffic, simulate_ab
    from serve.report import print_report

    experiment = Experiment.model_validate(config("ab"))
    traffic = Traffic(units=3000, arms={"c": Arm(thumbs_up=0.4)}, seed=3)
    simulate_ab(tmp_path / "o.db", experiment, traffic)
    console = Console(record=True, width=200)
    print_report(build_report(tmp_path / "o.db", experiment, reps=20), console)
    text = console.export_text()
    assert "judged on the confirmation run alone: c against a" in text
    assert "the exploration alone would say:" in text
    assert "Confirmation run: " in text
