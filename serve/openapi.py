"""The gateway's OpenAPI 3.1 document (`GET /openapi.json`), built from the models it validates
with: vLLM's chat and completion requests, the feedback union, the probe, the listings, and
OpenAI's error shape on every route. The routes read raw bodies (to answer bad ones in OpenAI's
shape), so FastAPI cannot infer this; schemathesis tests the running gateway against it.
"""

from __future__ import annotations

import functools
from typing import Any

from pydantic import BaseModel, TypeAdapter
from ray.serve.llm.openai_api_models import ChatCompletionRequest, CompletionRequest

from router.analysis.schema import HoldoutReport
from serve.probe import ProbeRequest, ProbeResponse
from serve.protocol import (
    METADATA_KEY_CHARS,
    METADATA_KEYS,
    METADATA_VALUE_CHARS,
    FeedbackRequest,
    FeedbackResponse,
    ModelList,
)

REF = "#/components/schemas/"
# OpenAI's `metadata` (`serve.protocol.check_metadata`), which experiments' `when` rules read.
METADATA_SCHEMA = {
    "type": ["object", "null"],
    "maxProperties": METADATA_KEYS,
    "propertyNames": {"maxLength": METADATA_KEY_CHARS},
    "additionalProperties": {"type": "string", "maxLength": METADATA_VALUE_CHARS},
    "description": "String attributes of the request; experiments' `when` rules may read them.",
}
ERROR_SCHEMA = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["message", "type", "param", "code"],
            "properties": {
                "message": {"type": "string"},
                "type": {"type": "string"},
                "param": {"type": ["string", "null"]},
                "code": {"type": ["string", "null"]},
            },
        }
    },
}
_ERRORS = {
    "400": "invalid request",
    "401": "missing or wrong API key",
    "403": "an admin route with a client key, or feedback on a battle served to someone else",
    "404": "unknown model, completion, battle, probe item or route",
    "409": "a battle already voted, an idempotency key reused, or another probe set",
    "413": "body over `limits.max_body_bytes`",
    "429": "over the key's rate limit (`Retry-After`)",
    "503": "at capacity, or an engine or the outcome log unavailable (`Retry-After`)",
}
_BEARER = [{"bearer": []}]


def _components(models: dict[str, Any]) -> dict[str, Any]:
    """Each model's JSON schema under its name, with its `$defs` lifted to components."""
    schemas: dict[str, Any] = {"Error": ERROR_SCHEMA}
    for name, model in models.items():
        adapter = model if isinstance(model, TypeAdapter) else TypeAdapter(model)
        schema = adapter.json_schema(ref_template=REF + "{model}")
        schemas.update(schema.pop("$defs", {}))
        schemas[name] = schema
    return schemas


def _responses(ok: str, schema: str | None, content_type: str = "application/json") -> dict:
    answer: dict[str, Any] = {"description": "success"}
    if schema is not None:
        answer["content"] = {content_type: {"schema": {"$ref": REF + schema}}}
    error = {"content": {"application/json": {"schema": {"$ref": REF + "Error"}}}}
    return {ok: answer, **{code: {"description": what, **error} for code, what in _ERRORS.items()}}


def _body(schema: str) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": {"$ref": REF + schema}}}}


@functools.cache
def openapi_document() -> dict[str, Any]:
    models: dict[str, type[BaseModel] | TypeAdapter] = {
        "ChatCompletionRequest": ChatCompletionRequest,
        "CompletionRequest": CompletionRequest,
        "FeedbackRequest": TypeAdapter(FeedbackRequest),
        "FeedbackResponse": FeedbackResponse,
        "HoldoutReport": HoldoutReport,
        "ModelList": ModelList,
        "ProbeRequest": ProbeRequest,
        "ProbeResponse": ProbeResponse,
    }
    schemas = _components(models)
    for request in ("ChatCompletionRequest", "CompletionRequest"):  # what targeting reads
        schemas[request].setdefault("properties", {})["metadata"] = METADATA_SCHEMA
    return {
        "openapi": "3.1.0",
        "info": {"title": "arena-serve gateway", "version": "1"},
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "paths": _paths(),
    }


def _completion_route(summary: str, schema: str) -> dict[str, Any]:
    stream = {"text/event-stream": {"schema": {"type": "string"}}}
    answer = {
        "description": "an OpenAI completion, or its SSE stream",
        "content": {"application/json": {"schema": {"type": "object"}}, **stream},
    }
    responses = _responses("200", None)
    responses["200"] = answer
    return {
        "post": {
            "summary": summary,
            "security": _BEARER,
            "requestBody": _body(schema),
            "responses": responses,
        }
    }


def _metrics_route() -> dict[str, Any]:
    refused = {
        code: value
        for code, value in _responses("200", None).items()
        if code in ("401", "403", "429", "503")
    }
    return {
        "get": {
            "summary": "Prometheus exposition; an admin route where keys are configured",
            "security": _BEARER,
            "responses": {"200": {"description": "Prometheus exposition"}, **refused},
        }
    }


def _page() -> dict[str, Any]:
    return {
        "200": {
            "description": "HTML, CSS or JavaScript, with a Content-Security-Policy",
            "content": {"text/html": {"schema": {"type": "string"}}},
        }
    }


def _ui_paths() -> dict[str, Any]:
    """The browser pages (`serve.pages`): HTML and its assets, no key needed to load them."""
    return {
        "/ui": {
            "get": {
                "summary": "Redirects to /ui/",
                "responses": {"308": {"description": "to /ui/"}},
            }
        },
        "/ui/": {"get": {"summary": "The arena page (HTML)", "responses": _page()}},
        "/ui/{name}": {
            "get": {
                "summary": "A page or asset of the UI: experiments.html, report.html, their "
                "scripts and styles",
                "parameters": [
                    {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}
                ],
                "responses": {**_page(), "404": {"description": "no such page (API error)"}},
            }
        },
    }


def _paths() -> dict[str, Any]:
    return {
        "/v1/chat/completions": _completion_route(
            "Chat; `model` names an experiment or a variant", "ChatCompletionRequest"
        ),
        "/v1/completions": _completion_route("Text completion", "CompletionRequest"),
        "/v1/feedback": {
            "post": {
                "summary": "Thumbs, vote, regenerate, copy or custom feedback",
                "security": _BEARER,
                "requestBody": _body("FeedbackRequest"),
                "responses": {
                    **_responses("201", "FeedbackResponse"),
                    "200": {"description": "a replay of the same key"},
                },
            }
        },
        "/v1/probe": {
            "post": {
                "summary": "One sycophancy-probe item against one variant (admin): asked, "
                "pushed back on and asked with a wrong suggestion, graded and logged",
                "security": _BEARER,
                "requestBody": _body("ProbeRequest"),
                "responses": _responses("200", "ProbeResponse"),
            }
        },
        "/v1/models": {"get": {"security": _BEARER, "responses": _responses("200", "ModelList")}},
        **_ui_paths(),
        "/v1/experiments": {"get": {"security": _BEARER, "responses": _responses("200", None)}},
        "/v1/experiments/{name}/report": {
            "get": {
                "security": _BEARER,
                "parameters": [
                    {
                        "name": "name",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string"},
                    }
                ],
                "responses": _responses("200", None),
            }
        },
        "/v1/holdout/report": {
            "get": {
                "summary": "The global holdout against everyone exposed (admin); 404 without "
                "global_holdout in the config",
                "security": _BEARER,
                "responses": _responses("200", "HoldoutReport"),
            }
        },
        "/health": {"get": {"responses": {"200": {"description": "the gateway is up"}}}},
        "/metrics": _metrics_route(),
    }
