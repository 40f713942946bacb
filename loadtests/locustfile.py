"""Simulated users of the default config, with a preference whose truth is known.

- `ChatUser`: a stable user id, think time, chats on the A/B experiment (40 % of them streamed,
  with time to first token and to the end reported as their own locust metrics, "TTFT" and
  "E2E"), and thumbs: up with
  probability `THUMBS_UP[variant]` (the variant is in the `x-variant` header).
- `ArenaUser`: a booth where each battle is a voter of its own: asks the arena experiment,
  reads both blind answers, and votes for the shorter one with probability `PREFER_SHORTER`
  (else the longer). The vote's answer reveals the variants, so each battle's chance that
  `smollm2-concise` won is known; these are appended to the file named by `ARENA_TRUTH`, and
  `loadtests.run_load` checks the report's estimate against their mean (and the reveals
  against the store's completions).

- `AgreementUser`: a booth for the `agreeable-arena` experiment, where each battle is a voter
  who states a wrong belief ("I'm sure the capital of Australia is Sydney, right?") and votes
  for the answer that agrees with them (`agrees`) with probability `PREFER_AGREEMENT` where
  exactly one answer does, else for either at random. Each battle's chance that
  `smollm2-agreeable` won is known, and appended to the file named by `AGREEMENT_TRUTH`.

Run by `make load` (`python -m loadtests.run_load`), or by hand:
`locust -f loadtests/locustfile.py --headless -u 8 -r 2 -t 120s --host http://127.0.0.1:8000`.
"""

from __future__ import annotations

import json
import os
import random
import time
import uuid

from locust import HttpUser, between, task

from loadtests.voters import agrees, wrong_belief

AB_EXPERIMENT = "concise-vs-friendly"
ARENA_EXPERIMENT = "smollm2-arena"
AGREEMENT_EXPERIMENT = "agreeable-arena"
PREFER_AGREEMENT = 0.9
THUMBS_UP = {"smollm2-concise": 0.3, "smollm2-friendly": 0.6}
PREFER_SHORTER = 0.8
QUESTIONS = [
    "What is the capital of France?",
    "How do I boil an egg?",
    "Why do cats purr?",
    "Give me a tip for sleeping better.",
    "What is photosynthesis?",
    "Suggest a name for a goldfish.",
    "How far is the Moon?",
    "What should I pack for a weekend hike?",
]


def _feedback(user: HttpUser, body: dict) -> dict | None:
    body["idempotency_key"] = uuid.uuid4().hex
    with user.client.post("/v1/feedback", json=body, name="feedback", catch_response=True) as r:
        if r.status_code == 201:
            return r.json()
        r.failure(f"feedback answered {r.status_code}: {r.text[:200]}")
    return None


class ChatUser(HttpUser):
    weight = 2
    wait_time = between(1, 3)

    def on_start(self) -> None:
        self.user_id = f"load-{uuid.uuid4().hex[:10]}"

    @task(3)
    def chat(self) -> None:
        body = {
            "model": AB_EXPERIMENT,
            "user": self.user_id,
            "max_tokens": 48,
            "messages": [{"role": "user", "content": random.choice(QUESTIONS)}],
        }
        with self.client.post(
            "/v1/chat/completions", json=body, name="chat", catch_response=True
        ) as r:
            if r.status_code != 200:
                r.failure(f"{r.status_code}: {r.text[:200]}")
                return
            completion = r.json()
            variant = r.headers.get("x-variant", "")
        if random.random() < THUMBS_UP.get(variant, 0.0):
            _feedback(self, {"completion_id": completion["id"], "kind": "thumbs", "value": "up"})

    @task(2)
    def chat_stream(self) -> None:
        body = {
            "model": AB_EXPERIMENT,
            "user": self.user_id,
            "max_tokens": 48,
            "stream": True,
            "messages": [{"role": "user", "content": random.choice(QUESTIONS)}],
        }
        started = time.perf_counter()
        first = None
        # Locust times a streamed POST to its headers; the whole answer is timed here (E2E),
        # and an error inside the stream, or a stream that breaks, fails the request.
        with self.client.post(
            "/v1/chat/completions",
            json=body,
            name="chat (stream)",
            stream=True,
            catch_response=True,
        ) as r:
            if r.status_code != 200:
                r.failure(f"{r.status_code}")
                return
            try:
                for line in r.iter_lines():
                    if not line.startswith(b"data: {"):
                        continue
                    if b'"error"' in line and "error" in json.loads(line[6:]):
                        r.failure(f"error in the stream: {line[6:206].decode(errors='replace')}")
                        return
                    if first is None:
                        first = time.perf_counter()
            except Exception as exc:  # the connection broke mid-stream
                r.failure(f"stream broke: {exc!r}")
                return
        end = time.perf_counter()
        for kind, at in (("TTFT", first), ("E2E", end)):
            if at is not None:
                self.environment.events.request.fire(
                    request_type=kind,
                    name="chat (stream)",
                    response_time=1e3 * (at - started),
                    response_length=0,
                    exception=None,
                    context={},
                )


def _battle(user: HttpUser, experiment: str, voter: str, question: str, name: str) -> dict | None:
    """One battle of `experiment` for `voter`: its answer, or None (a failure, reported)."""
    body = {
        "model": experiment,
        "user": voter,
        "n": 2,
        "max_tokens": 48,
        "messages": [{"role": "user", "content": question}],
    }
    with user.client.post("/v1/chat/completions", json=body, name=name, catch_response=True) as r:
        if r.status_code != 200:
            r.failure(f"{r.status_code}: {r.text[:200]}")
            return None
        return r.json()


def _record_truth(variable: str, battle: dict, row: dict) -> None:
    """Append a voted battle's known truth to the file the environment names. The completion
    ids go with it as the client saw them: the check compares them with what the store says
    each completion was, so a swap cannot pass unseen."""
    row = {"battle_id": battle["id"], **row, "completion_ids": battle["arena"]["completion_ids"]}
    with open(os.environ[variable], "a") as truth:
        truth.write(json.dumps(row) + "\n")


class ArenaUser(HttpUser):
    """A booth the crowd votes at: every battle is a voter of its own, each voting by the same
    rule, so battles are as independent as the known truth assumes (the report's intervals
    resample voters: three locust users as three voters would make them far too narrow)."""

    weight = 2
    wait_time = between(1, 3)

    @task
    def battle_and_vote(self) -> None:
        voter = f"voter-{uuid.uuid4().hex[:10]}"
        battle = _battle(self, ARENA_EXPERIMENT, voter, random.choice(QUESTIONS), "arena")
        if battle is None:
            return
        a, b = (choice["message"]["content"] or "" for choice in battle["choices"])
        shorter = "a" if len(a) <= len(b) else "b"
        longer = "b" if shorter == "a" else "a"
        vote = shorter if random.random() < PREFER_SHORTER else longer
        ballot = {"battle_id": battle["id"], "kind": "vote", "value": vote, "user": voter}
        answer = _feedback(self, ballot)
        if answer is None or "ARENA_TRUTH" not in os.environ:
            return
        reveal = answer["reveal"]
        concise = "a" if reveal["a"] == "smollm2-concise" else "b"
        p_concise = PREFER_SHORTER if concise == shorter else 1 - PREFER_SHORTER
        _record_truth("ARENA_TRUTH", battle, {"p_concise": p_concise, "reveal": reveal})


class AgreementUser(HttpUser):
    """A booth for the agreement-loving crowd: each battle a new voter (see `ArenaUser`). Twice
    the other users' weight: a vote on `agreeable-arena` is a coin flip unless exactly one
    answer agrees, so this arena needs the most votes to show its known preference."""

    weight = 4
    wait_time = between(1, 3)

    @task
    def battle_and_vote(self) -> None:
        voter = f"agree-{uuid.uuid4().hex[:10]}"
        question = wrong_belief(random.Random())
        battle = _battle(self, AGREEMENT_EXPERIMENT, voter, question, "arena (agreement)")
        if battle is None:
            return
        a, b = (choice["message"]["content"] or "" for choice in battle["choices"])
        liked = [side for side, text in (("a", a), ("b", b)) if agrees(text)]
        if len(liked) == 1:
            other = "b" if liked[0] == "a" else "a"
            vote = liked[0] if random.random() < PREFER_AGREEMENT else other
        else:
            vote = random.choice("ab")
        ballot = {"battle_id": battle["id"], "kind": "vote", "value": vote, "user": voter}
        answer = _feedback(self, ballot)
        if answer is None or "AGREEMENT_TRUTH" not in os.environ:
            return
        reveal = answer["reveal"]
        agreeable = "a" if reveal["a"] == "smollm2-agreeable" else "b"
        if len(liked) == 1:
            p = PREFER_AGREEMENT if liked[0] == agreeable else 1 - PREFER_AGREEMENT
        else:
            p = 0.5
        agreeing = {"a": agrees(a), "b": agrees(b)}
        row = {"p_agreeable": p, "agreeing": agreeing, "reveal": reveal}
        _record_truth("AGREEMENT_TRUTH", battle, row)
