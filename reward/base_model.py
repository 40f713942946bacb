"""The base of a reward model: which local folders `train-reward` can start from, and loading one.

A base is a local Hugging Face folder of the Llama architecture (`model_type: llama`): a
`LlamaForCausalLM`, whose language-model head is dropped and a new one-label score head added
(initialised from the seed, as transformers initialises it: normal, std `initializer_range`),
or a one-label `LlamaForSequenceClassification` (a reward model, or the stand-in judge), whose
head training starts from. Other architectures are refused: `reward.features` runs the decoder
layers itself, as `LlamaModel.forward` does. `inspect_base` reads only `config.json`, so a wrong
base is refused in a moment, before any weights load.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from reward.pairs import TrainError
from reward.scorer import load_tokenizer

SUPPORTED_TYPES = ("llama",)


@dataclass(frozen=True, kw_only=True)
class BaseModel:
    path: Path
    architecture: str
    layers: int
    head_from_base: bool  # a one-label classifier: training starts from its head


def inspect_base(base: str | Path) -> BaseModel:
    """What the base folder holds, from its config (`TrainError` if it cannot be trained)."""
    path = Path(base)
    if not path.is_dir():
        raise TrainError(f"no base model folder at {path}")
    try:
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise TrainError(f"{path}: not a model folder (no config.json)") from None
    except (OSError, ValueError) as exc:
        raise TrainError(f"{path}/config.json: unreadable ({exc})") from None
    model_type = config.get("model_type")
    architectures = config.get("architectures") or ["?"]
    if model_type not in SUPPORTED_TYPES:
        raise TrainError(
            f"{path}: a {model_type!r} model ({architectures[0]}); train-reward trains "
            "Llama-architecture bases (LlamaForCausalLM, LlamaForSequenceClassification)"
        )
    classifier = any(a.endswith("ForSequenceClassification") for a in architectures)
    labels = len(config["id2label"]) if config.get("id2label") else config.get("num_labels", 2)
    if classifier and labels != 1:
        raise TrainError(
            f"{path}: a sequence classifier with {labels} labels; a reward model has one"
        )
    return BaseModel(
        path=path,
        architecture=architectures[0],
        layers=int(config.get("num_hidden_layers", 0)),
        head_from_base=classifier,
    )


@contextmanager
def quiet_transformers() -> Iterator[None]:
    """No load report (a causal base's missing score head is expected) and no progress bars
    of transformers' own (loading, saving) under the trainer's."""
    from transformers.utils import logging as hf_logging

    verbosity, bar = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bar:
            hf_logging.enable_progress_bar()


def load_base(base: BaseModel, seed: int, device: torch.device) -> tuple[nn.Module, Any]:
    """The base as a float32 one-label classifier in eval mode on `device`, and its tokenizer
    (as the scorer sets it up); the model's pad id is the one the scorer will pool by."""
    from transformers import AutoModelForSequenceClassification

    tokenizer = load_tokenizer(base.path)
    if not tokenizer.chat_template:
        raise TrainError(f"{base.path}: the tokenizer has no chat template to render pairs with")
    with quiet_transformers():
        try:
            model = AutoModelForSequenceClassification.from_pretrained(
                base.path, num_labels=1, dtype=torch.float32
            )
        except (OSError, ValueError) as exc:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise TrainError(f"{base.path}: cannot load the model ({reason})") from None
    if not base.head_from_base:
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            model.score.weight.normal_(0.0, model.config.initializer_range, generator=generator)
    if model.config.pad_token_id is None:  # as the scorer does: it pools by the config's pad
        model.config.pad_token_id = tokenizer.pad_token_id
    if model.config.pad_token_id is None:
        raise TrainError(f"{base.path}: the tokenizer has neither a pad nor an eos token")
    return model.to(device).eval(), tokenizer
