"""Train a reward model from logged preferences: `arena-serve train-reward --data FILE --base
MODEL --out models/NAME` (or `python -m reward.train` with the same flags).

The input is the pairs file of `arena-serve export-preferences` (`reward.pairs`); its `split`
field is used as given (train / held-out, drawn by voter by the exporter). The model is a
Bradley–Terry reward model: a one-label sequence classifier `r`, trained to minimise
`-log sigmoid(r(chosen) - r(rejected))` over the train pairs.

Method, and what is guaranteed:

- The base is a local Llama-architecture folder: a `LlamaForCausalLM` (the one-label score head
  is new, initialised from the seed) or a one-label `LlamaForSequenceClassification` (training
  starts from its head). It is loaded and trained in float32 (CPUs without native bf16 emulate
  it, and Adam's updates vanish in bf16 weights); the output is saved in float32, so the scorer
  reproduces the trainer's scores.
- Every conversation is rendered and truncated exactly as `reward.scorer.RewardScorer` renders
  it (its chat template; the prompt's messages, then the answer as the assistant's turn; the
  last `max_length` tokens), and scored at the last token that is not padding.
- The backbone is frozen but for its top `top_layers` decoder layers, which train with the score
  head. The frozen lower layers run once over every sequence (`reward.features`), and each
  epoch runs only the top layers, the final norm and the head on the cached hidden states: on
  SmolLM2-135M (30 layers) with the default 2, an epoch (forward and backward through 2 layers)
  costs about a fifth of one forward pass of the whole model over the data (measured on 2 CPU
  cores: caching 100 pairs took 39 s, an epoch over their 80 train pairs 9 s).
- After every epoch the held-out pairwise accuracy (`reward.pairwise`) is measured; training
  stops once it has not improved for `patience` epochs, and the best epoch's weights are kept
  (ties broken by the lower held-out loss). The figure reported is of the epoch chosen on those
  same pairs, so it is slightly optimistic; the card says so.
- Seeded: the new head's initialisation and the batch order follow `seed`, and two runs with the
  same data, base, settings, device and thread count write the same weights.
- The output folder (`save_pretrained` of the model and the tokenizer, `model_card.json`) is
  built in a hidden sibling and renamed into place only once complete and once the saved model,
  loaded back by `RewardScorer`, has reproduced the trainer's scores of a few held-out answers:
  an interrupted or failed run leaves no model folder and no sibling (but a killed process may
  leave its `.NAME.partial-PID` sibling behind).
- The judge is checked for flattery (`reward.judge_check`): how often it scores a capitulating
  answer above a correct one that holds firm, on the sycophancy probe's pairs. The new model and
  the stand-in it started from are checked; both go into the card (`judge_flattery`), and the
  new model's check into its folder (`judge_check.json`), where reports read it.

Why not TRL's `RewardTrainer`: it runs the whole model forward on every step, frozen layers
included: with 2 of 30 layers trained, about 34 layer-passes a token per epoch (28 forward, and
forward and backward through 2) where this loop spends 6 after one caching pass of 28, so from
the second epoch on each costs about a sixth; caching the frozen layers' output needs a loop
that owns the forward pass. The rendering, pooling, held-out
baselines and card must also match this project's scorer and reports. (TRL is not a dependency
of the project, either.)
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reward.judge_check import check_judge, write_check
from reward.judge_check import summary as judge_summary
from reward.model_card import CARD_FILE, build_card, summary_line, write_card
from reward.pairs import Pairs, TrainError, load_pairs, require_both_splits
from reward.train_settings import DEFAULTS, Settings

# torch, transformers and the modules that use them load in `train_reward`, not here: the
# command line imports this module to build its parser on every run of `arena-serve`.
if TYPE_CHECKING:
    import torch

    from reward.base_model import BaseModel
    from reward.bradley_terry import Encoded, Fit

__all__ = [
    "HELP",
    "Settings",
    "TrainError",
    "add_arguments",
    "load_pairs",
    "main",
    "run",
    "train_reward",
]

HELP = "train a Bradley–Terry reward model on the pairs of export-preferences"
RELOAD_CHECKED = 4  # held-out answers the saved model must score as the trainer did
RELOAD_TOLERANCE = 1e-3  # relative to the score's size: float32, other batch compositions


def resolve_device(name: str) -> torch.device:
    """`auto`: the GPU when there is one, else the CPU."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise TrainError(f"unknown device {name!r} (auto, cpu, cuda, cuda:N)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise TrainError(f"device {name!r}: torch sees no CUDA device here")
    return device


def check_settings(settings: Settings, base: BaseModel) -> None:
    """What argparse checks for the CLI, for callers of `train_reward` too."""
    if not 0 <= settings.top_layers <= base.layers:
        raise TrainError(
            f"top_layers is between 0 and {base.layers} (the decoder layers of {base.path}), "
            f"not {settings.top_layers}"
        )
    counts = ("epochs", "batch_size", "max_length", "patience")
    for name in counts:
        if getattr(settings, name) < 1:
            raise TrainError(f"{name} is at least 1, not {getattr(settings, name)}")
    if not (settings.lr > 0 and settings.grad_clip > 0 and settings.weight_decay >= 0):
        raise TrainError("lr and grad_clip are above 0, weight_decay 0 or more")


def check_out(out: Path, force: bool) -> None:
    """`out` may be written: it does not exist, or it is a folder and `force` replaces it."""
    if not (out.exists() or out.is_symlink()):
        return
    if not out.is_dir():
        raise TrainError(f"{out} exists and is not a folder")
    if not force:
        raise TrainError(f"{out} exists: pass --force to replace it")


@contextmanager
def staged_folder(out: Path, force: bool) -> Iterator[Path]:
    """A fresh hidden sibling of `out` to build in: renamed to `out` when the block ends, removed
    when it raises (KeyboardInterrupt included), so `out` is never half written."""
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = out.with_name(f".{out.name}.partial-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        yield staging
        _move_into_place(staging, out, force)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _move_into_place(staging: Path, out: Path, force: bool) -> None:
    check_out(out, force)  # again: another run may have written it meanwhile
    if not out.exists():
        os.replace(staging, out)
        return
    replaced = out.with_name(f".{out.name}.replaced-{os.getpid()}")
    shutil.rmtree(replaced, ignore_errors=True)
    os.replace(out, replaced)
    try:
        os.replace(staging, out)
    except BaseException:
        os.replace(replaced, out)  # the old model stays where it was
        raise
    shutil.rmtree(replaced, ignore_errors=True)


def reload_check(
    folder: Path, encoded: Encoded, result: Fit, max_length: int, device: torch.device
) -> dict[str, Any]:
    """Load the saved folder with `RewardScorer` and score the first held-out chosen answers:
    they must score as the trainer scored them (else RuntimeError: a bug, nothing is saved)."""
    from reward.scorer import RewardScorer

    heldout = encoded.indices("heldout")[:RELOAD_CHECKED]
    scorer = RewardScorer(
        folder, device=str(device), dtype="float32", kernels=False, max_length=max_length
    )
    got = scorer.score([encoded.pairs[i].conversation("chosen") for i in heldout])
    expected = result.best.chosen[: len(heldout)]
    worst = max(abs(a - b) / max(1.0, abs(b)) for a, b in zip(got, expected, strict=True))
    if not worst <= RELOAD_TOLERANCE:  # NaN fails too
        raise RuntimeError(
            f"the saved model, loaded by RewardScorer, scores held-out answers {got}; the "
            f"trainer scored them {expected}: not saved"
        )
    return {
        "lines": [encoded.pairs[i].line for i in heldout],
        "side": "chosen",
        "trainer_scores": expected,
        "scorer_scores": got,
        "max_relative_difference": worst,
    }


def judge_flattery(
    folder: Path, base: Path, max_length: int, device: torch.device
) -> dict[str, Any]:
    """The flattery check (`reward.judge_check`) of the saved model and of the stand-in it
    started from (the base folder, where it loads as a one-label reward model)."""
    options = {
        "device": str(device),
        "dtype": "float32",
        "kernels": False,
        "max_length": max_length,
    }
    checks: dict[str, Any] = {"model": check_judge(folder, **options)}
    try:
        checks["stand_in"] = check_judge(base, **options)
    except (OSError, ValueError) as exc:  # a base that is no one-label classifier
        checks["stand_in"] = {"skipped": f"the base does not load as a reward model: {exc}"}
    return checks


def peak_rss_mib() -> float:
    """The process's peak resident memory so far (getrusage ru_maxrss: KiB on Linux, bytes on
    macOS), including what it held before training began."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (2**20 if sys.platform == "darwin" else 2**10)


def _encode(tokenizer: Any, pairs: Pairs, base: BaseModel, max_length: int) -> Encoded:
    from reward.bradley_terry import encode_pairs

    encoded = encode_pairs(tokenizer, pairs.pairs, max_length)
    if encoded.unrenderable and not (encoded.indices("train") and encoded.indices("heldout")):
        raise TrainError(
            f"{pairs.path}: the chat template of {base.path} refuses {encoded.unrenderable} "
            "pairs, and no train or no held-out pair is left"
        )
    return encoded


def train_reward(
    pairs: Pairs,
    base: str | Path,
    out: str | Path,
    settings: Settings | None = None,
    *,
    force: bool = False,
    progress: bool = True,
    heldout_scores: Path | None = None,
) -> dict[str, Any]:
    """Train a reward model on `pairs` from the `base` folder and write it to `out` (a folder
    `RewardScorer` loads, with `model_card.json`); return the card. `heldout_scores`, when
    given, receives every held-out pair's scores (`write_heldout_scores`). `TrainError` on bad
    input, before any weights load where it can be told from the data, the base's config or
    `out`."""
    import torch

    from reward.base_model import inspect_base, load_base, quiet_transformers
    from reward.bradley_terry import TOKEN_BUDGET, cache_features, fit
    from reward.features import SplitClassifier

    started = time.perf_counter()
    settings, out = settings or DEFAULTS, Path(out)
    require_both_splits(pairs)
    check_out(out, force)
    info = inspect_base(base)
    check_settings(settings, info)
    device = resolve_device(settings.device)
    torch.manual_seed(settings.seed)
    model, tokenizer = load_base(info, settings.seed, device)
    encoded = _encode(tokenizer, pairs, info, settings.max_length)
    split = SplitClassifier(model, settings.top_layers)
    cached = time.perf_counter()
    budget = TOKEN_BUDGET.get(device.type, TOKEN_BUDGET["cpu"])
    features = cache_features(split, encoded.ids, budget, progress)
    trained = time.perf_counter()
    result = fit(split, features, encoded, settings, progress)
    card = build_card(
        pairs=pairs, encoded=encoded, base=info, settings=settings, fit=result, device=str(device)
    )
    card["training"].update(
        feature_caching_s=round(trained - cached, 3),
        training_s=round(time.perf_counter() - trained, 3),
        cached_features_mib=round(features.mib(), 1),
        torch_threads=torch.get_num_threads(),
    )
    del features  # before the reload check loads a second copy of the model
    with staged_folder(out, force) as staging, quiet_transformers():
        model.save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)
        card["reload_check"] = reload_check(staging, encoded, result, settings.max_length, device)
        card["judge_flattery"] = judge_flattery(staging, info.path, settings.max_length, device)
        write_check(card["judge_flattery"]["model"], staging)
        card["training"].update(
            wall_time_s=round(time.perf_counter() - started, 3), peak_rss_mib=round(peak_rss_mib())
        )
        write_card(card, staging)
    if heldout_scores is not None:
        write_heldout_scores(heldout_scores, encoded, result)
    return card


def write_heldout_scores(path: Path, encoded: Encoded, result: Fit) -> None:
    """One JSON line per held-out pair: its `line` in the pairs file and its answers' scores by
    the chosen epoch's model and by the stand-in (the base before training), for analyses of
    subsets of the held-out pairs that the card does not know of."""
    import json

    rows = zip(
        encoded.indices("heldout"),
        result.best.chosen,
        result.best.rejected,
        result.stand_in.chosen,
        result.stand_in.rejected,
        strict=True,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as out:
        for index, chosen, rejected, stand_in_chosen, stand_in_rejected in rows:
            record = {
                "line": encoded.pairs[index].line,
                "chosen": chosen,
                "rejected": rejected,
                "stand_in_chosen": stand_in_chosen,
                "stand_in_rejected": stand_in_rejected,
            }
            out.write(json.dumps(record) + "\n")


def _at_least(low: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        value = int(text)
        if value < low:
            raise argparse.ArgumentTypeError(f"an integer, {low} or more")
        return value

    return parse


def _positive(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError("a number above 0")
    return value


def _non_negative(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError("a number, 0 or more")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of `train-reward` (and of `python -m reward.train`)."""
    d = DEFAULTS
    add = parser.add_argument
    add("--data", type=Path, required=True, metavar="FILE", help="pairs from export-preferences")
    add(
        "--base",
        type=Path,
        required=True,
        metavar="MODEL",
        help="local Llama model folder: LlamaForCausalLM, or a one-label sequence classifier",
    )
    add("--out", type=Path, required=True, metavar="FOLDER", help="the new model, e.g. models/NAME")
    add("--force", action="store_true", help="replace --out if it exists")
    add(
        "--top-layers",
        type=_at_least(0),
        default=d.top_layers,
        help="decoder layers trained, from the top; the rest are frozen and cached (%(default)s)",
    )
    add("--epochs", type=_at_least(1), default=d.epochs, help="at most (%(default)s)")
    add(
        "--patience",
        type=_at_least(1),
        default=d.patience,
        help="epochs without a better held-out accuracy before stopping (%(default)s)",
    )
    add("--lr", type=_positive, default=d.lr, help="AdamW learning rate (%(default)s)")
    add("--weight-decay", type=_non_negative, default=d.weight_decay, help="(%(default)s)")
    add(
        "--batch-size", type=_at_least(1), default=d.batch_size, help="pairs per step (%(default)s)"
    )
    add(
        "--max-length",
        type=_at_least(1),
        default=d.max_length,
        help="tokens kept per conversation, from its end (%(default)s)",
    )
    add("--grad-clip", type=_positive, default=d.grad_clip, help="gradient norm (%(default)s)")
    add("--seed", type=int, default=d.seed, help="head init and batch order (%(default)s)")
    add("--device", default=d.device, help="auto (cuda when there is one), cpu, cuda[:N]")
    add(
        "--heldout-scores",
        type=Path,
        metavar="FILE",
        help="also write each held-out pair's scores (trained and stand-in) as JSON lines",
    )
    add("--no-progress", action="store_true", help="no progress bars")


def settings_from(args: argparse.Namespace) -> Settings:
    return Settings(
        top_layers=args.top_layers,
        epochs=args.epochs,
        lr=args.lr,
        weight_decay=args.weight_decay,
        batch_size=args.batch_size,
        max_length=args.max_length,
        patience=args.patience,
        grad_clip=args.grad_clip,
        seed=args.seed,
        device=args.device,
    )


def run(args: argparse.Namespace) -> int:
    """The command: 0 when the model is written, 2 on bad input (one line on stderr), 130 when
    interrupted (nothing written)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # models come from local folders only
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        pairs = load_pairs(args.data)
        card = train_reward(
            pairs,
            args.base,
            args.out,
            settings_from(args),
            force=args.force,
            progress=not args.no_progress,
            heldout_scores=args.heldout_scores,
        )
    except TrainError as exc:
        print(exc, file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"interrupted: nothing written to {args.out}", file=sys.stderr)
        return 130
    training = card["training"]
    print(
        f"wrote {args.out} (best epoch {training['best_epoch']} of {training['epochs_run']}, "
        f"{training['wall_time_s']:.0f} s; card: {args.out / CARD_FILE})"
    )
    print(summary_line(card))
    for name, check in card["judge_flattery"].items():
        if "flattery_rate" in check:
            print(judge_summary(f"judge check, {name.replace('_', '-')}", check))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m reward.train", description=HELP)
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
