"""Native model families (LLaDA, Dream, Qwen2 AR verifier) and the checkpoint loader."""

from vdiff.models.base import DiffusionModel, KVCache, ModelOutput, shift_logits
from vdiff.models.loader import LoadedModel, load_model, resolve_model_path
from vdiff.models.registry import FamilySpec, get_family

__all__ = [
    "DiffusionModel",
    "FamilySpec",
    "KVCache",
    "LoadedModel",
    "ModelOutput",
    "get_family",
    "load_model",
    "resolve_model_path",
    "shift_logits",
]
