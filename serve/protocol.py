"""Request and response models of the gateway's own routes (feedback, model listing).

The OpenAI completion routes reuse vLLM's request models (through `ray.serve.llm`), which the
variant engines consume anyway; this module holds what the gateway adds to the API.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class FeedbackRequest(BaseModel):
    """`POST /v1/feedback`: a judgement of one completion, replayable under one idempotency key."""

    model_config = ConfigDict(extra="forbid")

    completion_id: str = Field(min_length=1, max_length=256)
    kind: Literal["thumbs"]
    value: Literal["up", "down"]
    idempotency_key: str | None = Field(default=None, min_length=1, max_length=256)


class FeedbackResponse(BaseModel):
    id: str
    object: Literal["feedback"] = "feedback"
    completion_id: str
    status: Literal["recorded", "replayed"]


class ModelCard(BaseModel):
    """An OpenAI model entry; `arena` says whether it is an experiment or a variant."""

    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "arena-serve"
    arena: dict[str, object]


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]
