"""An arena answer tells the voter nothing about which variant wrote which side (issue 15): no
field, option, id or error message of the engine's passes through, on fake engines that leak
everything vLLM can return."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from tests.serve.fake_gateway import make, sse_chat

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")  # Gateway.__del__ unawaited
VARIANTS = ("secret-llama", "secret-qwen")
DUEL = {"name": "duel", "mode": "arena", "arms": [{"variant": v} for v in VARIANTS]}
HI = [{"role": "user", "content": "Hi"}]
# Every option that returns token ids, log probabilities, the rendered prompt or other engine
# internals: with them a side's system prompt (its token ids) names its variant.
REFUSED = {
    "return_token_ids": True,
    "return_tokens_as_token_ids": True,
    "return_prompt_text": True,
    "return_token_offsets": True,
    "prompt_logprobs": 1,
    "logprobs": True,
    "top_logprobs": 2,
    "logprob_token_ids": [1, 2],
    "echo": True,
    "kv_transfer_params": {"x": 1},
}


def run(test: Any) -> None:
    asyncio.run(test())


def leaky_whole(name: str, request: Any) -> list[Any]:
    from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionResponse

    choice = {
        "index": 0,
        "message": {"role": "assistant", "content": "Hello there", "reasoning": None},
        "logprobs": {"content": [{"token": "Hello", "logprob": -0.1, "bytes": [72]}]},
        "finish_reason": "stop",
        "stop_reason": 128001 if name == VARIANTS[0] else "</s>",
        "token_ids": [1, 2, 3] if name == VARIANTS[0] else [4, 5],
    }
    response = {
        "id": f"chatcmpl-{request.request_id}",
        "object": "chat.completion",
        "created": 1 if name == VARIANTS[0] else 2,
        "model": name,
        "choices": [choice],
        "usage": {
            "prompt_tokens": 11 if name == VARIANTS[0] else 17,
            "completion_tokens": 2,
            "total_tokens": 13,
        },
        "system_fingerprint": f"fp-{name}",
        "prompt_token_ids": [9, 9, 9] if name == VARIANTS[0] else [8],
        "prompt_text": f"<system>I am {name}</system>",
        "kv_transfer_params": {"engine": name},
    }
    return [ChatCompletionResponse.model_validate(response)]


def leaky_stream(name: str, request: Any) -> list[Any]:
    batches = sse_chat(name, request)
    out = []
    for batch in batches:
        leaked = []
        for chunk in batch:
            if chunk.startswith("data: {") and '"choices":[{' in chunk:
                payload = json.loads(chunk[6:])
                payload["system_fingerprint"] = f"fp-{name}"
                payload["prompt_token_ids"] = [9, 9] if name == VARIANTS[0] else [8]
                payload["created"] = 1 if name == VARIANTS[0] else 2
                for choice in payload["choices"]:
                    choice.update(token_ids=[1, 2], stop_reason="</s>", logprobs={"content": []})
                    choice["delta"]["content"] = (choice["delta"].get("content") or "").replace(
                        name, "side"
                    )
                chunk = f"data: {json.dumps(payload)}\n\n"
            leaked.append(chunk)
        out.append(leaked)
    return out


async def leaky_gateway() -> Any:
    fake = await make([DUEL], variants=VARIANTS)
    for engine in fake.engines.values():
        engine.script = lambda name, request: (
            leaky_stream(name, request) if request.stream else leaky_whole(name, request)
        )
    return fake


CHOICE_FIELDS = {"index", "message", "finish_reason"}
MESSAGE_FIELDS = {"role", "content", "tool_calls", "reasoning"}
RESPONSE_FIELDS = {"id", "object", "created", "model", "choices", "usage", "arena"}


def test_a_whole_arena_answer_carries_only_allowed_fields() -> None:
    async def test() -> None:
        fake = await leaky_gateway()
        status, text, headers = await fake.call(
            "complete", {"model": "duel", "user": "u", "messages": HI}
        )
        assert status == 200
        answer = json.loads(text)
        assert set(answer) <= RESPONSE_FIELDS
        for choice in answer["choices"]:
            assert set(choice) <= CHOICE_FIELDS
            assert set(choice["message"]) <= MESSAGE_FIELDS
        assert "secret" not in text and "fp-" not in text
        assert answer["model"] == "duel" and answer["id"].startswith("battle-")
        assert "x-variant" not in headers

    run(test)


def test_a_streamed_arena_answer_carries_only_allowed_fields() -> None:
    async def test() -> None:
        fake = await leaky_gateway()
        body = {
            "model": "duel",
            "user": "u",
            "stream": True,
            "messages": HI,
            "stream_options": {"include_usage": True},
        }
        status, text, _ = await fake.call("complete", body)
        assert status == 200 and text.endswith("data: [DONE]\n\n")
        assert "secret" not in text and "fp-" not in text
        created = set()
        for event in text.split("\n\n"):
            if not event.startswith("data: {"):
                continue
            chunk = json.loads(event[6:])
            assert set(chunk) <= {"id", "object", "created", "model", "choices", "usage", "arena"}
            created.add(chunk["created"])
            for choice in chunk["choices"]:
                assert set(choice) <= {"index", "delta", "finish_reason"}
                assert set(choice["delta"]) <= MESSAGE_FIELDS
        assert len(created) == 1  # one battle, one time: not each engine's own

    run(test)


@pytest.mark.parametrize(("field", "value"), list(REFUSED.items()))
def test_an_option_that_would_expose_a_side_is_a_400_naming_it(field: str, value: Any) -> None:
    async def test() -> None:
        fake = await leaky_gateway()
        for stream in (False, True):
            body = {"model": "duel", "user": "u", "messages": HI, "stream": stream, field: value}
            status, text, _ = await fake.call("complete", body)
            error = json.loads(text)["error"]
            assert (status, error["param"], error["code"]) == (400, field, "not_in_arena")
        assert not any(engine.requests for engine in fake.engines.values())
        assert not fake.log.events  # refused before anything was assigned or drawn

    run(test)


@pytest.mark.parametrize("field", ["logprobs", "echo", "return_token_ids"])
def test_off_values_of_those_options_are_fine(field: str) -> None:
    async def test() -> None:
        fake = await leaky_gateway()
        body = {"model": "duel", "user": "u", "messages": HI, field: False}
        assert (await fake.call("complete", body))[0] == 200

    run(test)


@pytest.mark.parametrize("stream", [False, True])
def test_an_engine_error_inside_a_battle_names_no_variant(stream: bool) -> None:
    """vLLM's messages name the model ("The model `secret-llama` does not exist", context
    lengths of its engine): inside a battle they name the choice instead."""

    async def test() -> None:
        from vllm.entrypoints.serve.engine.protocol import ErrorInfo, ErrorResponse

        fake = await leaky_gateway()
        folder = str(fake.gateway._variants[VARIANTS[1]].model_path)

        def refuses(name: str, request: Any) -> list[Any]:
            message = (
                f"This model's ({name}, served from {folder}) maximum context length is 512 tokens"
            )
            return [
                ErrorResponse(
                    error=ErrorInfo(
                        message=message, type="BadRequestError", param="messages", code=400
                    )
                )
            ]

        fake.engines[VARIANTS[1]].script = refuses
        body = {"model": "duel", "user": "u", "stream": stream, "messages": HI}
        status, text, _ = await fake.call("complete", body)
        assert status == 400 and "secret" not in text and folder not in text
        assert "choice" in json.loads(text)["error"]["message"]

    run(test)


def test_metrics_is_an_operators_route_where_keys_exist() -> None:
    """The engines' own series count each engine's tokens: with keys, only an admin reads them."""
    from serve.auth import hash_key
    from serve.errors import APIError
    from tests.serve.fake_gateway import request

    async def test() -> None:
        keys = {
            "keys": [
                {"name": "rater", "sha256": hash_key("sk-rater-0123456789")},
                {"name": "ops", "sha256": hash_key("sk-ops-0123456789"), "role": "admin"},
            ]
        }
        fake = await make([DUEL], variants=VARIANTS, user_config={"auth": keys})
        for key, status in ((None, 401), ("sk-rater-0123456789", 403)):
            headers = {"Authorization": f"Bearer {key}"} if key else {}
            with pytest.raises(APIError) as refused:
                await fake.gateway.metrics(request({}, headers))
            assert refused.value.status == status

    run(test)


def test_which_engine_answered_first_does_not_show_in_the_stream() -> None:
    """The first chunks of both sides go out together, side a's first: otherwise a slower
    variant's side always came second."""

    async def test() -> None:
        fake = await make([DUEL], variants=VARIANTS)
        fake.engines[VARIANTS[0]].delay_s = 0.05  # the slow one
        slow_first = 0
        for i in range(12):
            body = {"model": "duel", "user": f"u{i}", "stream": True, "messages": HI}
            status, text, _ = await fake.call("complete", body)
            assert status == 200
            events = [json.loads(e[6:]) for e in text.split("\n\n") if e.startswith("data: {")]
            assert events[0]["choices"][0]["index"] == 0
            labels = [e["arena"]["label"] for e in events if "arena" in e]
            assert labels == ["a", "b"]
            await fake.settled()
            battle = [e for e in fake.log.events if type(e).__name__ == "Battle"][-1]
            slow_first += battle.variant_a == VARIANTS[0]
        assert 0 < slow_first < 12  # the slow variant was side a in some battles, not all

    run(test)
