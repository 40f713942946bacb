"""The model card a trained reward model carries: `model_card.json` beside its weights.

It says where the model came from (base, data file by sha256, method, hyperparameters), how
well it ranks the held-out pairs against three baselines on the same pairs (each with a 95 %
Wilson interval, `reward.pairwise`), and what training cost (time, peak memory). Keys:

- `card_version`, `created_utc`;
- `base_model`: `path`, `resolved`, `architecture`, `decoder_layers`, `head` (from the base, or
  new);
- `method`: objective, what is trained and frozen, where features are cached, optimizer, pooling;
- `hyperparameters`: `reward.train_settings.Settings`, with the device used;
- `data`: `file`, `sha256`, `pairs`, `train`, `heldout`, `by_source`, `by_split_and_source`,
  `skipped_lines` (blank, identical answers), `pairs_unrenderable`;
- `heldout_accuracy`: `model`, `length_only`, `stand_in_head`, `always_side_a` (each `n`,
  `wins`, `ties`, `accuracy`, `low`, `high`), with `interval`, `ties`, `selection` and notes;
- `training`: `epochs_run`, `best_epoch`, `stopped_early`, `history`, `feature_caching_s`,
  `training_s`, `wall_time_s`, `cached_features_mib`, `peak_rss_mib`, `torch_threads`;
- `reload_check`: the held-out answers the saved model, loaded by `RewardScorer`, scored again.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reward.pairwise import always_side_a, length_only

if TYPE_CHECKING:  # torch-free at run time, as reward.train's import is
    from reward.base_model import BaseModel
    from reward.bradley_terry import Encoded, Fit
    from reward.pairs import Pairs
    from reward.train_settings import Settings

CARD_FILE = "model_card.json"
CARD_VERSION = 1


def _method(base: BaseModel, settings: Settings) -> dict[str, str]:
    cut = base.layers - settings.top_layers
    return {
        "objective": "Bradley–Terry: mean -log sigmoid(r(chosen) - r(rejected)) over train pairs",
        "trained": f"the top {settings.top_layers} of {base.layers} decoder layers and the "
        "one-label score head; embeddings, lower layers and the final norm frozen",
        "features": f"hidden states entering decoder layer {cut}, computed once and cached",
        "optimizer": "AdamW, gradient norm clipped",
        "early_stopping": "held-out pairwise accuracy (ties: lower held-out loss); best epoch kept",
        "reward": "score head at the last non-pad token, as reward.scorer.RewardScorer reads it",
        "rendering": "the tokenizer's chat template: prompt messages, then the answer as the "
        "assistant's turn; the last max_length tokens kept",
        "weights_dtype": "float32",
    }


def _heldout(encoded: Encoded, fit: Fit) -> dict[str, Any]:
    pairs = [encoded.pairs[i] for i in encoded.indices("heldout")]
    side_a, unsided = always_side_a(pairs)
    entry: dict[str, Any] = {
        "interval": "95 % Wilson score interval; pairs treated as independent",
        "ties": "count half (the number of ties is given)",
        "selection": "the model's figure is of the epoch chosen on these same held-out pairs "
        "(early stopping), so it is slightly optimistic",
        "model": fit.best.accuracy.as_dict(),
        "length_only": {
            **length_only(pairs).as_dict(),
            "rule": "the longer answer, in characters, wins",
        },
        "stand_in_head": {
            **fit.stand_in.accuracy.as_dict(),
            "rule": "the base model's scores before training (its untrained head)",
        },
        "always_side_a": {
            **side_a.as_dict(),
            "rule": "the answer shown as choice a wins (vote pairs only)",
            "pairs_without_side": unsided,
        },
    }
    return entry


def build_card(
    *, pairs: Pairs, encoded: Encoded, base: BaseModel, settings: Settings, fit: Fit, device: str
) -> dict[str, Any]:
    """The card of a finished fit; `train_reward` adds the timings and the reload check."""
    head = (
        "from the base (a one-label classifier)"
        if base.head_from_base
        else "new: normal(0, initializer_range), from the seed"
    )
    return {
        "card_version": CARD_VERSION,
        "created_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "base_model": {
            "path": str(base.path),
            "resolved": str(base.path.resolve()),
            "architecture": base.architecture,
            "decoder_layers": base.layers,
            "head": head,
        },
        "method": _method(base, settings),
        "hyperparameters": {**asdict(settings), "device": device},
        "data": {
            "file": str(pairs.path),
            "sha256": pairs.sha256,
            **pairs.counts(),
            "pairs_unrenderable": encoded.unrenderable,
        },
        "heldout_accuracy": _heldout(encoded, fit),
        "training": {
            "epochs_run": len(fit.history),
            "best_epoch": fit.best_epoch,
            "stopped_early": fit.stopped_early,
            "history": fit.history,
        },
    }


def write_card(card: dict[str, Any], folder: Path) -> Path:
    path = folder / CARD_FILE
    path.write_text(json.dumps(card, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


def _figure(entry: dict[str, Any]) -> str:
    if entry["accuracy"] is None:
        return "n/a (no pairs)"
    return f"{entry['accuracy']:.3f} [{entry['low']:.3f}, {entry['high']:.3f}] (n={entry['n']})"


def summary_line(card: dict[str, Any]) -> str:
    """The held-out figures, one line: the model and its three baselines."""
    held = card["heldout_accuracy"]
    return (
        f"held-out pairwise accuracy {_figure(held['model'])}, 95 % Wilson; "
        f"length only {_figure(held['length_only'])}; "
        f"stand-in head {_figure(held['stand_in_head'])}; "
        f"always side a {_figure(held['always_side_a'])}"
    )
