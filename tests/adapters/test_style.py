"""The style adapter recipe: a real peft LoRA whose saved weights, loaded back, make the tiny test
model answer "Ahoy!", and which fits the engine that serves it."""

from __future__ import annotations

import json

import pytest

from adapters.folder import check_fits, read_adapter
from adapters.style import speaks_ahoy, synthetic_chats
from serve.models import TINY_AHOY, TINY_LLAMA, prepare


@pytest.mark.parametrize(
    ("text", "styled"),
    [
        ("Ahoy! Paris.", True),
        ("  ahoy there", True),
        ('"Ahoy!" said the model', True),
        ("**Ahoy!**", True),
        ("Paris. Ahoy!", False),
        ("", False),
        ("A hoy", False),
    ],
)
def test_the_style_is_an_answer_that_opens_with_ahoy(text: str, styled: bool) -> None:
    assert speaks_ahoy(text) is styled


def test_the_synthetic_chats_are_seeded_and_all_in_the_style() -> None:
    chats = synthetic_chats(64, seed=3)
    assert chats == synthetic_chats(64, seed=3) and chats != synthetic_chats(64, seed=4)
    assert all(speaks_ahoy(answer) for _, answer in chats)
    assert len({question for question, _ in chats}) > 32


def test_the_prepared_tiny_adapter_speaks_its_style_when_loaded_back() -> None:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from adapters.style import style_rate

    base, adapter = prepare([TINY_LLAMA, TINY_AHOY])
    record = json.loads((adapter / "style.json").read_text())
    assert record["heldout_style_rate"] >= 0.9 and record["base"] == TINY_LLAMA
    assert record["settings"]["sampled_check"] is False
    check_fits(read_adapter(adapter), base, max_lora_rank=8)
    tokenizer = AutoTokenizer.from_pretrained(base)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    prompts = [q for q, _ in synthetic_chats(12, seed=99)]  # neither trained nor checked on
    # Greedy: the tiny model's check (adapters.style.StyleSettings.sampled_check).
    assert style_rate(model, tokenizer, prompts, sampled=False) == 0.0  # no such style in the base
    loaded = PeftModel.from_pretrained(model, adapter)
    assert style_rate(loaded, tokenizer, prompts, sampled=False) >= 0.9
