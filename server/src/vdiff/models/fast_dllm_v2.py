"""Fast-dLLM v2 (NVlabs, `Efficient-Large-Model/Fast_dLLM_v2_7B`): Qwen2.5 weights made block diffusion.

Qwen2 layers (q/k/v bias, no o bias, GQA, rotate-half RoPE, SwiGLU, untied head) with block-causal
attention over absolute blocks of `bd_size` (32). Logits are shifted like an AR model's: the
prediction for position i is read from position i-1, so the first token of a generated block comes from
the last position of the finished block before it (the published generate() commits it by argmax, then
denoises the rest of the block in sub-blocks of 8, left to right; see engine/decoding/block_causal.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from vdiff.errors import VdiffValidationError
from vdiff.models.block_causal import BlockCausalLM, attend_with_past, pre_norm_layer
from vdiff.models.layers import RMSNorm, apply_rotary, read_rope_theta, swiglu

DEFAULT_BLOCK_SIZE = 32
"""generate()'s block_size and config.json's bd_size."""
SUB_BLOCK_SIZE = 8
"""generate()'s small_block_size: a block's masks are decoded 8 positions at a time, left to right."""


def fast_dllm_v2_block_size(hf_config: dict[str, Any], name: str | None = None) -> int:
    declared = hf_config.get("block_size", hf_config.get("bd_size", DEFAULT_BLOCK_SIZE))
    if isinstance(declared, bool) or not isinstance(declared, int) or declared < 1:
        raise VdiffValidationError(f"config.json bd_size must be a positive integer: {declared!r}", "model")
    return declared


@dataclass(frozen=True, slots=True)
class FastDLLMV2Config:
    hidden_size: int
    num_attention_heads: int
    num_key_value_heads: int
    num_hidden_layers: int
    intermediate_size: int
    vocab_size: int
    head_dim: int
    rope_theta: float
    rms_norm_eps: float
    tie_word_embeddings: bool
    mask_token_id: int | None
    block_size: int

    @classmethod
    def from_hf(cls, hf_config: dict[str, Any]) -> FastDLLMV2Config:
        unsupported = {
            "hidden_act": hf_config.get("hidden_act", "silu") != "silu",
            "rope_scaling": bool(hf_config.get("rope_scaling")),
            "use_sliding_window": bool(hf_config.get("use_sliding_window")),
        }
        for key, refused in unsupported.items():
            if refused:
                raise VdiffValidationError(
                    f"Fast-dLLM v2 config.json {key}={hf_config[key]!r} is not supported", "model"
                )
        hidden, heads = hf_config["hidden_size"], hf_config["num_attention_heads"]
        return cls(
            hidden_size=hidden,
            num_attention_heads=heads,
            num_key_value_heads=hf_config.get("num_key_value_heads") or heads,
            num_hidden_layers=hf_config["num_hidden_layers"],
            intermediate_size=hf_config["intermediate_size"],
            vocab_size=hf_config["vocab_size"],
            head_dim=hf_config.get("head_dim") or hidden // heads,
            rope_theta=read_rope_theta(hf_config, 1000000.0),
            rms_norm_eps=float(hf_config.get("rms_norm_eps", 1e-6)),
            tie_word_embeddings=bool(hf_config.get("tie_word_embeddings", False)),
            mask_token_id=hf_config.get("mask_token_id"),
            block_size=fast_dllm_v2_block_size(hf_config),
        )


class FastDLLMV2Attention(nn.Module):
    def __init__(self, config: FastDLLMV2Config) -> None:
        super().__init__()
        hidden, head_dim = config.hidden_size, config.head_dim
        self.num_heads, self.num_kv_heads, self.head_dim = (
            config.num_attention_heads, config.num_key_value_heads, head_dim,
        )  # fmt: skip
        self.q_proj = nn.Linear(hidden, self.num_heads * head_dim, bias=True)
        self.k_proj = nn.Linear(hidden, self.num_kv_heads * head_dim, bias=True)
        self.v_proj = nn.Linear(hidden, self.num_kv_heads * head_dim, bias=True)
        self.o_proj = nn.Linear(self.num_heads * head_dim, hidden, bias=False)

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        mask: torch.Tensor,
        past: tuple[torch.Tensor, torch.Tensor] | None,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        batch, length, _ = x.shape
        q = self.q_proj(x).view(batch, length, self.num_heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(batch, length, self.num_kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(batch, length, self.num_kv_heads, self.head_dim).transpose(1, 2)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        out, current = attend_with_past(q, k, v, mask, past)
        return self.o_proj(out.transpose(1, 2).reshape(batch, length, -1)), current


class FastDLLMV2MLP(nn.Module):
    def __init__(self, config: FastDLLMV2Config) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.up_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.down_proj = nn.Linear(config.intermediate_size, config.hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return swiglu(x, self.gate_proj, self.up_proj, self.down_proj)


class FastDLLMV2DecoderLayer(nn.Module):
    def __init__(self, config: FastDLLMV2Config) -> None:
        super().__init__()
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.self_attn = FastDLLMV2Attention(config)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.mlp = FastDLLMV2MLP(config)

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        mask: torch.Tensor,
        past: tuple[torch.Tensor, torch.Tensor] | None,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        return pre_norm_layer(self, self.self_attn, x, cos, sin, mask, past)


class FastDLLMV2Backbone(nn.Module):
    def __init__(self, config: FastDLLMV2Config) -> None:
        super().__init__()
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(FastDLLMV2DecoderLayer(config) for _ in range(config.num_hidden_layers))
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)


class FastDLLMV2Model(BlockCausalLM):
    """Tensor names `model.{embed_tokens, layers.i.*, norm}` and `lm_head` (Qwen2's)."""

    family = "fast_dllm_v2"
    logit_shift = True
    sub_block_size = SUB_BLOCK_SIZE

    def __init__(self, config: FastDLLMV2Config) -> None:
        super().__init__(config, FastDLLMV2Backbone(config))

    @classmethod
    def from_hf_config(cls, hf_config: dict[str, Any]) -> FastDLLMV2Model:
        return cls(FastDLLMV2Config.from_hf(hf_config))

    @property
    def embeddings(self) -> nn.Embedding:
        return self.model.embed_tokens

    @property
    def rotary_dim(self) -> int:
        return self.config.head_dim
