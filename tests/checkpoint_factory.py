"""Tiny LLaDA / Dream / Qwen2 / SDAR checkpoints written in the real Hugging Face layouts.

Each factory writes config.json (the family's real field names), generation_config.json, the weights as
one model.safetensors or as shards with model.safetensors.index.json, and a small byte-level BPE tokenizer
(tokenizer.json, tokenizer_config.json with the family's chat template, special_tokens_map.json) whose
special tokens have the real names and roles. Weights are random but scaled so logits are peaked: tests
compare argmax decoding across code paths and near-ties would make them flaky.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers

PRETOKENIZE_REGEX = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
    r"""|\s*[\r\n]+|\s+(?!\S)|\s+"""
)
MERGES = [("Ġ", "t"), ("h", "e"), ("Ġt", "he"), ("i", "n"), ("a", "n"), ("Ġ", "a"), ("e", "r"), ("o", "n")]

LLADA_SPECIAL_TOKENS = [
    "<|startoftext|>",
    "<|endoftext|>",
    "<|mdm_mask|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eot_id|>",
]
DREAM_SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|beginoftext|>", "<|mask|>"]
SDAR_SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>", "<|MASK|>"]
"""Qwen3's order (151643, 151644, 151645, ..., 151667, 151668), then SDAR's mask (151669)."""

LLADA_CHAT_TEMPLATE = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}"
    "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'"
    " + message['content'] | trim + '<|eot_id|>' %}"
    "{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)
QWEN_CHAT_TEMPLATE = (
    "{%- if messages[0]['role'] == 'system' %}"
    "{{- '<|im_start|>system\n' + messages[0]['content'] + '<|im_end|>\n' }}"
    "{%- else %}{{- '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{%- endif %}"
    "{%- for message in messages %}{%- if not (message.role == 'system' and loop.first) %}"
    "{{- '<|im_start|>' + message.role + '\n' + message.content + '<|im_end|>\n' }}{%- endif %}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\n' }}{%- endif %}"
)

SDAR_CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message.role + '\n' + message.content + '<|im_end|>\n' }}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\n' }}"
    "{%- if enable_thinking is defined and enable_thinking is false %}{{- '<think>\n\n</think>\n\n' }}"
    "{%- endif %}{%- endif %}"
)
"""Qwen3 ChatML as SDAR ships it: no default system prompt; enable_thinking=false adds an empty think."""


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte -> printable character table used by every byte-level BPE (space = Ġ, newline = Ċ)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    chars = printable[:]
    shift = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            chars.append(256 + shift)
            shift += 1
    return dict(zip(printable, map(chr, chars), strict=True))


def build_tokenizer(special_tokens: list[str], *, qwen_normalizer: bool) -> Tokenizer:
    """Byte-level BPE: the 256 byte symbols, a few merges, then the special tokens numbered after them."""
    vocab = {char: index for index, char in enumerate(sorted(bytes_to_unicode().values(), key=ord))}
    for left, right in MERGES:
        vocab[left + right] = len(vocab)
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=MERGES, fuse_unk=False, byte_fallback=False))
    if qwen_normalizer:
        tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.add_special_tokens(
        [AddedToken(token, special=True, normalized=False) for token in special_tokens]
    )
    return tokenizer


SAMPLE_TEXTS = (
    "Hello world,\n\n  the answer is 42.\tok",
    "<|im_start|>user\nhi<|im_end|><|mask|><|mdm_mask|><|eot_id|> the",
    "héllo 世界 then\r\n",
)


def assert_tokenizer_consistent(path: str | Path) -> None:
    """transformers may rebuild a tokenizer of a known model type; it must still give the file's ids."""
    from transformers import AutoTokenizer

    auto = AutoTokenizer.from_pretrained(path)
    raw = Tokenizer.from_file(str(Path(path) / "tokenizer.json"))
    for text in SAMPLE_TEXTS:
        auto_ids = auto.encode(text, add_special_tokens=False)
        raw_ids = raw.encode(text, add_special_tokens=False).ids
        assert auto_ids == raw_ids, f"{path}: AutoTokenizer {auto_ids} != tokenizers {raw_ids} for {text!r}"
        assert auto.decode(auto_ids) == text


def _write_json(path: Path, payload: dict) -> None:
    path.write_text(json.dumps(payload, indent=2, ensure_ascii=False) + "\n")


def _write_tokenizer(
    path: Path,
    tokenizer: Tokenizer,
    *,
    tokenizer_class: str,
    chat_template: str,
    special_roles: dict[str, str],
    model_max_length: int,
) -> dict[str, int]:
    tokenizer.save(str(path / "tokenizer.json"))
    added = {
        str(tokenizer.token_to_id(token.content)): {
            "content": token.content,
            "lstrip": False,
            "normalized": False,
            "rstrip": False,
            "single_word": False,
            "special": True,
        }
        for token in tokenizer.get_added_tokens_decoder().values()
    }
    config = {
        "add_prefix_space": False,
        "added_tokens_decoder": added,
        "bos_token": special_roles.get("bos_token"),
        "chat_template": chat_template,
        "clean_up_tokenization_spaces": False,
        "eos_token": special_roles["eos_token"],
        "model_max_length": model_max_length,
        "pad_token": special_roles["pad_token"],
        "tokenizer_class": tokenizer_class,
    }
    if "mask_token" in special_roles:
        config["mask_token"] = special_roles["mask_token"]
    _write_json(path / "tokenizer_config.json", config)
    _write_json(path / "special_tokens_map.json", {k: v for k, v in special_roles.items() if v is not None})
    return {token: tokenizer.token_to_id(token) for token in tokenizer.get_vocab()}


def write_safetensors(path: Path, tensors: dict[str, torch.Tensor], *, sharded: bool) -> None:
    """One model.safetensors, or two shards plus model.safetensors.index.json like `save_pretrained`."""
    metadata = {"format": "pt"}
    if not sharded:
        save_file(tensors, str(path / "model.safetensors"), metadata=metadata)
        return
    names = list(tensors)
    half = max(1, len(names) // 2)
    shards = [names[:half], names[half:]]
    weight_map: dict[str, str] = {}
    for index, shard_names in enumerate(shards, start=1):
        filename = f"model-{index:05d}-of-{len(shards):05d}.safetensors"
        save_file({name: tensors[name] for name in shard_names}, str(path / filename), metadata=metadata)
        weight_map.update(dict.fromkeys(shard_names, filename))
    total_size = sum(t.numel() * t.element_size() for t in tensors.values())
    _write_json(
        path / "model.safetensors.index.json",
        {"metadata": {"total_size": total_size}, "weight_map": dict(sorted(weight_map.items()))},
    )


class _Init:
    """Seeded random init: activations stay O(1) per layer; the LM head is scaled so logits are peaked."""

    def __init__(self, seed: int, dtype: torch.dtype) -> None:
        self.generator = torch.Generator().manual_seed(seed)
        self.dtype = dtype

    def normal(self, *shape: int, std: float, mean: float = 0.0) -> torch.Tensor:
        values = torch.randn(*shape, generator=self.generator) * std + mean
        return values.to(self.dtype)

    def linear(self, out_features: int, in_features: int) -> torch.Tensor:
        return self.normal(out_features, in_features, std=in_features**-0.5)

    def norm(self, size: int) -> torch.Tensor:
        return self.normal(size, std=0.1, mean=1.0)

    def bias(self, size: int) -> torch.Tensor:
        return self.normal(size, std=0.1)

    def lm_head(self, vocab: int, d_model: int, silent_ids: Iterable[int]) -> torch.Tensor:
        weight = self.normal(vocab, d_model, std=6.0 * d_model**-0.5)
        for token_id in silent_ids:
            weight[token_id] = 0  # real models never predict the mask token; keep its logit at 0
        return weight


def make_llada_checkpoint(
    path: str | Path,
    *,
    n_layers: int = 2,
    d_model: int = 64,
    n_heads: int = 4,
    n_kv_heads: int = 4,
    mlp_hidden_size: int = 128,
    sharded: bool = False,
    dtype: torch.dtype = torch.float32,
    seed: int = 0,
    max_sequence_length: int = 512,
    include_bias: bool = False,
    include_qkv_bias: bool = False,
    weight_tying: bool = False,
    rope_theta: float = 500000.0,
    generation_config: dict | None = None,
) -> Path:
    """A LLaDA-8B-Instruct-shaped checkpoint (model.transformer.* tensor names), scaled down."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(LLADA_SPECIAL_TOKENS, qwen_normalizer=False)
    ids = _write_tokenizer(
        path,
        tokenizer,
        tokenizer_class="PreTrainedTokenizerFast",
        chat_template=LLADA_CHAT_TEMPLATE,
        special_roles={
            "bos_token": "<|startoftext|>",
            "eos_token": "<|endoftext|>",
            "pad_token": "<|endoftext|>",
        },
        model_max_length=max_sequence_length,
    )
    vocab_size = tokenizer.get_vocab_size()
    mask_id, eos_id, bos_id = ids["<|mdm_mask|>"], ids["<|endoftext|>"], ids["<|startoftext|>"]
    head_dim = d_model // n_heads
    init = _Init(seed, dtype)
    prefix = "model.transformer."
    tensors = {prefix + "wte.weight": init.normal(vocab_size, d_model, std=1.0)}
    for i in range(n_layers):
        block = f"{prefix}blocks.{i}."
        shapes = {
            "q_proj": (d_model, d_model),
            "k_proj": (n_kv_heads * head_dim, d_model),
            "v_proj": (n_kv_heads * head_dim, d_model),
            "attn_out": (d_model, d_model),
            "ff_proj": (mlp_hidden_size, d_model),
            "up_proj": (mlp_hidden_size, d_model),
            "ff_out": (d_model, mlp_hidden_size),
        }
        for name, (out_features, in_features) in shapes.items():
            tensors[f"{block}{name}.weight"] = init.linear(out_features, in_features)
            is_qkv = name in ("q_proj", "k_proj", "v_proj")
            if include_bias or (include_qkv_bias and is_qkv):
                tensors[f"{block}{name}.bias"] = init.bias(out_features)
        tensors[block + "attn_norm.weight"] = init.norm(d_model)
        tensors[block + "ff_norm.weight"] = init.norm(d_model)
    tensors[prefix + "ln_f.weight"] = init.norm(d_model)
    if not weight_tying:
        tensors[prefix + "ff_out.weight"] = init.lm_head(vocab_size, d_model, [mask_id])
        if include_bias:
            tensors[prefix + "ff_out.bias"] = init.bias(vocab_size)
    write_safetensors(path, tensors, sharded=sharded)
    _write_json(
        path / "config.json",
        {
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
            "d_model": d_model,
            "embedding_dropout": 0.0,
            "embedding_size": vocab_size,
            "eos_token_id": eos_id,
            "flash_attention": False,
            "include_bias": include_bias,
            "include_qkv_bias": include_qkv_bias,
            "init_device": "meta",
            "init_fn": "mitchell",
            "init_std": 0.02,
            "input_emb_norm": False,
            "layer_norm_type": "rms",
            "layer_norm_with_affine": True,
            "mask_token_id": mask_id,
            "max_sequence_length": max_sequence_length,
            "mlp_hidden_size": mlp_hidden_size,
            "mlp_ratio": 4,
            "model_type": "llada",
            "multi_query_attention": None,
            "n_heads": n_heads,
            "n_kv_heads": n_kv_heads,
            "n_layers": n_layers,
            "pad_token_id": eos_id,
            "precision": "amp_bf16",
            "residual_dropout": 0.0,
            "rms_norm_eps": 1e-5,
            "rope": True,
            "rope_full_precision": True,
            "rope_theta": rope_theta,
            "scale_logits": False,
            "torch_dtype": str(dtype).removeprefix("torch."),
            "transformers_version": "4.46.3",
            "use_cache": False,
            "vocab_size": vocab_size,
            "weight_tying": weight_tying,
        },
    )
    _write_json(
        path / "generation_config.json",
        generation_config
        or {
            "bos_token_id": bos_id,
            "eos_token_id": eos_id,
            "pad_token_id": eos_id,
            "transformers_version": "4.46.3",
        },
    )
    assert_tokenizer_consistent(path)
    return path


def _qwen2_tensors(
    init: _Init,
    *,
    vocab_size: int,
    hidden_size: int,
    n_layers: int,
    n_heads: int,
    n_kv_heads: int,
    intermediate_size: int,
    tie_word_embeddings: bool,
    silent_ids: list[int],
) -> dict[str, torch.Tensor]:
    head_dim = hidden_size // n_heads
    embed_std = 6.0 * hidden_size**-0.5 if tie_word_embeddings else 1.0
    tensors = {"model.embed_tokens.weight": init.normal(vocab_size, hidden_size, std=embed_std)}
    for i in range(n_layers):
        layer = f"model.layers.{i}."
        for name, out_features in (
            ("q", hidden_size),
            ("k", n_kv_heads * head_dim),
            ("v", n_kv_heads * head_dim),
        ):
            tensors[f"{layer}self_attn.{name}_proj.weight"] = init.linear(out_features, hidden_size)
            tensors[f"{layer}self_attn.{name}_proj.bias"] = init.bias(out_features)
        tensors[layer + "self_attn.o_proj.weight"] = init.linear(hidden_size, hidden_size)
        tensors[layer + "mlp.gate_proj.weight"] = init.linear(intermediate_size, hidden_size)
        tensors[layer + "mlp.up_proj.weight"] = init.linear(intermediate_size, hidden_size)
        tensors[layer + "mlp.down_proj.weight"] = init.linear(hidden_size, intermediate_size)
        tensors[layer + "input_layernorm.weight"] = init.norm(hidden_size)
        tensors[layer + "post_attention_layernorm.weight"] = init.norm(hidden_size)
    tensors["model.norm.weight"] = init.norm(hidden_size)
    if not tie_word_embeddings:
        tensors["lm_head.weight"] = init.lm_head(vocab_size, hidden_size, silent_ids)
    return tensors


def _make_qwen2_family_checkpoint(
    path: str | Path,
    *,
    model_type: str,
    architectures: list[str],
    seed: int,
    tie_word_embeddings: bool,
    n_layers: int = 2,
    hidden_size: int = 64,
    n_heads: int = 4,
    n_kv_heads: int = 2,
    intermediate_size: int = 128,
    sharded: bool = False,
    dtype: torch.dtype = torch.float32,
    max_position_embeddings: int = 512,
    rope_theta: float = 1000000.0,
    generation_config: dict | None = None,
    tokenizer_of: str = "dream",
) -> Path:
    """`tokenizer_of`: "dream" (Qwen2's tokenizer layout) or "llada" (an AR model sharing LLaDA's
    tokenizer and chat template, the APD verifier of a LLaDA model)."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    is_dream = model_type == "Dream"
    roles = {"eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>"}
    if tokenizer_of == "llada":
        tokenizer = build_tokenizer(LLADA_SPECIAL_TOKENS, qwen_normalizer=False)
        tokenizer_class, chat_template, turn_end, mask = (
            "PreTrainedTokenizerFast", LLADA_CHAT_TEMPLATE, "<|eot_id|>", "<|mdm_mask|>",
        )  # fmt: skip
        roles |= {"bos_token": "<|startoftext|>"}
    else:
        tokenizer = build_tokenizer(DREAM_SPECIAL_TOKENS, qwen_normalizer=True)
        tokenizer_class, chat_template, turn_end, mask = (
            "Qwen2Tokenizer", QWEN_CHAT_TEMPLATE, "<|im_end|>", "<|mask|>",
        )  # fmt: skip
    if is_dream:
        roles |= {"bos_token": "<|beginoftext|>", "mask_token": "<|mask|>"}
    ids = _write_tokenizer(
        path,
        tokenizer,
        tokenizer_class=tokenizer_class,
        chat_template=chat_template,
        special_roles=roles,
        model_max_length=max_position_embeddings,
    )
    vocab_size = tokenizer.get_vocab_size()
    eos_id, im_end_id, mask_id = ids["<|endoftext|>"], ids[turn_end], ids[mask]
    tensors = _qwen2_tensors(
        _Init(seed, dtype),
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        n_layers=n_layers,
        n_heads=n_heads,
        n_kv_heads=n_kv_heads,
        intermediate_size=intermediate_size,
        tie_word_embeddings=tie_word_embeddings,
        silent_ids=[mask_id],
    )
    write_safetensors(path, tensors, sharded=sharded)
    config = {
        "architectures": architectures,
        "attention_dropout": 0.0,
        "bos_token_id": eos_id,
        "eos_token_id": eos_id if is_dream else im_end_id,
        "hidden_act": "silu",
        "hidden_size": hidden_size,
        "initializer_range": 0.02,
        "intermediate_size": intermediate_size,
        "max_position_embeddings": max_position_embeddings,
        "max_window_layers": n_layers,
        "model_type": model_type,
        "num_attention_heads": n_heads,
        "num_hidden_layers": n_layers,
        "num_key_value_heads": n_kv_heads,
        "pad_token_id": eos_id,
        "rms_norm_eps": 1e-6,
        "rope_scaling": None,
        "rope_theta": rope_theta,
        "sliding_window": None,
        "tie_word_embeddings": tie_word_embeddings,
        "torch_dtype": str(dtype).removeprefix("torch."),
        "transformers_version": "4.46.2",
        "use_cache": True,
        "use_sliding_window": False,
        "vocab_size": vocab_size,
    }
    if is_dream:
        config["mask_token_id"] = mask_id
    _write_json(path / "config.json", config)
    default_generation = {
        "bos_token_id": eos_id,
        "eos_token_id": [im_end_id, eos_id] if not is_dream else eos_id,
        "pad_token_id": eos_id,
        "transformers_version": "4.46.2",
    }
    _write_json(path / "generation_config.json", generation_config or default_generation)
    assert_tokenizer_consistent(path)
    return path


def make_dream_checkpoint(
    path: str | Path, *, seed: int = 0, tie_word_embeddings: bool = False, **sizes: Any
) -> Path:
    """A Dream-v0-Instruct-shaped checkpoint (Qwen2 tensor names, GQA, q/k/v bias), scaled down.

    `sizes`: the keyword options of _make_qwen2_family_checkpoint (n_layers, hidden_size, dtype, ...)."""
    return _make_qwen2_family_checkpoint(
        path,
        model_type="Dream",
        architectures=["DreamModel"],
        seed=seed,
        tie_word_embeddings=tie_word_embeddings,
        **sizes,
    )


def make_qwen2_ar_checkpoint(
    path: str | Path, *, seed: int = 1, tie_word_embeddings: bool = True, **sizes: Any
) -> Path:
    """A Qwen2.5-0.5B-Instruct-shaped causal LM sharing Dream's tokenizer (the APD verifier).

    `sizes`: as for make_dream_checkpoint."""
    return _make_qwen2_family_checkpoint(
        path,
        model_type="qwen2",
        architectures=["Qwen2ForCausalLM"],
        seed=seed,
        tie_word_embeddings=tie_word_embeddings,
        **sizes,
    )


def make_sdar_checkpoint(
    path: str | Path,
    *,
    n_layers: int = 2,
    hidden_size: int = 64,
    n_heads: int = 4,
    n_kv_heads: int = 2,
    head_dim: int = 32,
    intermediate_size: int = 128,
    sharded: bool = False,
    dtype: torch.dtype = torch.float32,
    seed: int = 2,
    max_position_embeddings: int = 512,
    rope_theta: float = 1000000.0,
    block_size: int | None = None,
    with_mask_token_id: bool = False,
    generation_config: dict | None = None,
) -> Path:
    """An SDAR-4B-Chat-shaped checkpoint (Qwen3 tensor names with per-head q_norm/k_norm, GQA, no bias,
    head_dim independent of hidden_size, untied head), scaled down.

    Like the Hugging Face configs, config.json has no block_size and no mask_token_id unless asked
    (the GitHub training copies add `block_size: 4`, `mask_token_id: 151669`)."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(SDAR_SPECIAL_TOKENS, qwen_normalizer=True)
    ids = _write_tokenizer(
        path,
        tokenizer,
        tokenizer_class="Qwen2Tokenizer",
        chat_template=SDAR_CHAT_TEMPLATE,
        special_roles={"eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>", "mask_token": "<|MASK|>"},
        model_max_length=max_position_embeddings,
    )
    vocab_size = tokenizer.get_vocab_size()
    eos_id, im_end_id, mask_id = ids["<|endoftext|>"], ids["<|im_end|>"], ids["<|MASK|>"]
    init = _Init(seed, dtype)
    tensors = {"model.embed_tokens.weight": init.normal(vocab_size, hidden_size, std=1.0)}
    for i in range(n_layers):
        layer = f"model.layers.{i}."
        for name, out_features in (
            ("q", n_heads * head_dim),
            ("k", n_kv_heads * head_dim),
            ("v", n_kv_heads * head_dim),
        ):
            tensors[f"{layer}self_attn.{name}_proj.weight"] = init.linear(out_features, hidden_size)
        tensors[layer + "self_attn.o_proj.weight"] = init.linear(hidden_size, n_heads * head_dim)
        tensors[layer + "self_attn.q_norm.weight"] = init.norm(head_dim)
        tensors[layer + "self_attn.k_norm.weight"] = init.norm(head_dim)
        tensors[layer + "mlp.gate_proj.weight"] = init.linear(intermediate_size, hidden_size)
        tensors[layer + "mlp.up_proj.weight"] = init.linear(intermediate_size, hidden_size)
        tensors[layer + "mlp.down_proj.weight"] = init.linear(hidden_size, intermediate_size)
        tensors[layer + "input_layernorm.weight"] = init.norm(hidden_size)
        tensors[layer + "post_attention_layernorm.weight"] = init.norm(hidden_size)
    tensors["model.norm.weight"] = init.norm(hidden_size)
    tensors["lm_head.weight"] = init.lm_head(vocab_size, hidden_size, [mask_id])
    write_safetensors(path, tensors, sharded=sharded)
    config = {
        "architectures": ["SDARForCausalLM"],
        "attention_bias": False,
        "attention_dropout": 0.0,
        "attn_implementation": "flex_attention",
        "auto_map": {
            "AutoConfig": "configuration_sdar.SDARConfig",
            "AutoModel": "modeling_sdar.SDARModel",
            "AutoModelForCausalLM": "modeling_sdar.SDARForCausalLM",
        },
        "bos_token_id": eos_id,
        "eos_token_id": eos_id,
        "head_dim": head_dim,
        "hidden_act": "silu",
        "hidden_size": hidden_size,
        "initializer_range": 0.02,
        "intermediate_size": intermediate_size,
        "max_position_embeddings": max_position_embeddings,
        "max_window_layers": n_layers,
        "model_type": "sdar",
        "num_attention_heads": n_heads,
        "num_hidden_layers": n_layers,
        "num_key_value_heads": n_kv_heads,
        "rms_norm_eps": 1e-6,
        "rope_scaling": None,
        "rope_theta": rope_theta,
        "sliding_window": None,
        "tie_word_embeddings": False,
        "torch_dtype": str(dtype).removeprefix("torch."),
        "transformers_version": "4.52.4",
        "use_cache": False,
        "use_sliding_window": False,
        "vocab_size": vocab_size,
    }
    if block_size is not None:
        config["block_size"] = block_size
    if with_mask_token_id:
        config["mask_token_id"] = mask_id
    # checked before config.json exists: its auto_map would make a bare AutoTokenizer ask to trust remote code
    assert_tokenizer_consistent(path)
    _write_json(path / "config.json", config)
    default_generation = {
        "bos_token_id": eos_id,
        "do_sample": True,
        "eos_token_id": [im_end_id, eos_id],
        "pad_token_id": eos_id,
        "temperature": 0.6,
        "top_k": 20,
        "top_p": 0.95,
        "transformers_version": "4.52.4",
    }
    _write_json(path / "generation_config.json", generation_config or default_generation)
    return path


LING_SPECIAL_TOKENS = ["<|startoftext|>", "<|endoftext|>", "<role>", "</role>", "<|mask|>", "<|role_end|>"]
"""The Ling tokenizer's special tokens used by LLaDA2 / LLaDA-MoE (real ids: EOS 156892, mask 156895)."""

LING_CHAT_TEMPLATE = (
    "<role>SYSTEM</role>{%- if messages[0]['role'] == 'system' %}{{- messages[0]['content'] + '\n' }}"
    "{%- endif %}detailed thinking off<|role_end|>"
    "{%- for message in messages %}{%- if message['role'] != 'system' %}"
    "{{- '<role>' + ('HUMAN' if message['role'] == 'user' else 'ASSISTANT') + '</role>' + message['content']"
    " + '<|role_end|>' }}{%- endif %}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<role>ASSISTANT</role>' }}{%- endif %}"
)
"""LLaDA2.1's template, tools block left out: <role>SYSTEM</role>[system\\n]detailed thinking off<|role_end|>,
then <role>HUMAN</role>{user}<|role_end|> per turn and <role>ASSISTANT</role> to generate."""


def _write_ling_tokenizer(path: Path, max_position_embeddings: int) -> dict[str, int]:
    tokenizer = build_tokenizer(LING_SPECIAL_TOKENS, qwen_normalizer=False)
    ids = _write_tokenizer(
        path,
        tokenizer,
        tokenizer_class="PreTrainedTokenizerFast",
        chat_template=LING_CHAT_TEMPLATE,
        special_roles={
            "bos_token": "<|startoftext|>",
            "eos_token": "<|endoftext|>",
            "pad_token": "<|endoftext|>",
            "mask_token": "<|mask|>",
        },
        model_max_length=max_position_embeddings,
    )
    assert_tokenizer_consistent(path)  # before config.json: its auto_map would ask to trust remote code
    return ids


def _swiglu_tensors(init: _Init, prefix: str, hidden: int, intermediate: int) -> dict[str, torch.Tensor]:
    return {
        prefix + "gate_proj.weight": init.linear(intermediate, hidden),
        prefix + "up_proj.weight": init.linear(intermediate, hidden),
        prefix + "down_proj.weight": init.linear(hidden, intermediate),
    }


def make_llada2_checkpoint(
    path: str | Path,
    *,
    n_layers: int = 3,
    hidden_size: int = 64,
    n_heads: int = 4,
    n_kv_heads: int = 2,
    head_dim: int = 32,
    partial_rotary_factor: float = 0.5,
    intermediate_size: int = 128,
    moe_intermediate_size: int = 32,
    num_experts: int = 8,
    num_experts_per_tok: int = 3,
    num_shared_experts: int = 1,
    n_group: int = 4,
    topk_group: int = 2,
    routed_scaling_factor: float = 2.5,
    first_k_dense_replace: int = 1,
    sharded: bool = False,
    dtype: torch.dtype = torch.float32,
    seed: int = 3,
    max_position_embeddings: int = 512,
    rope_theta: float = 600000.0,
    block_size: int | None = None,
    generation_config: dict | None = None,
) -> Path:
    """An LLaDA2.0/2.1-mini-shaped checkpoint (BailingMoeV2 tensor names: fused query_key_value, per-head
    query/key layernorm, layer 0 dense, then a sigmoid router with `gate.expert_bias`, one tensor per expert
    and `shared_experts`), scaled down. Like the released config.json: no block_size, no mask_token_id.
    The expert bias is stored in fp32 (its on-disk dtype in the real files is unconfirmed)."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    ids = _write_ling_tokenizer(path, max_position_embeddings)
    vocab_size = len(ids)
    eos_id, mask_id = ids["<|endoftext|>"], ids["<|mask|>"]
    init = _Init(seed, dtype)
    tensors = {"model.word_embeddings.weight": init.normal(vocab_size, hidden_size, std=1.0)}
    for i in range(n_layers):
        layer = f"model.layers.{i}."
        tensors[layer + "input_layernorm.weight"] = init.norm(hidden_size)
        tensors[layer + "post_attention_layernorm.weight"] = init.norm(hidden_size)
        qkv_rows = (n_heads + 2 * n_kv_heads) * head_dim
        tensors[layer + "attention.query_key_value.weight"] = init.linear(qkv_rows, hidden_size)
        tensors[layer + "attention.query_layernorm.weight"] = init.norm(head_dim)
        tensors[layer + "attention.key_layernorm.weight"] = init.norm(head_dim)
        tensors[layer + "attention.dense.weight"] = init.linear(hidden_size, n_heads * head_dim)
        if i < first_k_dense_replace:
            tensors.update(_swiglu_tensors(init, layer + "mlp.", hidden_size, intermediate_size))
            continue
        tensors[layer + "mlp.gate.weight"] = init.normal(num_experts, hidden_size, std=hidden_size**-0.5)
        tensors[layer + "mlp.gate.expert_bias"] = init.normal(num_experts, std=0.3).float()
        for e in range(num_experts):
            tensors.update(
                _swiglu_tensors(init, f"{layer}mlp.experts.{e}.", hidden_size, moe_intermediate_size)
            )
        shared = moe_intermediate_size * num_shared_experts
        tensors.update(_swiglu_tensors(init, layer + "mlp.shared_experts.", hidden_size, shared))
    tensors["model.norm.weight"] = init.norm(hidden_size)
    tensors["lm_head.weight"] = init.lm_head(vocab_size, hidden_size, [mask_id])
    write_safetensors(path, tensors, sharded=sharded)
    config = {
        "architectures": ["LLaDA2MoeModelLM"],
        "attention_dropout": 0.0,
        "auto_map": {
            "AutoConfig": "configuration_llada2_moe.LLaDA2MoeConfig",
            "AutoModel": "modeling_llada2_moe.LLaDA2MoeModel",
            "AutoModelForCausalLM": "modeling_llada2_moe.LLaDA2MoeModelLM",
        },
        "embedding_dropout": 0.0,
        "first_k_dense_replace": first_k_dense_replace,
        "head_dim": head_dim,
        "hidden_act": "silu",
        "hidden_size": hidden_size,
        "initializer_range": 0.02,
        "intermediate_size": intermediate_size,
        "max_position_embeddings": max_position_embeddings,
        "max_window_layers": n_layers,
        "model_type": "llada2_moe",
        "moe_intermediate_size": moe_intermediate_size,
        "moe_router_enable_expert_bias": True,
        "n_group": n_group,
        "norm_head": False,
        "norm_softmax": False,
        "norm_topk_prob": True,
        "num_attention_heads": n_heads,
        "num_experts": num_experts,
        "num_experts_per_tok": num_experts_per_tok,
        "num_hidden_layers": n_layers,
        "num_key_value_heads": n_kv_heads,
        "num_shared_experts": num_shared_experts,
        "output_dropout": 0.0,
        "pad_token_id": eos_id,
        "partial_rotary_factor": partial_rotary_factor,
        "rms_norm_eps": 1e-6,
        "rope_scaling": None,
        "rope_theta": rope_theta,
        "rotary_dim": int(head_dim * partial_rotary_factor),
        "routed_scaling_factor": routed_scaling_factor,
        "router_dtype": "fp32",
        "score_function": "sigmoid",
        "sliding_window": 4096,
        "tie_word_embeddings": False,
        "topk_group": topk_group,
        "torch_dtype": str(dtype).removeprefix("torch."),
        "transformers_version": "4.52.3",
        "use_bias": False,
        "use_cache": False,
        "use_qkv_bias": False,
        "use_rmsnorm": True,
        "vocab_size": vocab_size,
    }
    if block_size is not None:
        config["block_size"] = block_size
    _write_json(path / "config.json", config)
    _write_json(
        path / "generation_config.json",
        generation_config
        or {"eos_token_id": eos_id, "pad_token_id": eos_id, "transformers_version": "4.52.3"},
    )
    return path


def make_llada_moe_checkpoint(
    path: str | Path,
    *,
    moe_layer_freq: tuple[int, ...] = (0, 1),
    hidden_size: int = 64,
    n_heads: int = 4,
    dense_intermediate_size: int = 128,
    expert_intermediate_size: int = 32,
    shared_expert_intermediate_size: int | None = 32,
    num_experts: int = 8,
    num_experts_per_tok: int = 2,
    expert_bias: bool = True,
    partial_rotary_factor: float = 1.0,
    model_type: str = "llada",
    dtype: torch.dtype = torch.float32,
    seed: int = 4,
    max_position_embeddings: int = 512,
    rope_theta: float = 50000.0,
) -> Path:
    """An LLaDA-MoE-7B-A1B-shaped checkpoint (OLMoE names: self_attn.{q,k,v,o}_proj, per-head q_norm/k_norm,
    mlp.gate, mlp.experts.{e}, mlp.expert_bias, a layer-level shared_expert), scaled down. The released
    config.json was not seen; the keys are the LLaDAMoEConfig class's."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    ids = _write_ling_tokenizer(path, max_position_embeddings)
    vocab_size = len(ids)
    eos_id, mask_id = ids["<|endoftext|>"], ids["<|mask|>"]
    init = _Init(seed, dtype)
    head_dim = hidden_size // n_heads
    tensors = {"model.embed_tokens.weight": init.normal(vocab_size, hidden_size, std=1.0)}
    for i, is_moe in enumerate(moe_layer_freq):
        layer = f"model.layers.{i}."
        tensors[layer + "input_layernorm.weight"] = init.norm(hidden_size)
        tensors[layer + "post_attention_layernorm.weight"] = init.norm(hidden_size)
        for name in ("q", "k", "v", "o"):
            tensors[f"{layer}self_attn.{name}_proj.weight"] = init.linear(hidden_size, hidden_size)
        tensors[layer + "self_attn.q_norm.weight"] = init.norm(head_dim)
        tensors[layer + "self_attn.k_norm.weight"] = init.norm(head_dim)
        if not is_moe:
            tensors.update(_swiglu_tensors(init, layer + "mlp.", hidden_size, dense_intermediate_size))
            continue
        tensors[layer + "mlp.gate.weight"] = init.normal(num_experts, hidden_size, std=hidden_size**-0.5)
        if expert_bias:
            tensors[layer + "mlp.expert_bias"] = init.normal(num_experts, std=0.05).float()
        for e in range(num_experts):
            tensors.update(
                _swiglu_tensors(init, f"{layer}mlp.experts.{e}.", hidden_size, expert_intermediate_size)
            )
        if shared_expert_intermediate_size:
            tensors.update(
                _swiglu_tensors(init, layer + "shared_expert.", hidden_size, shared_expert_intermediate_size)
            )
    tensors["model.norm.weight"] = init.norm(hidden_size)
    tensors["lm_head.weight"] = init.lm_head(vocab_size, hidden_size, [mask_id])
    write_safetensors(path, tensors, sharded=False)
    _write_json(
        path / "config.json",
        {
            "architectures": ["LLaDAMoEModelLM"],
            "attention_bias": False,
            "attention_dropout": 0.0,
            "auto_map": {
                "AutoConfig": "configuration_lladamoe.LLaDAConfig",
                "AutoModelForCausalLM": "modeling_lladamoe.LLaDAMoEModelLM",
            },
            "clip_qkv": None,
            "dense_intermediate_size": dense_intermediate_size,
            "eos_token_id": eos_id,
            "expert_intermediate_size": expert_intermediate_size,
            "hidden_act": "silu",
            "hidden_size": hidden_size,
            "max_position_embeddings": max_position_embeddings,
            "model_type": model_type,
            "moe_layer_freq": list(moe_layer_freq),
            "moe_router_enable_expert_bias": expert_bias,
            "moe_router_score_function": "softmax",
            "norm_topk_prob": False,
            "num_attention_heads": n_heads,
            "num_experts": num_experts,
            "num_experts_per_tok": num_experts_per_tok,
            "num_hidden_layers": len(moe_layer_freq),
            "num_key_value_heads": n_heads,
            "pad_token_id": eos_id,
            "partial_rotary_factor": partial_rotary_factor,
            "qk_layernorm": True,
            "rms_norm_eps": 1e-5,
            "rope_scaling": None,
            "rope_theta": rope_theta,
            "routed_scaling_factor": 1,
            "router_num_group": None,
            "router_topk_group": None,
            "shared_expert_intermediate_size": shared_expert_intermediate_size,
            "tie_word_embeddings": False,
            "torch_dtype": str(dtype).removeprefix("torch."),
            "transformers_version": "4.46.2",
            "use_cache": False,
            "vocab_size": vocab_size,
        },
    )
    _write_json(
        path / "generation_config.json",
        {"eos_token_id": eos_id, "pad_token_id": eos_id, "transformers_version": "4.46.2"},
    )
    return path


FAST_DLLM_V2_SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "|<MASK>|"]


def make_fast_dllm_v2_checkpoint(
    path: str | Path,
    *,
    n_layers: int = 2,
    hidden_size: int = 64,
    n_heads: int = 4,
    n_kv_heads: int = 2,
    intermediate_size: int = 128,
    bd_size: int = 8,
    sharded: bool = False,
    dtype: torch.dtype = torch.float32,
    seed: int = 4,
    max_position_embeddings: int = 512,
    extra_vocab: int = 16,
) -> Path:
    """An Efficient-Large-Model/Fast_dLLM_v2_7B-shaped checkpoint (Qwen2 names with q/k/v bias, GQA,
    untied head; config `model_type: Fast_dLLM_Qwen`, `bd_size`, the auto_map to its own code), scaled
    down. The mask `|<MASK>|` is an added token and config.json's vocab_size exceeds the tokenizer's
    (152064 vs 151666 + added in the 7B); there is no mask_token_id in config.json."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(FAST_DLLM_V2_SPECIAL_TOKENS, qwen_normalizer=True)
    ids = _write_tokenizer(
        path,
        tokenizer,
        tokenizer_class="Qwen2Tokenizer",
        chat_template=QWEN_CHAT_TEMPLATE,
        special_roles={"eos_token": "<|im_end|>", "pad_token": "<|im_end|>"},
        model_max_length=max_position_embeddings,
    )
    assert_tokenizer_consistent(path)
    vocab_size = tokenizer.get_vocab_size() + extra_vocab
    eos_id, im_end_id, mask_id = ids["<|endoftext|>"], ids["<|im_end|>"], ids["|<MASK>|"]
    tensors = _qwen2_tensors(
        _Init(seed, dtype),
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        n_layers=n_layers,
        n_heads=n_heads,
        n_kv_heads=n_kv_heads,
        intermediate_size=intermediate_size,
        tie_word_embeddings=False,
        silent_ids=[mask_id],
    )
    write_safetensors(path, tensors, sharded=sharded)
    config = {
        "architectures": ["Fast_dLLM_QwenForCausalLM"],
        "attention_dropout": 0.0,
        "auto_map": {
            "AutoConfig": "configuration.Fast_dLLM_QwenConfig",
            "AutoModel": "modeling.Fast_dLLM_QwenModel",
            "AutoModelForCausalLM": "modeling.Fast_dLLM_QwenForCausalLM",
        },
        "bd_size": bd_size,
        "bos_token_id": eos_id,
        "conplemenrary_mask": True,
        "eos_token_id": im_end_id,
        "hidden_act": "silu",
        "hidden_size": hidden_size,
        "initializer_range": 0.02,
        "intermediate_size": intermediate_size,
        "layer_types": ["full_attention"] * n_layers,
        "max_position_embeddings": max_position_embeddings,
        "max_window_layers": n_layers,
        "model_type": "Fast_dLLM_Qwen",
        "num_attention_heads": n_heads,
        "num_hidden_layers": n_layers,
        "num_key_value_heads": n_kv_heads,
        "pad_token_id": im_end_id,
        "rms_norm_eps": 1e-6,
        "rope_scaling": None,
        "rope_theta": 1000000.0,
        "sliding_window": None,
        "tie_word_embeddings": False,
        "torch_dtype": str(dtype).removeprefix("torch."),
        "transformers_version": "4.53.0",
        "use_cache": True,
        "use_sliding_window": False,
        "vocab_size": vocab_size,
    }
    _write_json(path / "config.json", config)
    _write_json(
        path / "generation_config.json",
        {"bos_token_id": eos_id, "eos_token_id": [im_end_id, eos_id], "pad_token_id": im_end_id},
    )
    return path
