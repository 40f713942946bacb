"""The LoRA this project trains (the style recipe and train-variant): rank r on every attention
and MLP projection of a Llama-family decoder, the modules vLLM's multi-LoRA serves."""

from __future__ import annotations

from typing import Any

TARGET_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def with_lora(model: Any, rank: int, alpha: int) -> Any:
    """`model` wrapped by peft with a fresh LoRA (no dropout: the runs are short and seeded)."""
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        r=rank,
        lora_alpha=alpha,
        lora_dropout=0.0,
        target_modules=list(TARGET_MODULES),
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, config)
