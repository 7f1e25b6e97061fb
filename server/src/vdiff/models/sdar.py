"""SDAR (JetAstra / JetLM SDAR-*-Chat): Qwen3 dense weights made block diffusion.

Per-head q/k RMSNorm before rotate-half RoPE, GQA, SwiGLU, untied LM head, and block-causal attention:
a query sees every key whose block (position // block_size) is not after its own. Logits are not
shifted (logits i predict token i). The keys of a finished block depend only on that block and the
blocks before it, so a cache of finished blocks is exact, like an AR cache.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from vdiff.distributed.layers import (
    ColumnParallelLinear,
    RowParallelLinear,
    VocabParallelEmbedding,
    plan_heads,
)
from vdiff.distributed.state import building_state
from vdiff.errors import VdiffValidationError
from vdiff.models.block_causal import BlockCausalLM, attend_with_past, pre_norm_layer
from vdiff.models.layers import RMSNorm, apply_rotary, read_rope_theta, swiglu

DEFAULT_BLOCK_SIZE = 4
"""SDAR's training block (SGLang's DLLM_PARAMS and generate.py agree); the -b8 ... -b64 variants differ."""
_NAME_BLOCK_SIZE = re.compile(r"-b(\d+)(?![0-9a-z])", re.IGNORECASE)


def sdar_block_size(hf_config: dict[str, Any], name: str | None = None) -> int:
    """The attention block: config.json's block_size, else a `-b16`-style suffix of the checkpoint's name
    (the last path component of `name`, a repo id or directory, else of config.json's `_name_or_path`),
    else 4. The Hugging Face configs carry no block_size."""
    declared = hf_config.get("block_size")
    if declared is not None:
        if isinstance(declared, bool) or not isinstance(declared, int) or declared < 1:
            raise VdiffValidationError(
                f"config.json block_size must be a positive integer: {declared!r}", "model"
            )
        return declared
    for candidate in (name, hf_config.get("_name_or_path")):
        match = _NAME_BLOCK_SIZE.search(str(candidate or "").rstrip("/").rsplit("/", 1)[-1])
        if match and int(match.group(1)) > 0:
            return int(match.group(1))
    return DEFAULT_BLOCK_SIZE


@dataclass(frozen=True, slots=True)
class SDARConfig:
    hidden_size: int
    num_attention_heads: int
    num_key_value_heads: int
    num_hidden_layers: int
    intermediate_size: int
    vocab_size: int
    head_dim: int
    rope_theta: float
    rms_norm_eps: float
    attention_bias: bool
    """Biases on q/k/v (Qwen3's attention_bias; Qwen2 always has them)."""
    tie_word_embeddings: bool
    mask_token_id: int | None
    block_size: int
    qk_norm: bool = True
    """Per-head q/k RMSNorm (Qwen3); Qwen2-layout families (Fast-dLLM v2) have none."""
    o_bias: bool | None = None
    """Bias on o_proj; None = attention_bias (Qwen3). Qwen2 has q/k/v biases and none on o_proj."""

    @classmethod
    def from_hf(
        cls,
        hf_config: dict[str, Any],
        *,
        label: str = "SDAR",
        qwen2: bool = False,
        block_size: int | None = None,
    ) -> SDARConfig:
        """Qwen3's layout (SDAR), or with `qwen2` Qwen2's (q/k/v biases, no o bias, no q/k norm)."""
        unsupported = {
            "hidden_act": hf_config.get("hidden_act", "silu") != "silu",
            "rope_scaling": bool(hf_config.get("rope_scaling")),
            "use_sliding_window": bool(hf_config.get("use_sliding_window")),
        }
        for key, refused in unsupported.items():
            if refused:
                raise VdiffValidationError(
                    f"{label} config.json {key}={hf_config[key]!r} is not supported", "model"
                )
        hidden, heads = hf_config["hidden_size"], hf_config["num_attention_heads"]
        rope_theta = read_rope_theta(hf_config, 1000000.0)
        return cls(
            hidden_size=hidden,
            num_attention_heads=heads,
            num_key_value_heads=hf_config.get("num_key_value_heads") or heads,
            num_hidden_layers=hf_config["num_hidden_layers"],
            intermediate_size=hf_config["intermediate_size"],
            vocab_size=hf_config["vocab_size"],
            head_dim=hf_config.get("head_dim") or hidden // heads,
            rope_theta=rope_theta,
            rms_norm_eps=float(hf_config.get("rms_norm_eps", 1e-6)),
            attention_bias=qwen2 or bool(hf_config.get("attention_bias", False)),
            tie_word_embeddings=bool(hf_config.get("tie_word_embeddings", False)),
            mask_token_id=hf_config.get("mask_token_id"),
            block_size=sdar_block_size(hf_config) if block_size is None else block_size,
            qk_norm=not qwen2,
            o_bias=False if qwen2 else None,
        )


class SDARAttention(nn.Module):
    def __init__(self, config: SDARConfig) -> None:
        super().__init__()
        hidden, head_dim, bias = config.hidden_size, config.head_dim, config.attention_bias
        q_size = config.num_attention_heads * head_dim
        kv_size = config.num_key_value_heads * head_dim
        heads = plan_heads(config.num_attention_heads, config.num_key_value_heads, head_dim, building_state())
        self.num_heads, self.num_kv_heads, self.head_dim = heads.num_heads, heads.num_kv_heads, head_dim
        self.q_proj = ColumnParallelLinear(hidden, q_size, bias, rows=heads.q_rows)
        self.k_proj = ColumnParallelLinear(hidden, kv_size, bias, rows=heads.kv_rows)
        self.v_proj = ColumnParallelLinear(hidden, kv_size, bias, rows=heads.kv_rows)
        self.o_proj = RowParallelLinear(q_size, hidden, bias if config.o_bias is None else config.o_bias)
        self.q_norm = RMSNorm(head_dim, config.rms_norm_eps) if config.qk_norm else nn.Identity()
        self.k_norm = RMSNorm(head_dim, config.rms_norm_eps) if config.qk_norm else nn.Identity()

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        mask: torch.Tensor,
        past: tuple[torch.Tensor, torch.Tensor] | None,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        batch, length, _ = x.shape
        q = self.q_norm(self.q_proj(x).view(batch, length, self.num_heads, self.head_dim)).transpose(1, 2)
        k = self.k_norm(self.k_proj(x).view(batch, length, self.num_kv_heads, self.head_dim)).transpose(1, 2)
        v = self.v_proj(x).view(batch, length, self.num_kv_heads, self.head_dim).transpose(1, 2)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        out, current = attend_with_past(q, k, v, mask, past)
        return self.o_proj(out.transpose(1, 2).reshape(batch, length, -1)), current


class SDARMLP(nn.Module):
    def __init__(self, config: SDARConfig) -> None:
        super().__init__()
        hidden, intermediate = config.hidden_size, config.intermediate_size
        self.gate_proj = ColumnParallelLinear(hidden, intermediate, False, what="MLP features")
        self.up_proj = ColumnParallelLinear(hidden, intermediate, False, what="MLP features")
        self.down_proj = RowParallelLinear(intermediate, hidden, False, what="MLP features")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return swiglu(x, self.gate_proj, self.up_proj, self.down_proj)


class SDARDecoderLayer(nn.Module):
    """Pre-norm residual layer: h = x + o(attn(norm(x))), out = h + swiglu(norm(h))."""

    def __init__(self, config: SDARConfig) -> None:
        super().__init__()
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.self_attn = SDARAttention(config)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.mlp = SDARMLP(config)

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        mask: torch.Tensor,
        past: tuple[torch.Tensor, torch.Tensor] | None,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        return pre_norm_layer(self, self.self_attn, x, cos, sin, mask, past)


class SDARBackbone(nn.Module):
    def __init__(self, config: SDARConfig) -> None:
        super().__init__()
        self.embed_tokens = VocabParallelEmbedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(SDARDecoderLayer(config) for _ in range(config.num_hidden_layers))
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)


class SDARModel(BlockCausalLM):
    """Tensor names `model.{embed_tokens, layers.i.*, norm}` and `lm_head` (absent when tied).

    Cached keys (past_key_values) must be the row's positions 0..P-1, which is what a cache of finished
    blocks holds; the mask is built from those positions and `position_ids`.
    """

    family = "sdar"
    supports_tensor_parallel = True

    def __init__(self, config: SDARConfig) -> None:
        super().__init__(config, SDARBackbone(config))

    @classmethod
    def from_hf_config(cls, hf_config: dict[str, Any]) -> SDARModel:
        return cls(SDARConfig.from_hf(hf_config))

    @property
    def embeddings(self) -> nn.Embedding:
        return self.model.embed_tokens

    @property
    def rotary_dim(self) -> int:
        return self.config.head_dim
