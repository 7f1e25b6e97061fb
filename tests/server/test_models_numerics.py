"""The native modules against transformers' reference implementations on the same weights."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from checkpoint_factory import make_dream_checkpoint, make_llada_checkpoint
from safetensors.torch import load_file
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedModel, Qwen2Config, Qwen2ForCausalLM
from vdiff.config import EngineConfig
from vdiff.models.base import DiffusionModel
from vdiff.models.loader import load_model

ATOL = 1e-4


def native(path: Path, **overrides: object) -> DiffusionModel:
    return load_model(EngineConfig(model=str(path), device="cpu", **overrides)).model


def bidirectional_logits(
    reference: PreTrainedModel, ids: torch.Tensor, positions: torch.Tensor
) -> torch.Tensor:
    """transformers' logits with every key attendable: a prepared 4-D mask is used as is, and additive
    zeros mean attend everything (no causal part)."""
    batch, length = ids.shape
    no_mask = torch.zeros(batch, 1, length, length, dtype=torch.float32)
    return reference(input_ids=ids, position_ids=positions, attention_mask=no_mask).logits


def all_keys(ids: torch.Tensor) -> torch.Tensor:
    return torch.ones_like(ids, dtype=torch.bool)


def random_batch(
    vocab: int, batch: int = 2, length: int = 12, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab, (batch, length), generator=generator)
    return ids, torch.arange(length).expand(batch, length)


def hf_qwen2_from_dream(path: Path) -> Qwen2ForCausalLM:
    cfg = json.loads((path / "config.json").read_text())
    config = Qwen2Config(
        vocab_size=cfg["vocab_size"],
        hidden_size=cfg["hidden_size"],
        intermediate_size=cfg["intermediate_size"],
        num_hidden_layers=cfg["num_hidden_layers"],
        num_attention_heads=cfg["num_attention_heads"],
        num_key_value_heads=cfg["num_key_value_heads"],
        rms_norm_eps=cfg["rms_norm_eps"],
        rope_parameters={"rope_type": "default", "rope_theta": cfg["rope_theta"]},
        tie_word_embeddings=cfg["tie_word_embeddings"],
        attn_implementation="eager",
    )
    model = Qwen2ForCausalLM(config)
    model.load_state_dict(load_file(path / "model.safetensors"), strict=True)
    return model.eval()


LLADA_TO_LLAMA = {
    "attn_norm": "input_layernorm",
    "q_proj": "self_attn.q_proj",
    "k_proj": "self_attn.k_proj",
    "v_proj": "self_attn.v_proj",
    "attn_out": "self_attn.o_proj",
    "ff_norm": "post_attention_layernorm",
    "ff_proj": "mlp.gate_proj",
    "up_proj": "mlp.up_proj",
    "ff_out": "mlp.down_proj",
}


def llama_name(name: str) -> str:
    name = name.removeprefix("model.transformer.")
    if name.startswith("blocks."):
        _, index, module, param = name.split(".")
        return f"model.layers.{index}.{LLADA_TO_LLAMA[module]}.{param}"
    return {"wte.weight": "model.embed_tokens.weight", "ln_f.weight": "model.norm.weight"}.get(
        name, "lm_head.weight"
    )


def hf_llama_from_llada(path: Path) -> LlamaForCausalLM:
    """LLaDA's weights in LlamaForCausalLM; biases LLaDA lacks (o_proj under qkv-only bias) are zero."""
    cfg = json.loads((path / "config.json").read_text())
    config = LlamaConfig(
        attention_bias=cfg["include_bias"] or cfg["include_qkv_bias"],
        mlp_bias=cfg["include_bias"],
        vocab_size=cfg["embedding_size"],
        hidden_size=cfg["d_model"],
        intermediate_size=cfg["mlp_hidden_size"],
        num_hidden_layers=cfg["n_layers"],
        num_attention_heads=cfg["n_heads"],
        num_key_value_heads=cfg["n_kv_heads"],
        rms_norm_eps=cfg["rms_norm_eps"],
        rope_parameters={"rope_type": "default", "rope_theta": cfg["rope_theta"]},
        tie_word_embeddings=cfg["weight_tying"],
        attn_implementation="eager",
    )
    model = LlamaForCausalLM(config)
    state = {llama_name(name): tensor for name, tensor in load_file(path / "model.safetensors").items()}
    state.pop("lm_head.bias", None)  # Llama's head has no bias; the test subtracts it from ours
    if cfg["weight_tying"]:
        state["lm_head.weight"] = state["model.embed_tokens.weight"]
    for name, param in model.state_dict().items():
        if name.endswith(".bias") and name not in state:
            state[name] = torch.zeros_like(param)
    model.load_state_dict(state, strict=True)
    return model.eval()


@torch.inference_mode()
def test_dream_matches_transformers_qwen2_with_bidirectional_mask(dream_checkpoint: Path) -> None:
    ours, reference = native(dream_checkpoint), hf_qwen2_from_dream(dream_checkpoint)
    ids, positions = random_batch(reference.config.vocab_size)
    expected = bidirectional_logits(reference, ids, positions)
    causal = reference(input_ids=ids, position_ids=positions).logits
    actual = ours(ids, positions, all_keys(ids)).logits
    torch.testing.assert_close(actual, expected, atol=ATOL, rtol=0)
    assert (actual - causal).abs().max() > 1e-2, "bidirectional attention must differ from causal"


@pytest.mark.parametrize(("n_kv_heads", "weight_tying"), [(4, False), (2, True)])
@torch.inference_mode()
def test_llada_matches_transformers_llama_with_bidirectional_mask(
    tmp_path: Path, n_kv_heads: int, weight_tying: bool
) -> None:
    path = make_llada_checkpoint(tmp_path, n_kv_heads=n_kv_heads, weight_tying=weight_tying, seed=3)
    ours, reference = native(path), hf_llama_from_llada(path)
    ids, positions = random_batch(reference.config.vocab_size, seed=1)
    expected = bidirectional_logits(reference, ids, positions)
    torch.testing.assert_close(ours(ids, positions, all_keys(ids)).logits, expected, atol=ATOL, rtol=0)


@pytest.mark.parametrize(("include_bias", "include_qkv_bias"), [(True, False), (False, True)])
@torch.inference_mode()
def test_llada_biases_match_transformers_llama(
    tmp_path: Path, include_bias: bool, include_qkv_bias: bool
) -> None:
    path = make_llada_checkpoint(
        tmp_path, n_kv_heads=2, include_bias=include_bias, include_qkv_bias=include_qkv_bias, seed=4
    )
    ours, reference = native(path), hf_llama_from_llada(path)
    ids, positions = random_batch(reference.config.vocab_size, seed=3)
    expected = bidirectional_logits(reference, ids, positions)
    actual = ours(ids, positions, all_keys(ids)).logits
    if include_bias:
        actual = actual - ours.model.transformer.ff_out.bias
    torch.testing.assert_close(actual, expected, atol=ATOL, rtol=0)


@torch.inference_mode()
def test_qwen2_ar_matches_transformers_causal_lm(qwen2_ar_checkpoint: Path) -> None:
    ours = native(qwen2_ar_checkpoint)
    reference = Qwen2ForCausalLM.from_pretrained(qwen2_ar_checkpoint, attn_implementation="eager").eval()
    ids, positions = random_batch(reference.config.vocab_size, seed=2)
    expected = reference(input_ids=ids, position_ids=positions).logits
    torch.testing.assert_close(ours(ids, positions).logits, expected, atol=ATOL, rtol=0)


def left_padded_batch(vocab: int, lengths: list[int], pad_id: int = 0) -> tuple[torch.Tensor, ...]:
    width = max(lengths)
    generator = torch.Generator().manual_seed(5)
    ids = torch.full((len(lengths), width), pad_id)
    key_mask = torch.zeros(len(lengths), width, dtype=torch.bool)
    for row, length in enumerate(lengths):
        ids[row, width - length :] = torch.randint(0, vocab, (length,), generator=generator)
        key_mask[row, width - length :] = True
    positions = (key_mask.long().cumsum(dim=1) - 1).clamp(min=0)
    return ids, positions, key_mask


@pytest.mark.parametrize("fixture", ["llada_checkpoint", "dream_checkpoint", "qwen2_ar_checkpoint"])
@torch.inference_mode()
def test_padded_batch_matches_each_row_alone(fixture: str, request: pytest.FixtureRequest) -> None:
    model = native(request.getfixturevalue(fixture))
    lengths = [7, 11, 4]
    ids, positions, key_mask = left_padded_batch(200, lengths)
    batched = model(ids, positions, key_mask).logits
    assert torch.isfinite(batched).all()
    for row, length in enumerate(lengths):
        alone = model(ids[row : row + 1, -length:], positions[row : row + 1, -length:]).logits
        torch.testing.assert_close(batched[row : row + 1, -length:], alone, atol=ATOL, rtol=0)


@pytest.mark.parametrize("fixture", ["llada_checkpoint", "dream_checkpoint", "qwen2_ar_checkpoint"])
@torch.inference_mode()
def test_logits_indices_project_only_the_requested_positions(
    fixture: str, request: pytest.FixtureRequest
) -> None:
    model = native(request.getfixturevalue(fixture))
    ids, positions = random_batch(200, batch=3, length=9, seed=5)
    full = model(ids, positions).logits
    wanted = torch.tensor([0, 4, 8, 9, 17, 26, 20])  # flat indices into 3 rows x 9 positions, any order
    selected = model(ids, positions, logits_indices=wanted).logits
    assert selected.shape == (len(wanted), full.shape[-1])
    torch.testing.assert_close(selected, full.reshape(-1, full.shape[-1])[wanted], atol=ATOL, rtol=0)


@pytest.mark.parametrize("fixture", ["llada_checkpoint", "dream_checkpoint"])
@torch.inference_mode()
def test_bidirectional_cache_prefix_and_dual(fixture: str, request: pytest.FixtureRequest) -> None:
    model = native(request.getfixturevalue(fixture))
    ids, positions = random_batch(200, length=12, seed=7)
    full = model(ids, positions, use_cache=True)
    cache = full.past_key_values
    assert cache is not None and len(cache) == 2
    assert cache[0][0].shape[2] == 12 and torch.isfinite(cache[0][0]).all()

    prefix = [(k[:, :, :8], v[:, :, :8]) for k, v in cache]
    mask = torch.ones(2, 12, dtype=torch.bool)
    suffix = model(ids[:, 8:], positions[:, 8:], mask, past_key_values=prefix, use_cache=True)
    torch.testing.assert_close(suffix.logits, full.logits[:, 8:], atol=ATOL, rtol=0)
    assert suffix.past_key_values is not None
    torch.testing.assert_close(suffix.past_key_values[1][0], cache[1][0][:, :, 8:], atol=ATOL, rtol=0)

    dual = [
        (torch.cat([k[:, :, :8], k[:, :, 10:]], 2), torch.cat([v[:, :, :8], v[:, :, 10:]], 2))
        for k, v in cache
    ]
    block = model(ids[:, 8:10], positions[:, 8:10], mask, past_key_values=dual)
    torch.testing.assert_close(block.logits, full.logits[:, 8:10], atol=ATOL, rtol=0)
    masked_key = mask.clone()
    masked_key[:, 0] = False
    assert (
        model(ids[:, 8:10], positions[:, 8:10], masked_key, past_key_values=dual).logits - block.logits
    ).abs().max() > 1e-3


@torch.inference_mode()
def test_causal_cache_continues_a_prefix(qwen2_ar_checkpoint: Path) -> None:
    model = native(qwen2_ar_checkpoint)
    ids, positions = random_batch(200, length=12, seed=8)
    full = model(ids, positions).logits
    prefix = model(ids[:, :8], positions[:, :8], use_cache=True)
    torch.testing.assert_close(prefix.logits, full[:, :8], atol=ATOL, rtol=0)
    mask = torch.ones(2, 12, dtype=torch.bool)
    suffix = model(ids[:, 8:], positions[:, 8:], mask, past_key_values=prefix.past_key_values).logits
    torch.testing.assert_close(suffix, full[:, 8:], atol=ATOL, rtol=0)


@torch.inference_mode()
def test_bf16_checkpoint_tracks_fp32(tmp_path: Path) -> None:
    path = make_dream_checkpoint(tmp_path, dtype=torch.bfloat16, sharded=True)
    bf16 = load_model(EngineConfig(model=str(path), device="cpu"))
    fp32 = native(path, dtype="float32")
    assert bf16.dtype == torch.bfloat16 and bf16.model.model.embed_tokens.weight.dtype == torch.bfloat16
    ids, positions = random_batch(200, seed=9)
    low, high = bf16.model(ids, positions).logits, fp32(ids, positions).logits
    assert low.dtype == torch.bfloat16
    assert (low.float() - high).abs().max() / high.abs().max() < 0.05
    assert (low.float().argmax(-1) == high.argmax(-1)).float().mean() > 0.8
