"""trust_remote_code fallback: a checkpoint's own modeling code through transformers, served unbatched."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from vdiff.models.base import DiffusionModel, KVCache, ModelOutput, select_positions


class RemoteDiffusionModel(DiffusionModel):
    """Wraps `AutoModel.from_pretrained(..., trust_remote_code=True)`.

    The remote code computes its own positions and knows nothing of our cache, so every row is run alone
    over its attendable positions (padding dropped) and past_key_values are refused.
    """

    family = "remote"
    supports_batching = False
    supports_kv_cache = False

    def __init__(self, inner: nn.Module, hf_config: dict[str, Any]) -> None:
        super().__init__()
        self.inner = inner
        self.mask_token_id = hf_config.get("mask_token_id")
        self.logit_shift = bool(hf_config.get("logit_shift", False))

    @classmethod
    def from_pretrained(
        cls, model_dir: Path, hf_config: dict[str, Any], dtype: torch.dtype, device: torch.device
    ) -> RemoteDiffusionModel:
        from transformers import AutoModel

        inner = AutoModel.from_pretrained(model_dir, trust_remote_code=True, dtype=dtype)
        return cls(inner.to(device).eval(), hf_config)

    def forward(
        self,
        input_ids: torch.Tensor,
        position_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        past_key_values: KVCache | None = None,
        use_cache: bool = False,
        logits_indices: torch.Tensor | None = None,
    ) -> ModelOutput:
        if past_key_values or use_cache:
            raise NotImplementedError("models loaded with trust_remote_code do not support the KV cache")
        rows = []
        for row_ids, row_mask in zip(input_ids, self._row_masks(input_ids, attention_mask), strict=True):
            logits = self.inner(input_ids=row_ids[row_mask][None]).logits[0]
            full = logits.new_zeros(row_ids.shape[0], logits.shape[-1])
            full[row_mask] = logits
            rows.append(full)
        return ModelOutput(logits=select_positions(torch.stack(rows), logits_indices))

    @staticmethod
    def _row_masks(input_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        if attention_mask is None:
            return torch.ones_like(input_ids, dtype=torch.bool)
        return attention_mask[:, -input_ids.shape[1] :].bool()
