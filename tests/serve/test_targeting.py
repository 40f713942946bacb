"""Targeted experiments on the serving path (fake engines): a request the `when` rules do not
take gets the default variant outside the experiment, and exposes nobody; its unit is exposed
from its first request they take. The request's `metadata` follows OpenAI's rules."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import pytest

from router.assignment import CompiledExperiment, assign
from router.events import Completion, Exposure
from router.experiment import Experiment
from serve.routing import describe
from tests.serve.fake_gateway import make

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")  # Gateway.__del__ unawaited
HI = [{"role": "user", "content": "Hi"}]
TARGETED = {
    "name": "pro-de",
    "arms": [{"variant": "a"}, {"variant": "b"}],
    "default_variant": "a",
    "when": [
        {"attribute": "header.x-country", "in": ["DE", "AT"]},
        {"attribute": "metadata.plan", "equals": "pro"},
    ],
}


def test_a_unit_is_exposed_from_its_first_targeted_request_only() -> None:
    # A user whose arm is b, so a targeted request is told apart from the default (a).
    experiment = Experiment.model_validate(TARGETED)
    user = next(f"u{i}" for i in range(100) if assign(experiment, f"u{i}").variant == "b")

    async def test() -> list[tuple[int, dict[str, str], list[Any]]]:
        fake = await make([TARGETED])
        seen = []
        for headers, metadata in (
            ({"X-Country": "US"}, {"plan": "pro"}),  # another country
            ({"X-Country": "DE"}, {"plan": "free"}),  # another plan
            ({"X-Country": "DE"}, None),  # no plan at all
            ({"X-Country": "DE"}, {"plan": "pro"}),  # targeted
            ({"X-Country": "US"}, {"plan": "pro"}),  # not again: default, outside
        ):
            body = {"model": "pro-de", "user": user, "messages": HI}
            if metadata is not None:
                body["metadata"] = metadata
            before = len(fake.log.events)
            status, _, answer_headers = await fake.call("complete", body, headers)
            await fake.settled()
            seen.append((status, answer_headers, fake.log.events[before:]))
        return seen

    seen = asyncio.run(test())
    assert all(status == 200 for status, _, _ in seen)
    for index in (0, 1, 2, 4):
        _, headers, events = seen[index]
        assert headers["x-variant"] == "a" and "x-experiment" not in headers
        assert not any(isinstance(e, Exposure) for e in events)
        assert [e.experiment for e in events if isinstance(e, Completion)] == [None]
    _, headers, events = seen[3]
    assert headers["x-variant"] == "b" and headers["x-experiment"] == "pro-de"
    exposures = [e for e in events if isinstance(e, Exposure)]
    assert [(e.unit, e.variant, e.exposed) for e in exposures] == [(user, "b", True)]


@pytest.mark.parametrize(
    ("metadata", "code"),
    [
        ("pro", "invalid_type"),
        (["pro"], "invalid_type"),
        ({"plan": 3}, "invalid_type"),
        ({f"k{i}": "v" for i in range(17)}, "invalid_value"),
        ({"k" * 65: "v"}, "invalid_value"),
        ({"plan": "v" * 513}, "invalid_value"),
    ],
)
def test_metadata_that_breaks_openais_rules_is_a_400_naming_it(metadata: Any, code: str) -> None:
    async def test() -> tuple[int, str]:
        fake = await make([TARGETED])
        body = {"model": "pro-de", "messages": HI, "metadata": metadata}
        status, text, _ = await fake.call("complete", body)
        return status, text

    status, text = asyncio.run(test())
    assert status == 400 and f'"code":"{code}"' in text.replace(" ", "")
    assert '"param":"metadata"' in text.replace(" ", "")


def test_the_listing_shows_the_rules_as_written() -> None:
    plan = CompiledExperiment(Experiment.model_validate(TARGETED))
    assert describe(plan, datetime.now(UTC))["when"] == TARGETED["when"]


def test_each_reconfigure_logs_the_experiments_configs() -> None:
    async def test() -> list:
        fake = await make([TARGETED])
        await fake.settled()
        first = list(fake.log.configs)
        await fake.gateway.reconfigure({"experiments": [{**TARGETED, "allocation": 0.5}]})
        await fake.settled()
        return [first, fake.log.configs[len(first) :]]

    first, second = asyncio.run(test())
    assert [c.experiment for c in first] == ["pro-de"] and len(second) == 1
    assert first[0].revision != second[0].revision
    logged = Experiment.model_validate_json(second[0].config)
    assert logged.allocation == 0.5 and logged.when == Experiment.model_validate(TARGETED).when
