"""Model preparation: the shipped models exist and load; preparing again is a no-op."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from serve.models import (
    MODELS_DIR,
    SMOLLM2,
    SMOLLM2_REWARD,
    STAMP,
    TINY_LLAMA,
    TINY_REWARD,
    is_prepared,
    prepare,
)


@pytest.mark.parametrize("name", [SMOLLM2, TINY_LLAMA, TINY_REWARD, SMOLLM2_REWARD])
def test_setup_prepared_every_model(name: str) -> None:
    folder = MODELS_DIR / name
    assert is_prepared(folder, name)
    config = json.loads((folder / "config.json").read_text())
    assert "quantization_config" not in config, "vLLM would try to load it as GGUF"
    assert config["head_dim"] == 64
    assert AutoTokenizer.from_pretrained(folder).chat_template


def test_tiny_reward_model_scores_a_batch() -> None:
    folder = MODELS_DIR / TINY_REWARD
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForSequenceClassification.from_pretrained(folder)
    batch = tokenizer(
        ["a short answer", "a longer answer with more words"], padding=True, return_tensors="pt"
    )
    with torch.no_grad():
        scores = model(**batch).logits
    assert scores.shape == (2, 1) and torch.isfinite(scores).all()


def test_the_demo_reward_model_is_smollm2_with_a_deterministic_head() -> None:
    """Its backbone is SmolLM2's; its value head the unit direction from " bad" to " good"."""
    from safetensors.torch import load_file

    reward = load_file(MODELS_DIR / SMOLLM2_REWARD / "model.safetensors")
    causal = load_file(MODELS_DIR / SMOLLM2 / "model.safetensors")
    config = json.loads((MODELS_DIR / SMOLLM2_REWARD / "config.json").read_text())
    assert len(config["id2label"]) == 1 and config["architectures"] == [
        "LlamaForSequenceClassification"
    ]
    key = "model.layers.0.mlp.up_proj.weight"
    assert torch.equal(reward[key], causal[key])
    head = reward["score.weight"].float()
    assert head.shape == (1, config["hidden_size"])
    assert abs(head.norm().item() - 1.0) < 1e-2


def test_prepare_skips_what_is_ready_and_rebuilds_what_is_not(tmp_path: Path) -> None:
    (tmp_path / SMOLLM2).symlink_to(MODELS_DIR / SMOLLM2)  # built by setup: not again
    [folder] = prepare([TINY_LLAMA], models_dir=tmp_path)
    weights = folder / "model.safetensors"
    built_at = weights.stat().st_mtime_ns
    prepare([TINY_LLAMA], models_dir=tmp_path)
    assert weights.stat().st_mtime_ns == built_at
    (folder / STAMP).write_text("{broken")
    prepare([TINY_LLAMA], models_dir=tmp_path)
    assert is_prepared(folder, TINY_LLAMA)
    assert not list(tmp_path.glob(".*.partial")), "staging folders are cleaned up"


def test_a_derived_model_is_built_from_the_smollm2_of_its_own_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil

    from serve import models

    built: list[Path] = []

    def copy_smollm2(out: Path, models_dir: Path) -> None:  # instead of 20 s of dequantizing
        built.append(models_dir)
        for file in (MODELS_DIR / SMOLLM2).iterdir():
            if file.name != STAMP:
                shutil.copy2(file, out / file.name)

    monkeypatch.setitem(models.RECIPES, SMOLLM2, copy_smollm2)
    [folder] = prepare([TINY_REWARD], models_dir=tmp_path)
    assert built == [tmp_path] and is_prepared(tmp_path / SMOLLM2, SMOLLM2)
    assert is_prepared(folder, TINY_REWARD)
    monkeypatch.setitem(models.RECIPE_VERSIONS, SMOLLM2, models.RECIPE_VERSIONS[SMOLLM2] + 1)
    assert not is_prepared(folder, TINY_REWARD)  # a new SmolLM2 recipe: derived ones rebuild


def test_every_recipe_takes_its_staging_folder_and_the_models_folder() -> None:
    """`prepare` calls each recipe with (staging, models_dir); SmolLM2's runs only on a fresh
    machine, so its signature is checked here rather than by a 20 s build."""
    import inspect

    from serve import models

    for name, recipe in models.RECIPES.items():
        inspect.signature(recipe).bind(Path("staging"), Path("models"))  # raises if it cannot
        assert name in models.RECIPE_VERSIONS
