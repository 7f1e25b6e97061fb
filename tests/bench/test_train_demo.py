"""The demo training script runs a few steps and writes checkpoints that vdiff's loader accepts."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from bench import train_demo
from bench.demo_tokenizer import assert_tokenizers_agree


def test_smoke_training_writes_loadable_real_layout_checkpoints(tmp_path: Path) -> None:
    from vdiff.config import EngineConfig
    from vdiff.models.loader import load_model

    train_demo.main(["--smoke", "--out", str(tmp_path)])

    expected = {
        "llada-demo": ("llada", "model.transformer.blocks.0.ff_proj.weight", False),
        "dream-demo": ("Dream", "model.layers.0.self_attn.q_proj.bias", True),
        "qwen2-ar-demo": ("qwen2", "model.layers.0.mlp.gate_proj.weight", True),
        "qwen2-ar-mini-demo": ("qwen2", "model.layers.0.mlp.gate_proj.weight", True),
        "qwen2-ar-mini-llada-demo": ("qwen2", "model.layers.0.mlp.gate_proj.weight", True),
    }
    for name, (model_type, probe_tensor, shifted) in expected.items():
        path = tmp_path / name
        for filename in (
            "config.json",
            "generation_config.json",
            "model.safetensors",
            "tokenizer.json",
            "tokenizer_config.json",
            "special_tokens_map.json",
            "training.json",
        ):
            assert (path / filename).is_file(), f"{name} lacks {filename}"
        config = json.loads((path / "config.json").read_text())
        assert config["model_type"] == model_type
        loaded = load_model(EngineConfig(model=str(path), device="cpu"))
        parameters = dict(loaded.model.named_parameters())
        assert probe_tensor in parameters
        assert loaded.model.logit_shift is shifted
        ids = torch.tensor([[1, 2, 3, 4]])
        logits = loaded.model(ids, torch.arange(4)[None], torch.ones(1, 4, dtype=torch.bool)).logits
        assert logits.shape == (1, 4, config.get("embedding_size") or config["vocab_size"])
        assert torch.isfinite(logits).all()
        assert_tokenizers_agree(path, ["Add 12 and 3.", "Pick one of 123 456 789.\n\nok"])
    llada_tokenizer = json.loads((tmp_path / "llada-demo" / "tokenizer_config.json").read_text())
    assert "<|start_header_id|>" in llada_tokenizer["chat_template"]
    assert llada_tokenizer["mask_token"] == "<|mdm_mask|>"
    dream_config = json.loads((tmp_path / "dream-demo" / "config.json").read_text())
    assert dream_config["mask_token_id"] != dream_config["pad_token_id"]
    dream_vocab = (tmp_path / "dream-demo" / "tokenizer.json").read_text()
    assert dream_vocab == (tmp_path / "qwen2-ar-demo" / "tokenizer.json").read_text()
    assert dream_vocab == (tmp_path / "qwen2-ar-mini-demo" / "tokenizer.json").read_text()
    mini_config = json.loads((tmp_path / "qwen2-ar-mini-demo" / "config.json").read_text())
    assert mini_config["tie_word_embeddings"] is True
    llada_vocab = (tmp_path / "llada-demo" / "tokenizer.json").read_text()
    assert llada_vocab == (tmp_path / "qwen2-ar-mini-llada-demo" / "tokenizer.json").read_text()
    llada_verifier = json.loads((tmp_path / "qwen2-ar-mini-llada-demo" / "config.json").read_text())
    eot = json.loads(llada_vocab)["added_tokens"]
    assert llada_verifier["eos_token_id"] == next(t["id"] for t in eot if t["content"] == "<|eot_id|>")
