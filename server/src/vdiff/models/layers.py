"""Building blocks shared by the model families: RMSNorm, rotary embedding, attention, SwiGLU and the
pre-norm decoder layer / layer stack both LLaDA and Dream are made of.

Attention runs through torch's scaled_dot_product_attention with a boolean key mask. A flash-attn varlen
path is used only when `flash_attn` imports, the tensors are on CUDA in fp16/bf16 and attention is
bidirectional; it is written for GPU deployments and is not exercised by the CPU test suite.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from vdiff.models.base import KVCache

try:  # optional GPU dependency (extra `gpu`)
    from flash_attn import flash_attn_varlen_func
except Exception:  # pragma: no cover - depends on the environment
    flash_attn_varlen_func = None


class RMSNorm(nn.Module):
    """Normalise in fp32, cast back to the input dtype, then scale (LLaDA and Qwen2 agree on this order)."""

    def __init__(self, size: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * h.to(x.dtype)


def rotary_cos_sin(
    position_ids: torch.Tensor, head_dim: int, theta: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin tables [B, L, head_dim] in fp32 for the rotate-half (non-interleaved) layout."""
    exponents = torch.arange(0, head_dim, 2, dtype=torch.int64, device=position_ids.device).float() / head_dim
    inv_freq = 1.0 / (theta**exponents)
    freqs = position_ids.float()[..., None] * inv_freq
    angles = torch.cat([freqs, freqs], dim=-1)
    return angles.cos(), angles.sin()


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    first, second = x.chunk(2, dim=-1)
    return torch.cat([-second, first], dim=-1)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x [B, H, L, D]; the rotation is done in fp32 and cast back."""
    h = x.float()
    cos, sin = cos[:, None], sin[:, None]
    return (h * cos + _rotate_half(h) * sin).to(x.dtype)


def swiglu(x: torch.Tensor, gate: nn.Linear, up: nn.Linear, down: nn.Linear) -> torch.Tensor:
    return down(F.silu(gate(x)) * up(x))


def build_attention_mask(key_mask: torch.Tensor, num_queries: int, is_causal: bool) -> torch.Tensor:
    """[B, 1, L, P+L] bool (True = attend) from a key-padding mask [B, P+L].

    Causal: query j attends every cached key and current keys <= j. A query with no attendable key
    (a padding row) attends everything instead, so SDPA never produces NaN that could leak through V.
    """
    num_keys = key_mask.shape[1]
    mask = key_mask[:, None, None, :].expand(-1, 1, num_queries, -1)
    if is_causal:
        num_cached = num_keys - num_queries
        query_index = torch.arange(num_queries, device=key_mask.device)[:, None] + num_cached
        key_index = torch.arange(num_keys, device=key_mask.device)[None, :]
        mask = mask & (key_index <= query_index)
    return mask | ~mask.any(dim=-1, keepdim=True)


def _can_use_flash(q: torch.Tensor, is_causal: bool) -> bool:
    return (
        flash_attn_varlen_func is not None
        and not is_causal
        and q.is_cuda
        and q.dtype in (torch.float16, torch.bfloat16)
    )


def _flash_varlen_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_mask: torch.Tensor
) -> torch.Tensor:  # pragma: no cover - needs CUDA and flash-attn
    """Pack the attendable keys of every row and run flash-attn's varlen kernel (GQA native)."""
    batch, num_heads, num_queries, head_dim = q.shape
    q_packed = q.transpose(1, 2).reshape(batch * num_queries, num_heads, head_dim)
    key_index = key_mask.flatten().nonzero(as_tuple=True)[0]
    k_packed = k.transpose(1, 2).reshape(-1, k.shape[1], head_dim)[key_index]
    v_packed = v.transpose(1, 2).reshape(-1, v.shape[1], head_dim)[key_index]
    key_lengths = key_mask.sum(dim=1, dtype=torch.int32)
    cu_seqlens_k = F.pad(key_lengths.cumsum(0, dtype=torch.int32), (1, 0))
    cu_seqlens_q = torch.arange(0, (batch + 1) * num_queries, num_queries, dtype=torch.int32, device=q.device)
    out = flash_attn_varlen_func(
        q_packed,
        k_packed,
        v_packed,
        cu_seqlens_q,
        cu_seqlens_k,
        num_queries,
        int(key_lengths.max()),
        causal=False,
    )
    return out.reshape(batch, num_queries, num_heads, head_dim).transpose(1, 2)


def read_rope_theta(hf_config: dict, default: float) -> float:
    """config.json's rope_theta (transformers 5 writes it under rope_parameters instead)."""
    theta = hf_config.get("rope_theta")
    if theta is None:
        theta = (hf_config.get("rope_parameters") or {}).get("rope_theta", default)
    return float(theta)


def attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    key_mask: torch.Tensor | None,
    is_causal: bool,
) -> torch.Tensor:
    """q [B, H, L, D] over k, v [B, Hkv, P+L, D] (GQA when Hkv < H); returns [B, H, L, D]."""
    batch, num_heads, num_queries, _ = q.shape
    num_keys = k.shape[2]
    if key_mask is None:
        key_mask = torch.ones(batch, num_keys, dtype=torch.bool, device=q.device)
    key_mask = key_mask.bool()
    if _can_use_flash(q, is_causal) and bool(key_mask.any(dim=1).all()):  # pragma: no cover - GPU only
        return _flash_varlen_attention(q, k, v, key_mask)
    mask = build_attention_mask(key_mask, num_queries, is_causal)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=k.shape[1] != num_heads)


def self_attention(
    hidden: torch.Tensor,
    q_proj: nn.Linear,
    k_proj: nn.Linear,
    v_proj: nn.Linear,
    *,
    num_heads: int,
    num_kv_heads: int,
    cos: torch.Tensor,
    sin: torch.Tensor,
    key_mask: torch.Tensor | None,
    past: tuple[torch.Tensor, torch.Tensor] | None,
    is_causal: bool,
) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
    """Project, rotate, attend over cached + current keys. Returns ([B, L, H*D], current (k, v))."""
    batch, length, _ = hidden.shape
    q = q_proj(hidden).view(batch, length, num_heads, -1).transpose(1, 2)
    k = k_proj(hidden).view(batch, length, num_kv_heads, -1).transpose(1, 2)
    v = v_proj(hidden).view(batch, length, num_kv_heads, -1).transpose(1, 2)
    q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
    current = (k, v)
    if past is not None:
        k = torch.cat([past[0], k], dim=2)
        v = torch.cat([past[1], v], dim=2)
    out = attention(q, k, v, key_mask, is_causal)
    return out.transpose(1, 2).reshape(batch, length, -1), current


@dataclass(frozen=True, slots=True)
class DecoderParts:
    """The modules of one decoder layer, whatever names the family's checkpoint gives them."""

    attn_norm: RMSNorm
    q_proj: nn.Linear
    k_proj: nn.Linear
    v_proj: nn.Linear
    o_proj: nn.Linear
    mlp_norm: RMSNorm
    gate_proj: nn.Linear
    up_proj: nn.Linear
    down_proj: nn.Linear


class DecoderLayer(nn.Module):
    """Pre-norm residual layer: h = x + o(attn(norm(x))), out = h + swiglu(norm(h)).

    Subclasses register their modules under the checkpoint's tensor names and map them in `parts()`.
    """

    num_heads: int
    num_kv_heads: int

    def parts(self) -> DecoderParts:  # pragma: no cover - interface
        raise NotImplementedError

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        key_mask: torch.Tensor | None,
        past: tuple[torch.Tensor, torch.Tensor] | None,
        is_causal: bool,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        parts = self.parts()
        attended, current_kv = self_attention(
            parts.attn_norm(x),
            parts.q_proj,
            parts.k_proj,
            parts.v_proj,
            num_heads=self.num_heads,
            num_kv_heads=self.num_kv_heads,
            cos=cos,
            sin=sin,
            key_mask=key_mask,
            past=past,
            is_causal=is_causal,
        )
        h = x + parts.o_proj(attended)
        mlp_out = swiglu(parts.mlp_norm(h), parts.gate_proj, parts.up_proj, parts.down_proj)
        return h + mlp_out, current_kv


def run_decoder_layers(
    layers: Iterable[DecoderLayer],
    x: torch.Tensor,
    position_ids: torch.Tensor,
    *,
    head_dim: int,
    rope_theta: float,
    key_mask: torch.Tensor | None,
    past_key_values: KVCache | None,
    use_cache: bool,
    is_causal: bool,
) -> tuple[torch.Tensor, KVCache | None]:
    """Embedded input x through every layer; returns the last hidden state and, with use_cache, each
    layer's current (k, v)."""
    cos, sin = rotary_cos_sin(position_ids, head_dim, rope_theta)
    new_cache: KVCache = []
    for index, layer in enumerate(layers):
        past = past_key_values[index] if past_key_values is not None else None
        x, current_kv = layer(x, cos, sin, key_mask, past, is_causal)
        if use_cache:
            new_cache.append(current_kv)
    return x, new_cache if use_cache else None


def build_block_causal_mask(
    position_ids: torch.Tensor, key_mask: torch.Tensor, block_size: int
) -> torch.Tensor:
    """[B, 1, L, P+L] bool (True = attend) for block-causal attention (SDAR, LLaDA2, Fast-dLLM v2).

    A query at position p sees the keys whose block (position // block_size) is at most p's block:
    bidirectional inside a block, causal across blocks. The P cached keys of a row are its positions
    0..P-1 (right-padded; padding is False in key_mask), the current keys are at `position_ids` [B, L].
    A query with no attendable key (a padding row) attends everything, so SDPA never produces NaN.
    """
    num_cached = key_mask.shape[1] - position_ids.shape[1]
    cached = torch.arange(num_cached, device=position_ids.device).expand(position_ids.shape[0], -1)
    key_blocks = torch.cat([cached, position_ids], dim=1) // block_size
    query_blocks = position_ids // block_size
    mask = key_mask.bool()[:, None, :] & (key_blocks[:, None, :] <= query_blocks[:, :, None])
    mask = mask[:, None]
    return mask | ~mask.any(dim=-1, keepdim=True)
