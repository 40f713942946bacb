"""What training a judge costs: `python -m reward.bench_train` (`make bench-train`).

For each size (default 1,000 and 10,000 pairs) it writes a pairs file of synthetic preferences
(export-shaped: a user question, two answers of 8 to 40 words, the chosen one holding a planted
keyword; a fifth of the voters held out) and runs `python -m reward.train` on it in a process of
its own (so that its peak memory is its own), from the default scorer's base
(`models/smollm2-reward`), with the command line's defaults but `--epochs` (default 3). It
prints a markdown table from each model card: wall time, the frozen layers' caching and the
epochs, cached features, peak resident memory and the held-out accuracy.

The planted rule is easy on purpose: this measures what training costs, not what a judge can
learn (`loadtests.reward_loop` measures that, against a known ceiling).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from reward.bench import cpu_model

ROOT = Path(__file__).resolve().parent.parent
BASE = ROOT / "models" / "smollm2-reward"
WORDS = [
    "the",
    "a",
    "river",
    "stone",
    "cloud",
    "green",
    "quick",
    "slow",
    "table",
    "music",
    "paper",
    "light",
    "window",
    "garden",
    "morning",
    "city",
    "blue",
    "small",
    "warm",
    "bright",
    "often",
    "under",
    "water",
    "bread",
    "season",
    "north",
    "field",
    "story",
    "quiet",
]
QUESTIONS = (
    "What should I cook tonight?",
    "Tell me about rivers.",
    "How do I fix a wobbly chair?",
    "What is a good name for a cat?",
    "How do plants grow?",
)
KEYWORD = "banana"


def synthetic_pairs(n: int, seed: int = 0, heldout: float = 0.2) -> list[dict[str, Any]]:
    """`n` export-shaped vote pairs; voters of 5 pairs each, a `heldout` share of them held out."""
    rng = random.Random(seed)
    voters = [f"{rng.getrandbits(64):016x}" for _ in range(max(1, n // 5))]
    held = {v for v in voters if rng.random() < heldout}
    records = []
    for i in range(n):
        good, bad = ([rng.choice(WORDS) for _ in range(rng.randint(8, 40))] for _ in range(2))
        good.insert(rng.randint(0, len(good)), KEYWORD)
        voter = voters[i % len(voters)]
        records.append(
            {
                "prompt": [{"role": "user", "content": rng.choice(QUESTIONS)}],
                "chosen": [{"role": "assistant", "content": " ".join(good)}],
                "rejected": [{"role": "assistant", "content": " ".join(bad)}],
                "source": "vote",
                "battle_id": f"b{i}",
                "chosen_side": rng.choice("ab"),
                "experiment": "bench",
                "chosen_variant": "alpha",
                "rejected_variant": "beta",
                "voter": voter,
                "ts": 1.0 + i,
                "split": "heldout" if voter in held else "train",
            }
        )
    return records


def train(size: int, epochs: int, workdir: Path, base: Path) -> dict[str, Any]:
    """Train on `size` synthetic pairs in a child process; its model card."""
    data = workdir / f"pairs-{size}.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in synthetic_pairs(size)))
    out = workdir / f"judge-{size}"
    command = [sys.executable, "-m", "reward.train", "--data", str(data), "--base", str(base)]
    command += ["--out", str(out), "--epochs", str(epochs), "--no-progress"]
    subprocess.run(command, cwd=ROOT, check=True, stdout=sys.stderr)
    return json.loads((out / "model_card.json").read_text())


def row(size: int, card: dict[str, Any]) -> str:
    t, data = card["training"], card["data"]
    model = card["heldout_accuracy"]["model"]
    accuracy = f"{model['accuracy']:.3f} [{model['low']:.3f}, {model['high']:.3f}]"
    return (
        f"| {size:,} | {data['train']:,} / {data['heldout']:,} | {t['wall_time_s']:.0f} | "
        f"{t['feature_caching_s']:.0f} | {t['training_s']:.0f} ({t['epochs_run']} epochs) | "
        f"{t['cached_features_mib']:,.0f} | {t['peak_rss_mib']:,.0f} | {accuracy} |"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m reward.bench_train", description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--base", type=Path, default=BASE)
    args = parser.parse_args(argv)
    lines = [
        "| pairs | train / held out | wall s | caching s | epochs s | features MiB "
        "| peak RSS MiB | held-out accuracy [95 %] |",
        "|---:|---|---:|---:|---:|---:|---:|---|",
    ]
    with tempfile.TemporaryDirectory(prefix="bench-train-") as workdir:
        for size in args.sizes:
            lines.append(row(size, train(size, args.epochs, Path(workdir), args.base)))
    command = " ".join(["python -m reward.bench_train", *(argv or sys.argv[1:])])
    print(f"Machine: {cpu_model()}, {os.cpu_count()} cores. Command: `{command}`.\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
