"""Records under a store that cannot write, and while the gateways drain: feedback is refused
with 503, never falsely acknowledged; streams in flight finish and are logged; nothing is lost."""

from __future__ import annotations

import sqlite3
import threading
import time
import uuid

import httpx

from tests.e2e.conftest import EXPERIMENTS, App
from tests.e2e.streams import check_finished_and_logged, streams_in_flight

HELLO = [{"role": "user", "content": "Hello"}]
STREAMS = 6


def chat(app: App) -> str:
    response = httpx.post(
        f"{app.base_url}/v1/chat/completions",
        json={"model": "tiny-b", "messages": HELLO},
        timeout=60,
    )
    assert response.status_code == 200
    return response.json()["id"]


def thumbs(app: App, completion_id: str, key: str) -> httpx.Response:
    return httpx.post(
        f"{app.base_url}/v1/feedback",
        json={
            "completion_id": completion_id,
            "kind": "thumbs",
            "value": "up",
            "idempotency_key": key,
        },
        timeout=60,
    )


def test_a_locked_store_means_503_for_feedback_and_no_lost_completion(app: App) -> None:
    before = chat(app)
    with app.db():
        pass  # committed
    blocker = sqlite3.connect(app.store_path, timeout=0, isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")  # longer than the store's 5 s busy timeout
    try:
        during = chat(app)  # answered: its events wait in the outcome log
        key = uuid.uuid4().hex
        started = time.monotonic()
        refused = thumbs(app, before, key)
        assert refused.status_code == 503, refused.text
        assert refused.json()["error"]["code"] == "log_unavailable"
        assert refused.headers["retry-after"] == "1"
        assert time.monotonic() - started < 30
    finally:
        blocker.rollback()
        blocker.close()
    again = thumbs(app, before, key)  # the client's retry, same key
    assert again.status_code == 201, again.text
    with app.db() as db:
        ids = {r["completion_id"] for r in db.execute("SELECT completion_id FROM completions")}
        rows = db.execute("SELECT COUNT(*) FROM feedback WHERE idempotency_key = ?", (key,))
        assert rows.fetchone()[0] == 1
    assert {before, during} <= ids


def test_draining_finishes_the_streams_in_flight_logs_them_and_refuses_new_ones(app: App) -> None:
    """What `arena-serve serve` does on SIGTERM before it stops Serve
    (`serve.deploy.drain_and_shutdown`): the gateways refuse new completions with a retryable
    503, finish every stream in flight and send its records; the deploy returns once they have."""
    with streams_in_flight(app.base_url, "tiny-a", STREAMS) as texts:
        drained = threading.Thread(
            target=app.deploy_gateway, args=({"experiments": EXPERIMENTS, "draining": True},)
        )
        drained.start()
        try:
            refused = None
            deadline = time.monotonic() + 60
            new = {"model": "tiny-b", "messages": HELLO}
            while refused is None and drained.is_alive() and time.monotonic() < deadline:
                answer = httpx.post(f"{app.base_url}/v1/chat/completions", json=new, timeout=60)
                if answer.status_code == 503:
                    refused = answer
                time.sleep(0.05)
            drained.join(timeout=300)
        finally:
            app.deploy_gateway({"experiments": EXPERIMENTS})
    assert refused is not None, "no new completion was refused while draining"
    assert refused.json()["error"]["code"] == "shutting_down"
    assert refused.headers["retry-after"] == "1"
    app.db().close()  # everything queued is committed
    check_finished_and_logged(texts, STREAMS, app.store_path)
    assert chat(app)  # serving again
