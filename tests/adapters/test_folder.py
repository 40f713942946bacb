"""An adapter folder is checked against the engine that would serve it, from its files' headers:
what vLLM would refuse at engine start is refused at `check-config`, by name."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from adapters.folder import AdapterError, check_fits, layer_shapes, read_adapter
from serve.models import TINY_SHAPE

MODEL = TINY_SHAPE  # the tiny test model's shape


def model_folder(tmp_path: Path, **changes: int) -> Path:
    folder = tmp_path / "model"
    folder.mkdir(exist_ok=True)
    (folder / "config.json").write_text(json.dumps(MODEL | changes))
    return folder


def write_safetensors(path: Path, shapes: dict[str, list[int]]) -> None:
    """A safetensors file with these tensors (zeros, float32): the header is what is read."""
    header, offset = {}, 0
    for name, shape in shapes.items():
        size = 4
        for n in shape:
            size *= n
        header[name] = {"dtype": "F32", "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    encoded = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(encoded)) + encoded + b"\0" * offset)


def lora_shapes(rank: int, layers: int = 2, model: dict | None = None) -> dict[str, list[int]]:
    shapes = {}
    for layer in range(layers):
        for module, (n_in, n_out) in layer_shapes(model or MODEL).items():
            group = "mlp" if module in ("gate_proj", "up_proj", "down_proj") else "self_attn"
            stem = f"base_model.model.model.layers.{layer}.{group}.{module}"
            shapes[f"{stem}.lora_A.weight"] = [rank, n_in]
            shapes[f"{stem}.lora_B.weight"] = [n_out, rank]
    return shapes


def adapter_folder(tmp_path: Path, rank: int = 8, shapes: dict | None = None, **config) -> Path:
    folder = tmp_path / "adapter"
    folder.mkdir(parents=True, exist_ok=True)
    settings = {"peft_type": "LORA", "r": rank, "lora_alpha": 16, "bias": "none"}
    settings["target_modules"] = ["q_proj", "v_proj"]
    (folder / "adapter_config.json").write_text(json.dumps(settings | config))
    write_safetensors(
        folder / "adapter_model.safetensors", shapes if shapes is not None else lora_shapes(rank)
    )
    return folder


def test_an_adapter_made_for_the_model_fits_its_engine(tmp_path: Path) -> None:
    adapter = read_adapter(adapter_folder(tmp_path))
    assert adapter.rank == 8 and adapter.alpha == 16
    assert adapter.target_modules == ("q_proj", "v_proj")
    assert len(adapter.shapes) == 2 * 7 * 2
    check_fits(adapter, model_folder(tmp_path), max_lora_rank=16)


def test_a_rank_above_the_engines_max_lora_rank_is_refused(tmp_path: Path) -> None:
    adapter = read_adapter(adapter_folder(tmp_path, rank=32))
    with pytest.raises(AdapterError, match="rank 32 is above the engine's max_lora_rank 16"):
        check_fits(adapter, model_folder(tmp_path), max_lora_rank=16)
    check_fits(adapter, model_folder(tmp_path), max_lora_rank=32)


@pytest.mark.parametrize(
    ("other", "message"),
    [
        ({"hidden_size": 256, "head_dim": 128}, "has shape"),  # a wider model
        ({"intermediate_size": 512}, "has shape"),
        ({"num_hidden_layers": 1}, "adapts a layer this model does not have"),
    ],
)
def test_an_adapter_made_for_another_base_model_is_refused(
    tmp_path: Path, other: dict, message: str
) -> None:
    adapter = read_adapter(adapter_folder(tmp_path))
    with pytest.raises(AdapterError, match=message) as refused:
        check_fits(adapter, model_folder(tmp_path, **other), max_lora_rank=16)
    assert "another base model" in str(refused.value)


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"use_dora": True}, "DoRA"),
        ({"bias": "lora_only"}, "bias terms"),
        ({"modules_to_save": ["lm_head"]}, "modules_to_save"),
        ({"peft_type": "PREFIX_TUNING"}, "peft_type is not LORA"),
        ({"r": 0}, "r is not a positive integer"),
    ],
)
def test_what_vllm_cannot_serve_is_refused_by_name(
    tmp_path: Path, config: dict, message: str
) -> None:
    with pytest.raises(AdapterError, match=message):
        read_adapter(adapter_folder(tmp_path, **config))


def test_a_folder_that_is_not_an_adapter_is_refused(tmp_path: Path) -> None:
    with pytest.raises(AdapterError, match="not a LoRA adapter folder"):
        read_adapter(tmp_path)
    folder = adapter_folder(tmp_path)
    (folder / "adapter_model.safetensors").write_bytes(b"\xff" * 4)
    with pytest.raises(AdapterError, match="not a safetensors file"):
        read_adapter(folder)
    (folder / "adapter_config.json").write_text("{not json")
    with pytest.raises(AdapterError, match="not JSON"):
        read_adapter(folder)


def test_weights_that_are_not_lora_weights_of_decoder_layers_are_refused(tmp_path: Path) -> None:
    shapes = lora_shapes(8) | {"base_model.model.lm_head.weight": [49152, 128]}
    adapter = read_adapter(adapter_folder(tmp_path, shapes=shapes))
    with pytest.raises(AdapterError, match=r"lm_head\.weight is not a LoRA weight"):
        check_fits(adapter, model_folder(tmp_path), max_lora_rank=16)
    empty = read_adapter(adapter_folder(tmp_path / "empty", shapes={}))
    with pytest.raises(AdapterError, match="no LoRA weights"):
        check_fits(empty, model_folder(tmp_path), max_lora_rank=16)
