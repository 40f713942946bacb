"""One place where gateway errors are built, always in OpenAI's shape.

`{"error": {"message": ..., "type": ..., "param": ..., "code": ...}}` with the HTTP status the
OpenAI API uses: 400 invalid request, 401 authentication, 404 not found, 429 rate limit, 503
unavailable (retryable). Route code raises `APIError`; the app's exception handlers turn it, a
pydantic validation failure or any unexpected exception into this shape, never a traceback.
"""

from __future__ import annotations

from http import HTTPStatus

from pydantic import ValidationError
from starlette.responses import JSONResponse

RETRY_AFTER_S = "1"  # what a retryable 429 or 503 tells the client to wait

_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    409: "conflict_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
    500: "server_error",
    503: "service_unavailable_error",
}


class APIError(Exception):
    """An error the client should see, with its HTTP status and OpenAI error fields."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.headers = headers or {}

    def body(self) -> dict[str, dict[str, str | None]]:
        return {
            "error": {
                "message": self.message,
                "type": _TYPES.get(self.status, HTTPStatus(self.status).phrase.lower()),
                "param": self.param,
                "code": self.code,
            }
        }

    def response(self, extra_headers: dict[str, str] | None = None) -> JSONResponse:
        return JSONResponse(
            self.body(), status_code=self.status, headers={**self.headers, **(extra_headers or {})}
        )


def from_validation_error(exc: ValidationError, strip_first: bool = False) -> APIError:
    """A 400 naming the first invalid field (`messages.0.role`) and what is wrong with it.

    `strip_first` drops the first part of the location: the tag of a discriminated union
    (`thumbs.value` is the `value` field).
    """
    first = exc.errors(include_url=False)[0]
    loc = [str(part) for part in first["loc"] if part != "body"]
    if strip_first and len(loc) > 1:
        loc = loc[1:]
    param = ".".join(loc) or None
    message = first["msg"].removeprefix("Value error, ")
    if param:
        message = f"{param}: {message}"
    more = len(exc.errors()) - 1
    if more > 0:
        message += f" (and {more} more problem{'s' if more > 1 else ''})"
    return APIError(400, message, param=param, code="invalid_value")
