"""`make bench-probe`: the sycophancy probe against every variant of the default config, timed.

Serves `deploy/config.yaml` (as `make serve` does, in this session, with a store of its own under
`data/probe-bench/`), runs `arena-serve probe` over the whole set against each variant (the
default variants share one engine, so they are probed one after another, each at
`--concurrency` items in flight), and prints markdown for docs/benchmarks.md: each variant's
accuracy, flip rate and capitulation rate with 95 % intervals clustered by item, first-answer
accuracy per family, the paired change against `smollm2-concise` (what a guardrail with that
control judges), the wall time of each variant's run, and the flattery checks of the reward
models under `models/` (`judge_check.json`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import yaml

from loadtests import serving_bench
from loadtests.reward_loop import serving
from probe.items import FAMILIES, PROBE_SET, probe_items
from probe.pairs import JUDGE_CHECK_FILE
from probe.protocol import CAPITULATION_RATE, FLIP_RATE
from router.analysis import probe as probe_analysis
from serve import probe_cli
from serve.config import cpu_engine_dtype
from serve.report import rate_text

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "deploy" / "config.yaml"
CONTROL = "smollm2-concise"


def probe_variant(base: str, variant: str, args: argparse.Namespace) -> tuple[list[dict], float]:
    argv = ["--url", base, "--variant", variant, "--concurrency", str(args.concurrency)]
    if args.limit:
        argv += ["--limit", str(args.limit)]
    parser = argparse.ArgumentParser()
    probe_cli.add_arguments(parser)
    results, wall_s = asyncio.run(probe_cli.run_probe(parser.parse_args(argv)))
    return results[variant], wall_s


def markdown(found: dict[str, tuple[list[dict], float]], args: argparse.Namespace) -> str:
    arms = {v: probe_cli.figures(v, results) for v, (results, _) in found.items()}
    items = len(next(iter(found.values()))[0])
    command = " ".join(["python -m loadtests.probe_bench", *args.argv])
    lines = [
        f"Machine: {serving_bench.machine()}, engines in {cpu_engine_dtype()}. Command: "
        f"`{command}`; {datetime.now(UTC):%Y-%m-%d %H:%M} UTC. Probe set {PROBE_SET}, {items} "
        f"items per variant, {args.concurrency} items in flight; 95 % intervals clustered by item.",
        "",
        "| variant | accuracy | flip rate | capitulation rate | wall time |",
        "|---|---|---|---|---:|",
    ]
    for variant, arm in arms.items():
        wall = found[variant][1]
        lines.append(
            f"| {variant} | {rate_text(arm.accuracy)} | {rate_text(arm.sycophancy_flip_rate)} | "
            f"{rate_text(arm.capitulation_rate)} | {wall:.0f} s |"
        )
    lines += ["", "First-answer accuracy per family:", ""]
    lines += ["| variant | " + " | ".join(FAMILIES) + " |", "|---|" + "---:|" * len(FAMILIES)]
    for variant, arm in arms.items():
        cells = [arm.family_accuracy.get(f) for f in FAMILIES]
        lines.append(
            f"| {variant} | " + " | ".join("—" if c is None else f"{c:.2f}" for c in cells) + " |"
        )
    if CONTROL in found:
        control = probe_cli.variant_probe(found[CONTROL][0])
        lines += ["", f"Paired change against {CONTROL} (what its guardrails judge):", ""]
        lines += ["| variant | flip rate | capitulation rate |", "|---|---|---|"]
        for variant, (results, _) in found.items():
            if variant == CONTROL:
                continue
            treated = probe_cli.variant_probe(results)
            flip = probe_analysis.change(treated, control, FLIP_RATE)
            cap = probe_analysis.change(treated, control, CAPITULATION_RATE)
            lines.append(f"| {variant} | {_signed(flip)} | {_signed(cap)} |")
    judges = _judge_checks()
    if judges:
        lines += ["", "Reward models checked for flattery (`judge_check.json`):", ""]
        lines += ["| reward model | flattery rate | pairs |", "|---|---|---:|"]
        for name, check in judges.items():
            rate = check["flattery_rate"]
            flag = " (flagged)" if check.get("flagged") else ""
            lines.append(
                f"| {name} | {rate['value']:.3f} [{rate['low']:.3f}, {rate['high']:.3f}]{flag} "
                f"| {check['pairs']} |"
            )
    total = sum(wall for _, wall in found.values())
    lines += ["", f"The probe took {total:.0f} s in all ({len(found)} variants)."]
    return "\n".join(lines) + "\n"


def _signed(interval) -> str:
    if interval.value is None:
        return "—"
    return f"{interval.value:+.2f} [{interval.low:+.2f}, {interval.high:+.2f}]"


def _judge_checks() -> dict[str, dict]:
    found = {}
    for path in sorted((ROOT / "models").glob(f"*/{JUDGE_CHECK_FILE}")):
        found[path.parent.name] = json.loads(path.read_text())
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtests.probe_bench", description=__doc__)
    parser.add_argument("--concurrency", type=int, default=8, help="items in flight")
    parser.add_argument("--limit", type=int, default=None, help="items per family (default all)")
    parser.add_argument("--variants", nargs="+", default=None, help="default: every variant")
    args = parser.parse_args(argv)
    args.argv = list(argv if argv is not None else sys.argv[1:])
    folder = ROOT / "data" / "probe-bench" / time.strftime("%Y%m%d-%H%M%S")
    folder.mkdir(parents=True)
    document = yaml.safe_load(CONFIG.read_text())
    application = document["applications"][0]
    application["args"]["store_path"] = str(folder / "outcomes.db")
    config = folder / "config.yaml"
    config.write_text(yaml.safe_dump(document, sort_keys=False))
    variants = args.variants or [v["name"] for v in application["args"]["variants"]]
    found = {}
    with serving(config, folder / "serve.log") as base:
        for variant in variants:
            print(f"[probe-bench] {variant}: {len(probe_items())} items", file=sys.stderr)
            found[variant] = probe_variant(base, variant, args)
    (folder / "results.json").write_text(json.dumps({v: r for v, (r, _) in found.items()}))
    print(markdown(found, args), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
