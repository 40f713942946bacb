"""A request for an engine with no replica running is withdrawn with `EngineUnavailable` (a 503
for the client), not left in Ray Serve's queue until a replica comes back; one queued behind a
live replica, or already sent to one, waits for its answer."""

from __future__ import annotations

import asyncio
import concurrent.futures
from types import SimpleNamespace
from typing import Any

import pytest

from serve import engines
from serve.engines import EngineStream, EngineUnavailable


class Handle:
    """A `DeploymentHandle` with the router state `running_replicas` reads."""

    def __init__(self, replicas: int | None) -> None:
        self.populated = replicas is not None
        request_router = SimpleNamespace(
            curr_replicas={f"r{i}": None for i in range(replicas or 0)}
        )
        self._router = SimpleNamespace(
            _asyncio_router=SimpleNamespace(_request_router=request_router)
        )

    def running_replicas_populated(self) -> bool:
        return self.populated

    def lose_replicas(self) -> None:
        self._router._asyncio_router._request_router.curr_replicas = {}


class Response:
    """A `DeploymentResponseGenerator`: its answer once `answer` is called, its routing state."""

    def __init__(self, sent: bool = False) -> None:
        self._replica_result_future: concurrent.futures.Future = concurrent.futures.Future()
        if sent:
            self._replica_result_future.set_result(None)
        self.answered = asyncio.Event()  # made inside the test's event loop
        self.cancelled = False

    def __aiter__(self) -> Response:
        return self

    async def __anext__(self) -> Any:
        await self.answered.wait()
        return "first"

    def cancel(self) -> None:
        self.cancelled = True


@pytest.fixture(autouse=True)
def quick_checks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(engines, "ENGINE_CHECK_S", 0.01)


async def first_of(stream: EngineStream, within_s: float = 1.0) -> Any:
    return await asyncio.wait_for(anext(stream), within_s)


def test_no_replica_running_means_unavailable_at_once() -> None:
    async def run() -> Response:
        response = Response()
        with pytest.raises(EngineUnavailable):
            await first_of(EngineStream(response, Handle(replicas=0)), within_s=0.1)
        return response

    assert asyncio.run(run()).cancelled


def test_a_queued_request_is_withdrawn_once_the_last_replica_is_gone() -> None:
    async def run() -> tuple[bool, Response]:
        response, handle = Response(), Handle(replicas=1)
        waiting = asyncio.ensure_future(first_of(EngineStream(response, handle)))
        await asyncio.sleep(0.1)
        waited = not waiting.done()  # queued behind a live replica: it waits
        handle.lose_replicas()
        with pytest.raises(EngineUnavailable):
            await waiting
        return waited, response

    waited, response = asyncio.run(run())
    assert waited and response.cancelled


@pytest.mark.parametrize("replicas", [0, None])
def test_a_request_sent_or_with_replicas_unknown_waits_for_its_answer(
    replicas: int | None,
) -> None:
    async def run() -> tuple[Any, Response]:
        response = Response(sent=replicas == 0)  # sent to a replica being replaced, or unknown
        stream = EngineStream(response, Handle(replicas=replicas))
        asyncio.get_running_loop().call_later(0.1, response.answered.set)
        return await first_of(stream), response

    first, response = asyncio.run(run())
    assert first == "first" and not response.cancelled
