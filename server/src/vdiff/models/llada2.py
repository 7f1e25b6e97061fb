"""inclusionAI's MoE diffusion LMs on the Ling tokenizer: LLaDA2.0 / LLaDA2.1 and LLaDA-MoE-7B-A1B.

LLaDA2 (`model_type: llada2_moe`, `LLaDA2MoeModelLM`; the BailingMoeV2 / Ling-2.0 backbone made block
diffusion): fused Q|K|V projection, per-head RMSNorm on q and k, partial rotate-half RoPE (the first
head_dim x partial_rotary_factor dims rotate), GQA, a dense SwiGLU MLP in the first `first_k_dense_replace`
layers and a sigmoid-routed MoE with shared experts, group-limited top-k and an expert correction bias in
the others (vdiff.models.moe), untied head. Attention is block-causal with B = 32 (config.json's
block_size, else 32) and logits are not shifted. The keys of a finished block are exact, as for SDAR.

LLaDA2.1's token editing (T2T: replacing already-committed tokens) is not implemented: the model says so
with `supports_token_editing = False`, and vdiff's block policy only ever fills masks (M2T), which is
LLaDA2.1 with editing off (LLaDA2.0's decoding).

LLaDA-MoE-7B-A1B (`LLaDAMoEModelLM`; `model_type: llada` as in dInfer's config, or `lladamoe`): an
OLMoE-style layout (separate q/k/v/o, per-head q/k norm, `mlp.gate` + `mlp.experts.{e}`, optional
`mlp.expert_bias` and a layer-level `shared_expert`, dense layers where `moe_layer_freq` is 0) with fully
bidirectional attention, like LLaDA-8B. Its router follows the published modeling file: softmax scores,
the bias (when present) added before top-k *and kept in the weights*, no renormalisation, no scaling and
no groups (the file ignores norm_topk_prob, routed_scaling_factor and the router group keys).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from vdiff.distributed.layers import (
    ColumnParallelLinear,
    FusedColumnParallelLinear,
    ParallelLMHead,
    RowParallelLinear,
    VocabParallelEmbedding,
    plan_heads,
)
from vdiff.distributed.state import building_state
from vdiff.errors import VdiffValidationError
from vdiff.models.base import DiffusionModel, KVCache, ModelOutput, select_positions
from vdiff.models.block_causal import BlockCausalLM, attend_with_past, pre_norm_layer
from vdiff.models.layers import RMSNorm, apply_rotary, attention, read_rope_theta, rotary_cos_sin
from vdiff.models.moe import RouterConfig, SparseMoeBlock, SwiGLUMLP

DEFAULT_BLOCK_SIZE = 32
"""LLaDA2's training and decoding block (HF generate's block_length, SGLang's DLLM_PARAMS)."""
LING_MASK_TOKEN_ID = 156895
"""`<|mask|>` in the Ling tokenizer (hard-coded in LLaDA2's generate() and dInfer)."""


def llada2_block_size(hf_config: dict[str, Any], name: str | None = None) -> int:
    """config.json's block_size when present (the released configs carry none), else 32."""
    declared = hf_config.get("block_size")
    if declared is None:
        return DEFAULT_BLOCK_SIZE
    if isinstance(declared, bool) or not isinstance(declared, int) or declared < 1:
        raise VdiffValidationError(
            f"config.json block_size must be a positive integer: {declared!r}", "model"
        )
    return declared


def _mask_token_id(hf_config: dict[str, Any], vocab_size: int) -> int | None:
    declared = hf_config.get("mask_token_id")
    if declared is not None:
        return int(declared)
    return LING_MASK_TOKEN_ID if vocab_size > LING_MASK_TOKEN_ID else None


def _rotary_dim(hf_config: dict[str, Any], head_dim: int) -> int:
    if hf_config.get("rotary_dim"):
        rotary_dim = int(hf_config["rotary_dim"])
    else:
        factor = hf_config.get("partial_rotary_factor")
        factor = 1.0 if factor is None or factor <= 0 else float(factor)
        rotary_dim = int(head_dim * factor)
    if rotary_dim < 2 or rotary_dim % 2 or rotary_dim > head_dim:
        raise VdiffValidationError(
            f"rotary dimension {rotary_dim} must be even and in 2..head_dim ({head_dim})", "model"
        )
    return rotary_dim


def _refuse(family: str, hf_config: dict[str, Any], **unsupported: bool) -> None:
    for key, refused in unsupported.items():
        if refused:
            raise VdiffValidationError(
                f"{family} config.json {key}={hf_config.get(key)!r} is not supported", "model"
            )


def apply_partial_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate-half RoPE on the first cos.shape[-1] dims of x [B, H, L, D]; the rest pass through."""
    rotary_dim = cos.shape[-1]
    if rotary_dim == x.shape[-1]:
        return apply_rotary(x, cos, sin)
    return torch.cat([apply_rotary(x[..., :rotary_dim], cos, sin), x[..., rotary_dim:]], dim=-1)


# ------------------------------------------------------------------------------------------ LLaDA2
@dataclass(frozen=True, slots=True)
class LLaDA2Config:
    hidden_size: int
    num_attention_heads: int
    num_key_value_heads: int
    num_hidden_layers: int
    head_dim: int
    rotary_dim: int
    intermediate_size: int
    moe_intermediate_size: int
    num_shared_experts: int
    first_k_dense_replace: int
    router: RouterConfig | None
    vocab_size: int
    rope_theta: float
    rms_norm_eps: float
    use_bias: bool
    use_qkv_bias: bool
    use_qk_norm: bool
    tie_word_embeddings: bool
    mask_token_id: int | None
    block_size: int

    @classmethod
    def from_hf(cls, hf_config: dict[str, Any]) -> LLaDA2Config:
        _refuse(
            "LLaDA2",
            hf_config,
            hidden_act=hf_config.get("hidden_act", "silu") != "silu",
            rope_scaling=bool(hf_config.get("rope_scaling")),
            norm_head=bool(hf_config.get("norm_head")),
            norm_softmax=bool(hf_config.get("norm_softmax")),
        )
        hidden, heads = hf_config["hidden_size"], hf_config["num_attention_heads"]
        head_dim = hf_config.get("head_dim") or hidden // heads
        router = None
        if hf_config.get("num_experts"):
            router = RouterConfig.from_hf(hf_config)
            if router.score_function == "sigmoid" and not router.expert_bias:
                raise VdiffValidationError(  # SGLang asserts the same
                    "LLaDA2 config.json: score_function sigmoid needs moe_router_enable_expert_bias", "model"
                )
        vocab_size = hf_config["vocab_size"]
        return cls(
            hidden_size=hidden,
            num_attention_heads=heads,
            num_key_value_heads=hf_config.get("num_key_value_heads") or heads,
            num_hidden_layers=hf_config["num_hidden_layers"],
            head_dim=head_dim,
            rotary_dim=_rotary_dim(hf_config, head_dim),
            intermediate_size=hf_config["intermediate_size"],
            moe_intermediate_size=hf_config.get("moe_intermediate_size") or 0,
            num_shared_experts=hf_config.get("num_shared_experts") or 0,
            first_k_dense_replace=hf_config.get("first_k_dense_replace") or 0,
            router=router,
            vocab_size=vocab_size,
            rope_theta=read_rope_theta(hf_config, 600000.0),
            rms_norm_eps=float(hf_config.get("rms_norm_eps", 1e-6)),
            use_bias=bool(hf_config.get("use_bias", False)),
            use_qkv_bias=bool(hf_config.get("use_qkv_bias", False)),
            use_qk_norm=bool(hf_config.get("use_qk_norm", True)),
            tie_word_embeddings=bool(hf_config.get("tie_word_embeddings", False)),
            mask_token_id=_mask_token_id(hf_config, vocab_size),
            block_size=llada2_block_size(hf_config),
        )

    def is_moe_layer(self, index: int) -> bool:
        return self.router is not None and index >= self.first_k_dense_replace


class LLaDA2Attention(nn.Module):
    """`query_key_value` rows [Q (H heads) ; K (Hkv) ; V (Hkv)], `query_layernorm` / `key_layernorm`
    (per head), `dense` (o-proj)."""

    def __init__(self, config: LLaDA2Config) -> None:
        super().__init__()
        head_dim, num_heads = config.head_dim, config.num_attention_heads
        heads = plan_heads(num_heads, config.num_key_value_heads, head_dim, building_state())
        self.num_heads, self.num_kv_heads, self.head_dim = heads.num_heads, heads.num_kv_heads, head_dim
        q_size, kv_size = num_heads * head_dim, config.num_key_value_heads * head_dim
        pieces = [heads.q_rows] + [(offset + a, offset + b) for offset in (q_size, q_size + kv_size)
                                   for a, b in [heads.kv_rows]]  # fmt: skip
        self.query_key_value = FusedColumnParallelLinear(config.hidden_size, pieces, config.use_qkv_bias)
        if config.use_qk_norm:
            self.query_layernorm = RMSNorm(self.head_dim, config.rms_norm_eps)
            self.key_layernorm = RMSNorm(self.head_dim, config.rms_norm_eps)
        self.dense = RowParallelLinear(num_heads * head_dim, config.hidden_size, config.use_bias)

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        mask: torch.Tensor,
        past: tuple[torch.Tensor, torch.Tensor] | None,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        batch, length, _ = x.shape
        qkv = self.query_key_value(x).view(batch, length, -1, self.head_dim)
        q, k, v = qkv.split([self.num_heads, self.num_kv_heads, self.num_kv_heads], dim=2)
        if hasattr(self, "query_layernorm"):
            q, k = self.query_layernorm(q), self.key_layernorm(k)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        q, k = apply_partial_rotary(q, cos, sin), apply_partial_rotary(k, cos, sin)
        out, current = attend_with_past(q, k, v, mask, past)
        return self.dense(out.transpose(1, 2).reshape(batch, length, -1)), current


class LLaDA2DecoderLayer(nn.Module):
    def __init__(self, config: LLaDA2Config, index: int) -> None:
        super().__init__()
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.attention = LLaDA2Attention(config)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        if config.is_moe_layer(index):
            assert config.router is not None
            self.mlp: nn.Module = SparseMoeBlock(
                config.hidden_size,
                config.moe_intermediate_size,
                config.router,
                shared_intermediate_size=config.moe_intermediate_size * config.num_shared_experts,
            )
        else:
            self.mlp = SwiGLUMLP(config.hidden_size, config.intermediate_size)

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        mask: torch.Tensor,
        past: tuple[torch.Tensor, torch.Tensor] | None,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        return pre_norm_layer(self, self.attention, x, cos, sin, mask, past)


class LLaDA2Backbone(nn.Module):
    def __init__(self, config: LLaDA2Config) -> None:
        super().__init__()
        self.word_embeddings = VocabParallelEmbedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(LLaDA2DecoderLayer(config, i) for i in range(config.num_hidden_layers))
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)


class LLaDA2Model(BlockCausalLM):
    """Tensor names `model.{word_embeddings, layers.i.*, norm}` and `lm_head` (see docs/models.md).

    Block-causal like SDARModel: cached keys (past_key_values) are the row's positions 0..P-1."""

    family = "llada2"
    supports_tensor_parallel = True
    supports_token_editing = False
    """LLaDA2.1's T2T editing of committed tokens is not implemented (M2T decoding only)."""

    def __init__(self, config: LLaDA2Config) -> None:
        super().__init__(config, LLaDA2Backbone(config))

    @classmethod
    def from_hf_config(cls, hf_config: dict[str, Any]) -> LLaDA2Model:
        return cls(LLaDA2Config.from_hf(hf_config))

    @property
    def embeddings(self) -> nn.Embedding:
        return self.model.word_embeddings

    @property
    def rotary_dim(self) -> int:
        return self.config.rotary_dim


# ------------------------------------------------------------------------------------------ LLaDA-MoE
@dataclass(frozen=True, slots=True)
class LLaDAMoEConfig:
    hidden_size: int
    num_attention_heads: int
    num_key_value_heads: int
    num_hidden_layers: int
    head_dim: int
    rotary_dim: int
    dense_intermediate_size: int
    expert_intermediate_size: int
    shared_expert_intermediate_size: int | None
    moe_layers: tuple[bool, ...]
    router: RouterConfig
    vocab_size: int
    rope_theta: float
    rms_norm_eps: float
    attention_bias: bool
    qk_layernorm: bool
    tie_word_embeddings: bool
    mask_token_id: int | None

    @classmethod
    def from_hf(cls, hf_config: dict[str, Any]) -> LLaDAMoEConfig:
        _refuse(
            "LLaDA-MoE",
            hf_config,
            hidden_act=hf_config.get("hidden_act", "silu") != "silu",
            rope_scaling=bool(hf_config.get("rope_scaling")),
            clip_qkv=hf_config.get("clip_qkv") is not None,
        )
        hidden, heads = hf_config["hidden_size"], hf_config["num_attention_heads"]
        head_dim = hidden // heads
        layers = hf_config["num_hidden_layers"]
        freq = hf_config.get("moe_layer_freq")
        if isinstance(freq, list):
            if len(freq) != layers:
                raise VdiffValidationError(
                    f"LLaDA-MoE config.json moe_layer_freq has {len(freq)} entries for {layers} layers",
                    "model",
                )
            moe_layers = tuple(bool(value) for value in freq)
        else:
            moe_layers = (True,) * layers
        router = RouterConfig.from_hf(  # as the modeling file computes it, whatever the config says
            hf_config,
            score_function="softmax",
            n_group=None,
            topk_group=None,
            routed_scaling_factor=1.0,
            norm_topk_prob=False,
            bias_in_weights=True,
        )
        vocab_size = hf_config["vocab_size"]
        return cls(
            hidden_size=hidden,
            num_attention_heads=heads,
            num_key_value_heads=hf_config.get("num_key_value_heads") or heads,
            num_hidden_layers=layers,
            head_dim=head_dim,
            rotary_dim=_rotary_dim(hf_config, head_dim),
            dense_intermediate_size=hf_config.get("dense_intermediate_size") or 0,
            expert_intermediate_size=hf_config["expert_intermediate_size"],
            shared_expert_intermediate_size=hf_config.get("shared_expert_intermediate_size") or None,
            moe_layers=moe_layers,
            router=router,
            vocab_size=vocab_size,
            rope_theta=read_rope_theta(hf_config, 50000.0),
            rms_norm_eps=float(hf_config.get("rms_norm_eps", 1e-5)),
            attention_bias=bool(hf_config.get("attention_bias", False)),
            qk_layernorm=bool(hf_config.get("qk_layernorm", False)),
            tie_word_embeddings=bool(hf_config.get("tie_word_embeddings", False)),
            mask_token_id=_mask_token_id(hf_config, vocab_size),
        )


class LLaDAMoEAttention(nn.Module):
    def __init__(self, config: LLaDAMoEConfig) -> None:
        super().__init__()
        hidden, bias, head_dim = config.hidden_size, config.attention_bias, config.head_dim
        q_size = config.num_attention_heads * head_dim
        kv_size = config.num_key_value_heads * head_dim
        heads = plan_heads(config.num_attention_heads, config.num_key_value_heads, head_dim, building_state())
        self.num_heads, self.num_kv_heads, self.head_dim = heads.num_heads, heads.num_kv_heads, head_dim
        self.q_proj = ColumnParallelLinear(hidden, q_size, bias, rows=heads.q_rows)
        self.k_proj = ColumnParallelLinear(hidden, kv_size, bias, rows=heads.kv_rows)
        self.v_proj = ColumnParallelLinear(hidden, kv_size, bias, rows=heads.kv_rows)
        self.o_proj = RowParallelLinear(q_size, hidden, bias)
        if config.qk_layernorm:
            self.q_norm = RMSNorm(self.head_dim, config.rms_norm_eps)
            self.k_norm = RMSNorm(self.head_dim, config.rms_norm_eps)

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        key_mask: torch.Tensor | None,
        past: tuple[torch.Tensor, torch.Tensor] | None,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        batch, length, _ = x.shape
        q = self.q_proj(x).view(batch, length, self.num_heads, self.head_dim)
        k = self.k_proj(x).view(batch, length, self.num_kv_heads, self.head_dim)
        v = self.v_proj(x).view(batch, length, self.num_kv_heads, self.head_dim)
        if hasattr(self, "q_norm"):
            q, k = self.q_norm(q), self.k_norm(k)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        q, k = apply_partial_rotary(q, cos, sin), apply_partial_rotary(k, cos, sin)
        current = (k, v)
        if past is not None:
            k, v = torch.cat([past[0], k], dim=2), torch.cat([past[1], v], dim=2)
        out = attention(q, k, v, key_mask, is_causal=False)
        return self.o_proj(out.transpose(1, 2).reshape(batch, length, -1)), current


class LLaDAMoEDecoderLayer(nn.Module):
    def __init__(self, config: LLaDAMoEConfig, index: int) -> None:
        super().__init__()
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.self_attn = LLaDAMoEAttention(config)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        if config.moe_layers[index]:
            self.mlp: nn.Module = SparseMoeBlock(
                config.hidden_size, config.expert_intermediate_size, config.router, bias_on_gate=False
            )
            if config.shared_expert_intermediate_size:
                self.shared_expert = SwiGLUMLP(config.hidden_size, config.shared_expert_intermediate_size)
        else:
            self.mlp = SwiGLUMLP(config.hidden_size, config.dense_intermediate_size)

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        key_mask: torch.Tensor | None,
        past: tuple[torch.Tensor, torch.Tensor] | None,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        attended, current_kv = self.self_attn(self.input_layernorm(x), cos, sin, key_mask, past)
        h = x + attended
        normed = self.post_attention_layernorm(h)
        out = self.mlp(normed)
        if hasattr(self, "shared_expert"):
            out = out + self.shared_expert(normed)
        return h + out, current_kv


class LLaDAMoEBackbone(nn.Module):
    def __init__(self, config: LLaDAMoEConfig) -> None:
        super().__init__()
        self.embed_tokens = VocabParallelEmbedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(LLaDAMoEDecoderLayer(config, i) for i in range(config.num_hidden_layers))
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)


class LLaDAMoEModel(DiffusionModel):
    """Tensor names `model.{embed_tokens, layers.i.*, norm}` and `lm_head`; bidirectional (LLaDA-style)."""

    family = "llada_moe"
    supports_tensor_parallel = True

    def __init__(self, config: LLaDAMoEConfig) -> None:
        super().__init__()
        self.config = config
        self.mask_token_id = config.mask_token_id
        self.model = LLaDAMoEBackbone(config)
        if not config.tie_word_embeddings:
            self.lm_head = ParallelLMHead(config.hidden_size, config.vocab_size, False)

    @classmethod
    def from_hf_config(cls, hf_config: dict[str, Any]) -> LLaDAMoEModel:
        return cls(LLaDAMoEConfig.from_hf(hf_config))

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
        cos, sin = rotary_cos_sin(position_ids, self.config.rotary_dim, self.config.rope_theta)
        x = self.model.embed_tokens(input_ids)
        new_cache: KVCache = []
        for index, layer in enumerate(self.model.layers):
            past = past_key_values[index] if past_key_values is not None else None
            x, current_kv = layer(x, cos, sin, attention_mask, past)
            if use_cache:
                new_cache.append(current_kv)
        hidden = select_positions(self.model.norm(x), logits_indices)
        return ModelOutput(
            logits=self.project_logits(hidden), past_key_values=new_cache if use_cache else None
        )
