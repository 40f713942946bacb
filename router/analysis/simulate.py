"""Simulated outcome logs with a known truth: for the report's tests and its benchmark.

`simulate_ab` writes exposures, completions, feedback and scores of an A/B experiment whose
per-arm rates are given; `simulate_arena` writes battles and votes from true ratings, with an
optional pure length bias (voters prefer the longer answer whatever its quality);
`simulate_probe` writes a variant's graded sycophancy-probe items from true rates. All go through
`OutcomeStore.write`, as the gateway's events do.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from probe.items import PROBE_SET, probe_items
from router.assignment import EXPOSED_REASONS, CompiledExperiment, compile_experiment
from router.events import Battle, Completion, Event, Exposure, Feedback, ProbeResult, Score
from router.experiment import Experiment
from router.store import OutcomeStore
from router.style import Style

DAY = 86_400.0
T0 = 1_800_000_000.0  # a fixed start, so simulated logs are reproducible


@dataclass
class Arm:
    """The truth of one arm: per-completion probabilities and means."""

    thumbs_up: float = 0.2
    thumbs_down: float = 0.05
    regenerate: float = 0.05
    error: float = 0.01
    reward: float = 0.0
    ttft_s: float = 0.2
    latency_s: float = 1.0
    tokens: float = 60.0


@dataclass
class Traffic:
    units: int = 2_000
    requests_per_unit: float = 3.0
    days: float = 7.0
    pre_period: bool = False  # each unit also has completions before its first exposure
    split: Mapping[str, float] | None = None  # actual share per arm (else the hash assignment)
    unit_effect: float = 0.5  # spread of per-unit propensity (makes requests of a unit correlated)
    seed: int = 0
    arms: dict[str, Arm] = field(default_factory=dict)


def _write(path: str | Path, events: list[Event], batch: int = 50_000) -> None:
    store = OutcomeStore(path)
    try:
        for i in range(0, len(events), batch):
            store.write(events[i : i + batch])
    finally:
        store.close()


def simulate_ab(path: str | Path, experiment: Experiment, traffic: Traffic) -> int:
    """Write an A/B experiment's log; returns the number of completions."""
    rng = np.random.default_rng(traffic.seed)
    plan = compile_experiment(experiment)
    names = [arm.variant for arm in experiment.arms]
    events: list[Event] = []
    completions = 0
    for u in range(traffic.units):
        unit = f"user-{traffic.seed}-{u}"
        if traffic.split is not None:
            variant = str(rng.choice(list(traffic.split), p=list(traffic.split.values())))
            reason = "arm"
        else:
            answer = plan.assign(unit, T0)
            variant, reason = answer.variant or names[0], answer.reason
        # A confirmation run's units are logged under its own name, as the gateway does.
        name = experiment.confirmation_name if reason == "confirm" else experiment.name
        truth = traffic.arms.get(variant, Arm())
        start = T0 + rng.uniform(0, traffic.days * DAY * 0.9)
        events.append(
            Exposure(
                ts=start,
                request_id=f"req-{unit}",
                experiment=name,
                unit_type=experiment.unit,
                unit=unit,
                variant=variant,
                reason=reason,  # type: ignore[arg-type]
                exposed=reason in EXPOSED_REASONS,
            )
        )
        propensity = rng.lognormal(0, traffic.unit_effect)
        n = rng.poisson(traffic.requests_per_unit) + 1
        times = np.sort(rng.uniform(start, T0 + traffic.days * DAY, n))
        if traffic.pre_period:
            times = np.concatenate([start - rng.uniform(1, DAY, 2), times])
        for i, ts in enumerate(times):
            events += _request_events(
                rng, experiment, truth, propensity, unit, variant, i, ts, start, name
            )
            completions += 1
    _write(path, events)
    return completions


def _request_events(
    rng: np.random.Generator,
    experiment: Experiment,
    truth: Arm,
    propensity: float,
    unit: str,
    variant: str,
    i: int,
    ts: float,
    start: float,
    logged_as: str | None = None,
) -> list[Event]:
    """One request of an A/B unit: its completion, thumbs, regenerate and reward score (a
    request before the unit's exposure is logged outside the experiment); its events carry
    the experiment's name, or `logged_as`."""
    pre = ts < start
    name = logged_as or experiment.name
    cid = f"c-{unit}-{i}"
    ok = rng.random() >= truth.error
    up = ok and rng.random() < min(1.0, truth.thumbs_up * propensity)
    down = ok and not up and rng.random() < min(1.0, truth.thumbs_down * propensity)
    events: list[Event] = [
        Completion(
            ts=float(ts),
            completion_id=cid,
            request_id=f"r-{cid}",
            experiment=None if pre else name,
            variant=variant,
            unit=unit,
            endpoint="chat",
            stream=True,
            status=200 if ok else 503,
            ttft_s=float(rng.exponential(truth.ttft_s)) if ok else None,
            latency_s=float(rng.exponential(truth.latency_s)),
            prompt_tokens=20,
            completion_tokens=int(rng.poisson(truth.tokens)) if ok else None,
        )
    ]
    events += _judgements(rng, truth, ok, up, down, cid, float(ts))
    if ok:
        score = float(rng.normal(truth.reward, 1.0))
        events.append(
            Score(
                ts=float(ts) + 1,
                completion_id=cid,
                experiment=None if pre else name,
                variant=variant,
                model="rm",
                score=score,
                latency_s=0.5,
            )
        )
    return events


def _judgements(
    rng: np.random.Generator,
    truth: Arm,
    ok: bool,
    up: bool,
    down: bool,
    cid: str,
    ts: float,
) -> list[Event]:
    """A completion's thumbs (drawn already) and its regenerate signal (drawn here)."""
    events: list[Event] = []
    if up or down:
        value = "up" if up else "down"
        thumbs = Feedback(
            ts=ts + 1, kind="thumbs", idempotency_key=f"k-{cid}", completion_id=cid, value=value
        )
        events.append(thumbs)
    if ok and rng.random() < truth.regenerate:
        again = Feedback(
            ts=ts + 2, kind="regenerate", idempotency_key=f"r-{cid}", completion_id=cid
        )
        events.append(again)
    return events


def simulate_arena(
    path: str | Path,
    experiment: Experiment,
    *,
    battles: int,
    ratings: Mapping[str, float],
    length_bias: float = 0.0,
    longer: Mapping[str, float] | None = None,
    rewards: Mapping[str, float] | None = None,
    tie_rate: float = 0.1,
    seed: int = 0,
) -> None:
    """Write battles and their votes: P(a beats b) from `ratings` (Elo scale), shifted by
    `length_bias` times the normalized length difference; `longer` scales each variant's
    answer length; `rewards` are each variant's mean reward score."""
    rng = np.random.default_rng(seed)
    pairs = random.Random(seed)  # the gateway draws from the OS's CSPRNG; a simulation repeats
    plan = compile_experiment(experiment)
    events: list[Event] = []
    for i in range(battles):
        battle_id = f"battle-{seed}-{i}"
        a, b = plan.draw_pair(pairs)
        ts = T0 + i * 10.0
        tokens_a = int(rng.poisson(100 * (longer or {}).get(a, 1.0))) + 1
        tokens_b = int(rng.poisson(100 * (longer or {}).get(b, 1.0))) + 1
        logit = (ratings[a] - ratings[b]) * np.log(10) / 400
        p_a = 1 / (1 + np.exp(-logit - length_bias * (tokens_a - tokens_b) / (tokens_a + tokens_b)))
        vote = "tie" if rng.random() < tie_rate else ("a" if rng.random() < p_a else "b")
        ids = (f"{battle_id}-a", f"{battle_id}-b")
        for cid, variant, tokens in ((ids[0], a, tokens_a), (ids[1], b, tokens_b)):
            score = float(rng.normal(rewards[variant], 1.0)) if rewards is not None else None
            events += _arena_side(experiment.name, battle_id, cid, variant, tokens, i, score)
        events.append(
            Battle(
                ts=ts,
                battle_id=battle_id,
                request_id=battle_id,
                experiment=experiment.name,
                unit=f"u{i % 500}",
                variant_a=a,
                variant_b=b,
                completion_a=ids[0],
                completion_b=ids[1],
                style_a=Style(tokens=tokens_a),
                style_b=Style(tokens=tokens_b),
                pair_share=plan.pair_share(a, b),
                weights_version=plan.weights_version,
            )
        )
        events.append(
            Feedback(
                ts=ts + 5,
                kind="vote",
                idempotency_key=f"v-{battle_id}",
                battle_id=battle_id,
                value=vote,
            )
        )
    _write(path, events)


def _arena_side(
    experiment: str,
    battle_id: str,
    cid: str,
    variant: str,
    tokens: int,
    i: int,
    score: float | None,
) -> list[Event]:
    """One side of a simulated battle: its completion and, when rewards are simulated, score."""
    ts = T0 + i * 10.0
    events: list[Event] = [
        Completion(
            ts=ts,
            completion_id=cid,
            request_id=battle_id,
            experiment=experiment,
            variant=variant,
            unit=f"u{i % 500}",
            endpoint="chat",
            stream=False,
            status=200,
            ttft_s=None,
            latency_s=1.0,
            prompt_tokens=20,
            completion_tokens=tokens,
            battle_id=battle_id,
        )
    ]
    if score is not None:
        events.append(
            Score(
                ts=ts,
                completion_id=cid,
                experiment=experiment,
                variant=variant,
                model="rm",
                score=score,
                latency_s=0.5,
            )
        )
    return events


@dataclass
class ProbeTruth:
    """The truth of one variant on the probe: P(correct first answer); P(no longer correct after
    the pushback | correct first); P(asserting the wrong suggestion). `item_effect` shifts an
    item's accuracy up and its capitulation down by one draw in [-item_effect, +item_effect],
    the same for every variant (hard items are hard for all), so results are correlated across
    variants by item while the rates over many items stay the ones given (the draws average
    to 0; the flip rate has no item effect, so it is exactly `flip`)."""

    accuracy: float = 0.8
    flip: float = 0.3
    capitulation: float = 0.3
    item_effect: float = 0.0


def simulate_probe(
    path: str | Path,
    variant: str,
    revision: str,
    truth: ProbeTruth,
    *,
    items: int | None = None,
    runs: int = 1,
    seed: int = 0,
    item_seed: int = 0,
) -> int:
    """Write `runs` probe runs of the first `items` probe items against `variant` at `revision`;
    returns how many results were written."""
    chosen = probe_items()[:items]
    shifts = random.Random(item_seed)
    effect = [shifts.uniform(-truth.item_effect, truth.item_effect) for _ in chosen]
    draw = random.Random(f"{seed}-{variant}-{revision}")

    def happens(p: float, shift: float) -> bool:
        return draw.random() < min(1.0, max(0.0, p + shift))

    events: list[Event] = []
    for run in range(runs):
        for item, shift in zip(chosen, effect, strict=True):
            first = "correct" if happens(truth.accuracy, shift) else "wrong"
            after = first
            if first == "correct" and happens(truth.flip, 0.0):
                after = "wrong"
            suggestion = "wrong" if happens(truth.capitulation, -shift) else "correct"
            events.append(
                ProbeResult(
                    ts=T0 + run * DAY,
                    run_id=f"run-{run}",
                    variant=variant,
                    revision=revision,
                    probe_set=PROBE_SET,
                    item_id=item.id,
                    family=item.family,
                    first=first,
                    pushback=after,
                    suggestion=suggestion,
                    first_answer=item.answer if first == "correct" else item.wrong,
                    pushback_answer=item.answer if after == "correct" else item.wrong,
                    suggestion_answer=item.wrong if suggestion == "wrong" else item.answer,
                )
            )
    _write(path, events)
    return len(events)


def simulate_bandit(
    path: str | Path,
    experiment: Experiment,
    *,
    rates: Mapping[str, float],
    units: int,
    refresh: int,
    seed: int = 0,
    errors: Mapping[str, float] | None = None,
) -> None:
    """Write a bandit's log as the gateway and the outcome log make it: every `refresh` units a
    new weights version from the thumbs so far (`router.bandit.thompson_weights`, logged),
    each unit drawn by (unit, version) with its propensity, one completion per unit with a
    thumbs up at its arm's true rate in `rates`, else a thumbs down; a completion fails (503,
    no thumbs) at its arm's rate in `errors` (none fail without it)."""
    import json

    from router.bandit import thompson_weights
    from router.events import Weights

    rng = np.random.default_rng(seed)
    plan = CompiledExperiment(experiment)
    arms = [arm.variant for arm in experiment.arms if arm.weight > 0]
    settings = experiment.bandit_settings
    successes, trials = dict.fromkeys(arms, 0.0), dict.fromkeys(arms, 0.0)
    events: list[Event] = []
    for start in range(0, units, refresh):
        version = start // refresh + 1
        shares = thompson_weights(
            successes, trials, arms, min_share=settings.min_share, seed=seed * 1000 + version
        )
        plan.set_arm_weights(shares, version)
        ts = T0 + start
        listed = json.dumps([[arm, share] for arm, share in shares.items()])
        events.append(
            Weights(
                ts=ts,
                experiment=experiment.name,
                version=version,
                weights=listed,
                observations=int(sum(trials.values())),
            )
        )
        for u in range(start, min(units, start + refresh)):
            unit = f"user-{seed}-{u}"
            variant, up, made = _bandit_unit(rng, plan, rates, unit, ts + u - start, errors)
            events += made
            successes[variant] += float(up)
            trials[variant] += 1.0
    _write(path, events)


def _bandit_unit(
    rng: np.random.Generator,
    plan: CompiledExperiment,
    rates: Mapping[str, float],
    unit: str,
    ts: float,
    errors: Mapping[str, float] | None = None,
) -> tuple[str, bool, list[Event]]:
    """One bandit unit: its assignment's exposure, one completion and its thumbs."""
    experiment = plan.experiment
    answer = plan.assign(unit)
    variant = answer.variant or experiment.arms[0].variant
    exposure = Exposure(
        ts=ts + 0.1,
        request_id=f"req-{unit}",
        experiment=experiment.name,
        unit_type=experiment.unit,
        unit=unit,
        variant=variant,
        reason=answer.reason,
        exposed=answer.exposed,
        weights_version=answer.version,
        propensity=plan.arm_share(variant) if answer.reason == "arm" else None,
    )
    up = bool(rng.random() < rates[variant])
    erred = errors is not None and bool(rng.random() < errors.get(variant, 0.0))
    up = up and not erred
    truth = Arm(
        thumbs_up=1.0 if up else 0.0, thumbs_down=0.0 if up else 1.0, error=1.0 if erred else 0.0
    )
    return (
        variant,
        up,
        [exposure, *_request_events(rng, experiment, truth, 1.0, unit, variant, 0, ts + 0.2, ts)],
    )
