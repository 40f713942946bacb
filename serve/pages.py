"""The browser pages the gateway serves at `/ui/`: the arena for raters, the experiments and the
reports (issue 21). Plain HTML, CSS and JavaScript files in `serve/ui/`, no build step.

Every page is sent with a Content-Security-Policy that allows scripts, styles and calls from
the gateway itself only (no inline script, no other origin, no framing): model output is
inserted as text by the pages, and the policy stops a script that got in anyway from running
or from sending anything elsewhere. The pages need no key to load; they call the API with the
key the user enters, as any client does.
"""

from __future__ import annotations

import functools
from pathlib import Path

from starlette.responses import RedirectResponse, Response

from serve.errors import APIError

UI_DIR = Path(__file__).resolve().parent / "ui"
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
}
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


@functools.cache
def files() -> dict[str, tuple[bytes, str]]:
    """Each page file by name: its bytes and content type (read once per process)."""
    return {
        path.name: (path.read_bytes(), CONTENT_TYPES[path.suffix])
        for path in sorted(UI_DIR.iterdir())
        if path.suffix in CONTENT_TYPES
    }


def page(name: str) -> Response:
    """The file `name` of the UI (the arena page for ""), or a 404 in the API's shape."""
    found = files().get(name or "index.html")
    if found is None:
        raise APIError(404, f"no page {name!r}; the pages start at /ui/", code="page_not_found")
    body, content_type = found
    return Response(body, media_type=content_type, headers=HEADERS)


def to_index() -> RedirectResponse:
    return RedirectResponse("/ui/", status_code=308)
