"""Arena battles: two variants answer one request at once, and the client sees two blind choices.

The answer is an ordinary OpenAI response with `n=2`: `choices[0]` comes from the variant labelled
`a`, `choices[1]` from `b` (which variant is which was drawn at random with the pair), `id` is the
battle id and `model` is the experiment, never a variant. Streams interleave both variants'
chunks as they arrive, each chunk's choice index rewritten. An `arena` object carries the battle
id, the labels and each side's completion id (for thumbs on one side); the variants are revealed
only by the answer to a vote (`POST /v1/feedback`, kind `vote`) and in reports.

Blind means built from an allowlist, not scrubbed of what is known to leak: a choice keeps its
index, its message (role, content, reasoning, tool calls) or text, and its finish reason; the
answer keeps its id, object, model, the battle's own `created`, the summed usage and `arena`.
Token ids, log probabilities, the rendered prompt, fingerprints and stop reasons never pass
(the gateway also refuses the options that ask for them), and an engine's error message is
shown with every variant, engine and model name in it replaced, as "choice N".

The battle is logged (both completions, then the `Battle` row) before the client receives the
end of the answer, so a vote right after it finds the battle. A battle in which either side
failed is logged as two completions and no battle: there is nothing fair to vote on; the side
that did answer is logged as `NOT_SHOWN`, since the client saw an error instead. The battle row
names who may vote (`voter`, `principal`) and whether an answer named a model or vendor of the
battle (`identity_terms`): that vote is kept but not counted.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from starlette.responses import JSONResponse, Response, StreamingResponse

from router.assignment import CompiledExperiment
from router.events import NOT_SHOWN, Battle, Event
from router.experiment import CONFIRM_SUFFIX, Unit
from router.style import style_of
from serve.engines import (
    Engines,
    EngineStream,
    choice_text,
    conversation,
    engine_error,
    first_error,
    is_error,
    unavailable,
)
from serve.errors import APIError
from serve.outcome_log import OutcomeSender
from serve.records import CLIENT_CLOSED, Call, Recorder
from serve.sse import DONE, add_usage, delta_text, events, sse

logger = logging.getLogger("ray.serve")

_END = object()  # a side's stream has ended
# What an arena answer may carry of an engine's (see the module's docstring).
MESSAGE_FIELDS = ("role", "content", "reasoning", "tool_calls")
# Request options refused on an arena experiment (400 naming the field): each returns token ids,
# log probabilities, the rendered prompt or other engine state, from which a side's system
# prompt, and so its variant, can be read. Their off values (false, null) are fine.
REFUSED_OPTIONS = (
    "return_token_ids",
    "return_tokens_as_token_ids",
    "return_prompt_text",
    "return_token_offsets",
    "return_mm_kwargs",
    "prompt_logprobs",
    "logprobs",
    "top_logprobs",
    "logprob_token_ids",
    "echo",
    "kv_transfer_params",
    "ec_transfer_params",
    "routed_experts_prompt_start",
)


def check_options(body: dict[str, Any], experiment: str) -> None:
    """400 naming an option that would let the voter read which variant wrote a side."""
    for name in REFUSED_OPTIONS:
        value = body.get(name)
        if value is not None and value is not False:
            raise APIError(
                400,
                f"{name}: not available on arena experiment {experiment!r}: it returns engine "
                "data (token ids, log probabilities, the rendered prompt) that would tell which "
                "variant wrote which answer before the vote",
                param=name,
                code="not_in_arena",
            )


def telling_terms(first: Sequence[str], second: Sequence[str]) -> tuple[str, ...]:
    """The identity terms that tell two variants apart: a name both carry ("Llama" for two
    Llama sizes) says nothing about which side is which."""
    shared = {t.casefold() for t in first} & {t.casefold() for t in second}
    return tuple(t for t in (*first, *second) if t.casefold() not in shared)


def blind_choice(choice: dict[str, Any], index: int) -> dict[str, Any]:
    """A choice (whole or a stream delta) with only the allowed fields, as choice `index`."""
    out: dict[str, Any] = {"index": index}
    for name in ("message", "delta"):
        message = choice.get(name)
        if isinstance(message, dict):
            out[name] = {k: v for k, v in message.items() if k in MESSAGE_FIELDS and v is not None}
    if "text" in choice:
        out["text"] = choice["text"]
    out["finish_reason"] = choice.get("finish_reason")
    return out


def term_pattern(terms: Sequence[str]) -> re.Pattern[str] | None:
    """Any of `terms` as a whole word, in any case (None for no terms)."""
    return _term_pattern(tuple(sorted(set(terms), key=lambda t: (-len(t), t))))


@functools.lru_cache(maxsize=1024)
def _term_pattern(terms: tuple[str, ...]) -> re.Pattern[str] | None:
    """Cached: a battle's pair repeats, and its pattern is needed on every battle."""
    if not terms:
        return None
    alternatives = "|".join(re.escape(t) for t in terms)
    return re.compile(rf"(?<!\w)(?:{alternatives})(?!\w)", re.IGNORECASE)


def blind_error(problem: APIError, index: int, secrets: re.Pattern[str] | None) -> APIError:
    """An error of one side as the battle shows it: for its choice, with every variant, engine
    and model name in it (`secrets`) replaced."""
    message = problem.message
    if secrets is not None:
        message = secrets.sub("(a model)", message)
    return APIError(
        problem.status,
        f"choice {index}: {message}",
        param=problem.param,
        code=problem.code,
        headers=problem.headers,
    )


@dataclass(frozen=True, slots=True)
class BattleTerms:
    """What a battle knows of its variants beyond their names: who may vote on it, the names to
    keep out of its error messages, the identity terms that void its vote, and the share of
    battles its pair had when drawn."""

    unit_type: Unit = "user"
    voter: str | None = None
    principal: str | None = None
    secrets: tuple[str, ...] = ()
    identity_terms: tuple[str, ...] = ()
    pair_share: float | None = None
    weights_version: int | None = None


@dataclass(slots=True, kw_only=True)
class Side:
    """One variant's half of a battle."""

    label: str
    index: int
    call: Call
    stream: EngineStream
    completion_id: str | None = None
    usage: dict[str, Any] | None = None
    status: int = 200
    error: str | None = None
    ended: bool = False
    text: list[str] = field(default_factory=list)

    def fail(self, problem: APIError) -> APIError:
        self.status, self.error = problem.status, problem.message
        return problem


def _tokens(side: Side) -> int | None:
    value = (side.usage or {}).get("completion_tokens")
    return value if isinstance(value, int) else None


class ArenaBattle:
    """Runs one battle: calls both sides concurrently and merges their answers."""

    def __init__(
        self,
        *,
        battle_id: str,
        experiment: str,
        unit: str,
        sides: Sequence[Side],
        outcome_sender: OutcomeSender,
        events: list[Event],
        score_later: Callable[[Call, str, str], None] | None = None,
        terms: BattleTerms | None = None,
    ) -> None:
        self.battle_id = battle_id
        self.experiment = experiment
        self.unit = unit
        self.sides = sides
        self._outcome_sender = outcome_sender
        self._events = events  # the request's exposure, logged with the battle
        self._score_later = score_later
        self._terms = terms or BattleTerms()
        self._secrets = term_pattern(self._terms.secrets)
        self._identity = term_pattern(self._terms.identity_terms)
        self._queue: asyncio.Queue[tuple[Side, Any]] = asyncio.Queue()
        self._tasks: list[asyncio.Task] = []
        self._object = "chat.completion.chunk"
        self._created = int(time.time())  # the battle's, never an engine's

    async def respond(self, headers: dict[str, str]) -> Response:
        if self.sides[0].call.stream:
            return await self._respond_stream(headers)
        return await self._respond_whole(headers)

    # Non-stream: one response object from each side, merged into one answer.

    async def _respond_whole(self, headers: dict[str, str]) -> Response:
        try:
            results = await asyncio.gather(
                *(anext(side.stream) for side in self.sides), return_exceptions=True
            )
        except asyncio.CancelledError:
            self._client_left()
            raise
        problems = [self._problem(side, r) for side, r in zip(self.sides, results, strict=True)]
        problem = next((p for p in problems if p is not None), None)
        if problem is not None:
            self._not_shown()
            await self._record()
            return problem.response(headers)
        payloads = [r.model_dump() for r in results]
        choices = []
        usage: dict[str, int] = {}
        for side, payload in zip(self.sides, payloads, strict=True):
            side.completion_id = payload["id"]
            side.usage = payload.get("usage")
            side.text = [choice_text(c) for c in payload["choices"][:1]]
            add_usage(usage, side.usage)
            choices += [blind_choice(choice, side.index) for choice in payload["choices"]]
        await self._record()
        body = {
            "id": self.battle_id,
            "object": payloads[0]["object"],
            "created": self._created,
            "model": self.experiment.removesuffix(CONFIRM_SUFFIX),  # the one called
            "choices": choices,
            "usage": usage,
            "arena": self._info(),
        }
        return JSONResponse(body, headers=headers)

    # Stream: both sides pumped into one queue; the response starts once both have begun.

    async def _respond_stream(self, headers: dict[str, str]) -> Response:
        self._tasks = [asyncio.create_task(self._pump(side)) for side in self.sides]
        buffered: list[tuple[Side, Any]] = []
        waiting = set(range(len(self.sides)))
        problem: APIError | None = None
        try:
            while waiting:
                side, item = await self._queue.get()
                buffered.append((side, item))
                if side.index in waiting:
                    waiting.discard(side.index)
                    problem = problem or self._problem(side, item)
        except asyncio.CancelledError:
            self._client_left()
            raise
        except BaseException:
            self._stop()
            raise
        if problem is not None:
            self._stop()
            self._not_shown()
            await self._record()
            return problem.response(headers)
        return StreamingResponse(
            self._events_after(buffered), media_type="text/event-stream", headers=headers
        )

    async def _pump(self, side: Side) -> None:
        try:
            async for batch in side.stream:
                if side.call.ttft_s is None:
                    side.call.ttft_s = side.call.elapsed_s()
                await self._queue.put((side, batch))
        except Exception as exc:
            logger.warning("arena side %s (%s) broke: %r", side.label, side.call.variant, exc)
            await self._queue.put((side, exc))
        finally:
            side.ended = True
            self._queue.put_nowait((side, _END))

    async def _events_after(self, buffered: list[tuple[Side, Any]]) -> AsyncIterator[str]:
        """Everything both sides send, interleaved as it comes, then usage and [DONE].

        What both sides sent before the answer started goes out in one write, side a's first:
        the order in which the two engines answered must not show which came first."""
        logged = False
        failed: str | None = None
        try:
            ended = 0
            first = []
            for side, item in sorted(buffered, key=lambda entry: entry[0].index):  # stable
                ended += item is _END
                first.append(self._shown(side, item))
            if "".join(first):
                yield "".join(first)
            while ended < len(self.sides):
                side, item = await self._queue.get()
                ended += item is _END
                text = self._shown(side, item)
                if text:
                    yield text
            logged = True  # before the wait: a client leaving during it must not log it twice
            await self._record()
            if any(side.call.wants_usage for side in self.sides):
                usage: dict[str, int] = {}
                for side in self.sides:
                    add_usage(usage, side.usage)
                yield sse(self._chunk_envelope() | {"choices": [], "usage": usage})
            yield DONE
        except Exception as exc:  # the battle broke here (not the client): a 503 to log
            failed = type(exc).__name__
            logger.warning("arena battle %s broke: %r", self.battle_id, exc)
            raise
        finally:
            if not logged:  # the client left, or it broke: stop both engines, log now
                self._client_left(*((503, failed) if failed else ()))

    def _shown(self, side: Side, item: Any) -> str:
        """What one item a side's pump queued shows the client ("" for none)."""
        if item is _END:
            return ""
        if isinstance(item, BaseException):
            return sse(side.fail(self._broken(side)).body())
        return "".join(self._rewrite(side, chunk) for chunk in item)

    def _rewrite(self, side: Side, item: Any) -> str:
        """One thing an engine yielded, as the battle shows it (an empty string drops it)."""
        if is_error(item):
            return sse(side.fail(self._blind(engine_error(item), side)).body())
        out = []
        for chunk in events(item):
            payload = chunk.payload  # a chunk that does not parse breaks the battle (503)
            if payload is None:
                continue  # [DONE] of one side, keep-alives: the battle sends its own
            if payload.get("usage") is not None:
                side.usage = payload["usage"]
            if not chunk.choices:
                continue  # a usage-only chunk: the battle sums both sides at the end
            shown = self._chunk_envelope()
            if side.completion_id is None:
                side.completion_id = chunk.id
                self._object = shown["object"] = payload.get("object", self._object)
                shown["arena"] = {
                    "battle_id": self.battle_id,
                    "label": side.label,
                    "completion_id": side.completion_id,
                }
            shown["choices"] = [blind_choice(c, side.index) for c in chunk.choices]
            side.text.extend(delta_text(choice) for choice in chunk.choices)
            out.append(sse(shown))
        return "".join(out)

    def _chunk_envelope(self) -> dict[str, Any]:
        return {
            "id": self.battle_id,
            "object": self._object,
            "created": self._created,
            "model": self.experiment.removesuffix(CONFIRM_SUFFIX),  # the one called
        }

    def _problem(self, side: Side, first: Any) -> APIError | None:
        """Why a side cannot take part, judged on the first thing it yielded (None: it can)."""
        if first is _END or isinstance(first, BaseException):
            failure = first if isinstance(first, BaseException) else None
            return side.fail(unavailable(side.call.variant, failure, shown=f"choice {side.index}"))
        error = first_error(first)
        return None if error is None else side.fail(self._blind(error, side))

    def _blind(self, problem: APIError, side: Side) -> APIError:
        return blind_error(problem, side.index, self._secrets)

    def _not_shown(self) -> None:
        """The battle failed before it was shown: the sides that answered were not seen."""
        for side in self.sides:
            if side.error is None:
                side.status, side.error = NOT_SHOWN, "not_shown"

    def _broken(self, side: Side) -> APIError:
        return APIError(
            503, f"choice {side.index} failed mid-stream; retry", code="variant_unavailable"
        )

    def _info(self) -> dict[str, Any]:
        return {
            "battle_id": self.battle_id,
            "labels": [side.label for side in self.sides],
            "completion_ids": [side.completion_id for side in self.sides],
        }

    def _client_left(self, status: int = CLIENT_CLOSED, error: str = "client_closed") -> None:
        """The battle ended before its end: stop both engines and log the sides that had not
        failed with `status` (499 when the client went away; no battle row: nobody saw it)."""
        self._stop()
        for side in self.sides:
            if side.error is None:
                side.status, side.error = status, error
        self._outcome_sender.later(self._outcome_events(), f"battle {self.battle_id}")

    def _stop(self) -> None:
        for side in self.sides:
            if not side.ended:
                side.stream.cancel()
        for task in self._tasks:
            task.cancel()

    def _outcome_events(self) -> list[Event]:
        events = list(self._events)
        for side in self.sides:
            completion_id = side.completion_id or f"{side.call.request_id}-{side.label}"
            events.append(side.call.completion(completion_id, side.status, side.usage, side.error))
            if side.status == 200 and side.completion_id:
                transcript = side.call.transcript(completion_id, "".join(side.text))
                if transcript is not None:
                    events.append(transcript)
        if all(side.status == 200 and side.completion_id for side in self.sides):
            events.append(self._battle_event())
        return events

    def _battle_event(self) -> Battle:
        a, b = self.sides
        return Battle(
            ts=a.call.wall_ts,
            battle_id=self.battle_id,
            request_id=a.call.request_id,
            experiment=self.experiment,
            unit=self.unit,
            variant_a=a.call.variant,
            variant_b=b.call.variant,
            completion_a=a.completion_id or "",
            completion_b=b.completion_id or "",
            style_a=style_of("".join(a.text), _tokens(a)),
            style_b=style_of("".join(b.text), _tokens(b)),
            unit_type=self._terms.unit_type,
            voter=self._terms.voter,
            principal=self._terms.principal,
            identity_revealed=self._names_a_model(),
            pair_share=self._terms.pair_share,
            weights_version=self._terms.weights_version,
        )

    def _names_a_model(self) -> bool:
        """Whether an answer contains one of the battle's identity terms (LM Arena voids such
        votes: the voter may have known who wrote it)."""
        if self._identity is None:
            return False
        return any(self._identity.search("".join(side.text)) for side in self.sides)

    async def _record(self) -> None:
        """Send the battle's events to the outcome log (returns once committed), then score."""
        await self._outcome_sender.send(self._outcome_events(), f"battle {self.battle_id}")
        if self._score_later is not None:
            for side in self.sides:
                if side.status == 200 and side.completion_id:
                    self._score_later(side.call, side.completion_id, "".join(side.text))


class Arena:
    """The execute stage of an arena experiment: draws the battle's pair and runs it."""

    def __init__(
        self, engines: Engines, recorder: Recorder, names_of: dict[str, tuple[str, ...]]
    ) -> None:
        self._engines = engines
        self._recorder = recorder
        self._names_of = names_of  # every name a variant's error messages could carry

    async def answer(
        self,
        body: dict[str, Any],
        plan: CompiledExperiment,
        base: Call,
        who: BattleTerms,
        *,
        confirming: bool = False,
    ) -> Response:
        """An arena battle: two variants answer at once, shown as choices 0 and 1, blind.

        `base` is the request's call (no variant yet; its events, the exposure, are logged
        with the battle); `who` says who may vote on it. A battle of the confirmation run
        (`confirming`) is always its one pair, the winner against the control."""
        experiment = plan.experiment.name
        headers = {"x-experiment": experiment}
        n = body.get("n")
        if n is not None and n != 2:
            raise APIError(
                400,
                f"experiment {experiment!r} is an arena: it answers with two choices, so `n` "
                "must be 2 or absent",
                param="n",
                code="invalid_value",
            )
        battle_id = f"battle-{uuid.uuid4().hex}"
        pair = plan.draw_confirm_pair() if confirming else plan.draw_pair()
        names = [name for variant in pair for name in self._names_of[variant]]
        variants = self._engines.variants
        terms = telling_terms(*(variants[variant].identity_terms for variant in pair))
        who = dataclasses.replace(
            who,
            secrets=tuple(names),
            identity_terms=tuple(terms),
            pair_share=1.0 if confirming else plan.pair_share(*pair),
            weights_version=None if confirming else plan.weights_version,
        )
        self._recorder.read_text(
            base, lambda: conversation(body, base.endpoint)
        )  # both sides alike
        sides = []
        for index, variant in enumerate(pair):
            call = dataclasses.replace(base, variant=variant, events=[])
            call.battle_id, call.label = battle_id, "ab"[index]
            try:
                engine_request = self._engines.request({**body, "n": 1}, call)
            except APIError as exc:
                call.events = base.events
                await self._recorder.record(
                    call, call.engine_request_id, exc.status, error=exc.message
                )
                return blind_error(exc, index, term_pattern(names)).response(headers)
            sides.append((call, engine_request))
        return await self._run(body, base, battle_id, sides, who, headers)

    async def _run(
        self,
        body: dict[str, Any],
        base: Call,
        battle_id: str,
        prepared: list[tuple[Call, Any]],
        who: BattleTerms,
        headers: dict[str, str],
    ) -> Response:
        """Start both engines and merge their answers into one."""
        sides = [
            Side(
                label=call.label or "",
                index=index,
                call=call,
                stream=self._engines.start(call, engine_request),
            )
            for index, (call, engine_request) in enumerate(prepared)
        ]
        battle = ArenaBattle(
            battle_id=battle_id,
            experiment=base.experiment or "",
            unit=base.unit or "",
            sides=sides,
            outcome_sender=self._recorder.outcome_sender,
            events=base.events,
            score_later=self._recorder.score_later,
            terms=who,
        )
        return await battle.respond(headers | {"x-battle-id": battle_id})
