"""Admission control: who may call (`admit`: the API key and its rate limit), and how many
completion requests a gateway replica takes on at once (`InFlightLimit`).

The count is kept by an ASGI middleware around the whole call, so a streamed answer holds its
slot until its last byte (or until its client leaves), whatever path it ends by. The gateway
sets the limit from its live config (`limits.max_in_flight`) through this module's `IN_FLIGHT`:
one gateway per replica process.
"""

from __future__ import annotations

from typing import Any

from serve.auth import KeyRing, Principal
from serve.config import RequestLimits
from serve.errors import RETRY_AFTER_S, APIError

LIMITED_PATHS = ("/v1/chat/completions", "/v1/completions")


def admit(keys: KeyRing, authorization: str | None, admin: bool = False) -> Principal:
    """The key's principal (401/403 otherwise), admitted by its rate limit (429)."""
    principal = keys.authenticate(authorization, admin)
    keys.admit(principal)
    return principal


class InFlight:
    """How many completion requests this process's gateway is serving, and how many it may.

    Counted by `InFlightLimit` around the whole ASGI call, so a streamed answer holds its slot
    until its last byte (or its client leaves), whatever path it ends by.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.count = 0
        self.draining = False  # shutting down: no new completion is taken on


IN_FLIGHT = InFlight(RequestLimits().max_in_flight)  # until the gateway applies its config


class InFlightLimit:
    """Pure ASGI middleware: beyond `IN_FLIGHT.limit` completion requests, a 503 at once.

    Shedding here, before any work, keeps an overloaded replica answering the requests it has
    in time, and the answer is OpenAI's error shape with `Retry-After`, where Ray Serve's own
    queue limit would answer in plain text.
    """

    def __init__(self, app: Any, counter: InFlight = IN_FLIGHT) -> None:
        self.app = app
        self.counter = counter

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not scope["path"].endswith(LIMITED_PATHS):
            return await self.app(scope, receive, send)
        counter = self.counter
        if counter.draining:
            error = APIError(
                503,
                "the gateway is shutting down; retry",
                code="shutting_down",
                headers={"Retry-After": RETRY_AFTER_S, "Connection": "close"},
            )
            return await error.response()(scope, receive, send)
        if counter.count >= counter.limit:
            error = APIError(
                503,
                f"the gateway is at capacity ({counter.limit} requests in flight); retry",
                code="overloaded",
                headers={"Retry-After": RETRY_AFTER_S},
            )
            return await error.response()(scope, receive, send)
        counter.count += 1
        try:
            await self.app(scope, receive, send)
        finally:
            counter.count -= 1
