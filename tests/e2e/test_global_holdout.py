"""The global holdout end to end: held-out users get every experiment's default and are
exposed to none; the holdout report compares them with everyone exposed."""

from __future__ import annotations

import uuid

import httpx
import openai

from router.assignment import CompiledExperiment
from router.experiment import Experiment, GlobalHoldout
from tests.e2e.conftest import EXPERIMENTS, App

HOLDOUT = {"fraction": 0.5, "salt": f"e2e-{uuid.uuid4().hex[:8]}"}
HI = [{"role": "user", "content": "Hi"}]


def test_held_out_users_get_the_defaults_and_their_own_report(app: App) -> None:
    experiments = [{"default_variant": "tiny-a", **e} for e in EXPERIMENTS]
    ab = CompiledExperiment(Experiment.model_validate(experiments[0]), GlobalHoldout(**HOLDOUT))
    run = uuid.uuid4().hex[:8]
    users = [f"g-{run}-{i}" for i in range(40)]
    held = [u for u in users if ab.assign(u).reason == "global_holdout"]
    exposed = [u for u in users if ab.assign(u).reason == "arm"]
    assert held and exposed
    client = openai.OpenAI(base_url=f"{app.base_url}/v1", api_key="unused", max_retries=0)
    with app.gateway_config({"experiments": experiments, "global_holdout": HOLDOUT}):
        assert app.experiments()["global_holdout"] == HOLDOUT
        for user in held[:3] + exposed[:3]:
            for model in ("tiny-ab", "tiny-arena"):
                raw = client.chat.completions.with_raw_response.create(
                    model=model, user=user, messages=HI, max_tokens=4
                )
                if user in held:
                    assert raw.headers["x-variant"] == "tiny-a"
        with app.db() as db:
            rows = db.execute(
                "SELECT unit, reason, exposed FROM exposures WHERE unit IN (?, ?, ?)",
                held[:3],
            ).fetchall()
        assert rows and all((r["reason"], r["exposed"]) == ("global_holdout", 0) for r in rows)
        report = httpx.get(f"{app.base_url}/v1/holdout/report", timeout=120)
        assert report.status_code == 200, report.text
        body = report.json()
        assert body["units"]["global_holdout"] >= 3 and body["units"]["exposed"] >= 3
        assert {c["metric"] for c in body["comparisons"]} >= {"error_rate", "thumbs_up_rate"}
    gone = httpx.get(f"{app.base_url}/v1/holdout/report", timeout=30)
    assert gone.status_code == 404 and gone.json()["error"]["code"] == "holdout_not_configured"
