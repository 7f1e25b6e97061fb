"""Load a checkpoint directory (or a Hugging Face repo id from the local cache) into a native model.

Modules are built on the meta device and every parameter is created straight from the safetensors
file in the target dtype on the target device, so an 8B model is never allocated twice.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from torch import nn
from tqdm.auto import tqdm

from vdiff.config import EngineConfig
from vdiff.distributed.state import SINGLE, TensorParallel, build_sharded
from vdiff.errors import VdiffValidationError
from vdiff.models.base import DiffusionModel
from vdiff.models.registry import FamilySpec, get_family

logger = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
_IGNORED_SUFFIXES = ("rotary_emb.inv_freq",)
_TIED_HEAD_NAMES = ("lm_head.weight", "model.transformer.ff_out.weight")
_TRUTHY = ("1", "true", "yes", "on")
_SAFETENSORS_DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}


@dataclass(slots=True)
class LoadedModel:
    model: DiffusionModel
    family: FamilySpec
    hf_config: dict[str, Any]
    model_dir: Path
    dtype: torch.dtype
    device: torch.device
    generation_config: dict[str, Any] = field(default_factory=dict)
    max_model_len: int = 2048


def _hub_offline() -> bool:
    from huggingface_hub import constants

    return os.environ.get("HF_HUB_OFFLINE", "").lower() in _TRUTHY or bool(constants.HF_HUB_OFFLINE)


def resolve_model_path(
    model: str,
    revision: str | None = None,
    cache_dir: str | Path | None = None,
    token: str | bool | None = None,
) -> Path:
    """A local directory as is; a shipped demo model by its name (vdiff.demo); otherwise a hub repo id
    from the HF cache in `cache_dir` (--download-dir; default HF_HUB_CACHE), downloaded when online with
    `token` (--hf-token; default HF_TOKEN)."""
    local = Path(model).expanduser()
    if local.is_dir():
        return local.resolve()
    if cache_dir is not None:
        cache_dir = Path(cache_dir).expanduser()
    from vdiff.demo import shipped_demo_path

    demo = shipped_demo_path(model)
    if demo is not None:
        return demo
    if local.exists() or model.startswith((".", "/", "~")) or model.count("/") > 1:
        raise VdiffValidationError(f"Model path {model!r} is not a directory", "model")
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HFValidationError

    patterns = ["*.json", "*.safetensors", "*.py", "*.jinja", "*.txt", "*.model", "tokenizer*"]
    try:
        return Path(snapshot_download(model, revision=revision, cache_dir=cache_dir, local_files_only=True))
    except HFValidationError as error:
        raise VdiffValidationError(
            f"Model {model!r} is neither a directory nor a repo id: {error}", "model"
        ) from error
    except Exception as cache_miss:
        if _hub_offline():
            raise VdiffValidationError(
                f"Model {model!r} is not a local directory and is not in the Hugging Face cache "
                f"({cache_dir or _default_cache_dir()}); HF_HUB_OFFLINE is set, so it was not downloaded",
                "model",
            ) from cache_miss
    try:  # hub progress bars are huggingface_hub's own
        return Path(
            snapshot_download(
                model, revision=revision, cache_dir=cache_dir, allow_patterns=patterns, token=token
            )
        )
    except Exception as error:
        raise VdiffValidationError(
            f"Model {model!r} is not a local directory, not in the Hugging Face cache "
            f"({cache_dir or _default_cache_dir()}) and could not be downloaded: {error}",
            "model",
        ) from error


def _default_cache_dir() -> str:
    from huggingface_hub import constants

    return os.environ.get("HF_HUB_CACHE") or constants.HF_HUB_CACHE


def read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError as error:
        raise VdiffValidationError(f"{path.name} not found in {path.parent}", "model") from error
    except json.JSONDecodeError as error:
        raise VdiffValidationError(f"{path} is not valid JSON: {error}", "model") from error


def weight_files(model_dir: Path) -> list[Path]:
    """The safetensors files of a checkpoint: from model.safetensors.index.json, or the single file."""
    index = model_dir / "model.safetensors.index.json"
    if index.exists():
        names = sorted(set(read_json(index)["weight_map"].values()))
        missing = [name for name in names if not (model_dir / name).exists()]
        if missing:
            raise VdiffValidationError(
                f"Shards listed in {index.name} are missing: {', '.join(missing)}", "model"
            )
        return [model_dir / name for name in names]
    single = model_dir / "model.safetensors"
    if single.exists():
        return [single]
    found = sorted(model_dir.glob("*.safetensors"))
    if found:
        return found
    raise VdiffValidationError(
        f"No safetensors weights in {model_dir} (vdiff loads model.safetensors or a sharded index; "
        "convert .bin checkpoints with safetensors first)",
        "model",
    )


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise VdiffValidationError("--device cuda requested but CUDA is not available", "--device")
    if name == "mps" and not torch.backends.mps.is_available():
        raise VdiffValidationError("--device mps requested but MPS is not available", "--device")
    return torch.device(name)


def _checkpoint_dtype(files: list[Path]) -> torch.dtype:
    with safe_open(str(files[0]), framework="pt") as handle:
        stored = handle.get_slice(next(iter(handle.keys()))).get_dtype()
    return _SAFETENSORS_DTYPES.get(stored, torch.float32)


def resolve_dtype(name: str, hf_config: dict[str, Any], files: list[Path]) -> torch.dtype:
    """auto follows config.json's torch_dtype (or dtype), falling back to the tensors' own dtype."""
    if name != "auto":
        return DTYPES[name]
    declared = hf_config.get("torch_dtype") or hf_config.get("dtype")
    if isinstance(declared, str) and declared.removeprefix("torch.") in DTYPES:
        return DTYPES[declared.removeprefix("torch.")]
    return _checkpoint_dtype(files)


NATIVE_BF16_CPU_FLAGS = frozenset({"avx512_bf16", "amx_bf16", "bf16"})
"""/proc/cpuinfo flags of CPUs with bf16 matmul instructions (x86 AVX512-BF16 / AMX, Arm's BF16 feature)."""


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> frozenset[str] | None:
    """The CPU's feature flags (x86 "flags", Arm "Features"), or None where /proc/cpuinfo is unreadable."""
    try:
        text = cpuinfo.read_text(errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return None


def auto_cpu_dtype(dtype: torch.dtype, cpu_capability: str, flags: frozenset[str] | None) -> torch.dtype:
    """--dtype auto on the CPU: a bf16 checkpoint computes in float32 unless the CPU has native bf16
    matmuls (without them bf16 runs 3-6x slower than float32).

    `flags` (/proc/cpuinfo) decide when known. Without them, `cpu_capability`
    (torch.backends.cpu.get_cpu_capability()) still rules out an x86 CPU below AVX-512 ("AVX2", "NO AVX"):
    AVX512-BF16 and AMX need AVX-512. Any other unknown CPU keeps the checkpoint's bf16."""
    if dtype != torch.bfloat16:
        return dtype
    if flags is not None:
        return dtype if NATIVE_BF16_CPU_FLAGS & flags else torch.float32
    return torch.float32 if cpu_capability.upper() in ("AVX2", "NO AVX") else dtype


def _auto_dtype_for_device(name: str, dtype: torch.dtype, device: torch.device) -> torch.dtype:
    if name != "auto" or device.type != "cpu" or dtype != torch.bfloat16:
        return dtype
    capability = torch.backends.cpu.get_cpu_capability()
    chosen = auto_cpu_dtype(dtype, capability, cpu_flags())
    if chosen != dtype:
        logger.info(
            "--dtype auto: computing the bfloat16 checkpoint in float32: this CPU (%s) has no native bf16 "
            "matmuls (no avx512_bf16 / amx_bf16 flag), where bf16 runs 3-6x slower; --dtype bfloat16 "
            "keeps bf16",
            capability,
        )
    return chosen


def _context_limit(hf_config: dict[str, Any], family: FamilySpec) -> int | None:
    limit = hf_config.get("max_sequence_length") or hf_config.get("max_position_embeddings")
    if limit and family.context_cap:
        return min(limit, family.context_cap)
    return limit


def resolve_max_model_len(config: EngineConfig, hf_config: dict[str, Any], family: FamilySpec) -> int:
    declared = hf_config.get("max_sequence_length") or hf_config.get("max_position_embeddings")
    if config.max_model_len is not None:
        if declared and config.max_model_len > declared:
            raise VdiffValidationError(
                f"--max-model-len {config.max_model_len} exceeds the model's maximum of {declared}",
                "--max-model-len",
            )
        return config.max_model_len
    return _context_limit(hf_config, family) or 2048


def hub_token(value: str | None) -> str | bool | None:
    """--hf-token: a token, or 'true' (the bare flag) for the `hf auth login` token; None reads HF_TOKEN."""
    if value is not None and value.strip().lower() in _TRUTHY:
        return True
    return value


def load_generation_config(config: EngineConfig, model_dir: Path) -> dict[str, Any]:
    """--generation-config: 'auto' reads the checkpoint's file, 'vdiff'/'vllm' ignore it, or a directory;
    --override-generation-config is merged over the result (as vLLM's get_diff_sampling_param)."""
    return {**_read_generation_config(config, model_dir), **config.override_generation_config}


def _read_generation_config(config: EngineConfig, model_dir: Path) -> dict[str, Any]:
    if config.generation_config in ("vdiff", "vllm"):
        return {}
    folder = model_dir if config.generation_config == "auto" else Path(config.generation_config)
    path = folder / "generation_config.json"
    if not path.exists():
        if config.generation_config == "auto":
            return {}
        raise VdiffValidationError(f"--generation-config: {path} does not exist", "--generation-config")
    return read_json(path)


def _check_quantization(quantization: str | None, device: torch.device) -> None:
    if quantization is None:
        return
    if device.type != "cuda":
        raise VdiffValidationError(
            f"--quantization {quantization} needs a CUDA device (this engine runs on {device.type})",
            "--quantization",
        )
    try:  # pragma: no cover - GPU environments only
        import bitsandbytes  # noqa: F401
    except ImportError as error:  # pragma: no cover
        raise VdiffValidationError(
            f"--quantization {quantization} needs the bitsandbytes package (pip install 'vdiff-server[gpu]')",
            "--quantization",
        ) from error


FP32_SUFFIXES = ("expert_bias", "e_score_correction_bias")
"""MoE expert-selection biases stay float32 whatever --dtype is: rounded to bf16 they pick other experts."""


def _set_parameter(model: nn.Module, name: str, tensor: torch.Tensor) -> None:
    module_name, _, attribute = name.rpartition(".")
    module = model.get_submodule(module_name)
    setattr(module, attribute, nn.Parameter(tensor, requires_grad=False))


def _is_ignorable(name: str, expected: set[str]) -> bool:
    return name.endswith(_IGNORED_SUFFIXES) or (name in _TIED_HEAD_NAMES and name not in expected)


def _slice_of(model: nn.Module, name: str) -> Any:
    """The tensor-parallel slice (vdiff.distributed.layers.Slice) a parameter is read from, or None."""
    module_name, _, attribute = name.rpartition(".")
    return getattr(model.get_submodule(module_name), "tp_slices", {}).get(attribute)


def _read_tensor(handle: Any, name: str, spec: Any) -> torch.Tensor:
    """The whole stored tensor, or only its slice (safetensors reads just those bytes), zero-padded."""
    if spec is None:
        return handle.get_tensor(name)
    stored = handle.get_slice(name)
    shape = list(stored.get_shape())
    if spec.dim >= len(shape) or spec.stop > shape[spec.dim]:
        raise VdiffValidationError(
            f"Tensor {name} has shape {tuple(shape)}: too small for this rank's slice "
            f"[{spec.start}:{spec.stop}] of dimension {spec.dim} (see config.json)",
            "model",
        )
    parts = []
    for start, stop in spec.pieces or ((spec.start, spec.stop),):
        index = [slice(None)] * len(shape)
        index[spec.dim] = slice(start, stop)
        parts.append(stored[tuple(index)])
    tensor = parts[0] if len(parts) == 1 else torch.cat(parts, dim=spec.dim)
    missing = spec.size - tensor.shape[spec.dim]
    if missing > 0:  # the last rank's share of a vocabulary padded to a multiple of the ranks
        pad_shape = list(tensor.shape)
        pad_shape[spec.dim] = missing
        tensor = torch.cat([tensor, tensor.new_zeros(pad_shape)], dim=spec.dim)
    return tensor


def load_weights(model: nn.Module, files: list[Path], dtype: torch.dtype, device: torch.device) -> None:
    """Materialise every (meta) parameter from the safetensors files; names and shapes must match exactly.

    A tensor-parallel shard reads only its slice of each split parameter (see `_slice_of`)."""
    expected = {name: param.shape for name, param in model.named_parameters()}
    located: dict[str, Path] = {}
    for path in files:
        with safe_open(str(path), framework="pt") as handle:
            located.update(dict.fromkeys(handle.keys(), path))
    unexpected = sorted(n for n in located if n not in expected and not _is_ignorable(n, set(expected)))
    missing = sorted(n for n in expected if n not in located)
    if missing or unexpected:
        details = []
        if missing:
            details.append(
                f"missing tensors: {', '.join(missing[:20])}" + (" ..." if len(missing) > 20 else "")
            )
        if unexpected:
            details.append(
                f"unexpected tensors: {', '.join(unexpected[:20])}" + (" ..." if len(unexpected) > 20 else "")
            )
        raise VdiffValidationError(
            f"Checkpoint does not match the {type(model).__name__} layout ({'; '.join(details)})", "model"
        )
    for path in tqdm(files, desc="Loading safetensors shards", unit="shard", disable=len(files) < 2):
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            for name in handle.keys():  # noqa: SIM118 - safe_open is not a dict
                if name not in expected:
                    continue
                tensor = _read_tensor(handle, name, _slice_of(model, name))
                if tensor.shape != expected[name]:
                    raise VdiffValidationError(
                        f"Tensor {name} has shape {tuple(tensor.shape)}, expected {tuple(expected[name])} "
                        "from config.json",
                        "model",
                    )
                kept = torch.float32 if name.endswith(FP32_SUFFIXES) else dtype
                _set_parameter(model, name, tensor.to(device=device, dtype=kept))


def _has(model: nn.Module, name: str) -> bool:
    try:
        model.get_submodule(name)
    except AttributeError:
        return False
    return True


def _quantize_linears(model: nn.Module, quantization: str, dtype: torch.dtype, device: torch.device) -> None:
    """Swap every Linear except the LM head for a bitsandbytes layer; moving to CUDA quantizes it.

    Written for GPU deployments; not exercised by the CPU test suite.
    """
    import bitsandbytes as bnb  # pragma: no cover

    eight_bit = quantization == "bitsandbytes-8bit"
    heads = {
        id(model.get_submodule(name)) for name in ("lm_head", "model.transformer.ff_out") if _has(model, name)
    }
    for module in list(model.modules()):  # pragma: no cover
        for child_name, child in list(module.named_children()):
            if not isinstance(child, nn.Linear) or id(child) in heads:
                continue
            has_bias = child.bias is not None
            if eight_bit:
                layer = bnb.nn.Linear8bitLt(
                    child.in_features,
                    child.out_features,
                    bias=has_bias,
                    has_fp16_weights=False,
                    threshold=6.0,
                )
                layer.weight = bnb.nn.Int8Params(
                    child.weight.data, requires_grad=False, has_fp16_weights=False
                )
            else:
                layer = bnb.nn.Linear4bit(
                    child.in_features,
                    child.out_features,
                    bias=has_bias,
                    compute_dtype=dtype,
                    quant_type="nf4",
                )
                layer.weight = bnb.nn.Params4bit(child.weight.data, requires_grad=False, quant_type="nf4")
            if has_bias:
                layer.bias = nn.Parameter(child.bias.data, requires_grad=False)
            setattr(module, child_name, layer)
    model.to(device)  # pragma: no cover


def load_model(config: EngineConfig, tp: TensorParallel | None = None) -> LoadedModel:
    """Resolve, validate and load the checkpoint named by `config.model` onto the chosen device.

    With --tensor-parallel-size N > 1 (and no `tp`) the model is loaded sharded over the group
    (vdiff.distributed.group.load_parallel), which calls back here with each rank's `tp`."""
    if tp is None and config.tensor_parallel_size > 1:
        from vdiff.distributed.group import load_parallel

        return load_parallel(config)
    tp = tp or SINGLE
    model_dir = resolve_model_path(
        config.model, config.revision, config.download_dir, hub_token(config.hf_token)
    )
    hf_config = read_json(model_dir / "config.json")
    family = get_family(hf_config.get("model_type"), config.trust_remote_code).for_checkpoint(
        hf_config, config.model
    )
    device = resolve_device(config.device)
    if tp.is_parallel and device.type == "cuda":  # pragma: no cover - needs several GPUs
        device = torch.device("cuda", tp.rank)
    _check_quantization(config.quantization, device)
    max_model_len = resolve_max_model_len(config, hf_config, family)
    generation_config = load_generation_config(config, model_dir)
    if family.model_class is None:
        from vdiff.models.remote import RemoteDiffusionModel

        declared = str(hf_config.get("torch_dtype") or "").removeprefix("torch.")
        dtype = DTYPES.get(declared if config.dtype == "auto" else config.dtype, torch.float32)
        dtype = _auto_dtype_for_device(config.dtype, dtype, device)
        model = RemoteDiffusionModel.from_pretrained(model_dir, hf_config, dtype, device)
        return LoadedModel(
            model, family, hf_config, model_dir, dtype, device, generation_config, max_model_len
        )
    files = weight_files(model_dir)
    dtype = _auto_dtype_for_device(config.dtype, resolve_dtype(config.dtype, hf_config, files), device)
    if config.quantization and dtype == torch.float32:
        dtype = torch.float16
    with torch.device("meta"), build_sharded(tp):
        model = family.build(hf_config)
    load_device = torch.device("cpu") if config.quantization else device
    load_weights(model, files, dtype, load_device)
    if config.quantization:
        _quantize_linears(model, config.quantization, dtype, device)  # pragma: no cover
    model.eval().requires_grad_(False)
    logger.info(
        "Loaded %s (%s) from %s as %s on %s", family.name, type(model).__name__, model_dir, dtype, device
    )
    return LoadedModel(model, family, hf_config, model_dir, dtype, device, generation_config, max_model_len)
