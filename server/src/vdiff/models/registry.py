"""model_type -> model family: module class, special tokens and decoding defaults."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from vdiff.errors import VdiffValidationError
from vdiff.models.base import DiffusionModel
from vdiff.models.dream import DreamModel, Qwen2CausalLM
from vdiff.models.fast_dllm_v2 import FastDLLMV2Model, fast_dllm_v2_block_size
from vdiff.models.llada import LLaDAModel
from vdiff.models.llada2 import LLaDA2Model, LLaDAMoEModel, llada2_block_size
from vdiff.models.sdar import SDARModel, sdar_block_size

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class FamilySpec:
    """What the engine needs to know about a model family beyond its weights."""

    name: str
    model_class: type[DiffusionModel] | None
    """None for the remote family, whose module comes from the checkpoint's own code."""
    model_types: tuple[str, ...]
    mask_token: str | None
    """Looked up in the tokenizer; `config.json`'s mask_token_id is the fallback."""
    end_tokens: tuple[str, ...]
    """Tokens that end an answer (the ones present in the tokenizer become TokenizerInfo.eos_token_ids)."""
    remasking: str | None = None
    block_length: int | None = None
    """None = the whole generation canvas is one block."""
    dream_alg: str | None = None
    alg_temp: float | None = None
    is_causal: bool = False
    context_cap: int | None = None
    """Cap on the derived max_model_len when config.json advertises more than the model was trained on."""
    block_causal: bool = False
    """Attention is block-causal over absolute blocks of block_length positions (block diffusion): the
    keys of a finished block are exact and reusable, like an AR cache."""
    block_size_of: Callable[[dict[str, Any], str | None], int] | None = None
    """The checkpoint's attention block from (config.json, model name), for families whose block is a
    property of the checkpoint (see for_checkpoint)."""
    decoding: str | None = None
    """The family's decoding policy when the request and the server name none."""
    threshold: float | None = None
    """The family's published confidence threshold (the default when nothing else sets one)."""
    architectures: tuple[str, ...] = ()
    """config.json `architectures` that pick this family over another one with the same model_type
    (LLaDA-MoE's dInfer config says `model_type: llada`, like LLaDA-8B)."""

    @property
    def is_diffusion(self) -> bool:
        return not self.is_causal

    def for_checkpoint(self, hf_config: dict[str, Any], name: str | None = None) -> FamilySpec:
        """This family, or the one its model_type shares with the checkpoint's `architectures`, with
        block_length set to the checkpoint's own block (block-causal families)."""
        family = _by_architecture(self, hf_config)
        if family.block_size_of is None:
            return family
        return replace(family, block_length=family.block_size_of(hf_config, name))

    def build(self, hf_config: dict[str, Any]) -> DiffusionModel:
        if self.model_class is None:
            raise TypeError(f"family {self.name!r} is loaded through transformers, not built natively")
        if self.block_causal and self.block_length is not None and "block_size" not in hf_config:
            hf_config = {**hf_config, "block_size": self.block_length}
        return self.model_class.from_hf_config(hf_config)


LLADA = FamilySpec(
    name="llada",
    model_class=LLaDAModel,
    model_types=("llada",),
    mask_token="<|mdm_mask|>",
    end_tokens=("<|eot_id|>", "<|endoftext|>"),
    remasking="low_confidence",
    block_length=32,
)
DREAM = FamilySpec(
    name="dream",
    model_class=DreamModel,
    model_types=("Dream", "dream"),
    mask_token="<|mask|>",
    end_tokens=("<|im_end|>", "<|endoftext|>"),
    dream_alg="entropy",
    alg_temp=0.0,
    block_length=None,
    context_cap=2048,
)
SDAR = FamilySpec(
    name="sdar",
    model_class=SDARModel,
    model_types=("sdar",),
    mask_token="<|MASK|>",
    end_tokens=("<|im_end|>", "<|endoftext|>"),
    remasking="low_confidence",
    block_length=sdar_block_size({}),
    block_causal=True,
    block_size_of=sdar_block_size,
    decoding="block",
)
LLADA2 = FamilySpec(
    name="llada2",
    model_class=LLaDA2Model,
    model_types=("llada2_moe", "llada2_moe_veomni"),
    mask_token="<|mask|>",
    end_tokens=("<|endoftext|>", "<|role_end|>"),
    remasking="low_confidence",
    block_length=llada2_block_size({}),
    block_causal=True,
    block_size_of=llada2_block_size,
    decoding="block",
    threshold=0.95,
)
FAST_DLLM_V2 = FamilySpec(
    name="fast_dllm_v2",
    model_class=FastDLLMV2Model,
    model_types=("Fast_dLLM_Qwen",),
    mask_token="|<MASK>|",
    end_tokens=("<|im_end|>", "<|endoftext|>"),
    remasking="low_confidence",
    block_length=fast_dllm_v2_block_size({}),
    block_causal=True,
    block_size_of=fast_dllm_v2_block_size,
    decoding="block",
)
LLADA_MOE = FamilySpec(
    name="llada_moe",
    model_class=LLaDAMoEModel,
    model_types=("lladamoe", "llada_moe"),
    mask_token="<|mask|>",
    end_tokens=("<|endoftext|>", "<|role_end|>"),
    remasking="low_confidence",
    block_length=32,
    architectures=("LLaDAMoEModelLM", "LLaDAMoEModel"),
)
QWEN2_AR = FamilySpec(
    name="qwen2",
    model_class=Qwen2CausalLM,
    model_types=("qwen2",),
    mask_token=None,
    end_tokens=("<|im_end|>", "<|endoftext|>"),
    is_causal=True,
)
REMOTE = FamilySpec(
    name="remote",
    model_class=None,
    model_types=(),
    mask_token=None,
    end_tokens=(),
    remasking="low_confidence",
    block_length=None,
)

FAMILIES: tuple[FamilySpec, ...] = (LLADA, DREAM, SDAR, LLADA2, FAST_DLLM_V2, LLADA_MOE, QWEN2_AR)
_SHARED_MODEL_TYPES: dict[str, tuple[FamilySpec, ...]] = {"llada": (LLADA_MOE,)}
"""model_types another family also answers to, told apart by config.json's architectures."""


def _by_architecture(family: FamilySpec, hf_config: dict[str, Any]) -> FamilySpec:
    architectures = set(hf_config.get("architectures") or ())
    for model_type in family.model_types:
        for candidate in _SHARED_MODEL_TYPES.get(model_type, ()):
            if architectures & set(candidate.architectures):
                return candidate
    return family


def supported_model_types() -> list[str]:
    return [model_type for family in FAMILIES for model_type in family.model_types]


def get_family(model_type: str | None, trust_remote_code: bool = False) -> FamilySpec:
    """The native family of a config.json model_type, or the transformers fallback (trust_remote_code)."""
    for family in FAMILIES:
        if model_type in family.model_types:
            return family
    if trust_remote_code:
        logger.warning(
            "model_type %r has no native vdiff implementation; loading it through transformers "
            "(trust_remote_code) and serving it unbatched without KV cache",
            model_type,
        )
        return REMOTE
    raise VdiffValidationError(
        f"Unsupported model_type {model_type!r}. Natively supported: {', '.join(supported_model_types())}. "
        "Pass --trust-remote-code to load other masked-diffusion models through their own code (unbatched).",
        "model",
    )
