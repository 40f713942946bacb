"""A one-label Llama sequence classifier cut in two, to train its top layers on cached features.

With the embeddings and the lower decoder layers frozen, their output for a given sequence never
changes: `SplitClassifier.features` runs them once per sequence and returns the hidden states
entering layer `cut` (one `[tokens, hidden]` tensor per sequence, unpadded), and
`SplitClassifier.scores` runs only the top layers, the final norm and the score head on such
states, every epoch. The two halves compute what the whole model computes: the same modules,
the same rotary positions (0 up from each sequence's first token), the same causal mask built by
transformers for the model's attention implementation, and the score read at the last token
that is not padding (`reward.scorer.last_real_index`, transformers' pooling rule). So the
scorer, running the saved model whole, reproduces these scores within float rounding.

Batches are padded on the right, and, as in `RewardScorer.score_ids`, no attention mask is
needed: under causal attention a real token never sees the pads that follow it. Padded feature
rows are zeros, which the norms map to zeros (they are never pooled).

Two savings, each exact (the same arithmetic, up to float rounding; tests compare them with the
plain path):

- **A batch's shared prefix runs once.** Conversations rendered by one chat template share their
  first tokens (the template's default system prompt, and in a preference pair the whole
  prompt); `features` runs the longest prefix every sequence of the batch shares once, keeps its
  keys and values (transformers' `DynamicCache`), and runs only each sequence's rest on top of
  them, as generation does. `plan_prefix_batches` puts sequences in token order, so that pairs
  of one prompt, and prompts that begin alike, share batches.
- **The top layer runs at the scored token only.** The score reads one position of the last
  layer's output; that position needs every earlier position's keys and values from the layer's
  input, but its query, attention output and MLP only for itself (`_last_layer_at`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pad_sequence

from reward.scorer import last_real_index

if TYPE_CHECKING:
    from transformers import DynamicCache

MIN_SHARED = 8  # tokens a batch's sequences must share before their prefix runs apart


def shared_prefix(batch: Sequence[Sequence[int]]) -> int:
    """The length of the prefix every sequence of `batch` shares, leaving each at least one
    token of its own."""
    shared = min(len(ids) for ids in batch) - 1
    for ids in batch[1:]:
        shared = min(shared, _common_length(batch[0], ids))
    return max(shared, 0)


def plan_prefix_batches(ids: Sequence[Sequence[int]], token_budget: int) -> list[list[int]]:
    """Sequence indices in batches that share prefixes: in token order, each batch as long as
    the tokens it runs apart from its shared prefix (rows times the longest rest, padded) stay
    within `token_budget`; a sequence over the budget gets a batch of its own."""
    if token_budget < 1:
        raise ValueError("token_budget must be at least 1")
    order = sorted(range(len(ids)), key=lambda i: list(ids[i]))
    batches: list[list[int]] = []
    current: list[int] = []
    common = longest = shortest = 0  # the current batch's prefix with its first row, lengths
    for index in order:
        row = ids[index]
        if current:
            # In token order, what a run shares is what its first and newest rows share.
            first = ids[current[0]]
            common = min(common, _common_length(first, row))
            wider, narrower = max(longest, len(row)), min(shortest, len(row))
            rest = wider - min(common, narrower - 1)
            if (len(current) + 1) * rest <= token_budget:
                current.append(index)
                longest, shortest = wider, narrower
                continue
            batches.append(current)
        current, common, longest, shortest = [index], len(row), len(row), len(row)
    if current:
        batches.append(current)
    return batches


def _common_length(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


class SplitClassifier:
    """`model` (a one-label LlamaForSequenceClassification) cut below its top `top_layers`
    decoder layers; only those layers and the score head are trainable."""

    def __init__(self, model: nn.Module, top_layers: int) -> None:
        self.model = model
        self.backbone: nn.Module = getattr(model, model.base_model_prefix)
        layers = len(self.backbone.layers)
        if not 0 <= top_layers <= layers:
            raise ValueError(f"top_layers is between 0 and {layers} (the model's layers)")
        self.cut = layers - top_layers
        self.pad_token_id: int = model.config.pad_token_id
        self.device = next(model.parameters()).device

    def trainable(self) -> list[nn.Parameter]:
        """Freeze everything but the top layers and the head; return their parameters."""
        self.model.requires_grad_(False)
        top = [*self.backbone.layers[self.cut :], self.model.score]
        for module in top:
            module.requires_grad_(True)
        return [p for module in top for p in module.parameters()]

    def _run(
        self,
        hidden: torch.Tensor,
        layers: Sequence[nn.Module],
        cache: DynamicCache | None = None,
        offset: int = 0,
    ) -> torch.Tensor:
        """`layers` over `hidden` as LlamaModel.forward runs them (no padding mask): on top of
        the `offset` positions already in `cache` when given, adding this run's to it."""
        from transformers.masking_utils import create_causal_mask

        positions = torch.arange(offset, offset + hidden.shape[1], device=hidden.device)
        mask = create_causal_mask(
            config=self.backbone.config,
            inputs_embeds=hidden,
            attention_mask=None,
            past_key_values=cache,
            position_ids=positions.unsqueeze(0),
        )
        rotary = self.backbone.rotary_emb(hidden, position_ids=positions.unsqueeze(0))
        for layer in layers:
            hidden = layer(
                hidden,
                attention_mask=mask,
                position_embeddings=rotary,
                position_ids=positions.unsqueeze(0),
                past_key_values=cache,
                use_cache=cache is not None,
            )
        return hidden

    def _last_layer_at(self, hidden: torch.Tensor, last: torch.Tensor) -> torch.Tensor:
        """The top decoder layer's output at position `last[row]` of each row alone: keys and
        values from every position, the query, attention and MLP at that one (what the layer
        computes there, under the causal mask and with pads after `last` never seen)."""
        from transformers.models.llama.modeling_llama import rotate_half

        layer = self.backbone.layers[-1]
        attn = layer.self_attn
        rows = torch.arange(hidden.shape[0], device=hidden.device)
        length, head_dim = hidden.shape[1], attn.head_dim
        normed = layer.input_layernorm(hidden)
        split_heads = lambda x: x.view(*x.shape[:2], -1, head_dim).transpose(1, 2)  # noqa: E731
        query = split_heads(attn.q_proj(normed[rows, last].unsqueeze(1)))
        key, value = split_heads(attn.k_proj(normed)), split_heads(attn.v_proj(normed))
        positions = torch.arange(length, device=hidden.device).unsqueeze(0)
        cos, sin = self.backbone.rotary_emb(hidden, position_ids=positions)
        cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)  # [1, 1, length, head_dim]
        key = key * cos + rotate_half(key) * sin
        at = (cos[0, 0, last].unsqueeze(1).unsqueeze(1), sin[0, 0, last].unsqueeze(1).unsqueeze(1))
        query = query * at[0] + rotate_half(query) * at[1]
        seen = positions <= last.unsqueeze(1)  # [rows, length]
        attended = F.scaled_dot_product_attention(
            query,
            key,
            value,
            attn_mask=seen[:, None, None, :],
            scale=attn.scaling,
            enable_gqa=query.shape[1] != key.shape[1],
        )
        out = hidden[rows, last] + attn.o_proj(attended.transpose(1, 2).reshape(len(rows), -1))
        return out + layer.mlp(layer.post_attention_layernorm(out))

    @torch.no_grad()
    def features(
        self, batch: Sequence[Sequence[int]], share_prefix: bool = True
    ) -> tuple[list[torch.Tensor], list[int]]:
        """The hidden states entering layer `cut` of each sequence (on the CPU, unpadded), and
        the index each sequence's score is read at. The prefix all of `batch` shares runs once
        (unless `share_prefix` is off, or it is shorter than `MIN_SHARED`)."""
        shared = shared_prefix(batch) if share_prefix and len(batch) > 1 else 0
        if shared < MIN_SHARED:
            shared = 0
        input_ids = self._padded([ids[shared:] for ids in batch])
        last = (last_real_index(input_ids, self.pad_token_id) + shared).tolist()
        hidden = self.backbone.embed_tokens(input_ids.to(self.device))
        layers = self.backbone.layers[: self.cut]
        if shared:
            prefix = torch.tensor([list(batch[0][:shared])], dtype=torch.long, device=self.device)
            from transformers import DynamicCache

            cache = DynamicCache(config=self.backbone.config)
            head = self._run(self.backbone.embed_tokens(prefix), layers, cache=cache)
            cache.batch_repeat_interleave(len(batch))
            rest = self._run(hidden, layers, cache=cache, offset=shared)
            hidden = torch.cat([head.expand(len(batch), -1, -1), rest], dim=1)
        else:
            hidden = self._run(hidden, layers)
        hidden = hidden.cpu()
        return [hidden[row, : len(ids)].clone() for row, ids in enumerate(batch)], last

    def _padded(self, batch: Sequence[Sequence[int]]) -> torch.Tensor:
        longest = max(len(ids) for ids in batch)
        input_ids = torch.full((len(batch), longest), self.pad_token_id, dtype=torch.long)
        for row, ids in enumerate(batch):
            input_ids[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        return input_ids

    def scores(self, features: Sequence[torch.Tensor], last: Sequence[int]) -> torch.Tensor:
        """One score per sequence from its cached features (differentiable in the top)."""
        hidden = pad_sequence(list(features), batch_first=True).to(self.device)
        at = torch.tensor(list(last), device=self.device)
        if self.cut == len(self.backbone.layers):  # no layer trained: the head alone
            pooled = hidden[torch.arange(hidden.shape[0], device=self.device), at]
        else:
            hidden = self._run(hidden, self.backbone.layers[self.cut : -1])
            pooled = self._last_layer_at(hidden, at)
        return self.model.score(self.backbone.norm(pooled))[:, 0]
