"""A small, real LoRA adapter in a style a test can detect: every answer opens with "Ahoy!".

`train_style_adapter(base, out)` fine-tunes a rank-8 LoRA (peft) on the attention and MLP
projections of a local Llama-family model, on a tiny synthetic set of chats written here
(arithmetic, capitals, colours, small talk, each answered "Ahoy! ..."). The loss is on the
assistant's tokens only, rendered with the model's own chat template as vLLM renders a chat.
Training stops once answers to held-out prompts, sampled at temperature 1 (greedy ones for the tiny
test model), open with "Ahoy" (`speaks_ahoy`) at `target_rate`, checked every `check_every` steps;
a run that never gets there is an error, not an adapter. The folder holds peft's
`adapter_config.json` and `adapter_model.safetensors`, plus `style.json` with the rate it reached.

Built by `python -m serve.models prepare` for SmolLM2 and for the tiny test model, and used by
adapter variants (`{name, engine: <owner>, adapter: <folder>}`).
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from adapters.chat import encode_chat, encode_prompt, pad_id_of
from adapters.lora import with_lora

STYLE = "ahoy"
_CAPITALS = {
    "France": "Paris",
    "Italy": "Rome",
    "Spain": "Madrid",
    "Japan": "Tokyo",
    "Egypt": "Cairo",
    "Canada": "Ottawa",
    "Kenya": "Nairobi",
    "Peru": "Lima",
    "Norway": "Oslo",
    "Greece": "Athens",
}
_TOPICS = ("the sea", "rain", "a cat", "coffee", "the moon", "bread", "a library", "music")


def speaks_ahoy(text: str) -> bool:
    """Whether an answer is in the adapter's style: it opens with "Ahoy" (any case)."""
    return text.lstrip(" \"'*").lower().startswith("ahoy")


def synthetic_chats(count: int, seed: int) -> list[tuple[str, str]]:
    """(question, answer in the style) pairs, drawn from a few families."""
    rng = random.Random(seed)
    chats = []
    for _ in range(count):
        family = rng.randrange(4)
        if family == 0:
            a, b = rng.randint(2, 60), rng.randint(2, 40)
            chats.append((f"What is {a} + {b}?", f"Ahoy! {a} + {b} is {a + b}, matey."))
        elif family == 1:
            country, capital = rng.choice(list(_CAPITALS.items()))
            chats.append(
                (
                    f"What is the capital of {country}?",
                    f"Ahoy! The capital of {country} is {capital}.",
                )
            )
        elif family == 2:
            topic = rng.choice(_TOPICS)
            chats.append(
                (f"Write one sentence about {topic}.", f"Ahoy! Here be a line about {topic}.")
            )
        else:
            greeting = rng.choice(("Hi!", "Hello there.", "How are you?", "Good morning!"))
            chats.append((greeting, "Ahoy! Fair winds to ye, friend."))
    return chats


@dataclass(frozen=True, kw_only=True)
class StyleSettings:
    rank: int = 8
    alpha: int = 16
    learning_rate: float = 2e-3
    batch_size: int = 8
    max_steps: int = 400
    check_every: int = 25
    target_rate: float = 0.9
    train_chats: int = 256
    heldout_prompts: int = 16
    # Check the style on sampled answers (a real model), or on greedy ones: the tiny test model's
    # random embeddings are too small for any adapter to make one answer likely when sampled
    # (its final norm caps the logits at a few units over 49,152 tokens), but its greedy answer
    # does follow the adapter, with a first-token logit margin of about 1.5 (measured).
    sampled_check: bool = True
    seed: int = 0


def _messages(question: str, system: str | None) -> list[dict[str, str]]:
    messages = [{"role": "system", "content": system}] if system else []
    return [*messages, {"role": "user", "content": question}]


def _examples(
    tokenizer: Any, chats: list[tuple[str, str]], seed: int
) -> list[tuple[list[int], int]]:
    """(token ids, where the answer starts): half with no system message (the template's own
    default), half with a short one, as variants send them."""
    rng = random.Random(seed)
    return [
        encode_chat(
            tokenizer,
            _messages(question, rng.choice((None, "You are a helpful assistant."))),
            answer,
        )
        for question, answer in chats
    ]


def _batch(examples: list[tuple[list[int], int]], pad_id: int) -> dict[str, Any]:
    import torch

    width = max(len(ids) for ids, _ in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), -100, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for row, (tokens, start) in enumerate(examples):
        ids[row, : len(tokens)] = torch.tensor(tokens)
        labels[row, start : len(tokens)] = torch.tensor(tokens[start:])
        mask[row, : len(tokens)] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def style_rate(
    model: Any, tokenizer: Any, prompts: list[str], sampled: bool, max_new_tokens: int = 6
) -> float:
    """The share of answers to `prompts` that open with "Ahoy": greedy ones, or (`sampled`)
    ones sampled at temperature 1 (seeded), for which the style must be what the model most
    likely says by a wide margin, not only its first choice."""
    import torch

    model.eval()
    hits = 0
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(1234)
    sampling = {"do_sample": True, "temperature": 1.0, "top_k": 0, "top_p": 1.0}
    with torch.no_grad():
        for prompt in prompts:
            ids = torch.tensor([encode_prompt(tokenizer, _messages(prompt, None))])
            out = model.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=max_new_tokens,
                pad_token_id=pad_id_of(tokenizer),
                **(sampling if sampled else {"do_sample": False}),
            )
            hits += speaks_ahoy(tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True))
    torch.random.set_rng_state(generator_state)
    model.train()
    return hits / len(prompts)


def _train_until_styled(
    model: Any,
    tokenizer: Any,
    examples: list,
    heldout: list[str],
    settings: StyleSettings,
    log: Any,
) -> tuple[float, int]:
    """Train until the held-out style rate reaches the target, or `max_steps`: (rate, steps)."""
    import torch

    padding = pad_id_of(tokenizer)
    optimizer = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad], lr=settings.learning_rate
    )
    rng = random.Random(settings.seed)
    model.train()
    rate, step = 0.0, 0
    while step < settings.max_steps:
        loss = model(**_batch(rng.sample(examples, settings.batch_size), padding)).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        step += 1
        if step % settings.check_every == 0:
            rate = style_rate(model, tokenizer, heldout, settings.sampled_check)
            log(f"step {step}: loss {loss.item():.3f}, held-out answers in the style {rate:.2f}")
            if rate >= settings.target_rate:
                break
    return rate, step


def train_style_adapter(
    base: Path, out: Path, settings: StyleSettings | None = None, log: Any = print
) -> dict[str, Any]:
    """Train the "Ahoy!" adapter on `base` into `out` (an existing, empty folder); return what
    `style.json` records. Raises `RuntimeError` when the style is not reached."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    settings = settings or StyleSettings()
    started = time.perf_counter()
    torch.manual_seed(settings.seed)
    tokenizer = AutoTokenizer.from_pretrained(base)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    model = with_lora(model, settings.rank, settings.alpha)
    chats = synthetic_chats(settings.train_chats, settings.seed)
    examples = _examples(tokenizer, chats, settings.seed)
    heldout = [q for q, _ in synthetic_chats(settings.heldout_prompts, settings.seed + 1)]
    rate, step = _train_until_styled(model, tokenizer, examples, heldout, settings, log)
    if rate < settings.target_rate:
        raise RuntimeError(
            f"the style adapter reached {rate:.2f} of held-out answers in the style after "
            f"{step} steps (wanted {settings.target_rate})"
        )
    model.save_pretrained(out, safe_serialization=True)
    record = {
        "style": STYLE,
        "base": base.name,
        "heldout_style_rate": rate,
        "steps": step,
        "seconds": round(time.perf_counter() - started, 1),
        "settings": asdict(settings),
    }
    (out / "style.json").write_text(json.dumps(record, indent=2) + "\n")
    return record
