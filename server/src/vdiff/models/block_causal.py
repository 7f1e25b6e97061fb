"""What every block-diffusion family shares: the block-causal forward over an exact cache of finished
blocks (docs/models.md). A family supplies its backbone (embeddings, decoder layers, final norm) and
its rotary width; cached keys (past_key_values) are the row's positions 0..P-1."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from vdiff.distributed.layers import ParallelLMHead, VocabParallelEmbedding
from vdiff.models.base import DiffusionModel, KVCache, ModelOutput, select_positions
from vdiff.models.layers import build_block_causal_mask, rotary_cos_sin


def attend_with_past(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor,
    past: tuple[torch.Tensor, torch.Tensor] | None,
) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
    """SDPA of q [B, H, L, D] over the cached keys then k, v [B, Hkv, L, D] (GQA); returns the output and
    this forward's own keys/values (what a cache appends)."""
    current = (k, v)
    if past is not None:
        k, v = torch.cat([past[0], k], dim=2), torch.cat([past[1], v], dim=2)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=k.shape[1] != q.shape[1])
    return out, current


def pre_norm_layer(
    layer: nn.Module,
    attention: nn.Module,
    x: torch.Tensor,
    cos: torch.Tensor,
    sin: torch.Tensor,
    mask: torch.Tensor,
    past: tuple[torch.Tensor, torch.Tensor] | None,
) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
    """h = x + attn(norm(x)); out = h + mlp(norm(h)) (the layer's input/post_attention norms and mlp)."""
    attended, current_kv = attention(layer.input_layernorm(x), cos, sin, mask, past)
    h = x + attended
    return h + layer.mlp(layer.post_attention_layernorm(h)), current_kv


class BlockCausalLM(DiffusionModel):
    logit_shift = False
    is_block_causal = True

    def __init__(self, config: Any, backbone: nn.Module) -> None:
        super().__init__()
        self.config = config
        self.mask_token_id = config.mask_token_id
        self.block_size = config.block_size
        self.model = backbone
        if not config.tie_word_embeddings:  # a plain nn.Linear on one rank
            self.lm_head = ParallelLMHead(config.hidden_size, config.vocab_size, False)

    @property
    def embeddings(self) -> nn.Embedding:
        raise NotImplementedError

    @property
    def rotary_dim(self) -> int:
        raise NotImplementedError

    def project_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        if self.config.tie_word_embeddings:
            embeddings = self.embeddings
            if isinstance(embeddings, VocabParallelEmbedding):
                return embeddings.project(hidden)
            return F.linear(hidden, embeddings.weight)
        return self.lm_head(hidden)

    def forward(
        self,
        input_ids: torch.Tensor,
        position_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        past_key_values: KVCache | None = None,
        use_cache: bool = False,
        logits_indices: torch.Tensor | None = None,
    ) -> ModelOutput:
        batch, length = input_ids.shape
        num_cached = past_key_values[0][0].shape[2] if past_key_values else 0
        if attention_mask is None:
            attention_mask = torch.ones(batch, num_cached + length, dtype=torch.bool, device=input_ids.device)
        mask = build_block_causal_mask(position_ids, attention_mask, self.block_size)
        cos, sin = rotary_cos_sin(position_ids, self.rotary_dim, self.config.rope_theta)
        x = self.embeddings(input_ids)
        new_cache: KVCache = []
        for index, layer in enumerate(self.model.layers):
            past = past_key_values[index] if past_key_values else None
            x, current_kv = layer(x, cos, sin, mask, past)
            if use_cache:
                new_cache.append(current_kv)
        hidden = select_positions(self.model.norm(x), logits_indices)
        return ModelOutput(
            logits=self.project_logits(hidden), past_key_values=new_cache if use_cache else None
        )
