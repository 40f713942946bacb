"""Learning from votes, end to end: the text of experiment answers is kept, votes and thumbs
export as preference data, and the scorer swaps to another reward model live, without
restarting an engine, every new score naming the new model."""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path

import httpx
import openai
import pytest

from router.preferences import export_preferences
from serve.cli import main
from serve.deploy import apply
from serve.models import MODELS_DIR, TINY_REWARD
from tests.e2e.conftest import EXPERIMENTS, App
from tests.e2e.test_faults import replicas

ASK = [{"role": "user", "content": "Name a colour of the sky."}]
ENGINES = ("variant:tiny-a", "variant:tiny-b")


@pytest.fixture(scope="module")
def client(app: App) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{app.base_url}/v1", api_key="unused", max_retries=0)


def engine_processes() -> set[int]:
    """The engine replicas' processes and everything they started (the vLLM engine cores)."""
    found = set()
    for deployment in ENGINES:
        for process in replicas(deployment):
            found |= {process.pid, *(child.pid for child in process.children(recursive=True))}
    return found


def latest_score_model(app: App, client: openai.OpenAI, timeout: float = 90.0) -> str:
    """The model that scores a completion served now (scores land off the response path)."""
    answer = client.chat.completions.create(model="tiny-ab", user="swap", messages=ASK)
    deadline = time.monotonic() + timeout
    while True:
        with app.db() as db:
            row = db.execute(
                "SELECT model FROM scores WHERE completion_id = ?", (answer.id,)
            ).fetchone()
        if row is not None:
            return row["model"]
        assert time.monotonic() < deadline, f"no score for {answer.id}"
        time.sleep(0.3)


def deploy_scorer(app: App, model: Path | None) -> None:
    """The session's file with the scorer deployment's user_config naming `model` (None: none,
    the args' model)."""
    document = copy.deepcopy(app.document)
    deployments = [{"name": "gateway", "user_config": {"experiments": EXPERIMENTS}}]
    if model is not None:
        deployments.append({"name": "reward-scorer", "user_config": {"model": str(model)}})
    document["applications"][0]["deployments"] = deployments
    apply(app.client, document, timeout_s=180)


def test_a_voted_battle_and_thumbs_export_with_the_text_the_client_saw(
    app: App, client: openai.OpenAI
) -> None:
    battle = client.chat.completions.create(model="tiny-arena", user="rater-1", messages=ASK, n=2)
    arena = battle.model_extra["arena"]  # type: ignore[index]
    vote = {
        "kind": "vote",
        "battle_id": arena["battle_id"],
        "value": "b",
        "user": "rater-1",
        "idempotency_key": "loop-vote-1",
    }
    assert httpx.post(f"{app.base_url}/v1/feedback", json=vote, timeout=30).status_code == 201
    out = export_preferences(app.store_path, "tiny-arena")
    [pair] = [p for p in out.pairs if p["battle_id"] == arena["battle_id"]]
    assert pair["prompt"] == ASK and pair["chosen_side"] == "b"
    assert pair["chosen"][0]["content"] == battle.choices[1].message.content
    assert pair["rejected"][0]["content"] == battle.choices[0].message.content
    assert pair["voter"] != "rater-1"
    with app.db() as db:  # the store holds the text; the battle's ids name the two answers
        kept = db.execute("SELECT COUNT(*) FROM transcripts WHERE experiment = 'tiny-arena'")
        assert kept.fetchone()[0] >= 2


def test_a_direct_variant_call_keeps_no_text(app: App, client: openai.OpenAI) -> None:
    answer = client.chat.completions.create(model="tiny-a", messages=ASK)
    with app.db() as db:
        row = db.execute(
            "SELECT 1 FROM transcripts WHERE completion_id = ?", (answer.id,)
        ).fetchone()
    assert row is None


def trained_judge(app: App, client: openai.OpenAI, folder: Path) -> Path:
    """Battles voted by 16 raters, exported, and a tiny reward model trained on them (the
    command line's export-preferences and train-reward, as a user runs them)."""
    for i in range(16):
        rater = f"loop-rater-{i}"
        battle = client.chat.completions.create(
            model="tiny-arena",
            user=rater,
            messages=[{"role": "user", "content": f"Count to {i}."}],
            n=2,
        )
        vote = {
            "kind": "vote",
            "battle_id": battle.model_extra["arena"]["battle_id"],  # type: ignore[index]
            "value": "a",
            "user": rater,
            "idempotency_key": f"loop-{i}",
        }
        assert httpx.post(f"{app.base_url}/v1/feedback", json=vote, timeout=30).status_code == 201
    prefs = folder / "prefs.jsonl"
    export = ["export-preferences", "--experiment", "tiny-arena", "--store", str(app.store_path)]
    assert main([*export, "--out", str(prefs), "--heldout", "0.5"]) == 0
    judge = folder / "judge-trained"
    train = ["train-reward", "--data", str(prefs), "--base", str(MODELS_DIR / TINY_REWARD)]
    settings = ["--epochs", "1", "--max-length", "64", "--no-progress"]
    assert main([*train, "--out", str(judge), *settings]) == 0
    card = json.loads((judge / "model_card.json").read_text())
    assert card["data"]["pairs"] >= 1 and "model" in card["heldout_accuracy"]
    return judge


def test_a_judge_trained_on_exported_votes_is_swapped_in_live_and_back(
    app: App, client: openai.OpenAI, tmp_path: Path
) -> None:
    """The acceptance path: export, train a tiny model, swap it in live: new scores name it,
    and no engine restarted; removing the scorer's user_config swaps back the same way."""
    judge = trained_judge(app, client, tmp_path)
    engines = engine_processes()
    assert engines and latest_score_model(app, client) == TINY_REWARD
    try:
        deploy_scorer(app, judge)
        deadline = time.monotonic() + 120
        while latest_score_model(app, client) != "judge-trained":
            assert time.monotonic() < deadline, "the scorer never served the new model"
    finally:
        deploy_scorer(app, None)  # back to the args' model: the same live change
    deadline = time.monotonic() + 120
    while latest_score_model(app, client) != TINY_REWARD:
        assert time.monotonic() < deadline, "the scorer never swapped back"
    assert engine_processes() == engines
    report = httpx.get(f"{app.base_url}/v1/experiments/tiny-ab/report", timeout=120).json()
    assert report["reward_model"] == TINY_REWARD
