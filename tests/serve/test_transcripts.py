"""Text kept for experiment traffic (`store.keep_text`): which answers keep it, with what, and
the regenerate link that pairs an answer with its replacement; on fake engines."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from router.events import Completion, Feedback, Transcript
from tests.serve.fake_gateway import make

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")  # Gateway.__del__ unawaited
AB = {"name": "ab", "arms": [{"variant": "a"}, {"variant": "b"}]}
DUEL = {"name": "duel", "mode": "arena", "arms": [{"variant": "a"}, {"variant": "b"}]}
HI = [{"role": "user", "content": "Hi"}]
KEEP = {"store": {"keep_text": True}}


def run(test: Any) -> None:
    asyncio.run(test())


def of(fake: Any, kind: type) -> list[Any]:
    return [e for e in fake.log.events if isinstance(e, kind)]


@pytest.mark.parametrize("stream", [False, True])
def test_an_experiment_answer_keeps_its_prompt_and_text(stream: bool) -> None:
    async def test() -> None:
        fake = await make([AB], app_args=KEEP)
        body = {"model": "ab", "user": "u1", "stream": stream, "messages": HI}
        status, _, headers = await fake.call("complete", body)
        assert status == 200
        await fake.settled()
        [completion], [text] = of(fake, Completion), of(fake, Transcript)
        assert text.completion_id == completion.completion_id
        assert text.experiment == "ab" and json.loads(text.messages) == HI
        assert text.answer == f"hi from {headers['x-variant']}"

    run(test)


@pytest.mark.parametrize(
    ("experiments", "model", "app_args"),
    [
        ([AB], "a", KEEP),  # direct variant traffic never keeps text
        ([AB], "ab", None),  # keep_text is off by default
        ([AB], "ab", {"store": {"keep_text": False}}),
    ],
)
def test_no_text_is_kept_outside_experiments_or_when_off(
    experiments: list, model: str, app_args: dict | None
) -> None:
    async def test() -> None:
        fake = await make(experiments, app_args=app_args)
        body = {"model": model, "user": "u1", "stream": True, "messages": HI}
        assert (await fake.call("complete", body))[0] == 200
        await fake.settled()
        assert of(fake, Completion) and not of(fake, Transcript)

    run(test)


def test_a_failed_answer_keeps_no_text() -> None:
    async def test() -> None:
        fake = await make([AB], app_args=KEEP)
        for engine in fake.engines.values():
            engine.fail = True
        body = {"model": "ab", "user": "u1", "stream": True, "messages": HI}
        assert (await fake.call("complete", body))[0] == 503
        await fake.settled()
        assert of(fake, Completion) and not of(fake, Transcript)

    run(test)


@pytest.mark.parametrize("stream", [False, True])
def test_each_side_of_a_battle_keeps_its_own_text(stream: bool) -> None:
    async def test() -> None:
        fake = await make([DUEL], app_args=KEEP)
        body = {"model": "duel", "user": "u1", "stream": stream, "messages": HI}
        assert (await fake.call("complete", body))[0] == 200
        await fake.settled()
        texts = {t.completion_id: t for t in of(fake, Transcript)}
        sides = {c.completion_id: c.variant for c in of(fake, Completion)}
        assert set(texts) == set(sides)
        for cid, variant in sides.items():
            assert texts[cid].answer == f"hi from {variant}"
            assert json.loads(texts[cid].messages) == HI

    run(test)


def test_a_regenerate_may_name_the_answer_that_replaced_it() -> None:
    async def test() -> None:
        fake = await make([AB], app_args=KEEP)
        base = {"kind": "regenerate", "completion_id": "c1", "idempotency_key": "k1"}
        status, _, _ = await fake.call("feedback", base | {"new_completion_id": "c2"})
        assert status == 201
        [sent] = fake.log.feedback
        assert isinstance(sent, Feedback) and sent.new_completion_id == "c2"
        status, body, _ = await fake.call("feedback", base | {"new_completion_id": "c1"})
        assert status == 400 and json.loads(body)["error"]["param"] == "new_completion_id"
        copy = {"kind": "copy", "completion_id": "c1", "idempotency_key": "k2"}
        status, body, _ = await fake.call("feedback", copy | {"new_completion_id": "c2"})
        assert status == 400 and json.loads(body)["error"]["param"] == "new_completion_id"

    run(test)


def test_an_unknown_replacement_is_a_404_naming_it() -> None:
    from router.events import FeedbackResult
    from serve.errors import APIError
    from serve.protocol import feedback_answer

    event = Feedback(
        ts=1.0, kind="regenerate", idempotency_key="k", completion_id="c1", new_completion_id="x"
    )
    with pytest.raises(APIError) as raised:
        feedback_answer(event, FeedbackResult(status="unknown_replacement", feedback_id=None))
    assert (raised.value.status, raised.value.param) == (404, "new_completion_id")
    assert "'x'" in raised.value.message
