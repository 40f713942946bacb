"""Reward scoring end to end: every served completion gets a score event; best-of-n picks the
highest-scored candidate."""

from __future__ import annotations

import time

import openai
import pytest

from reward.scorer import RewardScorer
from serve.models import MODELS_DIR, TINY_REWARD
from tests.e2e.conftest import BEST_OF, App

HELLO = [{"role": "user", "content": "Say something kind."}]


@pytest.fixture(scope="module")
def client(app: App) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{app.base_url}/v1", api_key="unused", max_retries=0)


@pytest.fixture(scope="module")
def reference() -> RewardScorer:
    """The same reward model, loaded here: what the scorer deployment should compute."""
    return RewardScorer(MODELS_DIR / TINY_REWARD, dtype="float32")


def score_row(app: App, completion_id: str, timeout: float = 60.0) -> dict:
    """The score event of a completion; scoring runs off the response path, so it may lag."""
    deadline = time.monotonic() + timeout
    while True:
        with app.db() as db:
            row = db.execute(
                "SELECT * FROM scores WHERE completion_id = ?", (completion_id,)
            ).fetchone()
        if row is not None:
            return dict(row)
        assert time.monotonic() < deadline, f"no score for {completion_id}"
        time.sleep(0.2)


def test_a_served_chat_gets_a_score_event(
    client: openai.OpenAI, app: App, reference: RewardScorer
) -> None:
    completion = client.chat.completions.create(model="tiny-ab", user="scored", messages=HELLO)
    row = score_row(app, completion.id)
    assert row["experiment"] == "tiny-ab" and row["variant"] == completion.model
    assert row["model"] == TINY_REWARD and row["latency_s"] >= 0
    expected = reference.score([(HELLO, completion.choices[0].message.content)])[0]
    assert row["score"] == pytest.approx(expected, abs=1e-3)


def test_a_streamed_chat_is_scored_on_its_whole_text(
    client: openai.OpenAI, app: App, reference: RewardScorer
) -> None:
    chunks = list(client.chat.completions.create(model="tiny-b", messages=HELLO, stream=True))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    row = score_row(app, chunks[0].id)
    assert row["score"] == pytest.approx(reference.score([(HELLO, text)])[0], abs=1e-3)


def test_both_sides_of_a_battle_are_scored(client: openai.OpenAI, app: App) -> None:
    battle = client.chat.completions.create(model="tiny-arena", user="judge", messages=HELLO)
    for completion_id in battle.model_extra["arena"]["completion_ids"]:
        assert score_row(app, completion_id)["experiment"] == "tiny-arena"


def test_best_of_n_returns_the_highest_scored_candidate(
    client: openai.OpenAI, app: App, reference: RewardScorer
) -> None:
    raw = client.chat.completions.with_raw_response.create(model="tiny-best", messages=HELLO)
    assert raw.headers["x-variant"] == "tiny-best"
    answer = raw.parse()
    reward = answer.model_extra["reward"]
    assert len(answer.choices) == 1 and answer.choices[0].index == 0
    assert reward["best_of"] == BEST_OF and len(reward["scores"]) == BEST_OF
    assert reward["score"] == max(reward["scores"])
    assert reward["scores"][reward["chosen"]] == reward["score"]
    text = answer.choices[0].message.content
    assert reference.score([(HELLO, text)])[0] == pytest.approx(reward["score"], abs=1e-3)
    assert answer.usage.completion_tokens > 5, "usage counts every candidate"
    assert score_row(app, answer.id)["score"] == reward["score"]


def test_best_of_n_streams_its_chosen_answer(client: openai.OpenAI) -> None:
    chunks = list(
        client.chat.completions.create(
            model="tiny-best",
            messages=HELLO,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    reward = chunks[0].model_extra["reward"]
    assert reward["score"] == max(reward["scores"])
    assert chunks[-2].choices[0].finish_reason is not None
    assert chunks[-1].usage.completion_tokens > 5


def test_best_of_n_refuses_n(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError, match="best of 3"):
        client.chat.completions.create(model="tiny-best", messages=HELLO, n=2)
