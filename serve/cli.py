"""`arena-serve`: the command line; `arena-serve serve deploy/config.yaml` is `make serve`.

`serve` reads the same Ray Serve config file that `serve deploy` takes, starts a local Ray
cluster with enough logical CPUs for every engine replica, deploys the file, prints a ready line
with an example call, and then watches the file: save an edit and it is deployed, experiments
live (engines untouched), a config that does not validate refused with the field named. Ctrl-C
or SIGTERM drains the app (no new completions; those in flight finish and are logged; the log
commits) and shuts it down. `check-config` validates a file without starting anything.
`report` analyses an experiment; `export-preferences` writes its judgements as training data
(where the store kept their text), `train-reward` trains a reward model on them,
`train-variant` a LoRA adapter (DPO) that an adapter variant serves, `rescore`
scores the kept history with the model the scorer serves, and `purge` deletes kept text past
its retention.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import getpass
import json
import math
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import yaml

from router.db import exists, open_errors, redact
from router.experiment import check_live_change
from serve.config import PROJECT_ROOT, ConfigError, ServeFile, variant_revisions
from serve.priority import RENICE_EVERY_S, WORKER_NICENESS, yield_to_engines

DEFAULT_CONFIG = PROJECT_ROOT / "deploy" / "config.yaml"


def read_serve_file(path: Path, check_model_files: bool | None = None) -> ServeFile:
    """Read and validate a Serve config file that runs arena-serve (`ConfigError` if not)."""
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from None
    return ServeFile.from_document(document, str(path), check_model_files)


def example_call(host: str, port: int, model: str, session: bool = False, key: bool = False) -> str:
    """A curl that works against the served config: the unit its experiment assigns (`user`,
    or an X-Session-Id header), and an API key's header where keys are set."""
    headers = "-H 'Content-Type: application/json'"
    if session:
        headers += " -H 'X-Session-Id: session-1'"
    if key:
        headers += " -H 'Authorization: Bearer YOUR_KEY'"
    return (
        f"curl -s http://{host}:{port}/v1/chat/completions {headers} "
        f'-d \'{{"model": "{model}", "user": "alice", '
        '"messages": [{"role": "user", "content": "What is the capital of France?"}]}\''
    )


def say(message: str) -> None:
    print(f"[serve] {message}", flush=True)


def _with_http(document: dict[str, Any], host: str, port: int) -> dict[str, Any]:
    document = copy.deepcopy(document)
    document["http_options"] = {**(document.get("http_options") or {}), "host": host, "port": port}
    return document


def serve_foreground(config_path: Path, host: str | None, port: int | None) -> int:
    try:
        served = read_serve_file(config_path)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    http = served.document.get("http_options") or {}
    host = host or http.get("host", "127.0.0.1")
    port = port if port is not None else int(http.get("port", 8000))

    from serve.deploy import apply, drain_and_shutdown, start_serve, use_throughput_mode

    use_throughput_mode()  # before Ray starts: its processes read it
    for name, value in WORKER_NICENESS.items():  # engines at vLLM's own server's priority
        os.environ.setdefault(name, value)
    import ray
    from ray import serve

    cpus = max(os.cpu_count() or 1, math.ceil(served.app.logical_cpus_needed))
    engines = sum(v.engine is None for v in served.app.variants)
    say(
        f"starting Ray ({cpus} logical CPUs), {engines} engine{'s' if engines > 1 else ''} for "
        f"{len(served.app.variants)} variants"
    )
    started = time.perf_counter()
    # Until the app is up, SIGTERM stops the start as Ctrl-C does: Serve and Ray are shut down
    # (a killed Ray would leave vLLM's engine processes running).
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    # Replica logs go to Ray's log folder, not this terminal; deploy errors still show here.
    # A cluster of its own ("local"), never one that happens to run on this machine already.
    ray.init(
        address="local",
        num_cpus=cpus,
        include_dashboard=False,
        logging_level="WARNING",
        log_to_driver=False,
    )
    try:
        client = start_serve(_with_http(served.document, host, port))
        apply(client, _with_http(served.document, host, port), progress=say)
    except (KeyboardInterrupt, Exception) as exc:  # DeployError and Ray's own refusals
        if isinstance(exc, KeyboardInterrupt):
            say("interrupted while starting: shutting down")
        else:
            say(f"deploy failed:\n{exc}")
        serve.shutdown()
        ray.shutdown()
        return 130 if isinstance(exc, KeyboardInterrupt) else 1
    yield_to_engines()
    say(_ready_line(served, config_path, host, port, time.perf_counter() - started))
    served = _serve_until_stopped(client, config_path, served, host, port)
    say("draining: no new completions; finishing those in flight and committing the log")
    try:
        drain_and_shutdown(client, _with_http(served.document, host, port), progress=say)
    except KeyboardInterrupt:  # a second Ctrl-C: stop now
        say("interrupted: shutting down without draining")
        serve.shutdown()
    ray.shutdown()
    return 0


def _ready_line(served: ServeFile, config_path: Path, host: str, port: int, took_s: float) -> str:
    experiments = served.gateway.experiments
    model = experiments[0].name if experiments else served.app.variants[0].name
    session = bool(experiments) and experiments[0].unit == "session"
    keyed = bool(served.gateway.auth.keys)
    return (
        f"ready in {took_s:.0f} s on http://{host}:{port} "
        f"(Ctrl-C stops; edits to {config_path} apply live); the UI at "
        f"http://{host}:{port}/ui/. Try:\n  "
        f"{example_call(host, port, model, session, keyed)}"
    )


def _serve_until_stopped(
    client: Any, config_path: Path, served: ServeFile, host: str, port: int
) -> ServeFile:
    """Serve until Ctrl-C or SIGTERM, redeploying the config file whenever it changes; the
    config last deployed."""
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    seen = config_path.stat().st_mtime
    reniced = time.monotonic()
    with contextlib.suppress(KeyboardInterrupt):
        while not stop.wait(1.0):
            if time.monotonic() - reniced >= RENICE_EVERY_S:  # Ray processes started since
                yield_to_engines()
                reniced = time.monotonic()
            with contextlib.suppress(OSError):
                mtime = config_path.stat().st_mtime
                if mtime != seen:
                    seen = mtime
                    served = redeploy(client, config_path, served, host, port)
    return served


def redeploy(client: Any, path: Path, current: ServeFile, host: str, port: int) -> ServeFile:
    """Deploy an edited config file, or refuse it (naming the field) and keep the running one."""
    from serve.deploy import apply

    try:
        edited = read_serve_file(path)
    except ConfigError as exc:
        say(f"{path} changed but is not valid; still serving the previous config:\n{exc}")
        return current
    if edited.document == current.document:
        return current
    try:
        check_live_change(current.gateway.experiments, edited.gateway.experiments)
    except ValueError as exc:
        say(f"{path} changed but is refused; still serving the previous config:\n{exc}")
        return current
    unchanged = {k: v for k, v in current.application.items() if k != "deployments"}
    if {k: v for k, v in edited.application.items() if k != "deployments"} == unchanged:
        say("applying the edit live: experiments, scorer model (engines keep running)")
    else:
        say("the application's args changed: Ray Serve rebuilds the application, engines included")
    try:
        apply(client, _with_http(edited.document, host, port), progress=say)
    except Exception as exc:  # DeployError, or Ray's own refusal: keep serving what runs
        say(f"deploy failed; still serving the previous config:\n{exc}")
        return current
    say(f"applied {path}: experiments {', '.join(e.name for e in edited.gateway.experiments)}")
    return edited


def flattering_judge_note(served: ServeFile) -> str | None:
    """A note where a `reward_score` guardrail is judged by a reward model whose flattery check
    (`arena-serve judge-check`, `train-reward`) found it preferring capitulation."""
    from router.analysis.probe import judge_check

    guarded = [
        e.name
        for e in served.gateway.experiments
        if any(g.metric == "reward_score" for g in e.guardrails)
    ]
    model = served.scorer_model
    if not guarded or model is None:
        return None
    check = judge_check(model.parent, model.name)
    if check is None:
        return (
            f"note: the reward model {model.name} guarding {', '.join(guarded)} (reward_score) "
            f"has not been checked for flattery: arena-serve judge-check --model {model}"
        )
    if not check.flagged:
        return None
    return (
        f"note: the reward model {model.name} guarding {', '.join(guarded)} (reward_score) scores "
        f"capitulation above a firm correct answer in {check.flattery_rate.value:.0%} of probe "
        "pairs: it rewards flattery, so that guardrail cannot rule out sycophancy"
    )


def report_command(args: argparse.Namespace) -> int:
    """Print the experiment's report and write its plots and HTML page."""
    try:
        served = read_serve_file(args.config, check_model_files=False)  # logs need no models
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    if args.out is not None and args.out.exists() and not args.out.is_dir():
        print(f"--out {args.out}: exists and is not a folder", file=sys.stderr)
        return 2
    experiments = {e.name: e for e in served.gateway.experiments}
    experiment = experiments.get(args.experiment)
    if experiment is None:
        known = ", ".join(experiments) or "none"
        print(
            f"no experiment {args.experiment!r} in {args.config} (known: {known})", file=sys.stderr
        )
        return 2
    store = _readable(args.store or served.app.store_location)
    if isinstance(store, int):
        return store
    from router.analysis import build_report
    from serve.report import print_report, write_html, write_plots

    try:
        report = build_report(
            store,
            experiment,
            reps=args.reps,
            progress=not args.json,
            revisions=variant_revisions(served.app.variants),
            models_dir=served.scorer_model.parent if served.scorer_model else None,
        )
    except open_errors() as exc:
        print(f"{redact(store)} is not an arena-serve outcome log ({exc})", file=sys.stderr)
        return 2
    if args.json:
        print(report.model_dump_json(indent=2))
        return 0
    print_report(report)
    folder = args.out or PROJECT_ROOT / "reports" / experiment.name
    plots = write_plots(report, folder)
    page = write_html(report, plots, folder)
    print(f"wrote {', '.join(str(p) for p in [*plots, page])}")
    return 0


def _store_of(args: argparse.Namespace) -> tuple[str, ServeFile | None] | int:
    """The outcome log a command reads: `--store`, else the config's (exit status 2 on a bad
    config)."""
    if args.store is not None:
        return args.store, None
    try:
        served = read_serve_file(args.config, check_model_files=False)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    return served.app.store_location, served


def _readable(store: str) -> str | int:
    """`store` where it may be read: a SQLite file that exists, or a PostgreSQL DSN; else exit
    status 2, saying why."""
    try:
        if exists(store):
            return store
    except ValueError as exc:  # env:NAME unset
        print(exc, file=sys.stderr)
        return 2
    print(f"no outcome log at {store}", file=sys.stderr)
    return 2


def export_command(args: argparse.Namespace) -> int:
    """Write an experiment's preferences as TRL conversational JSONL (pairs, and thumbs)."""
    from router.preferences import ExportError, export_preferences, unpaired_path, write_jsonl

    found = _store_of(args)
    if isinstance(found, int):
        return found
    store, served = found
    if served is not None and not served.app.store.keep_text:
        print(
            f"text retention is off in {args.config} (store.keep_text): the store keeps no "
            "prompt or answer text to export. Set `store: {keep_text: true}` in the app's args "
            "and collect judgements from then on (or pass --store to export text kept earlier).",
            file=sys.stderr,
        )
        return 2
    try:
        exported = export_preferences(store, args.experiment, args.heldout)
    except ExportError as exc:
        print(exc, file=sys.stderr)
        return 2
    write_jsonl(exported.pairs, args.out)
    write_jsonl(exported.unpaired, unpaired_path(args.out))
    print(
        f"wrote {len(exported.pairs)} pairs to {args.out} and {len(exported.unpaired)} thumbs "
        f"to {unpaired_path(args.out)}"
    )
    print(json.dumps(exported.summary(), indent=2))
    return 0


def purge_command(args: argparse.Namespace) -> int:
    """Delete kept text older than --older-than days (default: the config's retention); with
    --events, every event that old (the log's retention)."""
    from router.store import OutcomeStore

    found = _store_of(args)
    if isinstance(found, int):
        return found
    store, served = found
    days = args.older_than
    if days is None and args.events:
        print("--events deletes records: say how old with --older-than DAYS", file=sys.stderr)
        return 2
    if days is None:
        if served is None:
            print("--older-than DAYS is needed with --store", file=sys.stderr)
            return 2
        days = served.app.store.retention_days
    if isinstance(_readable(store), int):
        return 2
    try:
        opened = OutcomeStore(store)
    except open_errors() as exc:
        print(f"{redact(store)} is not an arena-serve outcome log ({exc})", file=sys.stderr)
        return 2
    try:
        if args.events:
            events = opened.purge_events(time.time() - days * 86400)
        else:
            gone = opened.purge_text(time.time() - days * 86400)
    finally:
        opened.close()
    if args.events:
        counts = ", ".join(f"{table} {rows}" for table, rows in events.items())
        print(f"purged events older than {days:g} days from {redact(store)}: {counts}")
    else:
        print(
            f"purged the text of {gone} completions older than {days:g} days from {redact(store)}"
        )
    return 0


def parquet_command(args: argparse.Namespace) -> int:
    """Write the outcome log as Parquet files, one per table, people's ids hashed."""
    from tqdm import tqdm

    from serve.warehouse import export_parquet

    found = _store_of(args)
    if isinstance(found, int):
        return found
    store = _readable(found[0])
    if isinstance(store, int):
        return store
    bar = tqdm(unit=" rows", disable=None)

    def progress(table: str, rows: int) -> None:
        bar.set_description(table)
        bar.n = rows
        bar.refresh()

    try:
        written = export_parquet(
            store, args.out, raw_ids=args.raw_ids, with_text=args.with_text, progress=progress
        )
    except open_errors() as exc:
        bar.close()
        print(f"{redact(store)} is not an arena-serve outcome log ({exc})", file=sys.stderr)
        return 2
    bar.close()
    for table, rows in written.items():
        print(f"{args.out / (table + '.parquet')}: {rows} rows")
    return 0


def store_command(args: argparse.Namespace) -> int:
    """`store migrate --to DSN`: copy the outcome log (the config's, or --store) into an empty
    store, PostgreSQL most often, with a progress bar."""
    from tqdm import tqdm

    from router.store import copy_store

    found = _store_of(args)
    if isinstance(found, int):
        return found
    source = _readable(found[0])
    if isinstance(source, int):
        return source
    bar = tqdm(unit=" rows", desc="copying", disable=None)

    def progress(table: str, rows: int) -> None:
        bar.set_description(f"copying {table}")
        bar.n = rows
        bar.refresh()

    try:
        copied = copy_store(source, args.to, progress=progress)
    except open_errors() as exc:
        bar.close()
        print(f"not copied: {exc}", file=sys.stderr)
        return 2
    bar.close()
    total = sum(copied.values())
    print(f"copied {total} rows from {redact(source)} to {redact(args.to)}:")
    for table, rows in copied.items():
        print(f"  {table}: {rows}")
    print("point the app at it with `store: {url: ...}` in its args (or store: env:NAME)")
    return 0


def rescore_command(args: argparse.Namespace) -> int:
    """Score an experiment's kept history with the model the config's scorer serves."""
    try:
        served = read_serve_file(args.config)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    scorer, model = served.app.scorer, served.scorer_model
    if scorer is None or model is None:
        print(f"{args.config} configures no reward scorer (args.scorer)", file=sys.stderr)
        return 2
    store = _readable(args.store or served.app.store_location)
    if isinstance(store, int):
        return store
    from reward.rescore import rescore
    from reward.scorer import RewardScorer

    runtime = RewardScorer(
        model,
        device=scorer.device,
        dtype=scorer.dtype,
        kernels=scorer.kernels,
        max_length=scorer.max_length,
    )
    counts = rescore(store, args.experiment, runtime, model.name, force=args.force)
    print(f"scored {counts['scored']} completions of {args.experiment} with {model.name}")
    print(json.dumps(dict(sorted(counts.items())), indent=2))
    return 0


def _days(text: str) -> float:
    value = float(text)
    if not (value >= 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError("a number of days, 0 or more")
    return value


def _share(text: str) -> float:
    value = float(text)
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError("a fraction in [0, 1)")
    return value


def _replicates(text: str) -> int:
    value = int(text)
    if value < 2:
        raise argparse.ArgumentTypeError("an interval needs at least 2 replicates")
    return value


STORE_HELP = "the outcome log: a SQLite file, a PostgreSQL DSN or env:NAME (default: the config's)"


def _add_data_commands(commands: Any) -> None:
    """The commands that read the outcome log: report, export-preferences, purge."""
    report = commands.add_parser("report", help="analyse an experiment from the outcome log")
    report.add_argument("--experiment", required=True, help="the experiment's name")
    report.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    report.add_argument("--store", help=STORE_HELP)
    report.add_argument(
        "--out", type=Path, help="folder for plots and HTML (default: reports/NAME)"
    )
    report.add_argument(
        "--reps", type=_replicates, default=200, help="bootstrap replicates (at least 2)"
    )
    report.add_argument("--json", action="store_true", help="print the JSON report instead")
    export = commands.add_parser(
        "export-preferences",
        help="write an experiment's votes, regenerations and thumbs as TRL preference JSONL",
    )
    export.add_argument("--experiment", required=True, help="the experiment's name")
    export.add_argument(
        "--out", type=Path, required=True, help="pairs file (thumbs go to NAME.unpaired.jsonl)"
    )
    export.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    export.add_argument("--store", help=STORE_HELP)
    export.add_argument(
        "--heldout", type=_share, default=0.2, help="share of voters held out (default 0.2)"
    )
    from reward.train import HELP, add_arguments

    add_arguments(commands.add_parser("train-reward", help=HELP))
    from adapters import dpo

    dpo.add_arguments(
        commands.add_parser(
            "train-variant",
            help="train a LoRA adapter by DPO on an export-preferences pairs file (an adapter "
            "variant serves it)",
        )
    )
    rescore = commands.add_parser(
        "rescore",
        help="score an experiment's kept history with the model the scorer serves now",
    )
    rescore.add_argument("--experiment", required=True, help="the experiment's name")
    rescore.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    rescore.add_argument("--store", help=STORE_HELP)
    rescore.add_argument(
        "--force", action="store_true", help="score again what this model scored already"
    )
    _add_store_commands(commands)


def _add_store_commands(commands: Any) -> None:
    """The commands that keep the outcome log: purge, export-parquet, store migrate."""
    purge = commands.add_parser(
        "purge", help="delete kept prompt and answer text past its retention"
    )
    purge.add_argument(
        "--older-than", type=_days, help="days (default: the config's store.retention_days)"
    )
    purge.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    purge.add_argument("--store", help=STORE_HELP)
    purge.add_argument(
        "--events",
        action="store_true",
        help="delete the events themselves (exposures, completions, battles, scores, feedback "
        "and their text) older than --older-than, not only the kept text: the log's retention",
    )
    parquet = commands.add_parser(
        "export-parquet",
        help="write the outcome log as Parquet files, one per table (ids of people hashed)",
    )
    parquet.add_argument("--out", type=Path, required=True, help="folder for TABLE.parquet")
    parquet.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    parquet.add_argument("--store", help=STORE_HELP)
    parquet.add_argument(
        "--raw-ids", action="store_true", help="keep unit, voter and user ids as they are"
    )
    parquet.add_argument(
        "--with-text", action="store_true", help="export kept prompt and answer text too"
    )
    store = commands.add_parser("store", help="manage the outcome store")
    moves = store.add_subparsers(dest="store_command", required=True)
    migrate = moves.add_parser(
        "migrate", help="copy the outcome log into an empty store (SQLite to PostgreSQL)"
    )
    migrate.add_argument("--to", required=True, help="the new store: postgresql://… or env:NAME")
    migrate.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    migrate.add_argument("--store", help=f"the store to copy; {STORE_HELP}")


def _add_probe_commands(commands: Any) -> None:
    """The sycophancy probe against a running gateway, and the judge's flattery check."""
    from reward import judge_check
    from serve import probe_cli

    probe_cli.add_arguments(
        commands.add_parser(
            "probe", help="run the sycophancy probe through a running gateway against variants"
        )
    )
    judge_check.add_arguments(
        commands.add_parser(
            "judge-check", help="how often a reward model scores capitulation above a firm answer"
        )
    )


def hash_key_command(args: argparse.Namespace) -> int:
    from serve.auth import hash_key

    key = args.key or (getpass.getpass("API key: ") if sys.stdin.isatty() else sys.stdin.readline())
    if not key.strip():
        print("no key given", file=sys.stderr)
        return 2
    print(hash_key(key.strip()))
    return 0


def check_command(args: argparse.Namespace) -> int:
    """Validate the config file; say what it holds, and what a default cluster would refuse."""
    try:
        checked = read_serve_file(args.config)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    names = ", ".join(e.name for e in checked.gateway.experiments) or "none"
    print(f"{args.config}: valid ({len(checked.app.variants)} variants; experiments: {names})")
    judge_note = flattering_judge_note(checked)
    if judge_note:
        print(judge_note)
    needed, here = checked.app.logical_cpus_needed, os.cpu_count() or 1
    if needed > here and checked.app.check_resources:
        print(
            f"note: it asks Ray for {needed:g} logical CPUs and this machine has {here}: a "
            f"default `ray start --head` here offers {here}, so `serve deploy` would refuse it "
            "(`arena-serve serve` starts Ray with as many as the config asks for)"
        )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="arena-serve", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("serve", help="serve a config in the foreground")
    run.add_argument("config", nargs="?", type=Path, default=DEFAULT_CONFIG)
    run.add_argument("--host", default=None)
    run.add_argument("--port", type=int, default=None)
    hashed = commands.add_parser(
        "hash-key", help="print an API key's sha256 for `auth.keys` (reads the key from stdin)"
    )
    hashed.add_argument("key", nargs="?", help="the key (default: read it without echo)")
    check = commands.add_parser("check-config", help="validate a config file and exit")
    check.add_argument("config", nargs="?", type=Path, default=DEFAULT_CONFIG)
    _add_data_commands(commands)
    _add_probe_commands(commands)
    args = parser.parse_args(argv)
    if args.command == "rescore":
        return rescore_command(args)
    if args.command == "train-reward":
        from reward.train import run

        return run(args)
    if args.command == "train-variant":
        from adapters.dpo import run as train_variant

        return train_variant(args)
    if args.command == "export-preferences":
        return export_command(args)
    if args.command == "purge":
        return purge_command(args)
    if args.command == "store":
        return store_command(args)
    if args.command == "export-parquet":
        return parquet_command(args)
    if args.command == "judge-check":
        from reward import judge_check

        return judge_check.main(args)
    if args.command == "probe":
        from serve import probe_cli

        return probe_cli.main(args)
    if args.command == "serve":
        return serve_foreground(args.config, args.host, args.port)
    if args.command == "report":
        return report_command(args)
    if args.command == "hash-key":
        return hash_key_command(args)
    return check_command(args)


if __name__ == "__main__":
    sys.exit(main())
