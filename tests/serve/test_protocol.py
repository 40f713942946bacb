"""POST /v1/feedback bodies: each kind maps to its Feedback event; anything else is a 400 that
names the bad field, never another exception."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from router.events import THUMBS_VALUES, VOTE_VALUES, Feedback, FeedbackResult
from serve.errors import APIError
from serve.protocol import FEEDBACK_KINDS, feedback_answer, parse_feedback

TS = 123.5


def body(kind: str, **fields: Any) -> dict[str, Any]:
    return {"kind": kind, "idempotency_key": "key-1", **fields}


def rejected(body: Any, header: str | None = None) -> APIError:
    with pytest.raises(APIError) as caught:
        parse_feedback(body, header, TS)
    error = caught.value
    assert error.status == 400
    assert error.body()["error"]["type"] == "invalid_request_error"
    return error


VALID = [
    pytest.param(
        body("thumbs", completion_id="c1", value="up"),
        Feedback(ts=TS, kind="thumbs", idempotency_key="key-1", completion_id="c1", value="up"),
        id="thumbs-up",
    ),
    pytest.param(
        body("thumbs", completion_id="c1", value="down"),
        Feedback(ts=TS, kind="thumbs", idempotency_key="key-1", completion_id="c1", value="down"),
        id="thumbs-down",
    ),
    *(
        pytest.param(
            body("vote", battle_id="b1", value=v),
            Feedback(ts=TS, kind="vote", idempotency_key="key-1", battle_id="b1", value=v),
            id=f"vote-{v}",
        )
        for v in VOTE_VALUES
    ),
    pytest.param(
        body("regenerate", completion_id="c1"),
        Feedback(ts=TS, kind="regenerate", idempotency_key="key-1", completion_id="c1"),
        id="regenerate",
    ),
    pytest.param(
        body("copy", completion_id="c1"),
        Feedback(ts=TS, kind="copy", idempotency_key="key-1", completion_id="c1"),
        id="copy",
    ),
    pytest.param(
        body("custom", completion_id="c1", name="rating", value=4),
        Feedback(
            ts=TS,
            kind="custom",
            idempotency_key="key-1",
            completion_id="c1",
            number=4.0,
            name="rating",
        ),
        id="custom-completion",
    ),
    pytest.param(
        body("custom", completion_id="c1", name="latency.ok_2-x", value=-0.5, user="alice"),
        Feedback(
            ts=TS,
            kind="custom",
            idempotency_key="key-1",
            completion_id="c1",
            number=-0.5,
            name="latency.ok_2-x",
            user="alice",
        ),
        id="custom-negative-with-user",
    ),
    pytest.param(
        body("vote", battle_id="b1", value="tie", user="u" * 256),
        Feedback(
            ts=TS, kind="vote", idempotency_key="key-1", battle_id="b1", value="tie", user="u" * 256
        ),
        id="vote-user-at-the-limit",
    ),
    pytest.param(
        body("thumbs", completion_id="c" * 256, value="up", idempotency_key="k" * 256),
        Feedback(
            ts=TS, kind="thumbs", idempotency_key="k" * 256, completion_id="c" * 256, value="up"
        ),
        id="ids-at-the-limit",
    ),
    pytest.param(
        body("custom", completion_id="c1", name="n" * 64, value=1e300, idempotency_key=None),
        None,  # the key comes from the header below
        id="custom-limits-and-null-key",
    ),
]


@pytest.mark.parametrize(("given_body", "expected"), VALID)
def test_valid_bodies_map_to_their_feedback(given_body: dict, expected: Feedback | None) -> None:
    header = "from-header" if given_body["idempotency_key"] is None else None
    got = parse_feedback(given_body, header, TS)
    if expected is None:
        expected = Feedback(
            ts=TS,
            kind="custom",
            idempotency_key="from-header",
            completion_id="c1",
            number=1e300,
            name="n" * 64,
        )
    assert got == expected
    assert type(got.number) is (float if got.kind == "custom" else type(None))


def test_the_header_key_is_used_when_the_body_has_none() -> None:
    got = parse_feedback({"kind": "copy", "completion_id": "c1"}, "hdr-7", TS)
    assert got == Feedback(ts=TS, kind="copy", idempotency_key="hdr-7", completion_id="c1")


def test_body_and_header_may_carry_the_same_key() -> None:
    assert parse_feedback(body("copy", completion_id="c1"), "key-1", TS).idempotency_key == "key-1"


def test_body_and_header_keys_that_disagree_are_refused() -> None:
    error = rejected(body("copy", completion_id="c1"), "other-key")
    assert error.param == "idempotency_key"
    assert "disagree" in error.message


@pytest.mark.parametrize(
    "given_body",
    [
        {"kind": "copy", "completion_id": "c1"},
        body("copy", completion_id="c1", idempotency_key=None),
    ],
)
def test_a_missing_key_is_refused(given_body: dict) -> None:
    error = rejected(given_body, None)
    assert (error.param, error.code) == ("idempotency_key", "missing_idempotency_key")


INVALID = [
    # kind
    ({"completion_id": "c1", "idempotency_key": "k"}, "kind"),
    (body("like", completion_id="c1"), "kind"),
    (body("Thumbs", completion_id="c1", value="up"), "kind"),
    (body(3, completion_id="c1"), "kind"),  # type: ignore[arg-type]
    (body(None, completion_id="c1"), "kind"),  # type: ignore[arg-type]
    # thumbs
    (body("thumbs", completion_id="c1", value="sideways"), "value"),
    (body("thumbs", completion_id="c1"), "value"),
    (body("thumbs", value="up"), "completion_id"),
    (body("thumbs", completion_id=7, value="up"), "completion_id"),
    # vote
    (body("vote", value="a"), "battle_id"),
    (body("vote", battle_id="b1", value="c"), "value"),
    (body("vote", battle_id="b1", value="A"), "value"),
    (body("vote", battle_id="b1"), "value"),
    # signals carry nothing else
    (body("copy", completion_id="c1", value="up"), "value"),
    (body("regenerate", completion_id="c1", battle_id="b1"), "battle_id"),
    (body("copy"), "completion_id"),
    # custom
    (body("custom", completion_id="c1", name="r", value=float("nan")), "value"),
    (body("custom", completion_id="c1", name="r", value=float("inf")), "value"),
    (body("custom", completion_id="c1", name="r", value=float("-inf")), "value"),
    (body("custom", completion_id="c1", name="r", value="high"), "value"),
    (body("custom", completion_id="c1", name="r", value="nan"), "value"),
    (body("custom", completion_id="c1", name="r", value="1e999"), "value"),
    (body("custom", completion_id="c1", name="r", value=10**400), "value"),
    (body("custom", completion_id="c1", name="r", value=None), "value"),
    (body("custom", completion_id="c1", name="r", value=[1]), "value"),
    (body("custom", completion_id="c1", name="r"), "value"),
    (body("custom", completion_id="c1", value=1), "name"),
    (body("custom", completion_id="c1", name="", value=1), "name"),
    (body("custom", completion_id="c1", name="has space", value=1), "name"),
    (body("custom", completion_id="c1", name="r\n", value=1), "name"),
    (body("custom", completion_id="c1", name="n" * 65, value=1), "name"),
    # extra fields
    (body("thumbs", completion_id="c1", value="up", mood="great"), "mood"),
    (body("vote", battle_id="b1", value="a", completion_id="c1"), "completion_id"),
    # over-long or empty ids
    (body("thumbs", completion_id="c" * 257, value="up"), "completion_id"),
    (body("vote", battle_id="b" * 257, value="a"), "battle_id"),
    (body("custom", battle_id="b" * 257, name="r", value=1), "battle_id"),
    (body("custom", battle_id="b1", name="r", value=1), "battle_id"),  # rate an answer
    (body("vote", battle_id="b1", value="a", user="u" * 257), "user"),
    (body("vote", battle_id="b1", value="a", user=""), "user"),
    (body("vote", battle_id="b1", value="a", user=7), "user"),
    (body("copy", completion_id="c1", idempotency_key="k" * 257), "idempotency_key"),
    (body("thumbs", completion_id="", value="up"), "completion_id"),
    (body("copy", completion_id="c1", idempotency_key=""), "idempotency_key"),
]


@pytest.mark.parametrize(("given_body", "param"), INVALID, ids=lambda v: repr(v)[:60])
def test_invalid_bodies_are_400_naming_the_field(given_body: dict, param: str) -> None:
    error = rejected(given_body)
    assert error.param == param
    assert error.message.startswith(f"{param}: ")


@pytest.mark.parametrize(
    "targets",
    [{}, {"completion_id": "c1", "battle_id": "b1"}, {"completion_id": None, "battle_id": None}],
    ids=["neither", "both", "both-null"],
)
def test_custom_needs_exactly_one_target(targets: dict) -> None:
    error = rejected(body("custom", name="rating", value=3, **targets))
    assert "exactly one of completion_id and battle_id" in error.message


@pytest.mark.parametrize("not_an_object", [[], ["kind"], "thumbs", 3, None, True])
def test_a_body_that_is_not_an_object_is_refused(not_an_object: Any) -> None:
    rejected(not_an_object)


@pytest.mark.parametrize("value", ["4", " 4 ", True])
def test_a_custom_value_must_be_a_json_number(value: Any) -> None:
    assert rejected(body("custom", completion_id="c1", name="r", value=value)).param == "value"


@pytest.mark.parametrize("header", ["", "k" * 257], ids=["empty", "too-long"])
def test_the_header_key_is_held_to_the_body_key_rules(header: str) -> None:
    assert rejected({"kind": "copy", "completion_id": "c1"}, header).param == "idempotency_key"


# Property: any JSON value is either a well-formed Feedback or a 400 APIError.

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(10**400), max_value=10**400)
    | st.floats()
    | st.text()
    | st.sampled_from(["up", "down", *VOTE_VALUES, "", "nan", "inf", "4", "x" * 300])
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(), children, max_size=4)
    ),
    max_leaves=12,
)
good_ids = st.text(min_size=1, max_size=8)
bad_ids = st.one_of(st.sampled_from(["", "x" * 257]), json_scalars)
# Near misses: what a field of another kind, or a careless client, would send.
bad_fields = {
    "kind": st.sampled_from(["", "Vote", "like", "thumbs ", None, 1]),
    "completion_id": bad_ids,
    "battle_id": bad_ids,
    "idempotency_key": bad_ids,
    "value": st.sampled_from(
        [math.nan, math.inf, -math.inf, "nan", "inf", "up", "a", "sideways", None, 10**400, [1]]
    ),
    "name": st.sampled_from(["", "a b", "x" * 65, "r\n", None, 3]),
    "extra": json_values,
}
good_fields = {
    "thumbs": {"completion_id": good_ids, "value": st.sampled_from(THUMBS_VALUES)},
    "vote": {"battle_id": good_ids, "value": st.sampled_from(VOTE_VALUES)},
    "regenerate": {"completion_id": good_ids},
    "copy": {"completion_id": good_ids},
    "custom": {
        "completion_id": good_ids,
        "name": st.from_regex(r"[A-Za-z0-9_.-]{1,64}", fullmatch=True),
        "value": st.floats(allow_nan=False, allow_infinity=False) | st.integers(-(2**60), 2**60),
    },
}
any_field = st.sampled_from(sorted(bad_fields))


@st.composite
def feedback_like(draw: st.DrawFn) -> tuple[dict[str, Any], str | None]:
    """A valid body of a random kind and its header key, then a field or two dropped, broken or
    added."""
    kind = draw(st.sampled_from(FEEDBACK_KINDS))
    found = {name: draw(values) for name, values in good_fields[kind].items()}
    if kind == "custom" and draw(st.booleans()):
        found["battle_id"] = found.pop("completion_id")
    found["kind"] = kind
    key = draw(good_ids | st.just("x" * 256))
    where = draw(st.sampled_from(["body", "header", "both", "null-in-body"]))
    if where != "header":
        found["idempotency_key"] = None if where == "null-in-body" else key
    header = None if where == "body" else key
    for name in draw(st.lists(any_field, max_size=2)):
        action = draw(st.sampled_from(["drop", "bad", "any"]))
        if action == "drop":
            found.pop(name, None)
        elif action == "bad":
            found[name] = draw(bad_fields[name])
        else:
            found[name] = draw(json_values)
    if draw(st.integers(0, 9)) == 0:
        header = draw(st.none() | st.text(min_size=1, max_size=300))
    return found, header


def check(given_body: Any, header: str | None) -> None:
    try:
        got = parse_feedback(given_body, header, TS)
    except APIError as error:
        assert error.status == 400
        assert error.message
        return
    assert isinstance(got, Feedback)
    assert got.ts == TS and got.kind in FEEDBACK_KINDS
    assert isinstance(got.idempotency_key, str) and got.idempotency_key
    assert (got.completion_id is None) != (got.battle_id is None)
    for target in (got.completion_id, got.battle_id):
        assert target is None or (isinstance(target, str) and 1 <= len(target) <= 256)
    if got.kind == "vote":
        assert got.battle_id is not None and got.value in VOTE_VALUES
    elif got.kind == "thumbs":
        assert got.completion_id is not None and got.value in THUMBS_VALUES
    else:
        assert got.value is None
    if got.kind == "custom":
        assert isinstance(got.number, float) and math.isfinite(got.number) and got.name
    else:
        assert got.number is None and got.name is None


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(json_values, st.none() | st.text(min_size=1, max_size=300))
def test_any_json_value_is_feedback_or_a_400(given_body: Any, header: str | None) -> None:
    check(given_body, header)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(feedback_like())
@example((body("custom", completion_id="c1", name="r", value=math.nan), None))
@example((body("custom", battle_id="b1", name="r", value=-math.inf), "key-1"))
@example((body("thumbs", completion_id="c1", value="up", idempotency_key=None), None))
def test_any_feedback_like_object_is_feedback_or_a_400(
    given: tuple[dict[str, Any], str | None],
) -> None:
    check(*given)


# What the gateway answers once the store has judged the feedback.

VOTE = Feedback(ts=TS, kind="vote", idempotency_key="k", battle_id="battle-1", value="a")
THUMBS = Feedback(ts=TS, kind="thumbs", idempotency_key="k", completion_id="c1", value="up")


@pytest.mark.parametrize(
    ("event", "result", "status", "param", "code"),
    [
        (
            THUMBS,
            FeedbackResult(status="unknown_target", feedback_id=None),
            404,
            "completion_id",
            "completion_not_found",
        ),
        (
            VOTE,
            FeedbackResult(status="unknown_target", feedback_id=None),
            404,
            "battle_id",
            "battle_not_found",
        ),
        (
            VOTE,
            FeedbackResult(status="already_voted", feedback_id=3),
            409,
            "battle_id",
            "battle_already_voted",
        ),
        (
            THUMBS,
            FeedbackResult(status="key_reused", feedback_id=3),
            409,
            "idempotency_key",
            "idempotency_key_reused",
        ),
    ],
)
def test_refused_feedback_answers(
    event: Feedback, result: FeedbackResult, status: int, param: str, code: str
) -> None:
    with pytest.raises(APIError) as error:
        feedback_answer(event, result)
    assert (error.value.status, error.value.param, error.value.code) == (status, param, code)


@pytest.mark.parametrize("status", ["recorded", "replayed"])
def test_a_vote_answer_reveals_the_variants(status: str) -> None:
    answer = feedback_answer(
        VOTE,
        FeedbackResult(
            status=status, feedback_id=7, reveal=("tiny-b", "tiny-a"), experiment="arena"
        ),
    )
    assert (answer.id, answer.status, answer.battle_id) == ("fb-7", status, "battle-1")
    assert answer.reveal is not None
    assert (answer.reveal.experiment, answer.reveal.a, answer.reveal.b) == (
        "arena",
        "tiny-b",
        "tiny-a",
    )


def test_other_answers_reveal_nothing() -> None:
    answer = feedback_answer(THUMBS, FeedbackResult(status="recorded", feedback_id=2))
    assert answer.reveal is None and answer.completion_id == "c1"


def test_who_judges_comes_from_the_body_or_the_headers() -> None:
    vote = body("vote", battle_id="b1", value="a")
    got = parse_feedback(vote, None, TS, "app-1", user_header="bob", session="s-1")
    assert (got.principal, got.user, got.session) == ("app-1", "bob", "s-1")
    got = parse_feedback({**vote, "user": "alice"}, None, TS, user_header="bob")
    assert got.user == "alice"  # the body's field first, as on completions
    for header in ("X-User-Id", "X-Session-Id"):
        with pytest.raises(APIError) as caught:
            parse_feedback(
                vote, None, TS, **{"user_header" if header == "X-User-Id" else "session": "x" * 257}
            )
        assert (caught.value.status, caught.value.param) == (400, header)
