"""Streams held in flight while something happens to the server (a drain, a SIGTERM)."""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

LONG_STREAM = {
    "messages": [{"role": "user", "content": "Count."}],
    "max_tokens": 400,
    "ignore_eos": True,
    "stream": True,
}


@contextmanager
def streams_in_flight(base_url: str, model: str, count: int) -> Iterator[list[str]]:
    """Start `count` long streamed chats; enter once every one has its first chunk. On exit,
    wait for them to end; the list then holds each stream's whole text."""
    started = threading.Barrier(count + 1)
    texts: list[str] = []

    def stream() -> None:
        body = LONG_STREAM | {"model": model}
        with httpx.stream(
            "POST", f"{base_url}/v1/chat/completions", json=body, timeout=300
        ) as response:
            lines = response.iter_lines()
            first = next(line for line in lines if line.startswith("data: {"))
            started.wait(timeout=300)
            texts.append("\n".join([first, *lines]))

    clients = [threading.Thread(target=stream) for _ in range(count)]
    for client in clients:
        client.start()
    started.wait(timeout=300)
    try:
        yield texts
    finally:
        for client in clients:
            client.join(timeout=300)


def check_finished_and_logged(texts: list[str], count: int, store: Path) -> None:
    """Each stream ended with `[DONE]` and no error, and its completion is in the store (200)."""
    assert len(texts) == count
    ids = set()
    for text in texts:
        events = [line[6:] for line in text.splitlines() if line.startswith("data: ")]
        assert events[-1] == "[DONE]" and '"error"' not in text, text[-300:]
        ids.add(json.loads(events[0])["id"])
    db = sqlite3.connect(store)
    try:
        marks = ",".join("?" * len(ids))
        query = f"SELECT completion_id, status FROM completions WHERE completion_id IN ({marks})"
        assert dict(db.execute(query, sorted(ids)).fetchall()) == dict.fromkeys(ids, 200)
    finally:
        db.close()
