"""Chats as token ids for training an adapter, rendered as vLLM renders them for the engine."""

from __future__ import annotations

from typing import Any

Message = dict[str, str]


def encode_chat(tokenizer: Any, messages: list[Message], answer: str) -> tuple[list[int], int]:
    """(token ids, index of the answer's first token) of `messages` then `answer` as the
    assistant's turn, by the model's chat template. The prompt (with the template's generation
    prompt) is tokenized as the engine tokenizes it, and the answer with its turn's end after
    it, on its own: the tokens the engine would have generated."""
    prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    full = tokenizer.apply_chat_template(
        [*messages, {"role": "assistant", "content": answer}], tokenize=False
    )
    if not full.startswith(prompt):
        raise ValueError("the chat template does not render a prompt as the start of its chat")
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    answer_ids = tokenizer(full[len(prompt) :], add_special_tokens=False)["input_ids"]
    return prompt_ids + answer_ids, len(prompt_ids)


def encode_prompt(tokenizer: Any, messages: list[Message]) -> list[int]:
    """The token ids the engine generates an answer to `messages` after."""
    prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    return tokenizer(prompt, add_special_tokens=False)["input_ids"]


def pad_id_of(tokenizer: Any) -> int:
    """The id batches are padded with: the tokenizer's pad token, else its end of sequence."""
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
