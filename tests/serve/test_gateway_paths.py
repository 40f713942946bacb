"""The gateway's request paths on fake engines (no cluster): types it acts on, exposures that
must not be lost, clients that leave, an arena that names nobody."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from router.events import Completion, Exposure
from serve.sse import SSEChunk
from tests.serve.fake_gateway import MESSAGES, FakeGateway, make, request

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")  # Gateway.__del__ unawaited
AB = {"name": "ab", "arms": [{"variant": "a"}, {"variant": "b"}]}
DUEL = {"name": "duel", "mode": "arena", "arms": [{"variant": "a"}, {"variant": "b"}]}


def run(test: Any) -> None:
    asyncio.run(test())


def completions(fake: FakeGateway) -> list[Completion]:
    return [e for e in fake.log.events if isinstance(e, Completion)]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("n", "5"),
        ("n", 5.0),
        ("max_tokens", "100000"),
        ("max_completion_tokens", True),
        ("stream", 1),
        ("stream", "true"),
    ],
)
def test_fields_the_gateway_acts_on_must_have_their_type(field: str, value: object) -> None:
    async def test() -> None:
        fake = await make([AB, DUEL], user_config={"limits": {"max_n": 2, "max_tokens": 64}})
        for model in ("a", "ab", "duel"):
            body = {"model": model, "user": "u", "messages": MESSAGES, field: value}
            status, text = await fake.post(body)
            error = json.loads(text)["error"]
            assert (status, error["param"], error["code"]) == (400, field, "invalid_type")
        assert not any(engine.requests for engine in fake.engines.values())

    run(test)


def test_an_exposure_refused_with_its_request_is_sent_with_the_next() -> None:
    async def test() -> None:
        fake = await make([DUEL])
        status, _ = await fake.post({"model": "duel", "user": "u", "n": 3, "messages": MESSAGES})
        assert status == 400
        status, _ = await fake.post({"model": "duel", "user": "u", "messages": MESSAGES})
        await fake.settled()
        assert status == 200 and fake.log.kinds().count("Exposure") == 1

    run(test)


def test_a_client_that_leaves_before_the_answer_is_logged_not_lost() -> None:
    async def test() -> None:
        for experiment in (AB, DUEL):
            fake = await make([experiment])
            for engine in fake.engines.values():
                engine.hang = True
            body = {"model": experiment["name"], "user": "u", "messages": MESSAGES}
            task = asyncio.create_task(fake.post(body))
            await asyncio.sleep(0.05)
            task.cancel()  # Ray Serve cancels the handler when the HTTP client goes
            with pytest.raises(asyncio.CancelledError):
                await task
            await fake.settled()
            assert [type(e) for e in fake.log.events][:1] == [Exposure]
            logged = completions(fake)
            assert logged and {(c.status, c.error) for c in logged} == {(499, "client_closed")}
            assert "Battle" not in fake.log.kinds()
            assert all(s.cancelled for e in fake.engines.values() for s in e.streams)
            fake.log.events.clear()  # the exposure was sent: the next request repeats it
            for engine in fake.engines.values():
                engine.hang = False
            status, _ = await fake.post(body)
            await fake.settled()
            assert status == 200 and fake.log.kinds()[0] == "Exposure"

    run(test)


@pytest.mark.parametrize("model", ["ab", "duel"])
def test_a_stream_abandoned_midway_is_logged_as_closed_by_the_client(model: str) -> None:
    async def test() -> None:
        fake = await make([AB, DUEL])
        body = {"model": model, "user": "u", "stream": True, "messages": MESSAGES}
        response = await fake.gateway._complete(request(body), "chat")
        iterator = response.body_iterator
        await anext(iterator)  # the first chunk, then the client goes
        await iterator.aclose()
        await fake.settled()
        logged = completions(fake)
        assert logged and {(c.status, c.error) for c in logged} == {(499, "client_closed")}
        assert "Battle" not in fake.log.kinds()

    run(test)


def test_a_stream_read_to_its_end_is_a_success() -> None:
    async def test() -> None:
        fake = await make([AB, DUEL])
        for model in ("ab", "duel"):
            status, text = await fake.post(
                {"model": model, "user": "u", "stream": True, "messages": MESSAGES}
            )
            assert status == 200 and text.endswith("data: [DONE]\n\n")
        await fake.settled()
        assert {c.status for c in completions(fake)} == {200}
        assert fake.log.kinds().count("Battle") == 1

    run(test)


@pytest.mark.parametrize("stream", [False, True])
def test_a_failed_arena_side_does_not_name_its_variant(stream: bool) -> None:
    async def test() -> None:
        arms = [{"variant": "secret-a"}, {"variant": "secret-b"}]
        fake = await make([DUEL | {"arms": arms}], variants=("secret-a", "secret-b"))
        fake.engines["secret-b"].fail = True
        body = {"model": "duel", "user": "u", "stream": stream, "messages": MESSAGES}
        status, text = await fake.post(body)
        assert status == 503 and "secret" not in text
        assert "choice" in json.loads(text)["error"]["message"]

    run(test)


def test_the_scored_text_of_a_stream_is_its_first_choice() -> None:
    def chunk(index: int, text: str) -> str:
        choice = {"index": index, "delta": {"content": text}}
        return f"data: {json.dumps({'choices': [choice]})}\n\n"

    assert SSEChunk(chunk(0, "Paris")).text == "Paris"
    assert SSEChunk(chunk(1, "Lyon")).text == ""


def test_a_variant_default_above_the_token_cap_is_capped() -> None:
    async def test() -> None:
        fake = await make(user_config={"limits": {"max_tokens": 8}})
        fake.gateway._variants["a"] = fake.gateway._variants["a"].model_copy(
            update={
                "sampling": fake.gateway._variants["a"].sampling.model_copy(
                    update={"max_tokens": 4096}
                )
            }
        )
        status, _ = await fake.post({"model": "a", "messages": MESSAGES})
        assert status == 200 and fake.engines["a"].requests[-1].max_tokens == 8
        await fake.post({"model": "a", "messages": MESSAGES, "max_tokens": 5})
        assert fake.engines["a"].requests[-1].max_tokens == 5

    run(test)


@pytest.mark.parametrize("stream", [False, True])
def test_a_prompt_only_variant_answers_in_its_own_name(stream: bool) -> None:
    async def test() -> None:
        from serve.config import AppConfig
        from serve.gateway import Gateway
        from tests.serve.fake_gateway import Engine, FakeGateway, Log

        config = AppConfig.from_args(
            {
                "variants": [{"name": "a", "model": "unused"}, {"name": "a-brief", "engine": "a"}],
                "check_model_files": False,
            }
        )
        engines, log = {"a": Engine("a"), "a-brief": Engine("a")}, Log()
        gateway = Gateway(config, engines, log, None)
        await gateway.reconfigure({"experiments": []})
        fake = FakeGateway(gateway, log, engines)
        status, text = await fake.post({"model": "a-brief", "stream": stream, "messages": MESSAGES})
        assert status == 200 and '"model":"a"' not in text.replace(" ", "")
        assert '"model":"a-brief"' in text.replace(" ", "")

    run(test)


def test_an_arena_stream_that_breaks_here_is_logged_as_a_failure_not_a_leaving_client() -> None:
    async def test() -> None:
        from tests.serve.fake_gateway import sse_chat

        fake = await make([DUEL])

        def malformed(name: str, request: Any) -> list[Any]:
            first, *_ = sse_chat(name, request)
            return [first, ["data: {not json\n\n"]]

        fake.engines["b"].script = malformed
        body = {"model": "duel", "user": "u", "stream": True, "messages": MESSAGES}
        response = await fake.gateway._complete(request(body), "chat")
        with pytest.raises(ValueError):
            async for _ in response.body_iterator:
                pass
        await fake.settled()
        assert {c.status for c in completions(fake)} == {503}

    run(test)


def test_a_score_job_is_sent_again_when_its_scorer_replica_died() -> None:
    """A scorer killed under load: the job goes to the replica Ray Serve starts next."""
    from ray.exceptions import ActorUnavailableError

    import serve.records as records_module
    from serve.scorer import ScoreJob

    async def test() -> None:
        fake = await make()
        calls: list[str] = []

        class Scorer:
            def __init__(self) -> None:
                self.score_and_log = self

            def remote(self, job: ScoreJob) -> Any:
                calls.append(job.completion_id)

                async def answer() -> None:
                    if len(calls) < 3:
                        raise ActorUnavailableError("Actor is unavailable.", b"x" * 16)

                return answer()

        fake.gateway.recorder.scorer_handle = Scorer()
        job = ScoreJob(
            completion_id="c1",
            experiment=None,
            variant="a",
            messages=[{"role": "user", "content": "Hi"}],
            response="Hello",
            ended=0.0,
        )
        await fake.gateway.recorder.send_score(job)
        assert calls == ["c1", "c1", "c1"]

    original = records_module.SCORE_RETRY_S
    records_module.SCORE_RETRY_S = (0.0, 0.0, 0.0)
    try:
        run(test)
    finally:
        records_module.SCORE_RETRY_S = original
