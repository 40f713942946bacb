"""The global holdout on the serving path (fake engines): configured in the gateway's
`user_config`, it holds the same units out of every experiment; each experiment must name its
default variant; the comparison has its own report route."""

from __future__ import annotations

import asyncio

import pytest

from router.assignment import CompiledExperiment
from router.events import Exposure
from router.experiment import Experiment, GlobalHoldout
from serve.config import ConfigError, GatewayConfig
from serve.errors import APIError
from tests.serve.fake_gateway import make, request

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")  # Gateway.__del__ unawaited
ARMS = [{"variant": "a"}, {"variant": "b"}]
FIRST = {"name": "first", "arms": ARMS, "default_variant": "a"}
SECOND = {"name": "second", "arms": ARMS, "default_variant": "a", "layer": "other"}
HOLDOUT = {"fraction": 0.3}
HI = [{"role": "user", "content": "Hi"}]


def test_every_experiment_must_name_its_default_with_a_global_holdout() -> None:
    with pytest.raises(ConfigError, match=r"experiments.1.default_variant: required with global"):
        GatewayConfig.for_variants(
            {"experiments": [FIRST, {"name": "bare", "arms": ARMS}], "global_holdout": HOLDOUT},
            ["a", "b"],
        )


def test_a_held_out_user_gets_every_experiments_default_and_is_exposed_to_none() -> None:
    held = CompiledExperiment(Experiment.model_validate(FIRST), GlobalHoldout(**HOLDOUT))
    user = next(f"u{i}" for i in range(200) if held.assign(f"u{i}").reason == "global_holdout")

    async def test() -> tuple[list, dict, int]:
        fake = await make([FIRST, SECOND], user_config={"global_holdout": HOLDOUT})
        variants = []
        for name in ("first", "second"):
            status, _, headers = await fake.call(
                "complete", {"model": name, "user": user, "messages": HI}
            )
            assert status == 200
            variants.append(headers["x-variant"])
        await fake.settled()
        listed = await fake.gateway.experiments(request({}))
        exposures = [e for e in fake.log.events if isinstance(e, Exposure)]
        assert all((e.reason, e.exposed) == ("global_holdout", False) for e in exposures)
        bare = await make([FIRST])
        try:
            await bare.gateway.holdout_report(request({}))
        except APIError as exc:
            return variants, listed, exc.status
        return variants, listed, 200

    variants, listed, status = asyncio.run(test())
    assert variants == ["a", "a"]
    assert listed["global_holdout"] == {"fraction": 0.3, "salt": "global-holdout"}
    assert status == 404
