"""The reward scorer: a local one-label sequence classifier scoring (conversation, response) pairs.

Loads any Hugging Face Llama-family sequence-classification model with one label (Llama, Qwen2,
Mistral) from a local folder, renders each pair with the model's chat template (the user's
messages, then the response as the assistant turn), and returns one float per pair: the head's
output at each sequence's last real token (the rightmost token that is not padding, as
transformers pools it).

Two backends give the same scores within dtype tolerances:

- `triton` (CUDA, or the Triton interpreter in tests): the model patched with the fused RMSNorm,
  SwiGLU and rotary kernels (`kernels.patch`), its final norm removed from the backbone and done
  by the fused reward head (norm, gather of the last real token, value head and bias, one
  kernel);
- `torch`: the unpatched model, exactly as transformers runs it (the CPU path).

Batches follow a token budget: `plan_batches` sorts sequences by length and groups neighbours,
so each batch pads little and never exceeds `token_budget` padded tokens.
"""

from __future__ import annotations

import ctypes
import logging
import math
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch
from torch import nn

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

logger = logging.getLogger(__name__)

Backend = Literal["triton", "torch"]
Messages = Sequence[Mapping[str, Any]]
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
# glibc's mallopt parameters (malloc.h) and the values a CPU forward wants: 32 MiB is the ceiling
# of glibc's own sliding mmap threshold on 64-bit; every activation of a batch is far smaller.
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
MMAP_THRESHOLD_BYTES, TRIM_THRESHOLD_BYTES = 32 << 20, 256 << 20


def retain_freed_memory() -> bool:
    """Have glibc keep freed activations for reuse instead of handing them back to the kernel.

    A CPU forward allocates and frees megabyte-sized intermediates in every op. By default glibc
    serves such blocks with a fresh mmap, or trims the heap once 128 KiB lie free at its top, so
    each op page-faults its output in again: measured here (docs/benchmarks.md), that cost
    an eager bf16 RMSNorm of 2048×576 2.7 ms instead of 0.3 ms, and the scorer about 15 % of
    its sequences/s, depending on what the process had freed before. Fixing both thresholds
    keeps up to 256 MiB of free heap in the process. Process-wide; a no-op (False) off glibc.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # another C library (musl)
        return False
    mmap_ok = libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)
    trim_ok = libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES)
    return bool(mmap_ok and trim_ok)


def plan_batches(
    lengths: Sequence[int], token_budget: int, max_batch: int | None = None
) -> list[list[int]]:
    """Group sequence indices into batches of at most `token_budget` padded tokens.

    Sequences are sorted longest first and cut into runs, so each batch holds neighbours in
    length (little padding); a sequence longer than the budget gets a batch of its own.
    """
    if token_budget < 1:
        raise ValueError("token_budget must be at least 1")
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches: list[list[int]] = []
    current: list[int] = []
    for index in order:
        longest = lengths[current[0]] if current else lengths[index]
        full = max_batch is not None and len(current) >= max_batch
        if current and (full or (len(current) + 1) * longest > token_budget):
            batches.append(current)
            current = []
        current.append(index)
    if current:
        batches.append(current)
    return batches


def last_real_index(input_ids: torch.Tensor, pad_token_id: int | None) -> torch.Tensor:
    """Each row's rightmost token that is not padding (transformers' pooling rule)."""
    if pad_token_id is None:
        return torch.full(
            (input_ids.shape[0],), input_ids.shape[1] - 1, dtype=torch.long, device=input_ids.device
        )
    positions = torch.arange(input_ids.shape[1], device=input_ids.device)
    return (positions * (input_ids != pad_token_id)).argmax(-1)


def _auto_dtype(on_gpu: bool) -> torch.dtype:
    """bf16 where the hardware computes it natively (GPUs, CPUs with AVX-512 BF16), else fp32."""
    cpu_bf16 = getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)()
    return torch.bfloat16 if on_gpu or cpu_bf16 else torch.float32


def _base_model(model: nn.Module) -> nn.Module:
    return getattr(model, model.base_model_prefix)


def load_tokenizer(path: str | Path) -> PreTrainedTokenizerBase:
    """The model's tokenizer as the scorer uses it: right padding, the eos token as the pad
    where the tokenizer names none (the trainer saves its models with this same pad)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    tokenizer.padding_side = "right"
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def render_conversation(
    tokenizer: PreTrainedTokenizerBase, messages: Messages, response: str
) -> str:
    """The scored text: the conversation and the response as the assistant's turn."""
    turns = [{"role": m["role"], "content": m["content"]} for m in messages]
    turns.append({"role": "assistant", "content": response})
    return tokenizer.apply_chat_template(turns, tokenize=False)


def encode_tail(
    tokenizer: PreTrainedTokenizerBase, texts: Sequence[str], max_length: int
) -> list[list[int]]:
    """Token ids, keeping the last `max_length` tokens (the response's end matters most)."""
    encoded = tokenizer(list(texts), add_special_tokens=False)["input_ids"]
    return [ids[-max_length:] for ids in encoded]


class RewardScorer:
    """One reward model on one device; `score` is synchronous and not thread-safe."""

    def __init__(
        self,
        path: str | Path,
        *,
        device: str = "auto",
        dtype: str = "auto",
        kernels: bool | None = None,
        max_length: int = 1024,
    ) -> None:
        from transformers import AutoModelForSequenceClassification

        self.path = Path(path)
        self.device = torch.device(
            ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
        )
        on_gpu = self.device.type == "cuda"
        if not on_gpu and retain_freed_memory():
            logger.info("reward scorer: glibc keeps freed activations (mallopt)")
        self.dtype = DTYPES[dtype] if dtype != "auto" else _auto_dtype(on_gpu)
        # Measured (docs/benchmarks.md): a GPU wants big batches; a CPU is compute-bound from a
        # few hundred tokens on, and padding costs more than batching saves.
        self.token_budget = 16_384 if on_gpu else 1024
        self.backend: Backend = "triton" if (on_gpu if kernels is None else kernels) else "torch"
        self.max_length = max_length
        self.tokenizer = load_tokenizer(self.path)
        model = AutoModelForSequenceClassification.from_pretrained(self.path, dtype=self.dtype)
        if model.config.num_labels != 1:
            raise ValueError(
                f"{self.path}: a reward model has one label, not {model.config.num_labels}"
            )
        self.model = model.to(self.device).eval()
        if model.config.pad_token_id is None:  # transformers pools batches by the pad id
            model.config.pad_token_id = self.tokenizer.pad_token_id
        if model.config.pad_token_id is None:
            raise ValueError(f"{self.path}: the tokenizer has neither a pad nor an eos token")
        self.pad_token_id: int = model.config.pad_token_id
        self._head = model.score
        backbone = _base_model(model)
        self._final_norm = backbone.norm
        if self.backend == "triton":
            self._patch(model, backbone, explicit=bool(kernels))
        logger.info(
            "reward scorer %s on %s (%s): %s backend",
            self.path.name,
            self.device,
            str(self.dtype).removeprefix("torch."),
            self.backend,
        )

    def _patch(self, model: nn.Module, backbone: nn.Module, explicit: bool) -> None:
        """The Triton backend, where the kernels compute this model's layers; else the torch
        one (an error when the kernels were asked for by name)."""
        from kernels.patch import PATCHABLE_MODEL_TYPES, apply_kernels  # imports Triton

        model_type = model.config.model_type
        if model_type not in PATCHABLE_MODEL_TYPES:
            if explicit:
                raise ValueError(
                    f"{self.path}: a {model_type!r} model; the Triton kernels compute "
                    f"{', '.join(PATCHABLE_MODEL_TYPES)} layers (set kernels: false)"
                )
            logger.warning(
                "reward scorer: %s is a %r model, which the kernels do not compute: torch backend",
                self.path.name,
                model_type,
            )
            self.backend = "torch"
            return
        report = apply_kernels(model)
        backbone.norm = nn.Identity()  # the fused head normalizes the last tokens only
        logger.info("reward scorer: patched %s", report)

    def render(self, messages: Messages, response: str) -> str:
        """The scored text: the conversation and the response as the assistant's turn."""
        return render_conversation(self.tokenizer, messages, response)

    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids, keeping the last `max_length` tokens (the response's end matters most)."""
        return encode_tail(self.tokenizer, texts, self.max_length)

    @torch.inference_mode()
    def score_ids(self, batch: Sequence[Sequence[int]]) -> list[float]:
        """Scores of one batch of token id lists, padded on the right.

        No attention mask is passed: with right padding, causal attention alone keeps every real
        token from seeing a pad (pads only ever follow it), and real tokens' positions start at
        0 either way, so each real token's hidden state is what it would be alone. Only pads see
        pads, and no pad is pooled. Without a mask, attention runs its causal kernels, which skip
        the masked half of the work instead of computing it and masking it out.
        """
        longest = max(len(ids) for ids in batch)
        input_ids = torch.full((len(batch), longest), self.pad_token_id, dtype=torch.long)
        for row, ids in enumerate(batch):
            input_ids[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        input_ids = input_ids.to(self.device)
        last = last_real_index(input_ids, self.pad_token_id)
        if self.backend == "torch":
            logits = self.model(input_ids=input_ids).logits
            return logits[:, 0].float().tolist()
        from kernels.reward_head import reward_head

        hidden = _base_model(self.model)(input_ids=input_ids).last_hidden_state
        eps = self._final_norm.variance_epsilon  # the model's own norm (Llama family)
        scores = reward_head(
            hidden, last, self._final_norm.weight, eps, self._head.weight, self._head.bias
        )
        return scores.tolist()

    def score(
        self,
        conversations: Sequence[tuple[Messages, str]],
        token_budget: int | None = None,
        max_batch: int | None = 64,
    ) -> list[float]:
        """One score per (messages, response), batched by `plan_batches` (default budget: the
        device's, `self.token_budget`).

        A pair the model's chat template refuses (many raise on a system turn or on roles that
        do not alternate) scores NaN, and only it: the others in the batch are scored.
        """
        if not conversations:
            return []
        texts: dict[int, str] = {}
        for index, (messages, response) in enumerate(conversations):
            try:
                texts[index] = self.render(messages, response)
            except Exception as exc:  # the template's own error (jinja2 TemplateError, ...)
                logger.warning("reward scorer: pair %d not rendered: %s", index, exc)
        scores = [math.nan] * len(conversations)
        if not texts:
            return scores
        order = list(texts)
        ids = self.encode([texts[i] for i in order])
        budget = token_budget or self.token_budget
        for group in plan_batches([len(x) for x in ids], budget, max_batch):
            for index, value in zip(group, self.score_ids([ids[i] for i in group]), strict=True):
                scores[order[index]] = value
        return scores
