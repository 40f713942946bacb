"""The report page draws every kind of report in a real headless Chromium: an A/B with
guardrails and sequential looks, an arena's leaderboard, a bandit's inverse-propensity means and
an experiment judged on its confirmation run, each computed by the analysis from a simulated
log. A small stand-in for the gateway serves the pages (`serve.pages`) and the two routes the
page reads, so no engine is needed; an error of the API shows as a message."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from router.analysis import build_report
from router.analysis.simulate import Arm, Traffic, simulate_ab, simulate_arena, simulate_bandit
from router.experiment import Experiment
from serve import pages
from serve.errors import APIError
from tests.browser import axe_violations, by_id, chromium, serious, shot, wait

GUARDED = [{"metric": "error_rate", "max_increase": 0.05}]
EXPERIMENTS = {
    "ab": {"arms": [{"variant": "a"}, {"variant": "b"}], "guardrails": GUARDED},
    "arena": {"mode": "arena", "arms": [{"variant": v} for v in ("a", "b", "c")]},
    "bandit": {"mode": "bandit", "arms": [{"variant": "a"}, {"variant": "b"}]},
    "confirm": {
        "arms": [{"variant": v} for v in ("a", "b", "c")],
        "default_variant": "a",
        "allocation": 0.5,
        "confirm": {"variant": "c"},
        "guardrails": GUARDED,
    },
}
EXPECTED = {
    "ab": ["Guardrails", "Lift per metric", "Sequential p-value over time"],
    "arena": ["Leaderboard (", "Ratings with 95 % intervals"],
    "bandit": ["Bandit: mean thumbs_up_rate per arm", "Hájek"],
    "confirm": ["judged on the confirmation run alone", "exploration alone would say"],
}


def simulated(name: str, folder: Path) -> dict[str, Any]:
    experiment = Experiment.model_validate({"name": name, **EXPERIMENTS[name]})
    store = folder / f"{name}.db"
    if name == "arena":
        ratings = {"a": 1000.0, "b": 1060.0, "c": 980.0}
        simulate_arena(store, experiment, battles=600, ratings=ratings, seed=1)
    elif name == "bandit":
        simulate_bandit(store, experiment, rates={"a": 0.1, "b": 0.2}, units=2000, refresh=500)
    else:
        better = {"b": Arm(thumbs_up=0.3), "c": Arm(thumbs_up=0.3)}
        simulate_ab(store, experiment, Traffic(units=2000, arms=better, days=3, seed=2))
    return build_report(store, experiment, reps=20).model_dump(mode="json")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    import uvicorn

    folder = tmp_path_factory.mktemp("reports")
    reports = {name: simulated(name, folder) for name in EXPERIMENTS}

    async def page(request: Request) -> Response:
        try:
            return pages.page(request.path_params.get("name", ""))
        except APIError as exc:
            return exc.response()

    async def listing(request: Request) -> JSONResponse:
        data = [
            {
                "name": name,
                "state": "running",
                "allocation": 1.0,
                "allocation_now": 1.0,
                "unit": "user",
                "layer": f"experiment:{name}",
                "mode": "ab",
                **config,
            }
            for name, config in EXPERIMENTS.items()
        ]
        return JSONResponse({"object": "list", "revision": "test", "data": data})

    async def report(request: Request) -> Response:
        name = request.path_params["name"]
        if name not in reports:
            error = APIError(
                503, "the report could not be computed; retry", code="report_unavailable"
            )
            return error.response()
        return JSONResponse(reports[name])

    app = Starlette(
        routes=[
            Route("/ui/", page),
            Route("/ui/{name}", page),
            Route("/v1/experiments", listing),
            Route("/v1/experiments/{name}/report", report),
        ]
    )
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "the stand-in server did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    yield from chromium()


@pytest.mark.parametrize("name", list(EXPERIMENTS))
def test_each_kind_of_report_is_drawn(site: str, browser: Any, name: str) -> None:
    browser.get(f"{site}/ui/report.html?experiment={name}")
    wait(browser, lambda d: "Verdict:" in by_id(d, "report").text, f"the report of {name}")
    text = by_id(browser, "report").text
    assert all(part in text for part in EXPECTED[name]), text
    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert errors == []
    assert serious(axe_violations(browser)) == []
    shot(browser, f"report-page-{name}")


def test_an_error_of_the_api_shows_as_a_message(site: str, browser: Any) -> None:
    browser.get(f"{site}/ui/report.html?experiment=missing")
    wait(browser, lambda d: "503" in by_id(d, "message").text, "the message")
    assert "the report could not be computed; retry" in by_id(browser, "message").text
    assert by_id(browser, "report").text == ""
