"""`arena-serve probe`: run the sycophancy probe through a running gateway against every arm of an
experiment (or named variants), and print each variant's figures.

Each item goes to `POST /v1/probe` (an admin route: `--key`, default `$ARENA_ADMIN_KEY`), at most
`--concurrency` at a time, with a progress bar; the gateway runs the item's three calls, grades
them and commits the result to the outcome log, where the experiment's report reads it. A 503
is retried after its `Retry-After` (a few times); any other error stops the run with the
gateway's message. The figures printed are computed from the same results the report will read
(`router.analysis.probe`), with intervals clustered by item.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
import uuid
from typing import Any

import httpx
from tqdm import tqdm

from probe.items import FAMILIES, PROBE_SET, probe_items
from probe.protocol import Graded
from router.analysis import probe as probe_analysis
from router.analysis.schema import ProbeArm
from serve.report import rate_text

RETRIES = 4


class ProbeError(RuntimeError):
    """The gateway refused the probe (its message), or could not be reached."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--experiment", help="probe every arm of this experiment")
    target.add_argument(
        "--variant", action="append", help="probe this variant (repeat for several)"
    )
    parser.add_argument("--url", default="http://127.0.0.1:8000", help="the gateway")
    parser.add_argument(
        "--key",
        default=os.environ.get("ARENA_ADMIN_KEY"),
        help="an admin API key where keys are configured (default: $ARENA_ADMIN_KEY)",
    )
    parser.add_argument("--concurrency", type=int, default=8, help="items in flight at once")
    parser.add_argument(
        "--limit", type=int, default=None, help="only the first N items of each family"
    )
    parser.add_argument("--families", nargs="+", choices=FAMILIES, default=list(FAMILIES))
    parser.add_argument("--run-id", default=None, help="default: probe-<time>-<random>")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per item")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")


def _chosen_items(families: list[str], limit: int | None) -> list[str]:
    chosen, taken = [], dict.fromkeys(families, 0)
    for item in probe_items():
        if item.family in taken and (limit is None or taken[item.family] < limit):
            taken[item.family] += 1
            chosen.append(item.id)
    return chosen


async def _arms(client: httpx.AsyncClient, experiment: str) -> list[str]:
    answer = await client.get("/v1/experiments")
    _raise_for(answer)
    for found in answer.json()["data"]:
        if found["name"] == experiment:
            return [arm["variant"] for arm in found["arms"]]
    raise ProbeError(f"the gateway has no experiment {experiment!r}")


def _raise_for(answer: httpx.Response) -> None:
    if answer.status_code >= 400:
        try:
            message = answer.json()["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = answer.text[:200]
        raise ProbeError(f"{answer.request.url.path}: {answer.status_code} {message}")


async def _one(
    client: httpx.AsyncClient, body: dict[str, Any], gate: asyncio.Semaphore
) -> dict[str, Any]:
    async with gate:
        for attempt in range(RETRIES + 1):
            answer = await client.post("/v1/probe", json=body)
            if answer.status_code != 503 or attempt == RETRIES:
                break
            await asyncio.sleep(float(answer.headers.get("retry-after", "1")))
        _raise_for(answer)
        return answer.json()


async def run_probe(args: argparse.Namespace) -> tuple[dict[str, list[dict]], float]:
    """Every chosen item against every variant; the results per variant and the wall time."""
    headers = {"Authorization": f"Bearer {args.key}"} if args.key else {}
    timeout = httpx.Timeout(args.timeout, connect=10.0)
    started = time.perf_counter()
    async with httpx.AsyncClient(base_url=args.url, headers=headers, timeout=timeout) as client:
        variants = await _arms(client, args.experiment) if args.experiment else args.variant
        items = _chosen_items(args.families, args.limit)
        run_id = args.run_id or f"probe-{int(time.time())}-{uuid.uuid4().hex[:6]}"
        gate = asyncio.Semaphore(max(1, args.concurrency))
        bodies = [
            {"variant": v, "item": i, "run_id": run_id, "probe_set": PROBE_SET}
            | ({"experiment": args.experiment} if args.experiment else {})
            for v in variants
            for i in items
        ]
        tasks = [asyncio.ensure_future(_one(client, body, gate)) for body in bodies]
        results: dict[str, list[dict]] = {v: [] for v in variants}
        try:
            with tqdm(total=len(tasks), desc=f"probe {run_id}", unit="item") as bar:
                for done in asyncio.as_completed(tasks):
                    result = await done
                    results[result["variant"]].append(result)
                    bar.update()
        finally:
            for task in tasks:
                task.cancel()
    return results, time.perf_counter() - started


def variant_probe(results: list[dict]) -> probe_analysis.VariantProbe:
    """A variant's results (the route's answers) as the analysis holds them."""
    found = probe_analysis.VariantProbe(revision=results[0]["revision"] if results else None)
    for result in results:
        graded = Graded(
            first=result["first"], pushback=result["pushback"], suggestion=result["suggestion"]
        )
        found.items.setdefault(result["item"], []).append(graded)
        found.families[result["item"]] = result["family"]
        found.runs.add(result["run_id"])
    return found


def figures(variant: str, results: list[dict]) -> ProbeArm:
    """A variant's figures from its results (the analysis's own computation)."""
    return probe_analysis.arm(variant, variant_probe(results))


def main(args: argparse.Namespace) -> int:
    try:
        results, wall_s = asyncio.run(run_probe(args))
    except (ProbeError, httpx.HTTPError) as exc:
        print(f"probe failed: {exc}", file=sys.stderr)
        return 1
    arms = [figures(variant, found) for variant, found in results.items()]
    if args.json:
        out = {"probe_set": PROBE_SET, "wall_s": wall_s, "arms": [a.model_dump() for a in arms]}
        print(json.dumps(out, indent=2))
        return 0
    print(f"probe set {PROBE_SET}, {wall_s:.0f} s; intervals 95 %, clustered by item")
    for arm in arms:
        print(
            f"{arm.variant} (revision {arm.revision}, {arm.items} items): accuracy "
            f"{rate_text(arm.accuracy)}, flip rate {rate_text(arm.sycophancy_flip_rate)}, "
            f"capitulation rate {rate_text(arm.capitulation_rate)}"
        )
        families = ", ".join(
            f"{family} {value:.2f}" if value is not None else f"{family} —"
            for family, value in arm.family_accuracy.items()
        )
        print(f"  first-answer accuracy per family: {families}")
    return 0
