"""An adapter folder checked against the engine that would serve it, without loading any weights.

A peft LoRA folder holds `adapter_config.json` and `adapter_model.safetensors`. vLLM loads it
when the engine starts (the engine does not start if it cannot), so `check-config` and the app
builder read it first and name what is wrong:

- it is a LoRA adapter vLLM can serve: no DoRA, no bias terms, no `modules_to_save`;
- its rank is within the engine's `max_lora_rank`;
- it was made for the engine's model: every LoRA weight's shape (read from the safetensors
  header) fits the layer it adapts, and its layer indices exist in the model.
"""

from __future__ import annotations

import hashlib
import json
import re
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
# vLLM's accepted ranks (vllm.config.lora.MaxLoRARanks) and its default `max_lora_rank`.
VLLM_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)
VLLM_DEFAULT_MAX_RANK = 16
_WEIGHT = re.compile(r"layers\.(\d+)\.(self_attn|mlp)\.(\w+)\.lora_([AB])\.weight$")


class AdapterError(ValueError):
    """An adapter folder the engine could not serve, and why."""


@dataclass(frozen=True, kw_only=True)
class Adapter:
    """What a served adapter's checks and records need from its folder."""

    folder: Path
    rank: int
    alpha: float
    target_modules: tuple[str, ...]
    shapes: dict[str, tuple[int, ...]]


def read_adapter(folder: Path) -> Adapter:
    """The adapter in `folder`, or `AdapterError` saying why it is not a servable LoRA one."""
    config_path = folder / CONFIG_FILE
    if not config_path.is_file() or not (folder / WEIGHTS_FILE).is_file():
        raise AdapterError(
            f"{folder} is not a LoRA adapter folder ({CONFIG_FILE} and {WEIGHTS_FILE}, as peft's "
            "save_pretrained writes them)"
        )
    try:
        config = json.loads(config_path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise AdapterError(f"{config_path}: not JSON ({exc})") from None
    if not isinstance(config, dict) or config.get("peft_type") != "LORA":
        raise AdapterError(f"{config_path}: peft_type is not LORA")
    unsupported = [
        what
        for what, bad in (
            ("DoRA (use_dora)", config.get("use_dora")),
            ("bias terms (bias)", config.get("bias", "none") != "none"),
            ("modules_to_save", config.get("modules_to_save")),
        )
        if bad
    ]
    if unsupported:
        raise AdapterError(f"{config_path}: vLLM cannot serve {', '.join(unsupported)}")
    rank = config.get("r")
    if type(rank) is not int or rank < 1:
        raise AdapterError(f"{config_path}: r is not a positive integer")
    targets = config.get("target_modules") or []
    if isinstance(targets, str):
        targets = [targets]
    return Adapter(
        folder=folder,
        rank=rank,
        alpha=float(config.get("lora_alpha", rank)),
        target_modules=tuple(sorted(targets)),
        shapes=safetensors_shapes(folder / WEIGHTS_FILE),
    )


def adapter_digest(folder: Path) -> str:
    """A digest of the adapter's config and weights: a variant retrained into the same folder
    is another revision (the probe's results belong to one)."""
    digest = hashlib.sha256()
    for name in (CONFIG_FILE, WEIGHTS_FILE):
        try:
            digest.update((folder / name).read_bytes())
        except OSError:
            digest.update(f"missing {name}".encode())
    return digest.hexdigest()[:16]


def safetensors_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Each tensor's shape, from the file's JSON header (8 bytes of length, then the header)."""
    try:
        with path.open("rb") as file:
            (length,) = struct.unpack("<Q", file.read(8))
            if length > 100 * 1024**2:
                raise ValueError("header too large")
            header = json.loads(file.read(length))
    except (OSError, struct.error, ValueError) as exc:
        raise AdapterError(f"{path}: not a safetensors file ({exc})") from None
    return {
        name: tuple(entry["shape"])
        for name, entry in header.items()
        if name != "__metadata__" and isinstance(entry, dict) and "shape" in entry
    }


def layer_shapes(model_config: dict[str, Any]) -> dict[str, tuple[int, int]]:
    """(in, out) features of each linear layer LoRA can adapt in a Llama-family decoder."""
    hidden = model_config["hidden_size"]
    heads = model_config["num_attention_heads"]
    head_dim = model_config.get("head_dim") or hidden // heads
    kv = model_config.get("num_key_value_heads", heads) * head_dim
    inner = model_config["intermediate_size"]
    return {
        "q_proj": (hidden, heads * head_dim),
        "k_proj": (hidden, kv),
        "v_proj": (hidden, kv),
        "o_proj": (heads * head_dim, hidden),
        "gate_proj": (hidden, inner),
        "up_proj": (hidden, inner),
        "down_proj": (inner, hidden),
    }


def check_fits(adapter: Adapter, model_folder: Path, max_lora_rank: int) -> None:
    """`AdapterError` unless the engine serving `model_folder` with this `max_lora_rank` can
    serve the adapter."""
    if adapter.rank > max_lora_rank:
        raise AdapterError(
            f"{adapter.folder}: rank {adapter.rank} is above the engine's max_lora_rank "
            f"{max_lora_rank} (raise it in the owner's engine_kwargs: one of "
            f"{', '.join(map(str, VLLM_RANKS))})"
        )
    try:
        model_config = json.loads((model_folder / "config.json").read_text())
        layers = layer_shapes(model_config)
        depth = model_config["num_hidden_layers"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise AdapterError(f"{model_folder}: cannot read the model's shape ({exc})") from None
    matched = 0
    for name, shape in adapter.shapes.items():
        found = _WEIGHT.search(name)
        if found is None:
            raise AdapterError(f"{adapter.folder}: {name} is not a LoRA weight of a decoder layer")
        layer, _, module, side = found.groups()
        if int(layer) >= depth or module not in layers:
            raise AdapterError(
                f"{adapter.folder}: {name} adapts a layer this model does not have "
                f"({model_folder.name} has {depth} layers): it was made for another base model"
            )
        features_in, features_out = layers[module]
        want = (adapter.rank, features_in) if side == "A" else (features_out, adapter.rank)
        if shape != want:
            raise AdapterError(
                f"{adapter.folder}: {name} has shape {list(shape)}, and {model_folder.name} needs "
                f"{list(want)}: the adapter was made for another base model"
            )
        matched += 1
    if not matched:
        raise AdapterError(f"{adapter.folder}: no LoRA weights in {WEIGHTS_FILE}")
