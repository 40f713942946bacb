"""Arena battles end to end through the stock `openai` SDK: two blind choices, a vote reveals."""

from __future__ import annotations

import uuid

import httpx
import openai
import pytest

from tests.e2e.conftest import App

HELLO = [{"role": "user", "content": "Tell me about the sea."}]
MAX_TOKENS = {"tiny-a": 6, "tiny-b": 4}


@pytest.fixture(scope="module")
def client(app: App) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{app.base_url}/v1", api_key="unused", max_retries=0)


def battle_row(app: App, battle_id: str) -> dict:
    with app.db() as db:
        row = db.execute("SELECT * FROM battles WHERE battle_id = ?", (battle_id,)).fetchone()
    assert row is not None, f"battle {battle_id} was not logged"
    return dict(row)


def vote(app: App, battle_id: str, value: str, key: str, user: str) -> httpx.Response:
    """A vote by `user`: only the unit a battle was served to may vote on it."""
    body = {
        "battle_id": battle_id,
        "kind": "vote",
        "value": value,
        "idempotency_key": key,
        "user": user,
    }
    return httpx.post(f"{app.base_url}/v1/feedback", json=body, timeout=30)


def test_a_battle_returns_two_blind_choices_from_two_variants(
    client: openai.OpenAI, app: App
) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model="tiny-arena", user="arena-alice", n=2, messages=HELLO
    )
    assert "x-variant" not in raw.headers, "arena answers are blind"
    assert raw.headers["x-experiment"] == "tiny-arena"
    battle = raw.parse()
    assert battle.id.startswith("battle-") and raw.headers["x-battle-id"] == battle.id
    assert battle.model == "tiny-arena"
    assert [c.index for c in battle.choices] == [0, 1]
    assert all(isinstance(c.message.content, str) for c in battle.choices)
    row = battle_row(app, battle.id)
    assert {row["variant_a"], row["variant_b"]} == {"tiny-a", "tiny-b"}
    arena = battle.model_extra["arena"]
    assert arena["labels"] == ["a", "b"]
    assert arena["completion_ids"] == [row["completion_a"], row["completion_b"]]
    with app.db() as db:
        sides = {
            r["completion_id"]: dict(r)
            for r in db.execute("SELECT * FROM completions WHERE battle_id = ?", (battle.id,))
        }
    assert sides[row["completion_a"]]["variant"] == row["variant_a"]
    assert sides[row["completion_b"]]["variant"] == row["variant_b"]
    assert all(s["status"] == 200 and s["experiment"] == "tiny-arena" for s in sides.values())
    total = sum(s["completion_tokens"] for s in sides.values())
    assert battle.usage.completion_tokens == total


def test_each_choice_is_its_variants_own_answer(client: openai.OpenAI, app: App) -> None:
    """The variants stop at different max_tokens: each choice's completion (listed in display
    order) was written by the variant the battle row shows there, at that variant's length.
    (Log probabilities, which once counted the tokens here, are refused in an arena.)"""
    checked = 0
    for i in range(6):
        battle = client.chat.completions.create(
            model="tiny-arena", user=f"arena-{i}", messages=HELLO
        )
        row = battle_row(app, battle.id)
        ids = battle.model_extra["arena"]["completion_ids"]
        with app.db() as db:
            sides = {
                r["completion_id"]: dict(r)
                for r in db.execute("SELECT * FROM completions WHERE battle_id = ?", (battle.id,))
            }
        for choice, variant, completion_id in zip(
            battle.choices, (row["variant_a"], row["variant_b"]), ids, strict=True
        ):
            assert sides[completion_id]["variant"] == variant
            if choice.finish_reason == "length":  # not an early end-of-sequence
                assert sides[completion_id]["completion_tokens"] == MAX_TOKENS[variant]
                checked += 1
    assert checked >= 6


def test_a_streamed_battle_interleaves_both_choices(client: openai.OpenAI, app: App) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model="tiny-arena",
        user="arena-bob",
        n=2,
        messages=HELLO,
        stream=True,
        stream_options={"include_usage": True},
    )
    assert "x-variant" not in raw.headers
    chunks = list(raw.parse())
    battle_id = raw.headers["x-battle-id"]
    assert {c.id for c in chunks} == {battle_id}
    assert {c.model for c in chunks} == {"tiny-arena"}
    text = {0: "", 1: ""}
    finished = set()
    for chunk in chunks:
        for choice in chunk.choices:
            text[choice.index] += choice.delta.content or ""
            if choice.finish_reason is not None:
                finished.add(choice.index)
    assert finished == {0, 1} and all(text.values())
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens > 0
    row = battle_row(app, battle_id)
    with app.db() as db:
        ttfts = [
            r["ttft_s"]
            for r in db.execute("SELECT ttft_s FROM completions WHERE battle_id = ?", (battle_id,))
        ]
    assert len(ttfts) == 2 and all(t is not None and t > 0 for t in ttfts)
    assert row["variant_a"] != row["variant_b"]


def test_a_vote_reveals_the_variants_and_replays_are_idempotent(
    client: openai.OpenAI, app: App
) -> None:
    battle = client.chat.completions.create(model="tiny-arena", user="arena-carol", messages=HELLO)
    row = battle_row(app, battle.id)
    key = f"vote-{uuid.uuid4()}"
    first = vote(app, battle.id, "a", key, "arena-carol")
    assert first.status_code == 201, first.text
    answer = first.json()
    assert answer["reveal"] == {
        "experiment": "tiny-arena",
        "a": row["variant_a"],
        "b": row["variant_b"],
    }
    stranger = vote(app, battle.id, "a", f"vote-{uuid.uuid4()}", "arena-mallory")
    assert stranger.status_code == 403 and stranger.json()["error"]["code"] == "not_the_voter"
    again = vote(app, battle.id, "a", key, "arena-carol")
    assert again.status_code == 200
    assert again.json()["id"] == answer["id"] and again.json()["reveal"] == answer["reveal"]
    other = vote(app, battle.id, "b", f"vote-{uuid.uuid4()}", "arena-carol")
    assert other.status_code == 409 and other.json()["error"]["code"] == "battle_already_voted"
    reused = vote(app, battle.id, "tie", key, "arena-carol")
    assert reused.status_code == 409 and reused.json()["error"]["code"] == "idempotency_key_reused"
    with app.db() as db:
        votes = db.execute(
            "SELECT value FROM feedback WHERE battle_id = ? AND kind = 'vote'", (battle.id,)
        ).fetchall()
    assert [v["value"] for v in votes] == ["a"]


def test_a_vote_right_after_a_streamed_battle_finds_it(client: openai.OpenAI, app: App) -> None:
    chunks = list(
        client.chat.completions.create(
            model="tiny-arena", user="arena-dan", messages=HELLO, stream=True
        )
    )
    assert (
        vote(app, chunks[0].id, "both_bad", f"vote-{uuid.uuid4()}", "arena-dan").status_code == 201
    )


def test_thumbs_on_one_side_of_a_battle(client: openai.OpenAI, app: App) -> None:
    battle = client.chat.completions.create(model="tiny-arena", user="arena-eve", messages=HELLO)
    completion_id = battle.model_extra["arena"]["completion_ids"][1]
    body = {"completion_id": completion_id, "kind": "thumbs", "value": "up"}
    key = {"Idempotency-Key": str(uuid.uuid4())}
    stranger = httpx.post(f"{app.base_url}/v1/feedback", json=body, headers=key)
    assert stranger.status_code == 403  # only the battle's own user judges its answers
    response = httpx.post(
        f"{app.base_url}/v1/feedback", json=body | {"user": "arena-eve"}, headers=key
    )
    assert response.status_code == 201 and "reveal" not in response.json()


def test_legacy_completions_battle(client: openai.OpenAI) -> None:
    battle = client.completions.create(model="tiny-arena", user="arena-fay", prompt="Once upon")
    assert [c.index for c in battle.choices] == [0, 1] and battle.id.startswith("battle-")


def test_an_arena_refuses_other_n(app: App) -> None:
    body = {"model": "tiny-arena", "user": "x", "n": 3, "messages": HELLO}
    response = httpx.post(f"{app.base_url}/v1/chat/completions", json=body, timeout=30)
    assert response.status_code == 400 and response.json()["error"]["param"] == "n"


def test_the_pair_order_is_random(client: openai.OpenAI, app: App) -> None:
    firsts = set()
    for i in range(16):
        battle = client.chat.completions.create(
            model="tiny-arena", user=f"order-{i}", messages=HELLO, max_tokens=1
        )
        firsts.add(battle_row(app, battle.id)["variant_a"])
    assert firsts == {"tiny-a", "tiny-b"}  # fails with probability 2 * 2**-16
