"""Records that count what happened (issue 15): on fake engines, without a cluster."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.serve.fake_gateway import make

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")  # Gateway.__del__ unawaited
AB = {"name": "ab", "arms": [{"variant": "a"}, {"variant": "b"}]}
DUEL = {"name": "duel", "mode": "arena", "arms": [{"variant": "a"}, {"variant": "b"}]}


def run(test: Any) -> None:
    asyncio.run(test())


def test_a_live_change_that_would_move_the_default_implicitly_is_refused() -> None:
    async def test() -> None:
        fake = await make([AB])
        swapped = {**AB, "arms": list(reversed(AB["arms"]))}
        await fake.gateway.reconfigure({"experiments": [swapped]})
        rejected = fake.gateway._rejected
        assert rejected is not None and "experiments.0.default_variant" in rejected["error"]
        assert fake.gateway._experiments["ab"].experiment.fallback_variant == "a"
        await fake.gateway.reconfigure({"experiments": [{**swapped, "default_variant": "b"}]})
        assert fake.gateway._rejected is None
        assert fake.gateway._experiments["ab"].experiment.fallback_variant == "b"

    run(test)
