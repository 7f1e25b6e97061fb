"""config.json, generation_config.json and freshly initialised weights of the demo checkpoints, in the
real LLaDA-8B / Dream-7B / Qwen2.5 layouts (tensor names and config fields as in the published models)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file

TRANSFORMERS_VERSION = "4.46.2"
ROPE_THETA = 10000.0
"""The 8B models use 5e5 / 1e6; with head_dim 32 and ~40-token sequences that leaves few useful
rotary frequencies, so the demo models use the classic 1e4."""


@dataclass(frozen=True, slots=True)
class ModelSize:
    d_model: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    mlp_hidden: int
    max_positions: int = 256


def llada_config(size: ModelSize, vocab_size: int, ids: dict[str, int]) -> dict:
    eos = ids["<|endoftext|>"]
    return {
        "activation_type": "silu",
        "alibi": False,
        "alibi_bias_max": 8.0,
        "architectures": ["LLaDAModelLM"],
        "attention_dropout": 0.0,
        "attention_layer_norm": False,
        "attention_layer_norm_with_affine": True,
        "bias_for_layer_norm": False,
        "block_group_size": 1,
        "block_type": "llama",
        "d_model": size.d_model,
        "embedding_dropout": 0.0,
        "embedding_size": vocab_size,
        "eos_token_id": eos,
        "flash_attention": False,
        "include_bias": False,
        "include_qkv_bias": False,
        "init_device": "meta",
        "init_fn": "mitchell",
        "init_std": 0.02,
        "input_emb_norm": False,
        "layer_norm_type": "rms",
        "layer_norm_with_affine": True,
        "mask_token_id": ids["<|mdm_mask|>"],
        "max_sequence_length": size.max_positions,
        "mlp_hidden_size": size.mlp_hidden,
        "mlp_ratio": 4,
        "model_type": "llada",
        "multi_query_attention": None,
        "n_heads": size.n_heads,
        "n_kv_heads": size.n_kv_heads,
        "n_layers": size.n_layers,
        "pad_token_id": eos,
        "precision": "amp_bf16",
        "residual_dropout": 0.0,
        "rms_norm_eps": 1e-5,
        "rope": True,
        "rope_full_precision": True,
        "rope_theta": ROPE_THETA,
        "scale_logits": False,
        "torch_dtype": "float32",
        "transformers_version": TRANSFORMERS_VERSION,
        "use_cache": False,
        "vocab_size": vocab_size,
        "weight_tying": False,
    }


def qwen2_family_config(
    size: ModelSize,
    vocab_size: int,
    ids: dict[str, int],
    *,
    is_dream: bool,
    end_of_answer: str = "<|im_end|>",
) -> dict:
    """A Qwen2 (or Dream) config.json; `end_of_answer` is the chat turn's end token of the tokenizer style."""
    eos = ids["<|endoftext|>"]
    config = {
        "architectures": ["DreamModel"] if is_dream else ["Qwen2ForCausalLM"],
        "attention_dropout": 0.0,
        "bos_token_id": eos,
        "eos_token_id": eos if is_dream else ids[end_of_answer],
        "hidden_act": "silu",
        "hidden_size": size.d_model,
        "initializer_range": 0.02,
        "intermediate_size": size.mlp_hidden,
        "max_position_embeddings": size.max_positions,
        "max_window_layers": size.n_layers,
        "model_type": "Dream" if is_dream else "qwen2",
        "num_attention_heads": size.n_heads,
        "num_hidden_layers": size.n_layers,
        "num_key_value_heads": size.n_kv_heads,
        "pad_token_id": eos,
        "rms_norm_eps": 1e-6,
        "rope_scaling": None,
        "rope_theta": ROPE_THETA,
        "sliding_window": None,
        "tie_word_embeddings": False,
        "torch_dtype": "float32",
        "transformers_version": TRANSFORMERS_VERSION,
        "use_cache": True,
        "use_sliding_window": False,
        "vocab_size": vocab_size,
    }
    if is_dream:
        config["mask_token_id"] = ids["<|mask|>"]
    return config


def generation_config(bos: int, end_ids: list[int], pad: int, max_new_tokens: int) -> dict:
    return {
        "bos_token_id": bos,
        "eos_token_id": end_ids,
        "pad_token_id": pad,
        "max_new_tokens": max_new_tokens,
        "transformers_version": TRANSFORMERS_VERSION,
    }


def _linear(generator: torch.Generator, out_features: int, in_features: int, std: float) -> torch.Tensor:
    return torch.randn(out_features, in_features, generator=generator) * std


def llada_initial_tensors(size: ModelSize, vocab_size: int, seed: int) -> dict[str, torch.Tensor]:
    """`model.transformer.*` names of LLaDA-8B; GPT-2 style init (residual outputs scaled by depth)."""
    g = torch.Generator().manual_seed(seed)
    d, head_dim = size.d_model, size.d_model // size.n_heads
    out_std = 0.02 / (2 * size.n_layers) ** 0.5
    prefix = "model.transformer."
    tensors = {prefix + "wte.weight": _linear(g, vocab_size, d, 0.02)}
    for i in range(size.n_layers):
        block = f"{prefix}blocks.{i}."
        tensors[block + "q_proj.weight"] = _linear(g, d, d, 0.02)
        tensors[block + "k_proj.weight"] = _linear(g, size.n_kv_heads * head_dim, d, 0.02)
        tensors[block + "v_proj.weight"] = _linear(g, size.n_kv_heads * head_dim, d, 0.02)
        tensors[block + "attn_out.weight"] = _linear(g, d, d, out_std)
        tensors[block + "ff_proj.weight"] = _linear(g, size.mlp_hidden, d, 0.02)
        tensors[block + "up_proj.weight"] = _linear(g, size.mlp_hidden, d, 0.02)
        tensors[block + "ff_out.weight"] = _linear(g, d, size.mlp_hidden, out_std)
        tensors[block + "attn_norm.weight"] = torch.ones(d)
        tensors[block + "ff_norm.weight"] = torch.ones(d)
    tensors[prefix + "ln_f.weight"] = torch.ones(d)
    tensors[prefix + "ff_out.weight"] = _linear(g, vocab_size, d, 0.02)
    return tensors


def qwen2_initial_tensors(size: ModelSize, vocab_size: int, seed: int) -> dict[str, torch.Tensor]:
    """Qwen2 names (q/k/v bias, GQA, untied lm_head), as Dream-7B and Qwen2.5 use them."""
    g = torch.Generator().manual_seed(seed)
    d, head_dim = size.d_model, size.d_model // size.n_heads
    kv = size.n_kv_heads * head_dim
    out_std = 0.02 / (2 * size.n_layers) ** 0.5
    tensors = {"model.embed_tokens.weight": _linear(g, vocab_size, d, 0.02)}
    for i in range(size.n_layers):
        layer = f"model.layers.{i}."
        for name, width in (("q", d), ("k", kv), ("v", kv)):
            tensors[f"{layer}self_attn.{name}_proj.weight"] = _linear(g, width, d, 0.02)
            tensors[f"{layer}self_attn.{name}_proj.bias"] = torch.zeros(width)
        tensors[layer + "self_attn.o_proj.weight"] = _linear(g, d, d, out_std)
        tensors[layer + "mlp.gate_proj.weight"] = _linear(g, size.mlp_hidden, d, 0.02)
        tensors[layer + "mlp.up_proj.weight"] = _linear(g, size.mlp_hidden, d, 0.02)
        tensors[layer + "mlp.down_proj.weight"] = _linear(g, d, size.mlp_hidden, out_std)
        tensors[layer + "input_layernorm.weight"] = torch.ones(d)
        tensors[layer + "post_attention_layernorm.weight"] = torch.ones(d)
    tensors["model.norm.weight"] = torch.ones(d)
    tensors["lm_head.weight"] = _linear(g, vocab_size, d, 0.02)
    return tensors


def save_weights(path: Path, tensors: dict[str, torch.Tensor], dtype: torch.dtype) -> None:
    contiguous = {name: tensor.detach().to(dtype).contiguous() for name, tensor in sorted(tensors.items())}
    save_file(contiguous, str(path / "model.safetensors"), metadata={"format": "pt"})


def write_json(path: Path, payload: dict) -> None:
    path.write_text(json.dumps(payload, indent=2, ensure_ascii=False) + "\n")


def sdar_config(size: ModelSize, vocab_size: int, ids: dict[str, int], block_size: int) -> dict:
    """SDAR's config.json (Qwen3 keys), as the JetAstra/SDAR GitHub training copies write it: with
    `block_size` and `mask_token_id` (the Hugging Face copies carry neither). No `auto_map`: the demo
    ships no modeling code for it to name."""
    eos = ids["<|endoftext|>"]
    return {
        "architectures": ["SDARForCausalLM"],
        "attention_bias": False,
        "attention_dropout": 0.0,
        "block_size": block_size,
        "bos_token_id": eos,
        "eos_token_id": eos,
        "head_dim": size.d_model // size.n_heads,
        "hidden_act": "silu",
        "hidden_size": size.d_model,
        "initializer_range": 0.02,
        "intermediate_size": size.mlp_hidden,
        "mask_token_id": ids["<|mask|>"],
        "max_position_embeddings": size.max_positions,
        "max_window_layers": size.n_layers,
        "model_type": "sdar",
        "num_attention_heads": size.n_heads,
        "num_hidden_layers": size.n_layers,
        "num_key_value_heads": size.n_kv_heads,
        "rms_norm_eps": 1e-6,
        "rope_scaling": None,
        "rope_theta": ROPE_THETA,
        "sliding_window": None,
        "tie_word_embeddings": False,
        "torch_dtype": "float32",
        "transformers_version": TRANSFORMERS_VERSION,
        "use_cache": False,
        "use_sliding_window": False,
        "vocab_size": vocab_size,
    }


def sdar_initial_tensors(size: ModelSize, vocab_size: int, seed: int) -> dict[str, torch.Tensor]:
    """Qwen3 names (no q/k/v bias, per-head q_norm/k_norm), as SDAR-*-Chat stores them."""
    tensors = qwen2_initial_tensors(size, vocab_size, seed)
    head_dim = size.d_model // size.n_heads
    for i in range(size.n_layers):
        attention = f"model.layers.{i}.self_attn."
        for name in ("q", "k", "v"):
            del tensors[f"{attention}{name}_proj.bias"]
        tensors[attention + "q_norm.weight"] = torch.ones(head_dim)
        tensors[attention + "k_norm.weight"] = torch.ones(head_dim)
    return tensors
