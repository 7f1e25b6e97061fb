"""Dream (Dream-org/Dream-v0-*): Qwen2 weights with bidirectional attention and a logit shift.

The same module with `is_causal=True` is a plain Qwen2 causal LM: the AR verifier used by APD.
"""

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
from vdiff.models.layers import DecoderLayer, DecoderParts, RMSNorm, read_rope_theta, run_decoder_layers


@dataclass(frozen=True, slots=True)
class Qwen2Config:
    hidden_size: int
    num_attention_heads: int
    num_key_value_heads: int
    num_hidden_layers: int
    intermediate_size: int
    vocab_size: int
    rope_theta: float
    rms_norm_eps: float
    tie_word_embeddings: bool
    mask_token_id: int | None
    head_dim: int

    @classmethod
    def from_hf(cls, hf_config: dict[str, Any]) -> Qwen2Config:
        hidden, heads = hf_config["hidden_size"], hf_config["num_attention_heads"]
        rope_theta = read_rope_theta(hf_config, 10000.0)
        return cls(
            hidden_size=hidden,
            num_attention_heads=heads,
            num_key_value_heads=hf_config.get("num_key_value_heads") or heads,
            num_hidden_layers=hf_config["num_hidden_layers"],
            intermediate_size=hf_config["intermediate_size"],
            vocab_size=hf_config["vocab_size"],
            rope_theta=rope_theta,
            rms_norm_eps=float(hf_config.get("rms_norm_eps", 1e-6)),
            tie_word_embeddings=bool(hf_config.get("tie_word_embeddings", False)),
            mask_token_id=hf_config.get("mask_token_id"),
            head_dim=hf_config.get("head_dim") or hidden // heads,
        )


class Qwen2Attention(nn.Module):
    def __init__(self, config: Qwen2Config) -> None:
        super().__init__()
        hidden = config.hidden_size
        q_size = config.num_attention_heads * config.head_dim
        kv_size = config.num_key_value_heads * config.head_dim
        heads = plan_heads(
            config.num_attention_heads, config.num_key_value_heads, config.head_dim, building_state()
        )
        self.num_heads, self.num_kv_heads = heads.num_heads, heads.num_kv_heads
        self.q_proj = ColumnParallelLinear(hidden, q_size, True, rows=heads.q_rows)
        self.k_proj = ColumnParallelLinear(hidden, kv_size, True, rows=heads.kv_rows)
        self.v_proj = ColumnParallelLinear(hidden, kv_size, True, rows=heads.kv_rows)
        self.o_proj = RowParallelLinear(q_size, hidden, False)


class Qwen2MLP(nn.Module):
    def __init__(self, config: Qwen2Config) -> None:
        super().__init__()
        hidden, intermediate = config.hidden_size, config.intermediate_size
        self.gate_proj = ColumnParallelLinear(hidden, intermediate, False, what="MLP features")
        self.up_proj = ColumnParallelLinear(hidden, intermediate, False, what="MLP features")
        self.down_proj = RowParallelLinear(intermediate, hidden, False, what="MLP features")


class Qwen2DecoderLayer(DecoderLayer):
    def __init__(self, config: Qwen2Config) -> None:
        super().__init__()
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.self_attn = Qwen2Attention(config)
        self.num_heads, self.num_kv_heads = self.self_attn.num_heads, self.self_attn.num_kv_heads
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.mlp = Qwen2MLP(config)

    def parts(self) -> DecoderParts:
        attn, mlp = self.self_attn, self.mlp
        return DecoderParts(
            attn_norm=self.input_layernorm,
            q_proj=attn.q_proj,
            k_proj=attn.k_proj,
            v_proj=attn.v_proj,
            o_proj=attn.o_proj,
            mlp_norm=self.post_attention_layernorm,
            gate_proj=mlp.gate_proj,
            up_proj=mlp.up_proj,
            down_proj=mlp.down_proj,
        )


class Qwen2Backbone(nn.Module):
    def __init__(self, config: Qwen2Config) -> None:
        super().__init__()
        self.embed_tokens = VocabParallelEmbedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(Qwen2DecoderLayer(config) for _ in range(config.num_hidden_layers))
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)


class DreamModel(DiffusionModel):
    """Tensor names `model.{embed_tokens, layers.i.*, norm}` and `lm_head` (absent when tied)."""

    family = "dream"
    logit_shift = True
    supports_tensor_parallel = True

    def __init__(self, config: Qwen2Config, *, is_causal: bool = False) -> None:
        super().__init__()
        self.config = config
        self.mask_token_id = config.mask_token_id
        self.is_causal = is_causal
        self.model = Qwen2Backbone(config)
        if not config.tie_word_embeddings:
            self.lm_head = ParallelLMHead(config.hidden_size, config.vocab_size, False)

    @classmethod
    def from_hf_config(cls, hf_config: dict[str, Any]) -> DreamModel:
        return cls(Qwen2Config.from_hf(hf_config))

    def project_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        if self.config.tie_word_embeddings:
            return self.model.embed_tokens.project(hidden)
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
        x, new_cache = run_decoder_layers(
            self.model.layers,
            self.model.embed_tokens(input_ids),
            position_ids,
            head_dim=self.config.head_dim,
            rope_theta=self.config.rope_theta,
            key_mask=attention_mask,
            past_key_values=past_key_values,
            use_cache=use_cache,
            is_causal=self.is_causal,
        )
        hidden = select_positions(self.model.norm(x), logits_indices)
        return ModelOutput(logits=self.project_logits(hidden), past_key_values=new_cache)


class Qwen2CausalLM(DreamModel):
    """A Qwen2 causal LM (model_type qwen2): Dream's module with causal attention.

    Logits i predict token i+1 as in any AR model, which is exactly Dream's convention, so logit_shift
    stays True: `shift_logits` gives the prediction for every position in both cases.
    """

    family = "qwen2"
    supports_tensor_parallel = True

    def __init__(self, config: Qwen2Config, *, is_causal: bool = True) -> None:
        super().__init__(config, is_causal=is_causal)
        self.mask_token_id = None

    @classmethod
    def from_hf_config(cls, hf_config: dict[str, Any]) -> Qwen2CausalLM:
        return cls(Qwen2Config.from_hf(hf_config))
