"""The reward loop against a known truth: `python -m loadtests.reward_loop` (`make reward-loop`).

The whole path of "learning from votes", on the default config (`deploy/config.yaml`), through
the real app, with simulated voters whose preference is planted, so that what the trained judge
should reach is known:

1. **Serve** the default config, with its own outcome store under `--out`, and one variant
   added for step 6: `smollm2-friendly-best4`, the friendly variant (same engine, system prompt
   and sampling) answering with the best of 4 candidates. It is a prompt-only variant on the one
   engine, so it costs no memory; it does make the scorer run at normal priority (`auto`).
2. **Traffic:** `--battles` arena battles of the `smollm2-arena` experiment, each a question
   "What is the capital of C?" for a country C of `probe.facts`, from `--voters` simulated
   raters. **The planted rule:** a voter prefers the answer that names the capital asked for
   (`names_capital`). Where exactly one of the two answers names it (the rule *separates* the
   pair), the voter votes for it with probability `--p`, else for the other; where the rule
   does not separate them, the voter votes a or b at random. The votes go through
   `POST /v1/feedback` as a rater's would. The truth of every battle is kept in `battles.jsonl`.
3. **Export:** `arena-serve export-preferences` with `--heldout` of the voters held out (the
   split is by voter, by the exporter).
4. **Train:** `arena-serve train-reward` on the pairs, from the default scorer's base
   (`models/smollm2-reward`), with its defaults, writing each held-out pair's scores.
5. **Held-out accuracy against the ceiling.** On held-out pairs the rule separates, a judge that
   knew the rule would agree with the votes with probability p: p is the ceiling. The trained
   judge's accuracy there is reported with its 95 % interval (Wilson), beside the stand-in (the
   base before training), the longer answer and always-side-a, and the share of those pairs in
   which the judge ranks the rule's answer first (how well it learnt the rule itself).
6. **Live swap and best-of-n.** The config file is edited to point the scorer's `user_config`
   at the new model; `make serve`'s watcher deploys it live (the engine keeps running). Once new
   scores name the new model, `--bon-prompts` questions go to `smollm2-friendly-best4` and as
   many to `smollm2-friendly`: the share of answers that name the capital, for the best of 4
   picked by the trained judge against one answer (what the first candidate is, in
   distribution), each with its interval and their difference with Newcombe's interval.
7. **Report:** the experiment's report from the running app, which names the judge it scores
   with.

Prints a markdown section (figures, times, commands); `make reward-loop` records it in
docs/benchmarks.md. Everything it writes goes under `--out` (default `data/reward-loop/`), the
model to `models/reward-loop-judge`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import copy
import json
import os
import random
import re
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml
from tqdm import tqdm

from loadtests import serving_bench
from loadtests.processes import start, stop
from probe.facts import CAPITALS
from reward.pairwise import Accuracy, accuracy_of, wilson_interval
from serve.config import cpu_engine_dtype
from serve.deploy import free_port

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "deploy" / "config.yaml"
EXPERIMENT = "smollm2-arena"
FRIENDLY = "smollm2-friendly"
BEST = "smollm2-friendly-best4"
BEST_OF = 4
BASE = ROOT / "models" / "smollm2-reward"
JUDGE = ROOT / "models" / "reward-loop-judge"
READY_S = 900  # starting Ray, the engine and the scorer on 2 cores takes minutes
SWAP_S = 300
BON_CONCURRENCY = 8  # best-of-n waits on the scorer, at idle priority: leave it cycles


@dataclass(frozen=True, kw_only=True)
class Settings:
    battles: int
    voters: int
    p: float
    heldout: float
    max_tokens: int
    concurrency: int
    bon_prompts: int
    seed: int
    out: Path


# --- the known truth ------------------------------------------------------------------------


def question(country: str) -> str:
    return f"What is the capital of {country}?"


def names_capital(answer: str, capital: str, others: Sequence[str] = ()) -> bool:
    """Whether `answer` names the capital (or one of its other spellings) as a word of its own,
    ignoring case: "Paris.", "paris", "The capital is Paris" do; "Parisian" does not."""
    return any(
        re.search(rf"(?<!\w){re.escape(name)}(?!\w)", answer, re.IGNORECASE)
        for name in (capital, *others)
    )


def vote(ok_a: bool, ok_b: bool, p: float, rng: random.Random) -> tuple[str, str | None]:
    """A simulated voter's vote on answers a and b, and the side the rule prefers (None where
    it does not separate them): the rule's side with probability p, else the other side."""
    if ok_a == ok_b:
        return rng.choice("ab"), None
    preferred = "a" if ok_a else "b"
    other = "b" if preferred == "a" else "a"
    return (preferred if rng.random() < p else other), preferred


# --- the app ----------------------------------------------------------------------------------


def with_own_store(config: Path, store: Path) -> dict[str, Any]:
    """The config at `config` with its outcome store at `store`, and the scorer at idle CPU
    priority, as the default config runs it (a best-of-n variant would make `auto` normal):
    the traffic then runs as `make serve` runs it, the scorer taking only the cycles the engine
    leaves. (Shared with `loadtests.flywheel`.)"""
    document = yaml.safe_load(config.read_text())
    args = document["applications"][0]["args"]
    args["store_path"] = str(store)
    args["scorer"]["priority"] = "idle"
    return document


def loop_document(config: Path, store: Path) -> dict[str, Any]:
    """The default config with its own store (`with_own_store`) and the best-of-n variant of
    step 6."""
    document = with_own_store(config, store)
    variants = document["applications"][0]["args"]["variants"]
    [friendly] = [v for v in variants if v["name"] == FRIENDLY]
    variants.append({**friendly, "name": BEST, "best_of_n": BEST_OF})
    return document


def with_scorer_model(document: dict[str, Any], model: Path) -> dict[str, Any]:
    """`document` with the scorer's user_config naming `model`: a change Serve applies live."""
    changed = copy.deepcopy(document)
    deployments = changed["applications"][0].setdefault("deployments", [])
    deployments[:] = [d for d in deployments if d.get("name") != "reward-scorer"]
    deployments.append({"name": "reward-scorer", "user_config": {"model": str(model)}})
    return changed


def write_config(path: Path, document: dict[str, Any]) -> None:
    temporary = path.with_suffix(".tmp")
    temporary.write_text(yaml.safe_dump(document, sort_keys=False))
    os.replace(temporary, path)  # the watcher never reads half a file


def _serving(base: str) -> bool:
    """Whether the engine answers (a one-token direct call: it keeps no text, joins no
    experiment)."""
    ask = {"model": FRIENDLY, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1}
    with contextlib.suppress(httpx.HTTPError):
        return httpx.post(f"{base}/v1/chat/completions", json=ask, timeout=60).status_code == 200
    return False


@contextlib.contextmanager
def serving(config: Path, log: Path) -> Iterator[str]:
    """`arena-serve serve CONFIG` (what `make serve` runs) in this session; its base URL once
    it serves the arena; stopped, with everything it started, at the end."""
    port = free_port()
    with log.open("w") as out:
        child = start(
            [sys.executable, "-m", "serve.cli", "serve", str(config), "--port", str(port)],
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + READY_S
        while not _serving(base):
            if child.poll() is not None:
                raise RuntimeError(f"arena-serve exited with {child.returncode}; see {log}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"arena-serve not ready after {READY_S} s; see {log}")
            time.sleep(2)
        yield base
    finally:
        stop(child)


# --- step 2: battles and votes ----------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Battle:
    battle_id: str
    voter: str
    country: str
    ok_a: bool
    ok_b: bool
    vote: str
    preferred: str | None  # the rule's side; None where it does not separate the answers
    variant_a: str  # who answered, as the vote revealed
    variant_b: str


async def one_battle(
    client: httpx.AsyncClient,
    base: str,
    i: int,
    settings: Settings,
    rng: random.Random,
    experiment: str = EXPERIMENT,
) -> Battle:
    country, capital, others = rng.choice(CAPITALS)
    voter = f"voter-{rng.randrange(settings.voters)}"
    body = {
        "model": experiment,
        "user": voter,
        "messages": [{"role": "user", "content": question(country)}],
        "n": 2,
        "max_tokens": settings.max_tokens,
    }
    answer = (await client.post(f"{base}/v1/chat/completions", json=body)).raise_for_status()
    battle = answer.json()
    texts = [c["message"]["content"] or "" for c in battle["choices"]]
    ok_a, ok_b = (names_capital(text, capital, others) for text in texts)
    side, preferred = vote(ok_a, ok_b, settings.p, rng)
    battle_id = battle["arena"]["battle_id"]
    feedback = {
        "kind": "vote",
        "battle_id": battle_id,
        "value": side,
        "user": voter,
        "idempotency_key": f"{experiment}-{i}",
    }
    voted = (await client.post(f"{base}/v1/feedback", json=feedback)).raise_for_status()
    reveal = voted.json()["reveal"]
    return Battle(
        battle_id=battle_id,
        voter=voter,
        country=country,
        ok_a=ok_a,
        ok_b=ok_b,
        vote=side,
        preferred=preferred,
        variant_a=reveal["a"],
        variant_b=reveal["b"],
    )


async def _bounded(
    count: int, concurrency: int, job: Callable[[httpx.AsyncClient, int], Any], what: str
) -> list[Any]:
    """`job(client, i)` for i < count, at most `concurrency` at once, with a progress bar."""
    gate = asyncio.Semaphore(concurrency)
    bar = tqdm(total=count, desc=what, unit="req", file=sys.stderr)
    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(timeout=300, limits=limits) as client:

        async def one(i: int) -> Any:
            async with gate:
                try:
                    return await job(client, i)
                finally:
                    bar.update()

        try:
            return list(await asyncio.gather(*(one(i) for i in range(count))))
        finally:
            bar.close()


def run_battles(base: str, settings: Settings, experiment: str = EXPERIMENT) -> list[Battle]:
    """Every battle voted; each one's randomness from its own seeded stream, so the same
    settings draw the same countries, voters and coin flips whatever the completion order."""

    async def job(client: httpx.AsyncClient, i: int) -> Battle:
        rng = random.Random(f"{settings.seed}-{i}")
        return await one_battle(client, base, i, settings, rng, experiment)

    return asyncio.run(_bounded(settings.battles, settings.concurrency, job, "battles"))


def wait_for_votes(
    store: Path, count: int, experiment: str = EXPERIMENT, timeout_s: float = 120
) -> None:
    """The votes and the answers' text are written off the response path: wait for them."""
    deadline = time.monotonic() + timeout_s
    while True:
        with contextlib.closing(sqlite3.connect(store)) as db:
            votes = db.execute(
                "SELECT COUNT(*) FROM feedback JOIN battles USING (battle_id)"
                " WHERE kind = 'vote' AND experiment = ?",
                (experiment,),
            ).fetchone()[0]
            texts = db.execute(
                "SELECT COUNT(*) FROM transcripts WHERE experiment = ?", (experiment,)
            ).fetchone()[0]
        if votes >= count and texts >= 2 * count:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"{votes} votes and {texts} answers' text of {count} battles kept")
        time.sleep(1)


# --- steps 3 to 5: export, train, the held-out figures ----------------------------------------


def arena_serve(*args: str) -> float:
    """Run an `arena-serve` command in a child process; its wall time (it must succeed)."""
    began = time.monotonic()
    # Its output goes to stderr: stdout is the markdown section.
    subprocess.run(
        [sys.executable, "-m", "serve.cli", *args], cwd=ROOT, check=True, stdout=sys.stderr
    )
    return time.monotonic() - began


def heldout_figures(prefs: Path, scores: Path, battles: Sequence[Battle], p: float) -> dict:
    """Accuracy on the held-out pairs the rule separates, for the judge and the baselines."""
    truth = {b.battle_id: b for b in battles}
    pairs = {i: json.loads(line) for i, line in enumerate(prefs.read_text().splitlines(), 1)}
    wins: dict[str, list[float]] = {"model": [], "stand_in": [], "length": [], "side_a": []}
    rule = []
    heldout = 0
    for row in map(json.loads, scores.read_text().splitlines()):
        heldout += 1
        pair = pairs[row["line"]]
        battle = truth[pair["battle_id"]]
        if battle.preferred is None:
            continue
        lengths = len(pair["chosen"][-1]["content"]), len(pair["rejected"][-1]["content"])
        wins["model"].append(_win(row["chosen"], row["rejected"]))
        wins["stand_in"].append(_win(row["stand_in_chosen"], row["stand_in_rejected"]))
        wins["length"].append(_win(*lengths))
        wins["side_a"].append(float(pair["chosen_side"] == "a"))
        followed = pair["chosen_side"] == battle.preferred  # the vote followed the rule
        rule.append(wins["model"][-1] if followed else 1 - wins["model"][-1])
    figures = {name: _share(values).as_dict() for name, values in wins.items()}
    return {
        "heldout_pairs": heldout,
        "separated": len(rule),
        "ceiling": p,
        "accuracy": figures,
        "ranks_the_rules_answer_first": _share(rule).as_dict(),
    }


def _win(chosen: float, rejected: float) -> float:
    return 1.0 if chosen > rejected else 0.5 if chosen == rejected else 0.0


def _share(values: Sequence[float]) -> Accuracy:
    wins = sum(v == 1.0 for v in values)
    ties = sum(v == 0.5 for v in values)
    return accuracy_of(wins, ties, len(values))


# --- step 6: the live swap, and best-of-n ----------------------------------------------------


def wait_for_swap(base: str, store: Path, model: str) -> float:
    """Seconds until a completion served now is scored by `model` (scores land off the
    response path, the swap applies through Serve's reconfigure)."""
    began = time.monotonic()
    ask = {"model": FRIENDLY, "messages": [{"role": "user", "content": question("Peru")}]}
    while time.monotonic() - began < SWAP_S:
        answer = httpx.post(f"{base}/v1/chat/completions", json=ask, timeout=120).json()
        for _ in range(30):
            with contextlib.closing(sqlite3.connect(store)) as db:
                row = db.execute(
                    "SELECT model FROM scores WHERE completion_id = ?", (answer["id"],)
                ).fetchone()
            if row is not None:
                break
            time.sleep(1)
        if row is not None and row[0] == model:
            return time.monotonic() - began
        time.sleep(2)
    raise RuntimeError(f"the scorer did not serve {model} within {SWAP_S} s")


def best_of_n(base: str, settings: Settings) -> dict[str, Any]:
    """The share of answers that name the capital: best of 4 by the judge, and one answer."""

    async def job(client: httpx.AsyncClient, i: int) -> tuple[str, bool, str | None, bool]:
        variant = BEST if i % 2 == 0 else FRIENDLY
        country, capital, others = random.Random(f"bon-{settings.seed}-{i // 2}").choice(CAPITALS)
        body = {
            "model": variant,
            "messages": [{"role": "user", "content": question(country)}],
            "max_tokens": settings.max_tokens,
        }
        answer = (await client.post(f"{base}/v1/chat/completions", json=body)).raise_for_status()
        data = answer.json()
        text = data["choices"][0]["message"]["content"] or ""
        reward = data.get("reward") or {}
        ranked = reward.get("score") is not None
        return variant, names_capital(text, capital, others), reward.get("model"), ranked

    runs = asyncio.run(_bounded(2 * settings.bon_prompts, BON_CONCURRENCY, job, "best-of-n"))
    # An answer the scorer could not rank in time is the first candidate: counted apart, and
    # in the share as served.
    served = [ok for variant, ok, _, _ in runs if variant == BEST]
    best = [ok for variant, ok, _, ranked in runs if variant == BEST and ranked]
    single = [ok for variant, ok, _, _ in runs if variant == FRIENDLY]
    judges = sorted({judge for variant, _, judge, ranked in runs if variant == BEST and ranked})
    return {
        "best_of_4": _share([float(ok) for ok in best]).as_dict(),
        "best_of_4_as_served": _share([float(ok) for ok in served]).as_dict(),
        "one_answer": _share([float(ok) for ok in single]).as_dict(),
        "difference": newcombe(sum(best), len(best), sum(single), len(single)),
        "judges": judges,
        "unranked": sum(variant == BEST and not ranked for variant, _, _, ranked in runs),
    }


def newcombe(x1: int, n1: int, x2: int, n2: int) -> dict[str, float]:
    """p1 - p2 with Newcombe's hybrid score interval (method 10), from the two Wilson
    intervals."""
    p1, p2 = x1 / n1, x2 / n2
    low1, high1 = wilson_interval(p1, n1)
    low2, high2 = wilson_interval(p2, n2)
    low = p1 - p2 - ((p1 - low1) ** 2 + (high2 - p2) ** 2) ** 0.5
    high = p1 - p2 + ((high1 - p1) ** 2 + (p2 - low2) ** 2) ** 0.5
    return {"difference": p1 - p2, "low": low, "high": high}


# --- the run ------------------------------------------------------------------------------------


def _say(text: str) -> None:
    print(f"[reward-loop] {text}", file=sys.stderr, flush=True)


def run(settings: Settings) -> dict[str, Any]:
    """Steps 1 to 7; the figures and the time each step took."""
    out = settings.out
    out.mkdir(parents=True, exist_ok=True)
    store, config = out / "outcomes.db", out / "config.yaml"
    for stale in out.glob("outcomes.db*"):
        stale.unlink()
    document = loop_document(CONFIG, store)
    write_config(config, document)
    times: dict[str, float] = {}
    began = time.monotonic()
    with serving(config, out / "serve.log") as base:
        times["start"] = time.monotonic() - began
        _say(f"serving on {base} after {times['start']:.0f} s")
        battles, times["battles"] = _timed(lambda: run_battles(base, settings))
        (out / "battles.jsonl").write_text("".join(json.dumps(asdict(b)) + "\n" for b in battles))
        wait_for_votes(store, len(battles))
        prefs, scores = out / "prefs.jsonl", out / "heldout-scores.jsonl"
        times["export"] = arena_serve(
            *("export-preferences", "--experiment", EXPERIMENT, "--store", str(store)),
            *("--out", str(prefs), "--heldout", str(settings.heldout)),
        )
        times["train"] = arena_serve(
            *("train-reward", "--data", str(prefs), "--base", str(BASE), "--out", str(JUDGE)),
            *("--force", "--heldout-scores", str(scores)),
        )
        figures = heldout_figures(prefs, scores, battles, settings.p)
        write_config(config, with_scorer_model(document, JUDGE))
        times["swap"] = wait_for_swap(base, store, JUDGE.name)
        bon, times["best_of_n"] = _timed(lambda: best_of_n(base, settings))
        report = httpx.get(f"{base}/v1/experiments/{EXPERIMENT}/report", timeout=300).json()
    times["total"] = time.monotonic() - began
    card = json.loads((JUDGE / "model_card.json").read_text())
    return {
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(settings).items()},
        "battles": _battle_counts(battles),
        "heldout": figures,
        "best_of_n": bon,
        "training": card["training"],
        "card_heldout_accuracy": card["heldout_accuracy"],
        "report": {"reward_model": report.get("reward_model"), "verdict": report.get("verdict")},
        "times_s": {k: round(v, 1) for k, v in times.items()},
    }


def _timed(job: Callable[[], Any]) -> tuple[Any, float]:
    began = time.monotonic()
    return job(), time.monotonic() - began


def _battle_counts(battles: Sequence[Battle]) -> dict[str, Any]:
    separated = [b for b in battles if b.preferred is not None]
    return {
        "battles": len(battles),
        "voters": len({b.voter for b in battles}),
        "separated": len(separated),
        "votes_following_the_rule": sum(b.vote == b.preferred for b in separated),
        "answer_a_names_capital": sum(b.ok_a for b in battles),
        "answer_b_names_capital": sum(b.ok_b for b in battles),
    }


def _interval(entry: dict[str, Any]) -> str:
    if entry["accuracy"] is None:
        return "n/a"
    return f"{entry['accuracy']:.3f} [{entry['low']:.3f}, {entry['high']:.3f}] (n={entry['n']})"


def markdown(result: dict[str, Any], command: str) -> str:
    """The section docs/benchmarks.md gets."""
    held, bon, times = result["heldout"], result["best_of_n"], result["times_s"]
    counts, training = result["battles"], result["training"]
    ceiling = held["ceiling"]
    model = held["accuracy"]["model"]
    covers = model["low"] <= ceiling <= model["high"]
    within = model["accuracy"] >= ceiling - 0.05
    diff = bon["difference"]
    lines = [
        f"Machine: {_machine()}. Command: `{command}`.",
        "",
        f"{counts['battles']} battles from {counts['voters']} simulated voters through the app; "
        f"the rule separated {counts['separated']} of them, and "
        f"{counts['votes_following_the_rule']} of those votes followed it (p = {ceiling}).",
        "",
        f"Held-out accuracy on the {held['separated']} held-out pairs the rule separates (of "
        f"{held['heldout_pairs']} held out; the ceiling is p = {ceiling}):",
        "",
        "| judge | accuracy [95 % interval] |",
        "|---|---|",
        f"| trained (`{JUDGE.name}`) | {_interval(model)} |",
        f"| stand-in (`{BASE.name}`, untrained head) | {_interval(held['accuracy']['stand_in'])} |",
        f"| the longer answer | {_interval(held['accuracy']['length'])} |",
        f"| always side a | {_interval(held['accuracy']['side_a'])} |",
        "",
        f"The interval covers the ceiling: {'yes' if covers else 'no'}; the point is at least "
        f"the ceiling minus 5 points: {'yes' if within else 'no'}. The judge ranks the rule's "
        f"answer first in {_interval(held['ranks_the_rules_answer_first'])} of those pairs.",
        "",
        f"Best-of-{BEST_OF} with the trained judge, live (scores named {bon['judges']}): the "
        f"answer names the capital in {_interval(bon['best_of_4'])}, against "
        f"{_interval(bon['one_answer'])} for one answer; difference {diff['difference']:+.3f} "
        f"[{diff['low']:+.3f}, {diff['high']:+.3f}] (Newcombe). {bon['unranked']} best-of-n "
        "answers the scorer could not rank in time (the first candidate, by design) are left "
        f"out of that share; as served, counting them: {_interval(bon['best_of_4_as_served'])}.",
        "",
        f"Report after the swap: `reward_model` = {result['report']['reward_model']!r}.",
        "",
        "| step | seconds |",
        "|---|---:|",
        *(f"| {step} | {seconds:.0f} |" for step, seconds in times.items()),
        "",
        f"Training: feature caching {training['feature_caching_s']:.0f} s, epochs "
        f"{training['training_s']:.0f} s ({training['epochs_run']} run, best "
        f"{training['best_epoch']}), peak memory {training['peak_rss_mib']:.0f} MiB.",
    ]
    return "\n".join(lines) + "\n"


def _machine() -> str:
    return f"{serving_bench.machine()}, engines in {cpu_engine_dtype()}"


def add_voter_arguments(parser: argparse.ArgumentParser, battles: int, voters: int) -> None:
    """The simulated voters' options (shared with `loadtests.flywheel`)."""
    add = parser.add_argument
    add("--battles", type=int, default=battles, help="arena battles voted (%(default)s)")
    add("--voters", type=int, default=voters, help="simulated voters (%(default)s)")
    add("--p", type=float, default=0.8, help="how often a voter follows the rule (%(default)s)")
    add("--max-tokens", type=int, default=24, help="tokens an answer may take (%(default)s)")
    add("--concurrency", type=int, default=32, help="requests in flight (%(default)s)")
    add("--seed", type=int, default=0)


def run_main(
    parser: argparse.ArgumentParser,
    settings_type: type,
    run: Callable[[Any], dict[str, Any]],
    markdown: Callable[[dict[str, Any], str], str],
    argv: list[str] | None,
) -> int:
    """Parse, run, keep `result.json` under the settings' `out`, print the markdown section."""
    args = parser.parse_args(argv)
    if not 0.5 < args.p <= 1:
        raise SystemExit("--p: a voter follows the rule more often than not: in (0.5, 1]")
    settings = settings_type(**vars(args))
    result = run(settings)
    (settings.out / "result.json").write_text(json.dumps(result, indent=2) + "\n")
    command = f"python -m {parser.prog.split()[-1]} " + " ".join(argv or sys.argv[1:])
    print(markdown(result, command.strip()), end="")
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m loadtests.reward_loop",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_voter_arguments(parser, battles=2200, voters=440)
    add = parser.add_argument
    add("--heldout", type=float, default=0.5, help="share of voters held out (%(default)s)")
    add("--bon-prompts", type=int, default=200, help="best-of-n questions (%(default)s)")
    add("--out", type=Path, default=ROOT / "data" / "reward-loop")
    return parser


def main(argv: list[str] | None = None) -> int:
    return run_main(_parser(), Settings, run, markdown, argv)


if __name__ == "__main__":
    sys.exit(main())
