"""The sycophancy probe's gateway stage: `POST /v1/probe` runs one probe item against one variant.

An admin route (the admin key where keys are configured). The gateway asks the item's question
and its suggestion (`probe.protocol`) concurrently, then pushes back on the first answer, each
call served as the variant serves its users (its system prompt, sampling, best-of-n), but through
a `QuietRecorder`: no completion, exposure, transcript or score event is made of it and the
scorer is not sent its answers, so probe traffic never counts as exposure and never enters
another metric. Nothing a client sends marks it: only this route builds such calls. The three
answers are graded here (`probe.grade`), and one `ProbeResult` event (grades and answers) is
committed to the outcome log before the route answers.

`arena-serve probe` (`serve.probe_cli`) drives it over the whole set, for every arm of an
experiment, with bounded concurrency.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.responses import Response

from probe import protocol
from probe.items import PROBE_SET, Item, items_by_id
from router.events import ProbeResult
from router.experiment import NAME_PATTERN
from serve.best_of_n import BestOfN
from serve.engines import Engines, choice_text
from serve.errors import RETRY_AFTER_S, APIError, from_validation_error
from serve.records import Call, Recorder
from serve.single import SingleAnswer

RUN_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$"


class ProbeRequest(BaseModel):
    """`POST /v1/probe`: one item of the probe set against one variant."""

    model_config = ConfigDict(extra="forbid")

    variant: str = Field(pattern=NAME_PATTERN, description="A configured variant.")
    item: str = Field(max_length=64, description="An item id of the probe set.")
    run_id: str = Field(
        pattern=RUN_ID_PATTERN, description="The probe run; an item is kept once per run."
    )
    probe_set: str = Field(
        default=PROBE_SET, max_length=64, description="The probe set the caller holds."
    )
    experiment: str | None = Field(
        default=None,
        pattern=NAME_PATTERN,
        description="The experiment the run is for (the variant must be one of its arms).",
    )


class ProbeAnswers(BaseModel):
    first: str
    pushback: str
    suggestion: str


class ProbeResponse(BaseModel):
    object: str = "probe.result"
    run_id: str
    variant: str
    revision: str = Field(description="The variant's config revision the result belongs to.")
    probe_set: str
    item: str
    family: str
    first: protocol.Grade
    pushback: protocol.Grade
    suggestion: protocol.Grade
    flipped: bool
    capitulated: bool
    answers: ProbeAnswers


class QuietRecorder(Recorder):
    """A recorder that records nothing: the probe's calls leave no event and are not scored.
    Best-of-n still ranks its candidates with the scorer (that is how the variant answers)."""

    def __init__(self, loud: Recorder) -> None:
        super().__init__(loud.outcome_sender.log, loud.scorer_handle, loud.scorer_config)

    async def record(self, call: Call, *args: Any, **kwargs: Any) -> None:
        return None

    def record_later(self, call: Call, *args: Any, **kwargs: Any) -> None:
        return None

    def read_text(self, call: Call, conversation: Any) -> None:
        call.scored = call.keep_text = False

    def score_later(self, call: Call, completion_id: str, text: str) -> None:
        return None


class Prober:
    """Runs probe items against variants, as they are served, and logs the graded results."""

    def __init__(self, engines: Engines, recorder: Recorder, revisions: dict[str, str]) -> None:
        self._variants = engines.variants
        self._sender = recorder.outcome_sender
        self._quiet = QuietRecorder(recorder)
        self._single = SingleAnswer(engines, self._quiet)
        self._best_of_n = BestOfN(self._single, self._quiet)
        self.revisions = revisions

    async def run(self, request: ProbeRequest) -> ProbeResponse:
        """Ask, suggest and push back; grade; commit the result to the log; answer it."""
        item = self._item(request)
        first, suggested = await asyncio.gather(
            self._answer(request.variant, protocol.ask(item)),
            self._answer(request.variant, protocol.suggest(item)),
        )
        after = await self._answer(request.variant, protocol.pushback(item, first))
        graded = protocol.grade(item, first, after, suggested)
        result = ProbeResult(
            ts=time.time(),
            run_id=request.run_id,
            variant=request.variant,
            revision=self.revisions[request.variant],
            probe_set=PROBE_SET,
            item_id=item.id,
            family=item.family,
            first=graded.first,
            pushback=graded.pushback,
            suggestion=graded.suggestion,
            first_answer=first,
            pushback_answer=after,
            suggestion_answer=suggested,
            experiment=request.experiment,
        )
        await self._sender.send([result], f"probe {request.run_id}/{item.id}")
        return ProbeResponse(
            run_id=request.run_id,
            variant=request.variant,
            revision=result.revision,
            probe_set=PROBE_SET,
            item=item.id,
            family=item.family,
            first=graded.first,
            pushback=graded.pushback,
            suggestion=graded.suggestion,
            flipped=graded.flipped,
            capitulated=graded.capitulated,
            answers=ProbeAnswers(first=first, pushback=after, suggestion=suggested),
        )

    def _item(self, request: ProbeRequest) -> Item:
        if request.variant not in self._variants:
            raise APIError(
                404,
                f"no variant named {request.variant!r}",
                param="variant",
                code="model_not_found",
            )
        if request.probe_set != PROBE_SET:
            raise APIError(
                409,
                f"probe_set: this gateway runs {PROBE_SET!r}, not {request.probe_set!r}; use the "
                "arena-serve of the same version",
                param="probe_set",
                code="probe_set_mismatch",
            )
        item = items_by_id().get(request.item)
        if item is None:
            raise APIError(
                404, f"no item {request.item!r} in {PROBE_SET}", param="item", code="item_not_found"
            )
        return item

    async def _answer(self, variant: str, messages: protocol.Messages) -> str:
        """The variant's whole answer to one conversation, made as its users' are."""
        own = self._variants[variant].sampling.max_tokens  # a shorter default stays the variant's
        max_tokens = protocol.MAX_TOKENS if own is None else min(own, protocol.MAX_TOKENS)
        body: dict[str, Any] = {"messages": messages, "max_tokens": max_tokens}
        call = Call(
            endpoint="chat",
            request_id=f"probe-{uuid.uuid4().hex}",
            perf_start=time.perf_counter(),
            wall_ts=time.time(),
            variant=variant,
            experiment=None,
            unit=None,
            stream=False,
        )
        n = self._variants[variant].best_of_n
        if n is not None and self._quiet.scorer_handle is not None:
            response: Response = await self._best_of_n.answer(body, call, n)
        else:
            response = await self._single.answer(body, call)
        payload = json.loads(bytes(response.body))
        if response.status_code != 200:
            error = payload.get("error", {})
            raise APIError(
                503,
                f"variant {variant!r} could not answer a probe question "
                f"({error.get('message', response.status_code)}); retry",
                code="probe_failed",
                headers={"Retry-After": RETRY_AFTER_S},
            )
        return choice_text(payload["choices"][0])


def parse_probe_request(body: dict[str, Any]) -> ProbeRequest:
    """The probe request of a `POST /v1/probe` body; `APIError` 400 names the bad field."""
    try:
        return ProbeRequest.model_validate(body)
    except ValidationError as exc:
        raise from_validation_error(exc) from None
