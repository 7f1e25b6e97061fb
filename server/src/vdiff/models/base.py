"""The contract every model family implements, so the engine never depends on a concrete model."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

KVCache = list[tuple[torch.Tensor, torch.Tensor]]
"""Per layer (key, value), each [batch, num_kv_heads, num_cached, head_dim], RoPE already applied to keys."""


@dataclass(slots=True)
class ModelOutput:
    logits: torch.Tensor
    """[batch, num_queries, vocab]: raw per-position logits (hidden state i -> logits i, no shift applied);
    [len(logits_indices), vocab] when the forward was given logits_indices."""
    past_key_values: KVCache | None = None
    """Keys/values of the *query* positions of this call (only when use_cache=True)."""


class DiffusionModel(nn.Module):
    """A masked-diffusion LM (or, with is_causal, an AR verifier) over explicit positions.

    forward(input_ids [B,L], position_ids [B,L], attention_mask [B, P+L] bool (True = key may be
    attended; P = cached keys), past_key_values (P cached keys per layer), use_cache, logits_indices)
    -> ModelOutput. Attention is bidirectional over every unmasked key (cached and current) unless
    is_causal. logits_indices (flat indices into the B*L query positions) projects only those hidden
    states to the vocabulary: a step needs logits at a block's masks, not at the whole canvas (for
    LLaDA-8B's 126k vocabulary the full [B, L, V] tensor is gigabytes).
    """

    family: str = ""
    mask_token_id: int | None = None
    logit_shift: bool = False
    """Dream: position i is predicted by hidden state i-1 (see shift_logits)."""
    is_causal: bool = False
    supports_batching: bool = True
    supports_kv_cache: bool = True

    @classmethod
    def from_hf_config(cls, hf_config: dict[str, Any]) -> DiffusionModel:  # pragma: no cover - interface
        """Build the (uninitialised) module from config.json; the loader fills in the weights."""
        raise NotImplementedError

    def forward(  # pragma: no cover - interface
        self,
        input_ids: torch.Tensor,
        position_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        past_key_values: KVCache | None = None,
        use_cache: bool = False,
        logits_indices: torch.Tensor | None = None,
    ) -> ModelOutput:
        raise NotImplementedError


def select_positions(states: torch.Tensor, logits_indices: torch.Tensor | None) -> torch.Tensor:
    """[B, L, ...] -> [N, ...] at flat indices into the B*L positions (unchanged when None)."""
    if logits_indices is None:
        return states
    return states.reshape(-1, *states.shape[2:]).index_select(0, logits_indices)


def shift_logits(logits: torch.Tensor) -> torch.Tensor:
    """Dream's logit shift: the prediction for position i comes from hidden state i-1."""
    return torch.cat([logits[:, :1], logits[:, :-1]], dim=1)
