"""schemathesis against the running gateway, from its own OpenAPI document: generated bodies,
valid and not, on every route; no answer is a server error, every status and content type is
one the document declares.

Driven through hypothesis directly (schemathesis' pytest plugin does not run on pytest 9).
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    status_code_conformance,
)

from serve.openapi import openapi_document
from tests.e2e.conftest import App

SCHEMA = schemathesis.openapi.from_dict(openapi_document())
OPERATIONS = {result.ok().label: result.ok() for result in SCHEMA.get_all_operations()}
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance]


def test_the_served_document_is_the_one_tested(app: App) -> None:
    import httpx

    assert httpx.get(f"{app.base_url}/openapi.json", timeout=30).json() == openapi_document()


@pytest.mark.parametrize("label", list(OPERATIONS))
def test_no_generated_request_is_a_server_error(app: App, label: str) -> None:
    operation = OPERATIONS[label]

    @settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
    @given(data=st.data())
    def run(data: st.DataObject) -> None:
        case = data.draw(operation.as_strategy())
        response = case.call(base_url=app.base_url, timeout=120)
        case.validate_response(response, checks=CHECKS)
        assert response.status_code < 500, (response.status_code, response.text[:300])

    run()
