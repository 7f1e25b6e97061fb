"""DiffusionModel spec -> vdiff server flags. The decoding profile table lives here and only here."""

from __future__ import annotations

from typing import Any

from vdiff_operator.models import DiffusionModel

DRAFT_MOUNT_PATH = "/mnt/draft-model"
DRAFT_MODELCAR_LINK = f"{DRAFT_MOUNT_PATH}/models"
"""Where an oci:// draft's modelcar links its image's /models (builders/modelcar.py)."""
API_KEYS_MOUNT_PATH = "/etc/vdiff/api-keys"
API_KEYS_FILE_NAME = "api-keys"
"""With spec.auth.apiKeysSecretRef.key, that data key is mounted as this file (one key per line)."""

# profile -> server settings (chosen from bench results on the demo models, docs/decoding.md);
# `fast` picks APD when a draft model is given.
PROFILES: dict[str, dict[str, Any]] = {
    "quality": {"decoding": "reference"},
    "balanced": {"decoding": "threshold", "threshold": 0.9},
    "fast": {"decoding": "threshold", "threshold": 0.7, "kv_cache": "dual", "kv_cache_vicinity": 16},
}
FAST_WITH_DRAFT: dict[str, Any] = {"decoding": "apd"}


def decoding_settings(dm: DiffusionModel) -> dict[str, Any]:
    """The profile's settings, then every explicit override from spec.decoding."""
    decoding = dm.spec.decoding
    settings = dict(PROFILES[decoding.profile])
    if decoding.profile == "fast" and dm.spec.draft_model is not None:
        settings = dict(FAST_WITH_DRAFT)
    overrides = {
        "decoding": decoding.decoding,
        "threshold": decoding.threshold,
        "kv_cache": decoding.kv_cache,
        "kv_cache_vicinity": decoding.kv_cache_vicinity,
        "diffusion_steps": decoding.steps,
        "block_length": decoding.block_length,
        "remasking": decoding.remasking,
        "dream_alg": decoding.dream_alg,
    }
    if decoding.apd is not None:
        overrides |= {
            "apd_mixture_weight": decoding.apd.mixture_weight,
            "apd_kv_window": decoding.apd.kv_window,
            "apd_max_lookahead": decoding.apd.max_lookahead,
        }
    settings |= {key: value for key, value in overrides.items() if value is not None}
    if settings.get("decoding") != "threshold":
        settings.pop("threshold", None)
    if settings.get("kv_cache") in (None, "none"):
        settings.pop("kv_cache_vicinity", None)
    return settings


def draft_model_arg(dm: DiffusionModel) -> str | None:
    """hf:// drafts become a repo id the server resolves; every other draft is a directory under
    DRAFT_MOUNT_PATH: a pvc:// claim (and its sub-path) mounted read-only, or an emptyDir the draft's
    storage-initializer container filled (builders/inferenceservice)."""
    if dm.spec.draft_model is None:
        return None
    scheme, _, rest = dm.spec.draft_model.uri.partition("://")
    if scheme == "hf":
        return rest
    if scheme == "oci":
        return DRAFT_MODELCAR_LINK
    if scheme != "pvc":
        return DRAFT_MOUNT_PATH
    _claim, _, path = rest.partition("/")
    return f"{DRAFT_MOUNT_PATH}/{path}".rstrip("/")


def api_key_file_arg(dm: DiffusionModel) -> str | None:
    """--api-key-file: the mounted Secret directory (one file per key name) or its one key-per-line file."""
    ref = dm.spec.auth.api_keys_secret_ref
    if ref is None:
        return None
    return API_KEYS_MOUNT_PATH if ref.key is None else f"{API_KEYS_MOUNT_PATH}/{API_KEYS_FILE_NAME}"


def _flag(name: str, value: Any) -> str:
    return f"--{name.replace('_', '-')}={value}"


def model_args(dm: DiffusionModel) -> list[str]:
    """Flags the InferenceService adds after the runtime's (--port, --model)."""
    spec = dm.spec
    args = [_flag("served_model_name", dm.served_model_name)]
    args += [_flag(key, value) for key, value in decoding_settings(dm).items()]
    draft = draft_model_arg(dm)
    if draft is not None:
        args.append(_flag("draft_model", draft))
    if spec.resources.tensor_parallel_size > 1:
        # One rank per GPU the pod gets (resources.gpus); gpus 0 and 1 leave the server's default of 1.
        args.append(_flag("tensor_parallel_size", spec.resources.tensor_parallel_size))
    if spec.model.max_model_len is not None:
        args.append(_flag("max_model_len", spec.model.max_model_len))
    if spec.model.max_num_seqs is not None:
        args.append(_flag("max_num_seqs", spec.model.max_num_seqs))
    if spec.model.dtype is not None:
        args.append(_flag("dtype", spec.model.dtype))
    if spec.quantization is not None:
        args.append(_flag("quantization", spec.quantization))
    if spec.model.trust_remote_code:
        args.append("--trust-remote-code")
    key_file = api_key_file_arg(dm)
    if key_file is not None:
        args.append(_flag("api_key_file", key_file))
    if spec.rate_limits.requests_per_minute is not None:
        args.append(_flag("rate_limit_requests_per_minute", spec.rate_limits.requests_per_minute))
    if spec.rate_limits.tokens_per_minute is not None:
        args.append(_flag("rate_limit_tokens_per_minute", spec.rate_limits.tokens_per_minute))
    return args + list(spec.args)
