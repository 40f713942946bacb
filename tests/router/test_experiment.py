"""The experiment model rejects what cannot be run, naming the field; defaults; layers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from pydantic import ValidationError

from router import Arm, Experiment, Guardrail, Pair
from router.experiment import METRICS, check_layers

T0 = datetime(2026, 3, 1, tzinfo=UTC)


def arms(*weights: float) -> list[dict]:
    return [{"variant": f"v{i}", "weight": w} for i, w in enumerate(weights)]


def spec(**fields) -> dict:
    return {"name": "e", "arms": arms(1, 1), **fields}


def arena(**fields) -> dict:
    return spec(mode="arena", **fields)


def guardrail(**fields) -> dict:
    return spec(guardrails=[{"metric": "error_rate", "max_increase": 0.01, **fields}])


@pytest.mark.parametrize(
    ("data", "loc", "message"),
    [
        ({"name": "e", "arms": arms(1)}, ("arms",), "at least 2"),
        ({"name": "e", "arms": arms(0, 0)}, (), "weight above 0"),
        (
            {"name": "e", "arms": arms(1, -1, 1)},
            ("arms", 1, "weight"),
            "greater than or equal to 0",
        ),
        ({"name": "e", "arms": [{"variant": "a"}, {"variant": "a"}]}, (), "more than once"),
        ({"name": "has space", "arms": arms(1, 1)}, ("name",), "pattern"),
        (spec(unit="device"), ("unit",), "'user'"),
        (spec(mode="duel"), ("mode",), "'ab'"),
        (spec(colour="red"), ("colour",), "Extra inputs"),
        (spec(salt=""), ("salt",), "at least 1 character"),
        ({"name": "e", "arms": arms(1, float("inf"), 1)}, ("arms", 1, "weight"), "finite"),
        (
            {"name": "e", "arms": [{"variant": "#a"}, *arms(1, 1)]},
            ("arms", 0, "variant"),
            "pattern",
        ),
        (spec(layer="has:colon"), ("layer",), "pattern"),
        (spec(default_variant="no space"), ("default_variant",), "pattern"),
        # layer_range: [start, end) inside [0, 1]
        (spec(layer_range=(0.5, 0.5)), ("layer_range",), "0 <= start < end <= 1"),
        (spec(layer_range=(0.6, 0.4)), ("layer_range",), "0 <= start < end <= 1"),
        (spec(layer_range=(-0.1, 0.5)), ("layer_range",), "0 <= start < end <= 1"),
        (spec(layer_range=(0.5, 1.01)), ("layer_range",), "0 <= start < end <= 1"),
        (spec(layer_range=(0.0, float("nan"))), ("layer_range",), "0 <= start < end <= 1"),
        (spec(layer_range=(0.1, 0.2, 0.3)), ("layer_range",), "at most 2"),
        # allocation in (0, 1], holdout in [0, 1)
        (spec(allocation=0), ("allocation",), "greater than 0"),
        (spec(allocation=1.5), ("allocation",), "less than or equal to 1"),
        (spec(holdout=1), ("holdout",), "less than 1"),
        (spec(holdout=-0.1), ("holdout",), "greater than or equal to 0"),
        # forced units: an arm or the default variant
        (spec(forced={"qa": "v9"}), (), "'qa' is forced to 'v9', which is neither an arm"),
        (spec(forced={"qa": "prod"}), (), "neither an arm nor the default variant"),
        # schedule: aware datetimes, stop after start
        (spec(start=T0, stop=T0), (), "stop must come after start"),
        (spec(start=T0, stop=T0 - timedelta(seconds=1)), (), "stop must come after start"),
        (spec(start=datetime(2026, 3, 1)), ("start",), "timezone info"),
        (spec(stop="2026-03-01T00:00:00"), ("stop",), "timezone info"),
        # pairs: arena only, two different live arms, positive weight
        (spec(pairs=[{"variants": ["v0", "v1"]}]), (), "only arena experiments have pairs"),
        (arena(pairs=[{"variants": ["v0", "v9"]}]), (), "pairs.0: 'v9' is not an arm"),
        (
            {**arena(pairs=[{"variants": ["v0", "v1"]}, {"variants": ["v2", "v0"]}])}
            | {"arms": arms(1, 1, 0)},
            (),
            "pairs.1: 'v2' is not an arm with weight above 0",
        ),
        (arena(pairs=[{"variants": ["v0", "v0"]}]), ("pairs", 0, "variants"), "two different"),
        (
            arena(pairs=[{"variants": ["v0", "v1"], "weight": 0}]),
            ("pairs", 0, "weight"),
            "greater than 0",
        ),
        (arena(pairs=[{"variants": ["v0"]}]), ("pairs", 0, "variants", 1), "Field required"),
        ({**arena(), "arms": arms(1, 0)}, (), "arena experiment needs at least two arms"),
        # metrics and guardrails
        (spec(primary_metric="happiness"), ("primary_metric",), "pattern"),
        (spec(primary_metric="custom:"), ("primary_metric",), "pattern"),
        (spec(primary_metric="custom:" + "x" * 65), ("primary_metric",), "pattern"),
        (spec(primary_metric="custom:has space"), ("primary_metric",), "pattern"),
        (spec(primary_metric="error_rate "), ("primary_metric",), "pattern"),
        (spec(guardrails=[{"metric": "error_rate"}]), ("guardrails", 0), "needs max_increase"),
        (guardrail(metric="bogus"), ("guardrails", 0, "metric"), "pattern"),
        (guardrail(metric="vote_win_rate"), ("guardrails", 0, "metric"), "not a guardrail"),
        (spec(primary_metric="vote_win_rate"), (), "only arena has"),
        (guardrail(max_increase=-0.1), ("guardrails", 0, "max_increase"), "greater than or equal"),
        (guardrail(max_decrease=float("nan")), ("guardrails", 0, "max_decrease"), "finite"),
        (guardrail(threshold=1), ("guardrails", 0, "threshold"), "Extra inputs"),
    ],
)
def test_invalid_experiments_are_rejected(data: dict, loc: tuple, message: str) -> None:
    with pytest.raises(ValidationError, match=message) as caught:
        Experiment.model_validate(data)
    assert [error["loc"] for error in caught.value.errors()] == [loc]


@pytest.mark.parametrize(
    "data",
    [
        spec(layer="ranking", layer_range=(0.0, 1.0)),
        spec(layer_range=(0.999, 1.0), allocation=1e-4, holdout=0.9999, default_variant="v0"),
        spec(forced={"qa": "v1", "qa-2": "prod"}, default_variant="prod"),
        {"name": "e", "arms": arms(1, 0), "forced": {"qa": "v1"}},  # a paused arm can be forced
        spec(start=T0, default_variant="v0"),
        spec(stop=T0, default_variant="v0"),
        spec(start=T0, stop=T0 + timedelta(microseconds=1), default_variant="v1"),
        spec(start="2026-03-01T00:00:00+05:30", default_variant="v0"),
        {**arena(pairs=[{"variants": ["v2", "v0"], "weight": 2.5}])} | {"arms": arms(1, 0, 1)},
        spec(primary_metric="custom:rating_1-5.v2"),
        spec(primary_metric="custom:" + "x" * 64),
        *(arena(primary_metric=metric) for metric in METRICS),
        *(spec(primary_metric=metric) for metric in METRICS if metric != "vote_win_rate"),
        spec(guardrails=[{"metric": "ttft_p95_s", "max_decrease": 0.0, "relative": True}]),
        spec(guardrails=[{"metric": "custom:x", "max_increase": 1, "max_decrease": 2}]),
    ],
)
def test_valid_experiments_are_accepted(data: dict) -> None:
    exp = Experiment.model_validate(data)
    assert Experiment.model_validate_json(exp.model_dump_json()) == exp


def test_defaults() -> None:
    exp = Experiment(name="e", arms=(Arm(variant="a"), Arm(variant="b", weight=3)))
    assert exp.mode == "ab"
    assert exp.unit == "user"
    assert exp.hash_salt == "e"
    assert [a.weight for a in exp.arms] == [1.0, 3.0]
    assert exp.layer is None
    assert exp.layer_name == "experiment:e"
    assert exp.layer_range == (0.0, 1.0)
    assert (exp.allocation, exp.holdout) == (1.0, 0.0)
    assert exp.forced == {}
    assert exp.pairs is None
    assert (exp.start, exp.stop) == (None, None)
    assert exp.guardrails == ()
    assert exp.default_variant is None
    assert exp.fallback_variant == "a"
    assert exp.primary_metric is None
    assert exp.metric == "thumbs_up_rate"


def test_overridden_defaults() -> None:
    exp = Experiment(
        name="e",
        salt="salt",
        layer="ranking",
        arms=(Arm(variant="a"), Arm(variant="b")),
        default_variant="prod",
        primary_metric="custom:stars",
    )
    assert exp.hash_salt == "salt"
    assert exp.layer_name == "ranking"
    assert exp.fallback_variant == "prod"
    assert exp.metric == "custom:stars"
    assert Experiment(name="e", arms=exp.arms, default_variant="b").fallback_variant == "b"


def test_arena_metric_default() -> None:
    exp = Experiment(name="e", mode="arena", arms=(Arm(variant="a"), Arm(variant="b")))
    assert exp.metric == "vote_win_rate"
    assert exp.model_copy(update={"primary_metric": "error_rate"}).metric == "error_rate"


def test_arena_pairs_default_to_every_live_pair_weighted_by_product() -> None:
    exp = Experiment(
        name="e",
        mode="arena",
        arms=(
            Arm(variant="a", weight=1),
            Arm(variant="paused", weight=0),
            Arm(variant="b", weight=2),
            Arm(variant="c", weight=0.5),
        ),
    )
    assert exp.arena_pairs() == (
        Pair(variants=("a", "b"), weight=2.0),
        Pair(variants=("a", "c"), weight=0.5),
        Pair(variants=("b", "c"), weight=1.0),
    )


def test_arena_pairs_are_the_configured_pairs() -> None:
    pairs = (Pair(variants=("c", "a"), weight=3), Pair(variants=("a", "b")))
    exp = Experiment(
        name="e",
        mode="arena",
        arms=(Arm(variant="a"), Arm(variant="b"), Arm(variant="c")),
        pairs=pairs,
    )
    assert exp.arena_pairs() == pairs


@pytest.mark.parametrize(
    ("start", "stop", "now", "state"),
    [
        (None, None, T0, "running"),
        (T0, None, T0 - timedelta(microseconds=1), "scheduled"),
        (T0, None, T0, "running"),
        (T0, None, T0 + timedelta(days=999), "running"),
        (None, T0, T0 - timedelta(microseconds=1), "running"),
        (None, T0, T0, "stopped"),
        (T0, T0 + timedelta(days=1), T0 - timedelta(days=1), "scheduled"),
        (T0, T0 + timedelta(days=1), T0 + timedelta(hours=23), "running"),
        (T0, T0 + timedelta(days=1), T0 + timedelta(days=1), "stopped"),
        # the same instant in another zone
        (T0, None, T0.astimezone(timezone(timedelta(hours=-5))), "running"),
        (T0, None, datetime(2026, 3, 1, 0, 59, tzinfo=timezone(timedelta(hours=1))), "scheduled"),
    ],
)
def test_state(start: datetime | None, stop: datetime | None, now: datetime, state: str) -> None:
    arms_ = (Arm(variant="a"), Arm(variant="b"))
    exp = Experiment(name="e", arms=arms_, start=start, stop=stop, default_variant="a")
    assert exp.state(now) == state


def test_a_naive_time_is_utc() -> None:
    exp = Experiment(
        name="e", arms=(Arm(variant="a"), Arm(variant="b")), start=T0, default_variant="a"
    )
    assert exp.state(datetime(2026, 3, 1, 0, 0)) == "running"
    assert exp.state(datetime(2026, 2, 28, 23, 59)) == "scheduled"


def test_state_defaults_to_the_clock() -> None:
    now = datetime.now(UTC)
    exp = Experiment(name="e", arms=(Arm(variant="a"), Arm(variant="b")))
    assert exp.model_copy(update={"start": now + timedelta(hours=1)}).state() == "scheduled"
    assert exp.model_copy(update={"start": now - timedelta(hours=1)}).state() == "running"
    assert exp.model_copy(update={"stop": now - timedelta(seconds=1)}).state() == "stopped"


def test_experiments_are_hashable_and_frozen() -> None:
    exp = Experiment(
        name="e",
        arms=(Arm(variant="a"), Arm(variant="b")),
        forced={"qa": "b"},
        guardrails=(Guardrail(metric="error_rate", max_increase=0.1),),
    )
    assert hash(exp) == hash(Experiment.model_validate(exp.model_dump()))
    assert hash(exp) != hash(exp.model_copy(update={"forced": {"qa": "a"}}))
    assert len({exp, Experiment.model_validate(exp.model_dump())}) == 1
    with pytest.raises(ValidationError):
        exp.name = "other"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("left", "right"),
    [
        ({"forced": {"x": "a", "y": "b"}}, {"forced": {"y": "b", "x": "a"}}),
        (
            {"start": T0, "default_variant": "a"},
            {"start": T0.astimezone(timezone(timedelta(hours=2))), "default_variant": "a"},
        ),
    ],
    ids=["forced-order", "start-zone"],
)
def test_equal_experiments_hash_equal(left: dict, right: dict) -> None:
    base = {"name": "e", "arms": (Arm(variant="a"), Arm(variant="b"))}
    a, b = Experiment(**base, **left), Experiment(**base, **right)
    assert a == b
    assert hash(a) == hash(b)


# --- check_layers ----------------------------------------------------------------------------


def layered(name: str, layer: str | None, start: float, end: float) -> Experiment:
    return Experiment(
        name=name,
        layer=layer,
        layer_range=(start, end),
        arms=(Arm(variant="a"), Arm(variant="b")),
        default_variant="a",
    )


@pytest.mark.parametrize(
    "experiments",
    [
        [],
        [layered("a", "l", 0.0, 1.0)],
        [layered("a", "l", 0.0, 0.5), layered("b", "l", 0.5, 1.0)],
        [layered("c", "l", 0.7, 0.9), layered("a", "l", 0.0, 0.3), layered("b", "l", 0.3, 0.7)],
        [layered("a", "l", 0.0, 0.6), layered("b", "m", 0.2, 0.8)],  # different layers
        [layered("a", None, 0.0, 1.0), layered("b", None, 0.0, 1.0)],  # each its own layer
        [layered("a", "l", 0.0, 1.0), layered("b", "m", 0.0, 1.0), layered("c", None, 0.0, 1.0)],
    ],
)
def test_check_layers_accepts_disjoint_slices(experiments: list[Experiment]) -> None:
    check_layers(experiments)
    check_layers(tuple(reversed(experiments)))


@pytest.mark.parametrize(
    ("experiments", "message"),
    [
        (
            [layered("a", "l", 0.0, 0.6), layered("b", "l", 0.5, 1.0)],
            r"experiments\.1\.layer_range: 'b' overlaps 'a' in layer 'l'",
        ),
        (
            [layered("b", "l", 0.5, 1.0), layered("a", "l", 0.0, 0.6)],
            r"experiments\.0\.layer_range: 'b' overlaps 'a' in layer 'l'",
        ),
        (
            [layered("a", "l", 0.2, 0.4), layered("b", "l", 0.2, 0.4)],
            r"'b' overlaps 'a'",
        ),
        (
            [layered("inner", "l", 0.3, 0.4), layered("outer", "l", 0.0, 1.0)],
            r"experiments\.0\.layer_range: 'inner' overlaps 'outer'",
        ),
        (
            [
                layered("x", "m", 0.0, 1.0),
                layered("a", "l", 0.0, 0.3),
                layered("b", "l", 0.3, 0.7),
                layered("c", "l", 0.65, 1.0),
            ],
            r"experiments\.3\.layer_range: 'c' overlaps 'b' in layer 'l'",
        ),
    ],
)
def test_check_layers_rejects_overlapping_slices(
    experiments: list[Experiment], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        check_layers(experiments)


# --- What units outside the experiment get: never silently the first arm ----------------------

FALLBACK_FIELDS = [
    {"allocation": 0.5},
    {"holdout": 0.1},
    {"start": T0},
    {"stop": T0 + timedelta(days=1)},
    {"layer": "l", "layer_range": (0.0, 0.5)},
]


@pytest.mark.parametrize("fields", FALLBACK_FIELDS, ids=lambda f: next(iter(f)))
def test_a_fallback_needs_an_explicit_default_variant(fields: dict) -> None:
    """Where some units get the default variant, it must be named: following arm order, a swap
    of two arms silently moved every holdout and unallocated unit to the other variant."""
    with pytest.raises(ValidationError) as info:
        Experiment.model_validate(spec(**fields))
    assert "default_variant" in str(info.value)
    exp = Experiment.model_validate(spec(default_variant="v1", **fields))
    assert exp.fallback_variant == "v1"


def test_swapping_arms_moves_no_unit_outside_the_arms() -> None:
    from router.assignment import assign

    explicit = spec(allocation=0.5, holdout=0.2, default_variant="v0")
    before = Experiment.model_validate(explicit)
    after = Experiment.model_validate({**explicit, "arms": list(reversed(explicit["arms"]))})
    moved = 0
    for i in range(2_000):
        a, b = assign(before, f"u{i}"), assign(after, f"u{i}")
        if a.reason != "arm":
            moved += a != b
    assert moved == 0


def test_a_live_change_may_not_move_the_default_implicitly() -> None:
    from router.experiment import check_live_change

    old = Experiment.model_validate(spec())
    swapped = Experiment.model_validate({**spec(), "arms": list(reversed(arms(1, 1)))})
    with pytest.raises(ValueError, match=r"experiments\.0\.default_variant"):
        check_live_change([old], [swapped])
    check_live_change([old], [swapped.model_copy(update={"default_variant": "v1"})])
    check_live_change([old], [old])
    check_live_change([], [swapped])  # a new experiment has nothing to move
    renamed = swapped.model_copy(update={"name": "other"})
    check_live_change([old], [renamed])


# --- Relative bounds need a baseline that cannot be negative; custom metrics are declared -----


@pytest.mark.parametrize("metric", ["reward_score", "custom:stars"])
def test_a_relative_guardrail_on_a_metric_that_can_be_negative_is_refused(metric: str) -> None:
    with pytest.raises(ValidationError, match="can be negative"):
        Experiment.model_validate(
            spec(guardrails=[{"metric": metric, "max_decrease": 0.1, "relative": True}])
        )


def test_declared_custom_metrics() -> None:
    exp = Experiment.model_validate(
        spec(
            primary_metric="custom:stars",
            custom_metrics=["helpful", "stars"],
            guardrails=[{"metric": "custom:latency_score", "max_decrease": 1}],
        )
    )
    assert exp.declared_custom_metrics == ("stars", "latency_score", "helpful")
    with pytest.raises(ValidationError, match="custom_metrics"):
        Experiment.model_validate(spec(custom_metrics=["no spaces allowed"]))
