"""A ramp end to end: a unit outside the first step's allocation gets the default variant
(exposed as not allocated), and its arm once the next step takes it in."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta

import openai

from router.assignment import CompiledExperiment
from router.experiment import Experiment
from tests.e2e.conftest import EXPERIMENTS, App

HI = [{"role": "user", "content": "Hi"}]
STEP_S = 20.0  # from the deploy to the next step: time for the deploy and a first request


def test_a_ramp_step_takes_units_in_at_its_time(app: App) -> None:
    step_at = datetime.now(UTC) + timedelta(seconds=STEP_S)
    ramp = {
        "name": "ramped",
        "arms": [{"variant": "tiny-a"}, {"variant": "tiny-b"}],
        "default_variant": "tiny-a",
        "allocation": 0.01,
        "ramp": [{"at": step_at.isoformat(), "allocation": 1.0}],
    }
    plan = CompiledExperiment(Experiment.model_validate(ramp))
    before = time.time()
    run = uuid.uuid4().hex[:8]
    user = next(  # outside the first step, and on tiny-b once in
        u
        for u in (f"r-{run}-{i}" for i in range(1000))
        if plan.assign(u, before).reason == "not_allocated"
        and plan.assign(u, step_at.timestamp() + 1).variant == "tiny-b"
    )
    client = openai.OpenAI(base_url=f"{app.base_url}/v1", api_key="unused", max_retries=0)
    with app.gateway_config({"experiments": [*EXPERIMENTS, ramp]}):
        assert time.time() < step_at.timestamp() - 1, "the deploy took longer than the step"
        listed = next(e for e in app.experiments()["data"] if e["name"] == "ramped")
        assert listed["allocation_now"] == 0.01 and len(listed["ramp"]) == 1
        first = client.chat.completions.with_raw_response.create(
            model="ramped", user=user, messages=HI
        )
        assert first.headers["x-variant"] == "tiny-a"
        time.sleep(max(0.0, step_at.timestamp() - time.time()) + 0.5)
        listed = next(e for e in app.experiments()["data"] if e["name"] == "ramped")
        assert listed["allocation_now"] == 1.0
        later = client.chat.completions.with_raw_response.create(
            model="ramped", user=user, messages=HI
        )
        assert later.headers["x-variant"] == "tiny-b"
        with app.db() as db:
            exposures = db.execute(
                "SELECT variant, reason, exposed FROM exposures "
                "WHERE experiment = 'ramped' AND unit = ? ORDER BY ts",
                (user,),
            ).fetchall()
        assert [tuple(r) for r in exposures] == [
            ("tiny-a", "not_allocated", 0),
            ("tiny-b", "arm", 1),
        ]
