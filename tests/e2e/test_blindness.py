"""A voter who tries every channel it can reach before voting learns nothing of which variant
wrote which side: the adversarial end-to-end test of issue 15.

The adversary holds a client key (the module switches keys on live, as raters would have them)
and plays battles of `tiny-arena`, whose two sides run on two engines of their own. Before each
vote it reads the answer (fields, ids, headers), streams, every route it may call, and errors
it can provoke; the deterministic assertions say no header, field, label or series differs by
variant beyond the answers' own text and token counts. The statistical half (no predictor built
from ids, or hashes of them, names side a in more than 55 % of 4,000 battles) runs on the router
alone: `tests/router/test_assignment.py::test_no_public_value_predicts_side_a`.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator

import httpx
import pytest

from serve.auth import hash_key
from tests.e2e.conftest import ADMIN_KEY, ADMIN_KEY_ENV, EXPERIMENTS, App

RATER_KEY = "sk-e2e-rater-9d1c4b7a2e6f8035"
RATER, ADMIN = ({"Authorization": f"Bearer {k}"} for k in (RATER_KEY, ADMIN_KEY))
KEYED = {
    "experiments": EXPERIMENTS,
    "auth": {
        "keys": [
            {"name": "e2e-rater", "sha256": hash_key(RATER_KEY)},
            {"name": "e2e-admin", "env": ADMIN_KEY_ENV, "role": "admin"},
        ]
    },
}
HELLO = [{"role": "user", "content": "Tell me about the sea."}]
BATTLE_ID = re.compile(r"^battle-[0-9a-f]{32}$")
SIDE_ID = re.compile(r"^chatcmpl-req-[0-9a-f]{32}-(a|b)$")
# What an answer may hold: the allowlist (serve.arena), nothing an engine adds.
RESPONSE_FIELDS = {"id", "object", "created", "model", "choices", "usage", "arena"}
CHOICE_FIELDS = {"index", "message", "finish_reason"}
STREAM_CHOICE_FIELDS = {"index", "delta", "finish_reason"}
MESSAGE_FIELDS = {"role", "content", "reasoning", "tool_calls"}
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length"}


@pytest.fixture(scope="module")
def keyed(app: App) -> Iterator[App]:
    with app.gateway_config(KEYED) as configured:
        yield configured


def secrets(app: App) -> list[str]:
    """Every name that would tell a side's variant: variants, engines, model folders."""
    variants = app.document["applications"][0]["args"]["variants"]
    names = [v["name"] for v in variants] + [v["model"] for v in variants if "model" in v]
    return [*names, *(path.rsplit("/", 1)[-1] for path in names if "/" in path)]


def leaks(text: str, app: App) -> list[str]:
    """The secret names in `text`, each as a name of its own (`tiny-a` is not in
    `tiny-arena`)."""
    return [
        name for name in secrets(app) if re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", text)
    ]


def battle(app: App, user: str, **extra: object) -> httpx.Response:
    body = {"model": "tiny-arena", "user": user, "messages": HELLO, **extra}
    return httpx.post(f"{app.base_url}/v1/chat/completions", json=body, headers=RATER, timeout=120)


def vote(app: App, battle_id: str, user: str, headers: dict[str, str] = RATER) -> httpx.Response:
    body = {
        "battle_id": battle_id,
        "kind": "vote",
        "value": "tie",
        "user": user,
        "idempotency_key": f"vote-{uuid.uuid4()}",
    }
    return httpx.post(f"{app.base_url}/v1/feedback", json=body, headers=headers, timeout=30)


def arena_series(app: App) -> dict[tuple[str, tuple], float]:
    """The gateway's own series, as the operator scrapes them."""
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"{app.base_url}/metrics", headers=ADMIN, timeout=30).text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        if family.name.startswith("arena_")
        for s in family.samples
    }


def side_of(app: App, battle_id: str) -> tuple[str, str]:
    with app.db() as db:
        row = db.execute(
            "SELECT variant_a, variant_b FROM battles WHERE battle_id = ?", (battle_id,)
        ).fetchone()
    assert row is not None
    return row["variant_a"], row["variant_b"]


def test_every_channel_a_voter_reaches_before_the_vote_is_blind(keyed: App) -> None:
    app = keyed
    seen_a: set[str] = set()
    header_names: dict[bool, set[frozenset[str]]] = {False: set(), True: set()}
    for i in range(12):
        user = f"adversary-{i}"
        stream = i % 2 == 1
        before = arena_series(app)
        answer = battle(app, user, stream=stream)
        assert answer.status_code == 200, answer.text
        # Headers: the same names every time (per mode: a stream is chunked), none naming a
        # variant. Hop-by-hop headers are the connection's, not the answer's.
        names = frozenset(answer.headers) - HOP_BY_HOP
        header_names[stream].add(names)
        assert "x-variant" not in names
        assert not leaks(json.dumps(dict(answer.headers)), app)
        # Fields and ids: the allowlist only, random ids, no name of anything behind them.
        assert not leaks(answer.text, app)
        if stream:
            chunks = [
                json.loads(e[6:]) for e in answer.text.split("\n\n") if e.startswith("data: {")
            ]
            battle_id = chunks[0]["id"]
            sides = {}
            for chunk in chunks:
                assert set(chunk) <= RESPONSE_FIELDS
                assert chunk["id"] == battle_id and chunk["model"] == "tiny-arena"
                assert chunk["created"] == chunks[0]["created"]
                for choice in chunk["choices"]:
                    assert set(choice) <= STREAM_CHOICE_FIELDS
                    assert set(choice["delta"]) <= MESSAGE_FIELDS
                if "arena" in chunk:
                    sides[chunk["arena"]["label"]] = chunk["arena"]["completion_id"]
            completion_ids = [sides["a"], sides["b"]]
        else:
            body = answer.json()
            battle_id = body["id"]
            assert set(body) <= RESPONSE_FIELDS and body["model"] == "tiny-arena"
            shapes = []
            for choice in body["choices"]:
                assert set(choice) <= CHOICE_FIELDS and set(choice["message"]) <= MESSAGE_FIELDS
                shapes.append((sorted(choice), sorted(choice["message"])))
            assert shapes[0] == shapes[1]  # no field one variant has and the other lacks
            completion_ids = body["arena"]["completion_ids"]
        assert BATTLE_ID.match(battle_id) and answer.headers["x-battle-id"] == battle_id
        assert [SIDE_ID.match(c).group(1) for c in completion_ids] == ["a", "b"]  # type: ignore[union-attr]
        # Feedback on one side, as the voter may give: the answer names no one either.
        copy = httpx.post(
            f"{app.base_url}/v1/feedback",
            json={
                "completion_id": completion_ids[0],
                "kind": "copy",
                "user": user,
                "idempotency_key": f"copy-{uuid.uuid4()}",
            },
            headers=RATER,
            timeout=30,
        )
        assert copy.status_code == 201 and not leaks(copy.text, app)
        # Routes: the operator's are closed to the rater; the rest hold nothing per battle.
        for route in ("/metrics", "/v1/experiments", "/v1/experiments/tiny-arena/report"):
            assert httpx.get(f"{app.base_url}{route}", headers=RATER, timeout=30).status_code == 403
        models = httpx.get(f"{app.base_url}/v1/models", headers=RATER, timeout=30)
        assert models.status_code == 200 and battle_id not in models.text
        # The operator's scrape: no series of the arena labelled by a variant moved with this
        # battle (other experiments' late scores may move theirs meanwhile).
        after = arena_series(app)
        moved = {key for key in after if after[key] != before.get(key)}
        by_variant = {
            key
            for key in moved
            if ("experiment", "tiny-arena") in key[1]
            and {("variant", "tiny-a"), ("variant", "tiny-b")} & set(key[1])
        }
        assert not by_variant, sorted(by_variant)[:5]
        # A stranger cannot vote on it; its own voter can, and only then learns the sides.
        assert vote(app, battle_id, "someone-else").status_code == 403
        voted = vote(app, battle_id, user)
        assert voted.status_code == 201
        a, b = side_of(app, battle_id)
        assert voted.json()["reveal"] == {"experiment": "tiny-arena", "a": a, "b": b}
        seen_a.add(a)
    assert [len(names) for names in header_names.values()] == [1, 1], header_names
    assert seen_a == {"tiny-a", "tiny-b"}  # both orders came up: the checks saw both


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("return_token_ids", True),
        ("logprobs", True),
        ("top_logprobs", 1),
        ("echo", True),
        ("prompt_logprobs", 1),
        ("return_prompt_text", True),
    ],
)
def test_options_that_expose_a_side_are_refused_by_name(
    keyed: App, field: str, value: object
) -> None:
    for stream in (False, True):
        answer = battle(keyed, "adversary-options", stream=stream, **{field: value})
        error = answer.json()["error"]
        assert (answer.status_code, error["param"], error["code"]) == (400, field, "not_in_arena")
        assert not leaks(answer.text, keyed)


def test_an_engine_error_inside_a_battle_names_no_variant(keyed: App) -> None:
    """A prompt longer than the engines' context: vLLM's message, with every name taken out."""
    long = [{"role": "user", "content": "sea " * 700}]
    for stream in (False, True):
        answer = battle(keyed, "adversary-errors", stream=stream, messages=long)
        assert answer.status_code == 400, answer.text
        assert "choice" in answer.json()["error"]["message"]
        assert not leaks(answer.text, keyed)
