"""load_model / resolve_model_path on checkpoints written in the real layouts."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import huggingface_hub
import pytest
import torch
from checkpoint_factory import make_dream_checkpoint, make_llada_checkpoint, make_qwen2_ar_checkpoint
from safetensors.torch import load_file, save_file
from vdiff.config import EngineConfig
from vdiff.errors import VdiffValidationError
from vdiff.models import loader
from vdiff.models.dream import DreamModel, Qwen2CausalLM
from vdiff.models.llada import LLaDAModel
from vdiff.models.loader import LoadedModel, load_model, resolve_model_path
from vdiff.models.registry import REMOTE, get_family
from vdiff.tokenizer import load_tokenizer


def load(path: Path, **overrides: object) -> LoadedModel:
    return load_model(EngineConfig(model=str(path), device="cpu", **overrides))


def assert_materialised(loaded: LoadedModel, dtype: torch.dtype) -> None:
    for name, param in loaded.model.named_parameters():
        assert param.device.type == "cpu", name
        assert param.dtype == dtype, name
        assert not param.requires_grad
    ids = torch.arange(10).reshape(2, 5)
    with torch.inference_mode():
        logits = loaded.model(ids, torch.arange(5).expand(2, 5)).logits
    assert torch.isfinite(logits.float()).all()


@pytest.mark.parametrize(
    ("factory", "options", "model_class", "family"),
    [
        (make_llada_checkpoint, {"sharded": True}, LLaDAModel, "llada"),
        (
            make_llada_checkpoint,
            {"n_kv_heads": 2, "include_bias": True, "dtype": torch.bfloat16},
            LLaDAModel,
            "llada",
        ),
        (
            make_llada_checkpoint,
            {"include_qkv_bias": True, "weight_tying": True, "sharded": True},
            LLaDAModel,
            "llada",
        ),
        (make_dream_checkpoint, {"sharded": True, "dtype": torch.bfloat16}, DreamModel, "dream"),
        (make_dream_checkpoint, {}, DreamModel, "dream"),
        (make_qwen2_ar_checkpoint, {"sharded": True}, Qwen2CausalLM, "qwen2"),
    ],
)
def test_load_checkpoint_layouts(tmp_path: Path, factory, options, model_class, family) -> None:
    path = factory(tmp_path / "ckpt", **options)
    loaded = load(path)
    assert type(loaded.model) is model_class
    assert loaded.family.name == family and loaded.model_dir == path.resolve()
    assert loaded.hf_config["model_type"] == json.loads((path / "config.json").read_text())["model_type"]
    assert loaded.generation_config["eos_token_id"] == loaded.hf_config["eos_token_id"] or family == "qwen2"
    assert loaded.max_model_len == 512
    assert_materialised(loaded, options.get("dtype", torch.float32))
    tokens = load_tokenizer(path, loaded.family, hf_config=loaded.hf_config)
    assert tokens.mask_token_id == loaded.model.mask_token_id
    assert tokens.pad_token_id != tokens.mask_token_id


def test_explicit_dtype_overrides_config(tmp_path: Path) -> None:
    path = make_llada_checkpoint(tmp_path, dtype=torch.bfloat16)
    assert_materialised(load(path, dtype="float32"), torch.float32)
    assert_materialised(load(path, dtype="float16"), torch.float16)


def test_auto_dtype_falls_back_to_the_tensors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(loader, "cpu_flags", lambda: frozenset({"avx512f", "avx512_bf16"}))
    path = make_dream_checkpoint(tmp_path, dtype=torch.bfloat16)
    config = json.loads((path / "config.json").read_text())
    del config["torch_dtype"]
    (path / "config.json").write_text(json.dumps(config))
    assert load(path).dtype == torch.bfloat16


def test_auto_dtype_on_a_cpu_without_native_bf16_is_float32(tmp_path: Path, monkeypatch, caplog) -> None:
    path = make_llada_checkpoint(tmp_path, dtype=torch.bfloat16)
    monkeypatch.setattr(loader, "cpu_flags", lambda: frozenset({"avx2", "fma"}))
    with caplog.at_level("INFO", logger="vdiff.models.loader"):
        assert_materialised(load(path), torch.float32)
    (line,) = [record.getMessage() for record in caplog.records if "bf16" in record.getMessage()]
    assert "float32" in line and "--dtype bfloat16" in line
    assert_materialised(load(path, dtype="bfloat16"), torch.bfloat16)  # asked for: kept
    monkeypatch.setattr(loader, "cpu_flags", lambda: frozenset({"avx512f", "amx_bf16"}))
    assert_materialised(load(path), torch.bfloat16)


@pytest.mark.parametrize(
    ("capability", "flags", "expected"),
    [
        ("AVX512", frozenset({"avx512f", "avx512_bf16"}), torch.bfloat16),
        ("AVX512", frozenset({"avx512f", "amx_bf16", "amx_tile"}), torch.bfloat16),
        ("AVX512", frozenset({"avx512f", "avx512bw"}), torch.float32),  # AVX-512 without BF16 (Skylake-X)
        ("AVX2", frozenset({"avx2", "fma"}), torch.float32),
        ("SVE256", frozenset({"sve", "bf16"}), torch.bfloat16),  # Arm with the BF16 extension
        ("AVX2", None, torch.float32),  # no /proc/cpuinfo: below AVX-512 there is no bf16 unit
        ("DEFAULT", None, torch.bfloat16),  # unknown: keep what the checkpoint says
    ],
)
def test_auto_cpu_dtype_decision(capability: str, flags: frozenset[str] | None, expected: torch.dtype):
    assert loader.auto_cpu_dtype(torch.bfloat16, capability, flags) == expected
    assert loader.auto_cpu_dtype(torch.float16, capability, flags) == torch.float16
    assert loader.auto_cpu_dtype(torch.float32, capability, flags) == torch.float32


def test_cpu_flags_reads_x86_and_arm_cpuinfo(tmp_path: Path) -> None:
    x86 = tmp_path / "x86"
    x86.write_text("processor\t: 0\nflags\t\t: fpu avx2 avx512_bf16\n")
    assert loader.cpu_flags(x86) == frozenset({"fpu", "avx2", "avx512_bf16"})
    arm = tmp_path / "arm"
    arm.write_text("processor\t: 0\nFeatures\t: fp asimd bf16\n")
    assert "bf16" in loader.cpu_flags(arm)
    assert loader.cpu_flags(tmp_path / "missing") is None


def rewrite_weights(path: Path, edit) -> None:
    tensors = load_file(path / "model.safetensors")
    edit(tensors)
    save_file(tensors, str(path / "model.safetensors"), metadata={"format": "pt"})


def test_missing_and_unexpected_tensors_are_named(tmp_path: Path) -> None:
    path = make_llada_checkpoint(tmp_path)
    rewrite_weights(path, lambda t: t.pop("model.transformer.blocks.1.up_proj.weight"))
    with pytest.raises(
        VdiffValidationError, match=r"missing tensors: model\.transformer\.blocks\.1\.up_proj\.weight"
    ):
        load(path)
    rewrite_weights(
        path, lambda t: t.update({"model.transformer.blocks.1.up_proj.weight": torch.zeros(128, 64)})
    )
    rewrite_weights(path, lambda t: t.update({"model.transformer.blocks.9.extra.weight": torch.zeros(2)}))
    with pytest.raises(
        VdiffValidationError, match=r"unexpected tensors: model\.transformer\.blocks\.9\.extra"
    ):
        load(path)


def test_shape_mismatch_and_sharded_index_errors(tmp_path: Path) -> None:
    path = make_dream_checkpoint(tmp_path / "dream", sharded=True)
    config = json.loads((path / "config.json").read_text())
    (path / "config.json").write_text(json.dumps(config | {"intermediate_size": 96}))
    with pytest.raises(VdiffValidationError, match=r"mlp\.\w+_proj\.weight has shape"):
        load(path)
    (path / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(VdiffValidationError, match=r"model-00002-of-00002\.safetensors"):
        load(path)
    for weights in path.glob("*.safetensors*"):
        weights.unlink()
    with pytest.raises(VdiffValidationError, match="No safetensors weights"):
        load(path)


def test_tied_checkpoint_may_carry_a_redundant_head(tmp_path: Path) -> None:
    path = make_qwen2_ar_checkpoint(tmp_path)
    rewrite_weights(path, lambda t: t.update({"lm_head.weight": t["model.embed_tokens.weight"].clone()}))
    assert_materialised(load(path), torch.float32)


def test_quantization_needs_cuda(llada_checkpoint: Path) -> None:
    with pytest.raises(VdiffValidationError, match="needs a CUDA device") as error:
        load(llada_checkpoint, quantization="bitsandbytes-8bit")
    assert error.value.param == "--quantization"


def test_unknown_model_type(tmp_path: Path) -> None:
    with pytest.raises(VdiffValidationError) as error:
        get_family("gpt2")
    assert (
        "'gpt2'" in error.value.message and "llada" in error.value.message and "Dream" in error.value.message
    )
    assert "--trust-remote-code" in error.value.message
    path = make_llada_checkpoint(tmp_path)
    config = json.loads((path / "config.json").read_text())
    (path / "config.json").write_text(json.dumps(config | {"model_type": "mdm-x"}))
    with pytest.raises(VdiffValidationError, match="Unsupported model_type 'mdm-x'"):
        load(path)
    assert get_family("mdm-x", trust_remote_code=True) is REMOTE


def test_max_model_len(tmp_path: Path) -> None:
    path = make_dream_checkpoint(tmp_path, max_position_embeddings=131072)
    assert load(path).max_model_len == 2048  # Dream is trained on 2048; config.json advertises Qwen2's 128k
    assert load(path, max_model_len=4096).max_model_len == 4096
    with pytest.raises(VdiffValidationError, match="exceeds the model's maximum of 131072") as error:
        load(path, max_model_len=200000)
    assert error.value.param == "--max-model-len"


def test_generation_config_modes(tmp_path: Path, llada_checkpoint: Path) -> None:
    assert load(llada_checkpoint, generation_config="vdiff").generation_config == {}
    other = tmp_path / "gen"
    other.mkdir()
    (other / "generation_config.json").write_text(json.dumps({"temperature": 0.5}))
    assert load(llada_checkpoint, generation_config=str(other)).generation_config == {"temperature": 0.5}
    with pytest.raises(VdiffValidationError, match=r"generation_config\.json does not exist"):
        load(llada_checkpoint, generation_config=str(tmp_path / "none"))


def fake_hub_cache(cache: Path, repo_id: str, checkpoint: Path) -> Path:
    """The layout huggingface_hub writes: models--org--name/{refs/main, snapshots/<commit>/...}."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / commit
    shutil.copytree(checkpoint, snapshot)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    return snapshot


def test_hub_id_resolves_from_the_local_cache(
    tmp_path: Path, llada_checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    snapshot = fake_hub_cache(tmp_path / "hub", "acme/tiny-llada", llada_checkpoint)
    assert resolve_model_path("acme/tiny-llada", cache_dir=tmp_path / "hub") == snapshot
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    loaded = load_model(EngineConfig(model="acme/tiny-llada", device="cpu"))
    assert loaded.model_dir == snapshot and loaded.family.name == "llada"


def test_hub_id_not_in_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(VdiffValidationError, match="not in the Hugging Face cache") as error:
        resolve_model_path("acme/absent-model", cache_dir=tmp_path)
    assert "HF_HUB_OFFLINE" in error.value.message and error.value.param == "model"
    with pytest.raises(VdiffValidationError, match="is not a directory"):
        resolve_model_path(str(tmp_path / "no" / "such" / "dir"))


REMOTE_CONFIG = """
from transformers import PretrainedConfig

class TinyMdmConfig(PretrainedConfig):
    model_type = "tiny-mdm"

    def __init__(self, vocab_size=32, hidden_size=8, mask_token_id=31, **kwargs):
        self.vocab_size, self.hidden_size, self.mask_token_id = vocab_size, hidden_size, mask_token_id
        super().__init__(**kwargs)
"""
REMOTE_MODEL = """
import torch
from transformers import PreTrainedModel
from transformers.modeling_outputs import MaskedLMOutput
from .configuration_tiny import TinyMdmConfig

class TinyMdmModel(PreTrainedModel):
    config_class = TinyMdmConfig

    def __init__(self, config):
        super().__init__(config)
        self.embed = torch.nn.Embedding(config.vocab_size, config.hidden_size)
        self.head = torch.nn.Linear(config.hidden_size, config.vocab_size)
        self.post_init()

    def forward(self, input_ids, **kwargs):
        hidden = self.embed(input_ids)
        return MaskedLMOutput(logits=self.head(hidden + hidden.mean(dim=1, keepdim=True)))
"""


def test_trust_remote_code_serves_the_checkpoint_code_unbatched(tmp_path: Path) -> None:
    path = tmp_path / "remote"
    path.mkdir()
    (path / "configuration_tiny.py").write_text(REMOTE_CONFIG)
    (path / "modeling_tiny.py").write_text(REMOTE_MODEL)
    config = {
        "model_type": "tiny-mdm",
        "architectures": ["TinyMdmModel"],
        "auto_map": {
            "AutoConfig": "configuration_tiny.TinyMdmConfig",
            "AutoModel": "modeling_tiny.TinyMdmModel",
        },
        "vocab_size": 32,
        "hidden_size": 8,
        "mask_token_id": 31,
        "torch_dtype": "float32",
        "max_position_embeddings": 64,
    }
    (path / "config.json").write_text(json.dumps(config))
    torch.manual_seed(0)
    weights = {
        "embed.weight": torch.randn(32, 8),
        "head.weight": torch.randn(32, 8),
        "head.bias": torch.zeros(32),
    }
    save_file(weights, str(path / "model.safetensors"))
    with pytest.raises(VdiffValidationError, match="Unsupported model_type"):
        load(path)
    loaded = load(path, trust_remote_code=True)
    model = loaded.model
    assert loaded.family is REMOTE and model.mask_token_id == 31
    assert not model.supports_batching and not model.supports_kv_cache
    ids = torch.tensor([[0, 0, 5, 6, 7], [1, 2, 3, 4, 5]])
    key_mask = torch.tensor([[False, False, True, True, True], [True] * 5])
    with torch.inference_mode():
        batched = model(ids, torch.zeros_like(ids), key_mask).logits
        alone = model(ids[:1, 2:], torch.zeros(1, 3, dtype=torch.long)).logits
    torch.testing.assert_close(batched[:1, 2:], alone)
    with pytest.raises(NotImplementedError):
        model(ids, ids, use_cache=True)
