"""Records that count what happened (issue 15): on fake engines, without a cluster."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from tests.serve.fake_gateway import make

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")  # Gateway.__del__ unawaited
AB = {"name": "ab", "arms": [{"variant": "a"}, {"variant": "b"}]}
DUEL = {"name": "duel", "mode": "arena", "arms": [{"variant": "a"}, {"variant": "b"}]}


def run(test: Any) -> None:
    asyncio.run(test())


def test_a_live_change_that_would_move_the_default_implicitly_is_refused() -> None:
    async def test() -> None:
        fake = await make([AB])
        swapped = {**AB, "arms": list(reversed(AB["arms"]))}
        await fake.gateway.reconfigure({"experiments": [swapped]})
        rejected = fake.gateway._rejected
        assert rejected is not None and "experiments.0.default_variant" in rejected["error"]
        assert fake.gateway.router.experiments["ab"].experiment.fallback_variant == "a"
        await fake.gateway.reconfigure({"experiments": [{**swapped, "default_variant": "b"}]})
        assert fake.gateway._rejected is None
        assert fake.gateway.router.experiments["ab"].experiment.fallback_variant == "b"

    run(test)


# Ids are the server's; the client's X-Request-Id is kept for tracing only.

SESSIONS = {"name": "sessions", "unit": "session", "arms": [{"variant": "a"}, {"variant": "b"}]}
PER_REQUEST = {"name": "per-request", "unit": "request", "arms": AB["arms"]}
HI = [{"role": "user", "content": "Hi"}]


def completions(fake: Any) -> list[Any]:
    from router.events import Completion

    return [e for e in fake.log.events if isinstance(e, Completion)]


def test_a_clients_request_id_names_no_completion_and_no_unit() -> None:
    """Two requests with the same X-Request-Id (and the same body `request_id`) made one
    completion id: the second row was dropped as a duplicate and feedback hit the first. In a
    `request` experiment the client also picked its own unit, and so its arm."""

    async def test() -> None:
        fake = await make([AB, PER_REQUEST])
        headers = {"X-Request-Id": "trace-1"}
        for model in ("a", "a", "per-request"):
            body = {"model": model, "user": "u", "messages": HI, "request_id": "dup"}
            status, _, _ = await fake.call("complete", body, headers)
            assert status == 200
        await fake.settled()
        rows = completions(fake)
        ids = [c.completion_id for c in rows]
        assert len(set(ids)) == 3 and not any("dup" in i or "trace-1" in i for i in ids)
        assert {c.client_request_id for c in rows} == {"trace-1"}
        assert len({c.request_id for c in rows}) == 3
        [exposure] = [e for e in fake.log.events if type(e).__name__ == "Exposure"]
        assert exposure.unit not in ("trace-1", "dup") and exposure.unit == rows[-1].request_id

    run(test)


@pytest.mark.parametrize(
    ("model", "body", "headers", "param"),
    [
        ("ab", {"user": "u" * 257}, {}, "user"),
        ("ab", {}, {"X-User-Id": "u" * 257}, "X-User-Id"),
        ("sessions", {}, {"X-Session-Id": "s" * 257}, "X-Session-Id"),
        ("a", {"user": "u" * 10_000}, {}, "user"),
        ("a", {}, {"X-Request-Id": "r" * 257}, "X-Request-Id"),
        ("request-duel", {}, {"X-User-Id": "u" * 257}, "X-User-Id"),  # the battle's voter
    ],
)
def test_unit_and_trace_ids_over_256_characters_are_a_400_naming_them(
    model: str, body: dict, headers: dict, param: str
) -> None:
    async def test() -> None:
        request_duel = DUEL | {"name": "request-duel", "unit": "request"}
        fake = await make([AB, SESSIONS | {"default_variant": "a"}, request_duel])
        status, text, _ = await fake.call(
            "complete", {"model": model, "messages": HI, **body}, headers
        )
        error = json.loads(text)["error"]
        assert (status, error["param"], error["code"]) == (400, param, "invalid_value")
        assert not fake.log.events and not any(e.requests for e in fake.engines.values())

    run(test)


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"user": "\ud800"}, "user"),
        ({"messages": [{"role": "user", "content": "hi \udfff"}]}, "messages.0.content"),
        ({"stop": ["ok", "\ud83d"]}, "stop.1"),
    ],
)
def test_a_lone_surrogate_is_a_400_at_parse_not_a_500(body: dict, param: str) -> None:
    async def test() -> None:
        fake = await make([AB])
        for model in ("a", "ab"):
            raw = json.dumps({"model": model, "user": "u", "messages": HI, **body})
            status, text, _ = await fake.call_raw(raw)
            error = json.loads(text)["error"]
            assert (status, error["param"]) == (400, param), text
        assert not fake.log.events

    run(test)


def test_a_valid_surrogate_pair_is_an_ordinary_character() -> None:
    async def test() -> None:
        fake = await make([AB])
        raw = (
            '{"model": "ab", "user": "\\ud83d\\ude00", '
            '"messages": [{"role": "user", "content": "x"}]}'
        )
        status, _, _ = await fake.call_raw(raw)
        assert status == 200
        await fake.settled()
        assert completions(fake)[0].unit == "\U0001f600"

    run(test)


def test_messages_empty_or_missing_is_a_plain_400() -> None:
    async def test() -> None:
        fake = await make([AB])
        status, text, _ = await fake.call("complete", {"model": "a", "messages": []})
        error = json.loads(text)["error"]
        assert (status, error["param"]) == (400, "messages")
        assert "at least one" in error["message"]
        status, text, _ = await fake.call("complete", {"model": "a"})
        error = json.loads(text)["error"]
        assert (status, error["param"], error["message"]) == (
            400,
            "messages",
            "messages: field required",
        )
        assert not fake.engines["a"].requests

    run(test)


# /v1/completions: the variant's system prompt is applied, not silently dropped.


def test_completions_put_the_variants_system_prompt_before_the_prompt() -> None:
    async def test() -> None:
        from tests.serve.fake_gateway import answer

        fake = await make(
            [AB], settings={"a": {"system_prompt": "Be brief."}, "b": {"system_prompt": "Be warm."}}
        )
        for engine in fake.engines.values():
            engine.script = lambda name, request: [completion_response(name, request)]
        for user in ("u1", "u2", "u3", "u4", "u5", "u6"):
            await fake.call(
                "complete",
                {"model": "ab", "user": user, "prompt": "Paris is"},
                endpoint="completions",
            )
        prompts = {n: {r.prompt for r in e.requests} for n, e in fake.engines.items()}
        assert prompts == {"a": {"Be brief.\n\nParis is"}, "b": {"Be warm.\n\nParis is"}}
        status, _, _ = await fake.call(
            "complete", {"model": "a", "prompt": ["x", "y"]}, endpoint="completions"
        )
        assert status == 200 and fake.engines["a"].requests[-1].prompt == [
            "Be brief.\n\nx",
            "Be brief.\n\ny",
        ]
        status, text, _ = await fake.call(
            "complete", {"model": "a", "prompt": [1, 2, 3]}, endpoint="completions"
        )
        error = json.loads(text)["error"]
        assert (status, error["param"]) == (400, "prompt") and "system prompt" in error["message"]
        del answer

    run(test)


def completion_response(name: str, request: Any) -> Any:
    from vllm.entrypoints.openai.completion.protocol import CompletionResponse

    return CompletionResponse.model_validate(
        {
            "id": f"cmpl-{request.request_id}",
            "object": "text_completion",
            "created": 1,
            "model": name,
            "choices": [{"index": 0, "text": " a city", "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
        }
    )


# Arena records: a side that was never shown, who may vote, answers that name a model.


@pytest.mark.parametrize("stream", [False, True])
def test_the_side_that_answered_in_a_failed_battle_is_logged_as_not_shown(stream: bool) -> None:
    async def test() -> None:
        from router.events import NOT_SHOWN

        fake = await make([DUEL])
        fake.engines["b"].fail = True
        body = {"model": "duel", "user": "u", "stream": stream, "messages": HI}
        status, _, _ = await fake.call("complete", body)
        assert status == 503
        await fake.settled()
        statuses = {c.variant: c.status for c in completions(fake)}
        assert statuses == {"a": NOT_SHOWN, "b": 503}

    run(test)


@pytest.mark.parametrize(
    ("experiment", "body", "headers", "voter"),
    [
        (DUEL, {"user": "alice"}, {}, ("user", "alice")),
        (DUEL, {}, {"X-User-Id": "alice"}, ("user", "alice")),
        (DUEL | {"unit": "session"}, {"user": "x"}, {"X-Session-Id": "s-1"}, ("session", "s-1")),
        (DUEL | {"unit": "request"}, {"user": "bob"}, {}, ("request", "bob")),
        (DUEL | {"unit": "request"}, {}, {}, ("request", None)),
    ],
)
def test_a_battle_records_who_may_vote_on_it(
    experiment: dict, body: dict, headers: dict, voter: tuple
) -> None:
    async def test() -> None:
        fake = await make([experiment])
        status, _, _ = await fake.call(
            "complete", {"model": "duel", "messages": HI, **body}, headers
        )
        assert status == 200
        await fake.settled()
        [battle] = [e for e in fake.log.events if type(e).__name__ == "Battle"]
        assert (battle.unit_type, battle.voter, battle.principal) == (*voter, None)

    run(test)


def test_feedback_says_who_sends_it() -> None:
    async def test() -> None:
        fake = await make([DUEL])
        vote = {"battle_id": "battle-1", "kind": "vote", "value": "a", "idempotency_key": "k"}
        status, _, _ = await fake.call(
            "feedback", vote, {"X-User-Id": "alice", "X-Session-Id": "s-1"}
        )
        assert status == 201
        [sent] = fake.log.feedback
        assert (sent.principal, sent.user, sent.session) == ("", "alice", "s-1")

    run(test)


@pytest.mark.parametrize("stream", [False, True])
def test_an_answer_naming_a_model_marks_its_battle(stream: bool) -> None:
    async def test() -> None:
        fake = await make([DUEL], settings={"a": {"identity_terms": ["Llama", "Meta AI"]}, "b": {}})
        for engine in fake.engines.values():  # "hi from a" / "hi from b"
            engine.script = lambda name, request: answer_saying(
                "I am LLAMA, made by meta ai." if name == "b" else "Hello.", request
            )
        body = {"model": "duel", "user": "u", "stream": stream, "messages": HI}
        assert (await fake.call("complete", body))[0] == 200
        for engine in fake.engines.values():
            engine.script = lambda name, request: answer_saying("A llamas farm.", request)
        assert (await fake.call("complete", body))[0] == 200
        await fake.settled()
        battles = [e for e in fake.log.events if type(e).__name__ == "Battle"]
        assert [b.identity_revealed for b in battles] == [True, False]

    run(test)


def answer_saying(text: str, request: Any) -> list[Any]:
    from tests.serve.fake_gateway import sse_chat, whole_chat

    if request.stream:
        batches = sse_chat("x", request)
        return [[chunk.replace("hi from x", text) for chunk in batch] for batch in batches]
    [response] = whole_chat("x", request)
    response.choices[0].message.content = text
    return [response]


def test_a_name_both_sides_carry_voids_no_vote() -> None:
    async def test() -> None:
        fake = await make(
            [DUEL],
            settings={
                "a": {"identity_terms": ["Llama", "Llama-70B"]},
                "b": {"identity_terms": ["llama", "Llama-8B"]},
            },
        )
        texts = iter(["As a Llama model, hi.", "Hi.", "I am Llama-8B.", "Hi."])
        for engine in fake.engines.values():
            engine.script = lambda name, request: answer_saying(next(texts), request)
        body = {"model": "duel", "user": "u", "messages": HI}
        for _ in range(2):
            assert (await fake.call("complete", body))[0] == 200
        await fake.settled()
        battles = [e for e in fake.log.events if type(e).__name__ == "Battle"]
        assert [b.identity_revealed for b in battles] == [False, True]

    run(test)


def test_feedback_that_overtakes_its_completions_record_waits_for_it() -> None:
    """A log replica killed and restarted gets the completion on the sender's retry, after the
    response stopped waiting for it (`HOLD_S`) and possibly after the client's feedback on it:
    that feedback was a 404 for a completion the client was served."""
    from router.events import Feedback, FeedbackResult

    async def test() -> None:
        fake = await make()
        log = fake.log

        async def slow_deliver(events: list[Any], ticket: str | None = None) -> None:
            await asyncio.sleep(0.3)  # the retry after the restart
            log.events.extend(events)

        def record_feedback(feedback: Feedback) -> Any:
            known = {getattr(e, "completion_id", None) for e in log.events}
            status = "recorded" if feedback.completion_id in known else "unknown_target"

            async def answer() -> FeedbackResult:
                return FeedbackResult(status=status, feedback_id=1)

            return answer()

        log.deliver = type("M", (), {"remote": staticmethod(slow_deliver)})()  # type: ignore[assignment]
        log.record_feedback = type("M", (), {"remote": staticmethod(record_feedback)})()  # type: ignore[assignment]
        fake.gateway.recorder.outcome_sender.HOLD_S = 0.05  # the response stops waiting
        status, body, _ = await fake.call("complete", {"model": "a", "messages": HI})
        assert status == 200
        thumbs = {"completion_id": json.loads(body)["id"], "kind": "thumbs", "value": "up"}
        status, text, _ = await fake.call("feedback", thumbs | {"idempotency_key": "k"})
        assert status == 201, text

    run(test)
