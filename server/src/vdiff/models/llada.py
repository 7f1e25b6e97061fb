"""LLaDA (GSAI-ML/LLaDA-8B-*): a LLaMA-style bidirectional transformer with `model.transformer.*` names."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from vdiff.distributed.layers import (
    ColumnParallelLinear,
    ParallelLMHead,
    RowParallelLinear,
    VocabParallelEmbedding,
    plan_heads,
)
from vdiff.distributed.state import building_state
from vdiff.models.base import DiffusionModel, KVCache, ModelOutput, select_positions
from vdiff.models.layers import DecoderLayer, DecoderParts, RMSNorm, run_decoder_layers


@dataclass(frozen=True, slots=True)
class LLaDAConfig:
    d_model: int
    n_heads: int
    n_kv_heads: int
    n_layers: int
    mlp_hidden_size: int
    embedding_size: int
    rope_theta: float
    rms_norm_eps: float
    include_bias: bool
    include_qkv_bias: bool
    weight_tying: bool
    mask_token_id: int | None

    @classmethod
    def from_hf(cls, hf_config: dict[str, Any]) -> LLaDAConfig:
        n_heads = hf_config["n_heads"]
        n_kv_heads = hf_config.get("n_kv_heads") or n_heads
        if hf_config.get("multi_query_attention"):
            n_kv_heads = 1
        return cls(
            d_model=hf_config["d_model"],
            n_heads=n_heads,
            n_kv_heads=n_kv_heads,
            n_layers=hf_config["n_layers"],
            mlp_hidden_size=hf_config.get("mlp_hidden_size")
            or hf_config.get("mlp_ratio", 4) * hf_config["d_model"],
            embedding_size=hf_config.get("embedding_size") or hf_config["vocab_size"],
            rope_theta=float(hf_config.get("rope_theta", 10000.0)),
            rms_norm_eps=float(hf_config.get("rms_norm_eps", 1e-5)),
            include_bias=bool(hf_config.get("include_bias", False)),
            include_qkv_bias=bool(hf_config.get("include_qkv_bias", False)),
            weight_tying=bool(hf_config.get("weight_tying", False)),
            mask_token_id=hf_config.get("mask_token_id"),
        )


class LLaDABlock(DecoderLayer):
    def __init__(self, config: LLaDAConfig) -> None:
        super().__init__()
        d_model, hidden = config.d_model, config.mlp_hidden_size
        head_dim = d_model // config.n_heads
        kv_size = config.n_kv_heads * head_dim
        qkv_bias = config.include_bias or config.include_qkv_bias
        bias = config.include_bias
        heads = plan_heads(config.n_heads, config.n_kv_heads, head_dim, building_state())
        self.num_heads, self.num_kv_heads = heads.num_heads, heads.num_kv_heads
        self.attn_norm = RMSNorm(d_model, config.rms_norm_eps)
        self.q_proj = ColumnParallelLinear(d_model, d_model, qkv_bias, rows=heads.q_rows)
        self.k_proj = ColumnParallelLinear(d_model, kv_size, qkv_bias, rows=heads.kv_rows)
        self.v_proj = ColumnParallelLinear(d_model, kv_size, qkv_bias, rows=heads.kv_rows)
        self.attn_out = RowParallelLinear(d_model, d_model, bias)
        self.ff_norm = RMSNorm(d_model, config.rms_norm_eps)
        self.ff_proj = ColumnParallelLinear(d_model, hidden, bias, what="MLP features")  # gate
        self.up_proj = ColumnParallelLinear(d_model, hidden, bias, what="MLP features")
        self.ff_out = RowParallelLinear(hidden, d_model, bias, what="MLP features")  # down

    def parts(self) -> DecoderParts:
        return DecoderParts(
            attn_norm=self.attn_norm,
            q_proj=self.q_proj,
            k_proj=self.k_proj,
            v_proj=self.v_proj,
            o_proj=self.attn_out,
            mlp_norm=self.ff_norm,
            gate_proj=self.ff_proj,
            up_proj=self.up_proj,
            down_proj=self.ff_out,
        )


class LLaDATransformer(nn.Module):
    def __init__(self, config: LLaDAConfig) -> None:
        super().__init__()
        self.wte = VocabParallelEmbedding(config.embedding_size, config.d_model)
        self.blocks = nn.ModuleList(LLaDABlock(config) for _ in range(config.n_layers))
        self.ln_f = RMSNorm(config.d_model, config.rms_norm_eps)
        if not config.weight_tying:
            self.ff_out = ParallelLMHead(config.d_model, config.embedding_size, config.include_bias)


class _LLaDAWrapper(nn.Module):
    def __init__(self, config: LLaDAConfig) -> None:
        super().__init__()
        self.transformer = LLaDATransformer(config)


class LLaDAModel(DiffusionModel):
    """Tensor names `model.transformer.{wte, blocks.i.*, ln_f, ff_out}` as in the released checkpoints."""

    family = "llada"
    supports_tensor_parallel = True

    def __init__(self, config: LLaDAConfig, *, is_causal: bool = False) -> None:
        super().__init__()
        self.config = config
        self.mask_token_id = config.mask_token_id
        self.is_causal = is_causal
        self.head_dim = config.d_model // config.n_heads
        self.model = _LLaDAWrapper(config)

    @classmethod
    def from_hf_config(cls, hf_config: dict[str, Any]) -> LLaDAModel:
        return cls(LLaDAConfig.from_hf(hf_config))

    def lm_head(self, hidden: torch.Tensor) -> torch.Tensor:
        transformer = self.model.transformer
        if self.config.weight_tying:
            return transformer.wte.project(hidden)
        return transformer.ff_out(hidden)

    def forward(
        self,
        input_ids: torch.Tensor,
        position_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        past_key_values: KVCache | None = None,
        use_cache: bool = False,
        logits_indices: torch.Tensor | None = None,
    ) -> ModelOutput:
        transformer = self.model.transformer
        x, new_cache = run_decoder_layers(
            transformer.blocks,
            transformer.wte(input_ids),
            position_ids,
            head_dim=self.head_dim,
            rope_theta=self.config.rope_theta,
            key_mask=attention_mask,
            past_key_values=past_key_values,
            use_cache=use_cache,
            is_causal=self.is_causal,
        )
        hidden = select_positions(transformer.ln_f(x), logits_indices)
        return ModelOutput(logits=self.lm_head(hidden), past_key_values=new_cache)
