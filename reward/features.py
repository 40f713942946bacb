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
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn.utils.rnn import pad_sequence

from reward.scorer import last_real_index


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

    def _run(self, hidden: torch.Tensor, layers: Sequence[nn.Module]) -> torch.Tensor:
        """`layers` over `hidden` as LlamaModel.forward runs them (no cache, no padding mask)."""
        from transformers.masking_utils import create_causal_mask

        positions = torch.arange(hidden.shape[1], device=hidden.device).unsqueeze(0)
        mask = create_causal_mask(
            config=self.backbone.config,
            inputs_embeds=hidden,
            attention_mask=None,
            past_key_values=None,
            position_ids=positions,
        )
        rotary = self.backbone.rotary_emb(hidden, position_ids=positions)
        for layer in layers:
            hidden = layer(
                hidden, attention_mask=mask, position_embeddings=rotary, position_ids=positions
            )
        return hidden

    @torch.no_grad()
    def features(self, batch: Sequence[Sequence[int]]) -> tuple[list[torch.Tensor], list[int]]:
        """The hidden states entering layer `cut` of each sequence (on the CPU, unpadded), and
        the index each sequence's score is read at."""
        longest = max(len(ids) for ids in batch)
        input_ids = torch.full((len(batch), longest), self.pad_token_id, dtype=torch.long)
        for row, ids in enumerate(batch):
            input_ids[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        last = last_real_index(input_ids, self.pad_token_id).tolist()
        hidden = self.backbone.embed_tokens(input_ids.to(self.device))
        hidden = self._run(hidden, self.backbone.layers[: self.cut]).cpu()
        return [hidden[row, : len(ids)].clone() for row, ids in enumerate(batch)], last

    def scores(self, features: Sequence[torch.Tensor], last: Sequence[int]) -> torch.Tensor:
        """One score per sequence from its cached features (differentiable in the top)."""
        hidden = pad_sequence(list(features), batch_first=True).to(self.device)
        hidden = self._run(hidden, self.backbone.layers[self.cut :])
        rows = torch.arange(hidden.shape[0], device=self.device)
        pooled = hidden[rows, torch.tensor(list(last), device=self.device)]
        return self.model.score(self.backbone.norm(pooled))[:, 0]
