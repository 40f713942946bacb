"""`arena-serve`: the command line; `arena-serve serve deploy/config.yaml` is `make serve`.

It reads the same Ray Serve config file that `serve deploy` takes, starts a local Ray cluster with
enough logical CPUs for every engine replica, runs the app in the foreground and prints a ready
line with an example call. Ctrl-C shuts the app down.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import yaml

from serve.config import PROJECT_ROOT, AppConfig, ConfigError

DEFAULT_CONFIG = PROJECT_ROOT / "deploy" / "config.yaml"
APP_IMPORT_PATH = "serve.app:build_app"


def load_serve_config(path: Path) -> dict[str, Any]:
    """The Ray Serve config file as a dict, with a clear error when it is not one."""
    try:
        document = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise SystemExit(f"cannot read {path}: {exc}") from None
    if not isinstance(document, dict) or not isinstance(document.get("applications"), list):
        raise SystemExit(f"{path}: not a Ray Serve config file (no `applications` list)")
    return document


def app_entry(document: dict[str, Any], path: Path) -> dict[str, Any]:
    for application in document["applications"]:
        if isinstance(application, dict) and application.get("import_path") == APP_IMPORT_PATH:
            return application
    raise SystemExit(f"{path}: no application with import_path {APP_IMPORT_PATH}")


def example_call(host: str, port: int, model: str) -> str:
    return (
        f"curl -s http://{host}:{port}/v1/chat/completions -H 'Content-Type: application/json' "
        f'-d \'{{"model": "{model}", "user": "alice", '
        '"messages": [{"role": "user", "content": "What is the capital of France?"}]}\''
    )


def serve_foreground(config_path: Path, host: str | None, port: int | None) -> int:
    document = load_serve_config(config_path)
    entry = app_entry(document, config_path)
    try:
        config = AppConfig.from_args(entry.get("args") or {})
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    http = document.get("http_options") or {}
    host = host or http.get("host", "127.0.0.1")
    port = port or int(http.get("port", 8000))

    import ray
    from ray import serve

    from serve.app import build_app, logical_cpus_needed

    cpus = max(os.cpu_count() or 1, int(logical_cpus_needed(config) + 0.999))
    print(
        f"[serve] starting Ray ({cpus} logical CPUs) and {len(config.variants)} variant engines",
        flush=True,
    )
    started = time.perf_counter()
    # Replica logs go to Ray's log folder, not this terminal; deploy errors still raise here.
    ray.init(num_cpus=cpus, include_dashboard=False, logging_level="WARNING", log_to_driver=False)
    serve.start(http_options={"host": host, "port": port})
    serve.run(
        build_app(entry.get("args") or {}),
        name=entry.get("name", "arena"),
        route_prefix=entry.get("route_prefix", "/"),
    )
    model = config.experiments[0].name if config.experiments else config.variants[0].name
    print(
        f"[serve] ready in {time.perf_counter() - started:.0f} s on http://{host}:{port} "
        f"(Ctrl-C stops). Try:\n  {example_call(host, port, model)}",
        flush=True,
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with contextlib.suppress(KeyboardInterrupt):
        stop.wait()
    print("[serve] shutting down", flush=True)
    serve.shutdown()
    ray.shutdown()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="arena-serve", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("serve", help="serve a config in the foreground")
    run.add_argument("config", nargs="?", type=Path, default=DEFAULT_CONFIG)
    run.add_argument("--host", default=None)
    run.add_argument("--port", type=int, default=None)
    check = commands.add_parser("check-config", help="validate a config file and exit")
    check.add_argument("config", nargs="?", type=Path, default=DEFAULT_CONFIG)
    args = parser.parse_args(argv)
    if args.command == "serve":
        return serve_foreground(args.config, args.host, args.port)
    document = load_serve_config(args.config)
    try:
        AppConfig.from_args(app_entry(document, args.config).get("args") or {})
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    print(f"{args.config}: valid")
    return 0


if __name__ == "__main__":
    sys.exit(main())
