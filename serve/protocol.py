"""Request and response models of the gateway's own routes (feedback, listings).

The OpenAI completion routes reuse vLLM's request models (through `ray.serve.llm`), which the
variant engines consume anyway; this module holds what the gateway adds to the API.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, model_validator
from pydantic_core import PydanticCustomError

from router.events import Feedback, FeedbackResult
from router.experiment import CUSTOM_NAME_PATTERN
from serve.errors import APIError, from_validation_error

MAX_ID = 256
ID = Annotated[str, Field(min_length=1, max_length=MAX_ID)]
IDEMPOTENCY_HEADER = "idempotency-key"


class _FeedbackBase(BaseModel):
    model_config = ConfigDict(extra="forbid")

    idempotency_key: ID | None = Field(
        default=None,
        description="Required here or as the Idempotency-Key header; one feedback per key "
        "and API key.",
    )
    user: ID | None = Field(
        default=None,
        description="Who judges (else the X-User-Id header; X-Session-Id for a session "
        "experiment): feedback on a battle, or on one of its answers, is taken only from the "
        "unit the battle was served to.",
    )


class ThumbsFeedback(_FeedbackBase):
    kind: Literal["thumbs"]
    completion_id: ID
    value: Literal["up", "down"]


class VoteFeedback(_FeedbackBase):
    """A pairwise vote on an arena battle: `a` and `b` are choices 0 and 1 of the answer."""

    kind: Literal["vote"]
    battle_id: ID
    value: Literal["a", "b", "tie", "both_bad"]


class SignalFeedback(_FeedbackBase):
    """An implicit signal: the user asked for another answer, or copied this one."""

    kind: Literal["regenerate", "copy"]
    completion_id: ID


class CustomFeedback(_FeedbackBase):
    """A named numeric metric on a completion (e.g. a rating of 1 to 5); reports test it when
    the experiment declares the name (`custom_metrics`)."""

    kind: Literal["custom"]
    name: str = Field(pattern=CUSTOM_NAME_PATTERN)
    value: float = Field(strict=True, allow_inf_nan=False, description="A JSON number.")
    completion_id: ID | None = None
    battle_id: ID | None = Field(
        default=None,
        description="Refused: a battle's own metric names no variant; rate one of its answers "
        "(`arena.completion_ids`).",
    )

    @model_validator(mode="after")
    def _one_target(self) -> CustomFeedback:
        if self.battle_id is not None and self.completion_id is None:
            raise PydanticCustomError(
                "battle_custom",
                "custom feedback rates one answer: send a side's completion_id "
                "(arena.completion_ids), not the battle_id",
            )
        if (self.completion_id is None) == (self.battle_id is None):
            raise PydanticCustomError(
                "one_target", "set exactly one of completion_id and battle_id"
            )
        return self


FeedbackRequest = Annotated[
    ThumbsFeedback | VoteFeedback | SignalFeedback | CustomFeedback, Field(discriminator="kind")
]
_FEEDBACK = TypeAdapter(FeedbackRequest)
FEEDBACK_KINDS = ("thumbs", "vote", "regenerate", "copy", "custom")


def lone_surrogate(value: Any) -> str | None:
    """The path (`messages.0.content`) of the first string in a parsed JSON value that holds a
    lone surrogate (JSON's `\\ud800` escape: valid JSON, but no Unicode text, so no store or
    tokenizer can take it), or None. Iterative: nesting depth is bounded by the parser only."""
    stack: list[tuple[str, Any]] = [("", value)]
    while stack:
        path, item = stack.pop()
        if isinstance(item, str):
            try:
                item.encode()
            except UnicodeEncodeError:
                return path
        elif isinstance(item, dict):
            for key, child in reversed(item.items()):
                # The path goes into the error: a bad key is shown escaped, never as it is.
                name = str(key).encode("utf-8", "backslashreplace").decode()
                stack.append((f"{path}.{name}" if path else name, child))
                stack.append((f"{path}.{name}" if path else name, key))  # a key is a string too
        elif isinstance(item, list):
            for i in reversed(range(len(item))):
                stack.append((f"{path}.{i}" if path else str(i), item[i]))
    return None


def unit_id(value: str | None, where: str) -> str | None:
    """A unit id from a header or field: at most `MAX_ID` characters (a 400 names `where`)."""
    if value is not None and len(value) > MAX_ID:
        raise APIError(
            400,
            f"{where}: at most {MAX_ID} characters (got {len(value):,})",
            param=where,
            code="invalid_value",
        )
    return value


def parse_feedback(
    body: dict[str, Any],
    header_key: str | None,
    ts: float,
    principal: str = "",
    user_header: str | None = None,
    session: str | None = None,
) -> Feedback:
    """The feedback event of a `POST /v1/feedback` body; `APIError` 400 names the bad field.

    `principal` is the caller's API key name ("" on a gateway without keys), `user_header` and
    `session` the X-User-Id and X-Session-Id headers: who judges, for feedback on a battle."""
    try:
        given = _FEEDBACK.validate_python(body)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        if first["type"] in ("union_tag_invalid", "union_tag_not_found"):
            raise APIError(
                400,
                f"kind: must be one of {', '.join(FEEDBACK_KINDS)}",
                param="kind",
                code="invalid_value",
            ) from None
        if first["type"] == "one_target":
            raise APIError(400, first["msg"], param="completion_id", code="invalid_value") from None
        if first["type"] == "battle_custom":
            raise APIError(
                400, f"battle_id: {first['msg']}", param="battle_id", code="invalid_value"
            ) from None
        raise from_validation_error(exc, strip_first=True) from None
    if header_key is not None and not 1 <= len(header_key) <= MAX_ID:
        raise APIError(
            400,
            f"idempotency_key: the Idempotency-Key header must have 1 to {MAX_ID} characters",
            param="idempotency_key",
            code="invalid_value",
        )
    key = given.idempotency_key or header_key
    if key is None:
        raise APIError(
            400,
            "idempotency_key: required (in the body or the Idempotency-Key header), so that a "
            "retried call is recorded once",
            param="idempotency_key",
            code="missing_idempotency_key",
        )
    if given.idempotency_key and header_key and given.idempotency_key != header_key:
        raise APIError(
            400,
            "idempotency_key: the body and the Idempotency-Key header disagree",
            param="idempotency_key",
            code="invalid_value",
        )
    who = {
        "principal": principal,
        "user": given.user or unit_id(user_header, "X-User-Id"),
        "session": unit_id(session, "X-Session-Id"),
    }
    if isinstance(given, CustomFeedback):
        return Feedback(ts, "custom", key, given.completion_id, None, None, given.value,
                        given.name, **who)  # fmt: skip
    if isinstance(given, VoteFeedback):
        return Feedback(ts, "vote", key, battle_id=given.battle_id, value=given.value, **who)
    value = given.value if isinstance(given, ThumbsFeedback) else None
    return Feedback(ts, given.kind, key, completion_id=given.completion_id, value=value, **who)


class Reveal(BaseModel):
    """Who answered a voted battle: the variants behind choices `a` (0) and `b` (1)."""

    experiment: str
    a: str
    b: str


class FeedbackResponse(BaseModel):
    id: str
    object: Literal["feedback"] = "feedback"
    kind: str
    completion_id: str | None = None
    battle_id: str | None = None
    status: Literal["recorded", "replayed"]
    reveal: Reveal | None = None


def feedback_answer(event: Feedback, result: FeedbackResult) -> FeedbackResponse:
    """The answer to a feedback call the store has judged; `APIError` 404/409 if refused."""
    target, target_id = event.target
    if result.status == "unknown_target":
        raise APIError(
            404,
            f"no {target} with id {target_id!r}",
            param=f"{target}_id",
            code=f"{target}_not_found",
        )
    if result.status == "already_voted":
        raise APIError(
            409,
            f"battle {target_id!r} already has a vote (under another idempotency_key)",
            param="battle_id",
            code="battle_already_voted",
        )
    if result.status == "not_the_voter":
        raise APIError(
            403,
            f"{target} {target_id!r} was served to another user, session or API key: only "
            "they may judge it (send the same `user`, X-User-Id or X-Session-Id, and key)",
            param="user",
            code="not_the_voter",
        )
    if result.status == "key_reused":
        raise APIError(
            409,
            "idempotency_key was already used for different feedback",
            param="idempotency_key",
            code="idempotency_key_reused",
        )
    reveal = None
    if result.reveal is not None and result.experiment is not None:
        a, b = result.reveal
        reveal = Reveal(experiment=result.experiment, a=a, b=b)
    return FeedbackResponse(
        id=f"fb-{result.feedback_id}",
        kind=event.kind,
        completion_id=event.completion_id,
        battle_id=event.battle_id,
        status=result.status,
        reveal=reveal,
    )


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
