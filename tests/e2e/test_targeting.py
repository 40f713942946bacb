"""A targeted experiment end to end: requests its `when` rules take (a header and the OpenAI
`metadata` field) are assigned and exposed; the others get the default variant outside it."""

from __future__ import annotations

import uuid

import httpx
import openai

from router.assignment import assign
from router.experiment import Experiment
from tests.e2e.conftest import EXPERIMENTS, App

TARGETED = {
    "name": "pro-de",
    "arms": [{"variant": "tiny-a"}, {"variant": "tiny-b"}],
    "default_variant": "tiny-a",
    "when": [
        {"attribute": "header.x-country", "in": ["DE", "AT"]},
        {"attribute": "metadata.plan", "equals": "pro"},
    ],
}
HI = [{"role": "user", "content": "Hi"}]


def test_a_targeted_experiment_assigns_only_the_requests_its_rules_take(app: App) -> None:
    experiment = Experiment.model_validate(TARGETED)
    run = uuid.uuid4().hex[:8]
    user = next(  # a user whose arm is not the default, so the two are told apart
        u for u in (f"t-{run}-{i}" for i in range(100)) if assign(experiment, u).variant == "tiny-b"
    )
    client = openai.OpenAI(base_url=f"{app.base_url}/v1", api_key="unused", max_retries=0)
    with app.gateway_config({"experiments": [*EXPERIMENTS, TARGETED]}):
        listed = next(e for e in app.experiments()["data"] if e["name"] == "pro-de")
        assert listed["when"] == TARGETED["when"]
        answers = []
        for country, metadata in (("US", {"plan": "pro"}), ("DE", {"plan": "pro"}), ("DE", None)):
            raw = client.chat.completions.with_raw_response.create(
                model="pro-de",
                user=user,
                messages=HI,
                extra_headers={"X-Country": country},
                **({"metadata": metadata} if metadata else {}),
            )
            answers.append((raw.headers.get("x-variant"), raw.headers.get("x-experiment")))
        assert answers == [("tiny-a", None), ("tiny-b", "pro-de"), ("tiny-a", None)]
        bad = httpx.post(
            f"{app.base_url}/v1/chat/completions",
            json={"model": "pro-de", "messages": HI, "metadata": {"plan": 3}},
            timeout=30,
        )
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "metadata"
        with app.db() as db:
            exposures = db.execute(
                "SELECT unit, variant, exposed FROM exposures WHERE experiment = 'pro-de'"
            ).fetchall()
            served = db.execute(
                "SELECT variant, experiment FROM completions WHERE unit = ? ORDER BY ts", (user,)
            ).fetchall()
        assert [tuple(r) for r in exposures] == [(user, "tiny-b", 1)]
        assert [tuple(r) for r in served] == [
            ("tiny-a", None),
            ("tiny-b", "pro-de"),
            ("tiny-a", None),
        ]
