"""The parse-and-validate stage: a completion request's body read, and the fields the gateway
acts on checked, before anything is routed.

The checks themselves are the API's rules, in `serve.protocol`; this module reads the HTTP
request: a JSON object no larger than the gateway's limit, with no lone surrogate escape.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request

from serve.config import RequestLimits
from serve.errors import APIError
from serve.protocol import (
    REQUEST_ID_HEADER,
    check_limits,
    lone_surrogate,
    named_user,
    requested_model,
    unit_id,
)
from serve.records import Call, Endpoint

_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


async def read_json_object(request: Request, max_bytes: int) -> dict[str, Any]:
    """The request's JSON object body, read no further than `max_bytes` (then a 413)."""
    declared = request.headers.get("content-length", "")
    too_large = declared.isdigit() and int(declared) > max_bytes  # then not even read
    chunks: list[bytes] = []
    size = 0
    if not too_large:
        async for chunk in request.stream():
            size += len(chunk)
            if size > max_bytes:
                too_large = True
                break
            chunks.append(chunk)
    if too_large:
        raise APIError(
            413,
            f"the request body is larger than this gateway accepts ({max_bytes:,} bytes)",
            code="body_too_large",
        )
    raw = b"".join(chunks)
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError; too deep
        raise APIError(400, "the request body is not valid JSON", code="invalid_json") from None
    if not isinstance(body, dict):
        raise APIError(400, "the request body must be a JSON object", code="invalid_json")
    # JSON may escape half of a surrogate pair (`\ud800`): valid JSON, but no text any store or
    # tokenizer takes. Only a body with such an escape is walked.
    if _SURROGATE_ESCAPE.search(raw) and (where := lone_surrogate(body)) is not None:
        raise APIError(
            400,
            f"{where}: not valid Unicode (a lone surrogate escape)",
            param=where,
            code="invalid_value",
        )
    return body


@dataclass(frozen=True, slots=True, kw_only=True)
class Incoming:
    """A completion request as parsed: its body and what the gateway reads of it.

    `request_id` is the server's own: a client's X-Request-Id could name another request's
    completion (or, in a `request` experiment, pick its own unit), so it is kept as `trace`,
    for tracing only.
    """

    endpoint: Endpoint
    body: dict[str, Any]
    headers: Mapping[str, str]
    model: str
    user: str | None  # the `user` field, else X-User-Id
    request_id: str
    trace: str | None
    stream: bool
    perf_start: float
    wall_ts: float

    def call(self, *, variant: str, experiment: str | None, unit: str | None) -> Call:
        return Call(
            endpoint=self.endpoint,
            request_id=self.request_id,
            perf_start=self.perf_start,
            wall_ts=self.wall_ts,
            variant=variant,
            experiment=experiment,
            unit=unit,
            stream=self.stream,
            client_request_id=self.trace,
        )


async def parse_completion(request: Request, endpoint: Endpoint, limits: RequestLimits) -> Incoming:
    """Read and check a completion request: body, limits, `model`, `user`, trace id."""
    perf_start, wall_ts = time.perf_counter(), time.time()
    body = await read_json_object(request, limits.max_body_bytes)
    fields = check_limits(body, limits)
    model = requested_model(body)
    user = named_user(body, request.headers)
    return Incoming(
        endpoint=endpoint,
        body=body,
        headers=request.headers,
        model=model,
        user=user,
        request_id=f"req-{uuid.uuid4().hex}",
        trace=unit_id(request.headers.get(REQUEST_ID_HEADER), "X-Request-Id"),
        stream=fields.stream is True,
        perf_start=perf_start,
        wall_ts=wall_ts,
    )
