"""The browser pages at /ui/ (`serve.pages`): every file served with its type and a strict
Content-Security-Policy, nothing outside the folder, and pages written so that the policy
holds (no inline script or style) and model output can only be text (no HTML insertion)."""

from __future__ import annotations

import asyncio
import json
import re
from html.parser import HTMLParser
from typing import Any

import pytest

from serve import pages
from serve.errors import APIError
from tests.serve.fake_gateway import make

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")  # Gateway.__del__ unawaited
HTML = sorted(name for name in pages.files() if name.endswith(".html"))


class Page(HTMLParser):
    """What a page references and which form fields have labels."""

    def __init__(self) -> None:
        super().__init__()
        self.assets: list[str] = []
        self.fields: list[dict[str, Any]] = []
        self.labelled: set[str] = set()
        self.inline: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag == "script":
            self.assets.append(found.get("src") or "")
            if not found.get("src"):
                self.inline.append("inline <script>")
        if tag == "link" and found.get("rel") == "stylesheet":
            self.assets.append(found.get("href") or "")
        if tag == "style":
            self.inline.append("<style>")
        if tag in ("input", "select", "textarea"):
            self.fields.append(found)
        if tag == "label" and found.get("for"):
            self.labelled.add(found["for"] or "")
        self.inline += [f"{tag} {name}=" for name in found if name == "style"]
        self.inline += [f"{tag} {name}=" for name in found if name.startswith("on")]


def parsed(name: str) -> Page:
    page = Page()
    page.feed(pages.files()[name][0].decode())
    return page


def test_the_ui_has_the_three_pages() -> None:
    assert HTML == ["experiments.html", "index.html", "report.html"]


@pytest.mark.parametrize("name", HTML)
def test_a_page_references_only_files_that_are_served_and_keeps_to_the_policy(name: str) -> None:
    page = parsed(name)
    assert page.assets and all(asset in pages.files() for asset in page.assets)
    assert page.inline == []  # the CSP allows no inline script or style


@pytest.mark.parametrize("name", HTML)
def test_every_form_field_has_a_label(name: str) -> None:
    page = parsed(name)
    for field in page.fields:
        assert field.get("id") in page.labelled or field.get("aria-label"), field


def test_no_script_inserts_html() -> None:
    scripts = {
        name: body.decode() for name, (body, _) in pages.files().items() if name.endswith(".js")
    }
    assert set(scripts) == {"arena.js", "common.js", "experiments.js", "report.js"}
    for name, text in scripts.items():
        assert not re.search(r"innerHTML|outerHTML|insertAdjacentHTML|document\.write", text), name


def test_the_gateway_serves_each_file_with_its_type_and_the_policy() -> None:
    async def test() -> dict[str, Any]:
        fake = await make()
        served = {"": await fake.gateway.ui_index()}
        for name in pages.files():
            served[name] = await fake.gateway.ui_file(name)
        served["/ui"] = await fake.gateway.ui_root()
        return served

    served = asyncio.run(test())
    for name, response in served.items():
        if name == "/ui":
            assert response.status_code == 308 and response.headers["location"] == "/ui/"
            continue
        assert response.status_code == 200
        assert response.headers["content-security-policy"] == pages.CONTENT_SECURITY_POLICY
        assert "script-src 'self'" in pages.CONTENT_SECURITY_POLICY
        assert response.headers["x-content-type-options"] == "nosniff"
        kind = response.headers["content-type"]
        assert kind.startswith(
            {"css": "text/css", "js": "text/javascript"}.get(name.rpartition(".")[2], "text/html")
        )
    assert served[""].body == served["index.html"].body


@pytest.mark.parametrize("name", ["nothing.html", "..", "%2e%2e", "pages.py", "ui.css.bak"])
def test_anything_else_is_a_404_in_the_apis_shape(name: str) -> None:
    with pytest.raises(APIError) as refused:
        pages.page(name)
    assert refused.value.status == 404
    body = json.loads(refused.value.response().body)
    assert body["error"]["code"] == "page_not_found"
