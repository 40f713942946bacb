"""The OpenAPI document: valid, and describing exactly the gateway's routes."""

from __future__ import annotations

import schemathesis

from serve.gateway import app
from serve.openapi import openapi_document


def test_the_document_covers_every_route_of_the_gateway() -> None:
    document = openapi_document()
    documented = {
        (method.upper(), path) for path, item in document["paths"].items() for method in item
    }
    served = {
        (method, route.path)
        for route in app.routes
        for method in getattr(route, "methods", ()) or ()
        if route.path != "/openapi.json" and method != "HEAD"
    }
    assert documented == served


def test_the_document_is_valid_openapi_with_the_request_models() -> None:
    schema = schemathesis.openapi.from_dict(openapi_document())
    labels = {result.ok().label for result in schema.get_all_operations()}
    assert "POST /v1/chat/completions" in labels and "POST /v1/feedback" in labels
    components = openapi_document()["components"]["schemas"]
    assert {"ChatCompletionRequest", "CompletionRequest", "FeedbackRequest", "Error"} <= set(
        components
    )
    error = components["Error"]["properties"]["error"]
    assert error["required"] == ["message", "type", "param", "code"]
