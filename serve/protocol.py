"""The gateway's API: request and response models of its own routes (feedback, listings),
and the rules it applies to an OpenAI completion request before an engine sees it.

The OpenAI completion routes reuse vLLM's request models (through `ray.serve.llm`), which the
variant engines consume anyway; this module holds what the gateway adds to the API: the
fields it acts on itself (`CompletionFields`: typed as OpenAI requires, capped by its
`RequestLimits`), the checks vLLM's models would answer with a Python error's text, and how a
request names its experiment unit (`unit_of`). The code that serves the routes is elsewhere.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    TypeAdapter,
    ValidationError,
    model_validator,
)
from pydantic_core import PydanticCustomError

from router.events import Feedback, FeedbackResult
from router.experiment import CONFIRM_SUFFIX, CUSTOM_NAME_PATTERN, Experiment
from serve.config import RequestLimits
from serve.errors import APIError, from_validation_error

MAX_ID = 256
ID = Annotated[str, Field(min_length=1, max_length=MAX_ID)]
IDEMPOTENCY_HEADER = "idempotency-key"
USER_HEADER = "x-user-id"
SESSION_HEADER = "x-session-id"
REQUEST_ID_HEADER = "x-request-id"


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


class RegenerateFeedback(_FeedbackBase):
    """An implicit signal: the user asked for another answer instead of this one."""

    kind: Literal["regenerate"]
    completion_id: ID
    new_completion_id: ID | None = Field(
        default=None,
        description="The answer that replaced this one, once it came: with text kept, the two "
        "make a preference pair for `arena-serve export-preferences` (the new one chosen).",
    )


class CopyFeedback(_FeedbackBase):
    """An implicit signal: the user copied this answer."""

    kind: Literal["copy"]
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
    ThumbsFeedback | VoteFeedback | RegenerateFeedback | CopyFeedback | CustomFeedback,
    Field(discriminator="kind"),
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


class CompletionFields(BaseModel):
    """The fields of a completion request the gateway acts on itself, with their JSON types, as
    OpenAI requires: vLLM's request models would turn `"n": "5"` or `"stream": 1` into 5 and
    true after the gateway had chosen how to answer. The rest of the body is the engine's."""

    model_config = ConfigDict(extra="ignore")

    n: StrictInt | None = None
    max_tokens: StrictInt | None = None
    max_completion_tokens: StrictInt | None = None
    stream: StrictBool | None = None


def check_limits(body: dict[str, Any], limits: RequestLimits) -> CompletionFields:
    """The fields the gateway acts on; 400 for a wrong type or more than `limits` allow."""
    try:
        fields = CompletionFields.model_validate(body)
    except ValidationError as exc:
        name = str(exc.errors(include_url=False)[0]["loc"][0])
        kind = "a boolean" if name == "stream" else "an integer"
        raise APIError(400, f"`{name}` must be {kind}", param=name, code="invalid_type") from None
    cap = limits.max_tokens
    for name in ("max_tokens", "max_completion_tokens"):
        value = getattr(fields, name)
        if cap is not None and value is not None and value > cap:
            raise APIError(
                400,
                f"`{name}` is {value}; this gateway allows at most {cap}",
                param=name,
                code="max_tokens_exceeded",
            )
    check_metadata(body.get("metadata"))
    if fields.n is not None and fields.n > limits.max_n:
        raise APIError(
            400,
            f"`n` is {fields.n}; this gateway allows at most {limits.max_n} choices",
            param="n",
            code="n_exceeded",
        )
    return fields


METADATA_KEYS, METADATA_KEY_CHARS, METADATA_VALUE_CHARS = 16, 64, 512


def check_metadata(metadata: Any) -> None:
    """OpenAI's rules for a request's `metadata` (what targeting reads): an object of at most
    16 string values, keys up to 64 characters, values up to 512; a 400 otherwise."""
    if metadata is None:
        return
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise APIError(
            400, "`metadata` must be an object of strings", param="metadata", code="invalid_type"
        )
    if len(metadata) > METADATA_KEYS:
        raise APIError(
            400,
            f"`metadata` has {len(metadata)} keys; at most {METADATA_KEYS}",
            param="metadata",
            code="invalid_value",
        )
    for key, value in metadata.items():
        if len(key) > METADATA_KEY_CHARS or len(value) > METADATA_VALUE_CHARS:
            raise APIError(
                400,
                f"`metadata` keys are at most {METADATA_KEY_CHARS} characters and values at "
                f"most {METADATA_VALUE_CHARS}",
                param="metadata",
                code="invalid_value",
            )


def requested_model(body: dict[str, Any]) -> str:
    """The experiment or variant a completion request names (400 `missing_model`)."""
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise APIError(
            400,
            "`model` must name an experiment or a variant",
            param="model",
            code="missing_model",
        )
    return model


def named_user(body: dict[str, Any], headers: Mapping[str, str]) -> str | None:
    """Who the caller says they are: the `user` field, else the X-User-Id header (each a 400
    when it is not a string of at most `MAX_ID` characters)."""
    user = body.get("user")
    if user is not None and not isinstance(user, str):
        raise APIError(400, "`user` must be a string", param="user", code="invalid_value")
    unit_id(user, "user")
    return user or unit_id(headers.get(USER_HEADER), "X-User-Id") or None


def check_prompt(body: dict[str, Any], endpoint: str) -> None:
    """400 for a chat without messages or with none (OpenAI's answer; without this vLLM's
    request model reports a Python error's text)."""
    if endpoint != "chat":
        return
    if "messages" not in body or body["messages"] is None:
        raise APIError(400, "messages: field required", param="messages", code="invalid_value")
    if body["messages"] == []:
        raise APIError(
            400,
            "messages: must hold at least one message",
            param="messages",
            code="invalid_value",
        )


def check_contents(messages: Any) -> None:
    """400 for a message whose `content` is a JSON object: vLLM's models take it for an iterable
    of parts, lazily, and the request then cannot be sent to the engine at all."""
    if not isinstance(messages, list):
        return  # validation reports the problem
    for i, message in enumerate(messages):
        if isinstance(message, dict) and isinstance(message.get("content"), dict):
            raise APIError(
                400,
                f"messages.{i}.content: must be a string or a list of content parts",
                param=f"messages.{i}.content",
                code="invalid_value",
            )


def unit_of(
    experiment: Experiment, user: str | None, headers: Mapping[str, str], request_id: str
) -> str:
    """The unit the experiment assigns: the named user, the session or the request itself."""
    if experiment.unit == "request":
        return request_id
    if experiment.unit == "session":
        session = unit_id(headers.get(SESSION_HEADER), "X-Session-Id")
        if not session:
            raise APIError(
                400,
                f"experiment {experiment.name!r} assigns sessions: set the X-Session-Id header",
                param=None,
                code="missing_unit",
            )
        return session
    if not user:
        raise APIError(
            400,
            f"experiment {experiment.name!r} assigns users: set the `user` field or the "
            "X-User-Id header",
            param="user",
            code="missing_unit",
        )
    return user


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
    given = _feedback_request(body)
    common: dict[str, Any] = {
        "ts": ts,
        "kind": given.kind,
        "idempotency_key": _idempotency_key(given.idempotency_key, header_key),
        "principal": principal,
        "user": given.user or unit_id(user_header, "X-User-Id"),
        "session": unit_id(session, "X-Session-Id"),
    }
    if isinstance(given, CustomFeedback):
        return Feedback(
            **common, completion_id=given.completion_id, number=given.value, name=given.name
        )
    if isinstance(given, VoteFeedback):
        return Feedback(**common, battle_id=given.battle_id, value=given.value)
    if isinstance(given, RegenerateFeedback):
        if given.new_completion_id == given.completion_id:
            raise APIError(
                400,
                "new_completion_id: the answer that replaced this one, not the same one",
                param="new_completion_id",
                code="invalid_value",
            )
        return Feedback(
            **common,
            completion_id=given.completion_id,
            new_completion_id=given.new_completion_id,
        )
    value = given.value if isinstance(given, ThumbsFeedback) else None
    return Feedback(**common, completion_id=given.completion_id, value=value)


def _feedback_request(body: dict[str, Any]) -> FeedbackRequest:
    """The body as one of the feedback kinds; a 400 naming the field that is wrong."""
    try:
        return _FEEDBACK.validate_python(body)
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


def _idempotency_key(in_body: str | None, header_key: str | None) -> str:
    """The idempotency key of a feedback call: the body's or the header's, which must agree."""
    if header_key is not None and not 1 <= len(header_key) <= MAX_ID:
        raise APIError(
            400,
            f"idempotency_key: the Idempotency-Key header must have 1 to {MAX_ID} characters",
            param="idempotency_key",
            code="invalid_value",
        )
    key = in_body or header_key
    if key is None:
        raise APIError(
            400,
            "idempotency_key: required (in the body or the Idempotency-Key header), so that a "
            "retried call is recorded once",
            param="idempotency_key",
            code="missing_idempotency_key",
        )
    if in_body and header_key and in_body != header_key:
        raise APIError(
            400,
            "idempotency_key: the body and the Idempotency-Key header disagree",
            param="idempotency_key",
            code="invalid_value",
        )
    return key


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
    if result.status == "unknown_replacement":
        raise APIError(
            404,
            f"no completion with id {event.new_completion_id!r} in the same experiment as "
            f"{target_id!r}",
            param="new_completion_id",
            code="completion_not_found",
        )
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
        reveal = Reveal(experiment=result.experiment.removesuffix(CONFIRM_SUFFIX), a=a, b=b)
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
