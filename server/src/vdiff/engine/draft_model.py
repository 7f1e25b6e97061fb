"""The small autoregressive verifier APD scores drafts with (`--draft-model`).

A Qwen2-layout checkpoint (model_type qwen2, e.g. Qwen2.5-0.5B) loads natively: batched, with a KV
cache. Any other causal LM loads through transformers' AutoModelForCausalLM and runs without a cache
(every step re-reads the committed prefix). Either way the verifier must share the dLLM's tokenizer:
APD compares token ids, so a mismatch is a startup error rather than silently wrong acceptances.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from vdiff.errors import VdiffValidationError
from vdiff.models.base import DiffusionModel, KVCache, ModelOutput, select_positions

if TYPE_CHECKING:
    from vdiff.config import EngineConfig
    from vdiff.engine.model_runner import ModelRunner
    from vdiff.tokenizer import TokenizerInfo

logger = logging.getLogger(__name__)

NATIVE_AR_MODEL_TYPES = ("qwen2",)
DIFFUSION_MODEL_TYPES = ("llada", "Dream", "dream")
TOKENIZER_PROBE = "The answer is 42.\n\nSort 93017: 01379 <|im_end|>"


@dataclass(slots=True)
class DraftModel:
    runner: ModelRunner
    vocab_size: int
    """Width of the verifier's logits (may differ from the dLLM's; APD uses the common prefix)."""
    supports_kv_cache: bool
    name: str

    @property
    def num_forwards(self) -> int:
        return self.runner.num_forwards


class TransformersCausalLM(DiffusionModel):
    """A transformers causal LM behind the model contract, without a KV cache."""

    family = "transformers-causal"
    is_causal = True
    logit_shift = True
    supports_kv_cache = False

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(
        self,
        input_ids: torch.Tensor,
        position_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        past_key_values: KVCache | None = None,
        use_cache: bool = False,
        logits_indices: torch.Tensor | None = None,
    ) -> ModelOutput:
        if past_key_values is not None:
            raise ValueError("TransformersCausalLM runs without a KV cache")
        mask = None if attention_mask is None else attention_mask[:, -input_ids.shape[1] :].long()
        output = self.model(
            input_ids=input_ids, attention_mask=mask, position_ids=position_ids, use_cache=False
        )
        return ModelOutput(logits=select_positions(output.logits, logits_indices))


def load_draft_model(config: EngineConfig, target_tokenizer: TokenizerInfo) -> DraftModel:
    """Load `config.draft_model` on the engine's device and check it shares the dLLM's tokenizer."""
    from vdiff.config import EngineConfig as Config
    from vdiff.models.loader import load_model, read_json, resolve_device, resolve_model_path

    assert config.draft_model is not None
    draft_dir = resolve_model_path(config.draft_model, None)
    if not (draft_dir / "config.json").exists():
        raise VdiffValidationError(f"--draft-model {config.draft_model}: no config.json", "--draft-model")
    hf_config = read_json(draft_dir / "config.json")
    model_type = hf_config.get("model_type")
    if model_type in DIFFUSION_MODEL_TYPES:
        raise VdiffValidationError(
            f"--draft-model {config.draft_model} is a diffusion model ({model_type}); APD needs a small "
            "autoregressive model with the same tokenizer (e.g. Qwen2.5-0.5B for Dream)",
            "--draft-model",
        )
    check_same_tokenizer(draft_dir, target_tokenizer, config)
    if model_type in NATIVE_AR_MODEL_TYPES:
        loaded = load_model(
            Config(
                model=str(draft_dir),
                dtype=config.dtype,
                device=config.device,
                seed=config.seed,
                tensor_parallel_size=config.tensor_parallel_size,
            )
        )
        model: DiffusionModel = loaded.model
        device = loaded.device
    else:
        device = resolve_device(config.device)
        model = _load_with_transformers(draft_dir, hf_config, config, device)
    vocab_size = int(hf_config.get("vocab_size") or 0)
    pad_id = target_tokenizer.pad_token_id
    supports_cache = bool(getattr(model, "supports_kv_cache", True))
    logger.info(
        "APD verifier %s loaded (%s, kv cache: %s)", config.draft_model, type(model).__name__, supports_cache
    )
    from vdiff.engine.model_runner import ModelRunner  # model_runner -> decoding -> apd -> here

    runner = ModelRunner(model, device, pad_id, enforce_eager=config.enforce_eager)
    runner.warm_up()
    return DraftModel(runner, vocab_size, supports_cache, config.draft_model)


def _load_with_transformers(
    draft_dir: Path, hf_config: dict[str, Any], config: EngineConfig, device: torch.device
) -> DiffusionModel:
    from transformers import AutoModelForCausalLM

    from vdiff.models.loader import resolve_dtype, weight_files

    dtype = resolve_dtype(config.dtype, hf_config, weight_files(draft_dir))
    try:
        model = AutoModelForCausalLM.from_pretrained(
            str(draft_dir), dtype=dtype, trust_remote_code=config.trust_remote_code
        )
    except Exception as error:
        raise VdiffValidationError(
            f"--draft-model {draft_dir}: transformers could not load it as a causal LM: {error}",
            "--draft-model",
        ) from error
    return TransformersCausalLM(model.to(device).eval().requires_grad_(False))


def check_same_tokenizer(draft_dir: Path, target: TokenizerInfo, config: EngineConfig) -> None:
    """Every token of the verifier's vocabulary must have the same id in the dLLM's (the dLLM may add
    its own tokens such as the mask), and both must split text the same way."""
    from transformers import AutoTokenizer

    try:
        draft = AutoTokenizer.from_pretrained(str(draft_dir), trust_remote_code=config.trust_remote_code)
    except Exception as error:
        raise VdiffValidationError(
            f"--draft-model {config.draft_model}: cannot load its tokenizer ({error}); APD needs the "
            "verifier's tokenizer to check it matches the served model's",
            "--draft-model",
        ) from error
    target_vocab = target.tokenizer.get_vocab()
    mismatched = [
        token
        for token, index in sorted(draft.get_vocab().items(), key=lambda item: item[1])
        if target_vocab.get(token) != index
    ]
    probe_differs = draft.encode(TOKENIZER_PROBE, add_special_tokens=False) != target.encode(TOKENIZER_PROBE)
    if mismatched or probe_differs:
        detail = (
            f"{len(mismatched)} tokens differ, e.g. {mismatched[:5]}" if mismatched else "text splits differ"
        )
        raise VdiffValidationError(
            f"--draft-model {config.draft_model} does not share the tokenizer of {config.model} ({detail}); "
            "APD compares token ids, so the verifier must use the same tokenizer",
            "--draft-model",
        )
