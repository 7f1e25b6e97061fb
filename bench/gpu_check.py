"""A ready GPU check: the engine at the real LLaDA-8B / Dream-7B shapes, in one time-boxed run.

    PYTHONPATH=server/src python bench/gpu_check.py --out $OUT          # on the lent GPU machine
    python bench/gpu_check.py --small --device cpu --quick --out /tmp/g  # the same code paths, tiny shapes

Self-contained (no network, no hub, no HTTP server): it writes random-weight bf16 checkpoints in the
real layouts (config.json, sharded safetensors with an index, tokenizer files with the special tokens at
the published ids) at the real LLaDA-8B-Instruct and Dream-v0-Instruct-7B shapes into --work-dir (the
device's disk, never the results dir), loads each through the engine's own loader and measures:

- sdpa: which scaled_dot_product_attention kernel the dispatcher picks for the model's attention
  (boolean key mask, GQA for Dream), the torch.backends.cuda flags, which kernels can run it, and the
  attention ops / kernels torch.profiler sees in one real forward (eager and compiled);
- forward: one no-cache denoising forward (ModelRunner.execute, logits for one block) for every
  batch x canvas length, warm-up first, synchronised, median of --repeats, with peak memory;
- engine: generated tokens/s of the offline LLMEngine, closed loop (bench/engine_driver.py) at each
  --concurrency, for the threshold policy and the reference decoder with fixed --steps (whose cost does
  not depend on the weights: random weights make the threshold rule commit ~1 token per step);
- compile: forward and engine again with EngineConfig.enforce_eager=False (torch.compile on CUDA; the
  engine never compiles on CPU, so there both runs are eager) and the engine start-up time it costs;
- tp: -tp 2 (NCCL) where two GPUs are visible (skipped with a note otherwise; on --device cpu two gloo
  ranks): weights per rank, memory in use per GPU, greedy tokens equal to -tp 1, threshold tokens/s.

Every section is time-boxed inside --budget-s (each model gets an equal share); what does not fit is
skipped with a note, and a hard stop at budget + --grace-s interrupts a section that overruns. Results
(gpu.json: every number; gpu.md: the tables) are rewritten after every section, so a run that is cut
short still leaves what it measured. Exit status 1 if any section failed (an exception, an OOM, a
server module imported), 0 otherwise; skips are not failures. Times are from one run, never asserted.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import importlib.util
import json
import os
import platform
import shutil
import signal
import statistics
import sys
import tempfile
import time
import traceback
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # `python bench/gpu_check.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.demo_layouts import ModelSize, llada_config, qwen2_family_config
from bench.engine_driver import drive_closed_loop
from bench.report import RESULTS_DIR, save_results

REPO_ROOT = Path(__file__).resolve().parent.parent
if importlib.util.find_spec("vdiff") is None:  # not pip-installed (the GPU machine): use the source tree
    sys.path.insert(0, str(REPO_ROOT / "server" / "src"))
if str(REPO_ROOT / "tests") not in sys.path:  # tests/checkpoint_factory.py: the tokenizer layouts
    sys.path.append(str(REPO_ROOT / "tests"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach the hub, even by accident
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SERVER_MODULES = ("fastapi", "uvicorn", "starlette")
"""Absent on the GPU machine: the engine path must not import them."""
SECTIONS = ("sdpa", "forward", "engine", "compile", "tp")
POLICIES = ("threshold", "reference", "reference+rules+logprobs")
GIB = 2**30


# ----------------------------------------------------------------------------------------------- shapes
@dataclass(frozen=True, slots=True)
class Shape:
    key: str
    family: str
    """llada or dream."""
    title: str
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    intermediate: int
    vocab: int
    special_ids: dict[str, int]
    max_len: int

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    @property
    def layer_params(self) -> int:
        """Parameters of the decoder layers (what every position pays), norms and biases included."""
        kv = self.kv_heads * self.head_dim
        attention = 2 * self.hidden * self.hidden + 2 * kv * self.hidden
        bias = (self.hidden + 2 * kv) if self.family == "dream" else 0
        return self.layers * (attention + bias + 3 * self.hidden * self.intermediate + 2 * self.hidden)

    @property
    def num_params(self) -> int:
        return self.layer_params + 2 * self.vocab * self.hidden + self.hidden

    def forward_flops(self, batch: int, length: int, logits: int) -> float:
        """Matmul FLOPs of one forward: the layers at every position, attention, the head at `logits`."""
        dense = 2 * self.layer_params * batch * length
        attention = 4 * batch * length * length * self.hidden * self.layers
        return float(dense + attention + 2 * self.vocab * self.hidden * batch * logits)


LLADA_IDS = {  # LLaDA-8B-Instruct's tokenizer
    "<|startoftext|>": 126080,
    "<|endoftext|>": 126081,
    "<|mdm_mask|>": 126336,
    "<|start_header_id|>": 126346,
    "<|end_header_id|>": 126347,
    "<|eot_id|>": 126348,
}
DREAM_IDS = {  # Dream-v0-Instruct-7B's (Qwen2.5's, plus Dream's bos and mask)
    "<|endoftext|>": 151643,
    "<|im_start|>": 151644,
    "<|im_end|>": 151645,
    "<|beginoftext|>": 151665,
    "<|mask|>": 151666,
}
FULL_SHAPES = {
    "llada": Shape(
        "llada-8b", "llada", "LLaDA-8B-Instruct shape", 4096, 32, 32, 32, 12288, 126464, LLADA_IDS, 4096
    ),
    "dream": Shape(
        "dream-7b", "dream", "Dream-v0-Instruct-7B shape", 3584, 28, 28, 4, 18944, 152064, DREAM_IDS, 131072
    ),
}


def _shifted(ids: dict[str, int], first: int) -> dict[str, int]:
    low = min(ids.values())
    return {token: first + value - low for token, value in ids.items()}


SMALL_SHAPES = {  # same layouts and id gaps, tiny sizes: runs on a CPU in seconds
    "llada": Shape(
        "llada-small", "llada", "LLaDA tiny", 64, 2, 4, 4, 128, 640, _shifted(LLADA_IDS, 300), 2048
    ),
    "dream": Shape(
        "dream-small", "dream", "Dream tiny", 64, 2, 4, 2, 128, 384, _shifted(DREAM_IDS, 300), 2048
    ),
}


# ----------------------------------------------------------------------------------------- checkpoints
def tensor_specs(shape: Shape) -> list[tuple[str, tuple[int, ...], str]]:
    """(name, shape, init) of every tensor, in the real checkpoints' names and order."""
    d, kv, mlp = shape.hidden, shape.kv_heads * shape.head_dim, shape.intermediate
    specs: list[tuple[str, tuple[int, ...], str]] = []
    if shape.family == "llada":
        prefix = "model.transformer."
        specs.append((prefix + "wte.weight", (shape.vocab, d), "embedding"))
        for i in range(shape.layers):
            block = f"{prefix}blocks.{i}."
            for name, size in (
                ("q_proj", (d, d)),
                ("k_proj", (kv, d)),
                ("v_proj", (kv, d)),
                ("attn_out", (d, d)),
                ("ff_proj", (mlp, d)),
                ("up_proj", (mlp, d)),
                ("ff_out", (d, mlp)),
            ):
                specs.append((f"{block}{name}.weight", size, "linear"))
            specs += [(block + "attn_norm.weight", (d,), "norm"), (block + "ff_norm.weight", (d,), "norm")]
        specs += [
            (prefix + "ln_f.weight", (d,), "norm"),
            (prefix + "ff_out.weight", (shape.vocab, d), "linear"),
        ]
        return specs
    specs.append(("model.embed_tokens.weight", (shape.vocab, d), "embedding"))
    for i in range(shape.layers):
        layer = f"model.layers.{i}."
        for name, out in (("q", d), ("k", kv), ("v", kv)):
            specs += [
                (f"{layer}self_attn.{name}_proj.weight", (out, d), "linear"),
                (f"{layer}self_attn.{name}_proj.bias", (out,), "bias"),
            ]
        specs += [
            (layer + "self_attn.o_proj.weight", (d, d), "linear"),
            (layer + "mlp.gate_proj.weight", (mlp, d), "linear"),
            (layer + "mlp.up_proj.weight", (mlp, d), "linear"),
            (layer + "mlp.down_proj.weight", (d, mlp), "linear"),
            (layer + "input_layernorm.weight", (d,), "norm"),
            (layer + "post_attention_layernorm.weight", (d,), "norm"),
        ]
    specs += [("model.norm.weight", (d,), "norm"), ("lm_head.weight", (shape.vocab, d), "linear")]
    return specs


def _init_(tensor: Any, kind: str, generator: Any) -> None:
    if kind == "norm":
        tensor.fill_(1.0)
    elif kind == "bias":
        tensor.normal_(0.0, 0.02, generator=generator)
    elif kind == "embedding":
        tensor.normal_(0.0, 1.0, generator=generator)
    else:  # linear: activations stay O(1) through the layers
        tensor.normal_(0.0, tensor.shape[-1] ** -0.5, generator=generator)


def write_weights(shape: Shape, path: Path, device: Any, dtype: Any, shard_bytes: int, seed: int) -> dict:
    """Sharded safetensors + model.safetensors.index.json; each tensor is drawn on `device` (fast) and
    each shard is written and freed before the next is drawn."""
    import torch
    from safetensors.torch import save_file

    specs = tensor_specs(shape)
    element = torch.empty((), dtype=dtype).element_size()
    shards: list[list[tuple[str, tuple[int, ...], str]]] = [[]]
    size = 0
    for spec in specs:
        nbytes = element * _numel(spec[1])
        if shards[-1] and size + nbytes > shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append(spec)
        size += nbytes
    generator = torch.Generator(device=device).manual_seed(seed)
    weight_map: dict[str, str] = {}
    total = 0
    for index, shard in enumerate(shards, start=1):
        filename = f"model-{index:05d}-of-{len(shards):05d}.safetensors"
        tensors = {}
        for name, tensor_shape, kind in shard:
            tensor = torch.empty(tensor_shape, dtype=dtype, device=device)
            _init_(tensor, kind, generator)
            tensors[name] = tensor.cpu()
            total += tensor.numel() * element
            weight_map[name] = filename
            del tensor
        save_file(tensors, str(path / filename), metadata={"format": "pt"})
        del tensors
    index_file = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
    (path / "model.safetensors.index.json").write_text(json.dumps(index_file, indent=2) + "\n")
    return {"bytes": total, "shards": len(shards), "tensors": len(specs)}


def _numel(shape: tuple[int, ...]) -> int:
    count = 1
    for size in shape:
        count *= size
    return count


def write_tokenizer(shape: Shape, path: Path) -> None:
    """checkpoint_factory's byte-level BPE, padded with filler tokens so that the special tokens (and
    reserved ones in the gaps) sit at the real ids; the family's tokenizer_config and chat template."""
    import checkpoint_factory as factory
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers

    vocab = {char: index for index, char in enumerate(sorted(factory.bytes_to_unicode().values(), key=ord))}
    for left, right in factory.MERGES:
        vocab[left + right] = len(vocab)
    first, last = min(shape.special_ids.values()), max(shape.special_ids.values())
    while len(vocab) < first:  # unreachable by the merges: never produced by encoding
        vocab[f"Ġfill{len(vocab)}"] = len(vocab)
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=factory.MERGES, fuse_unk=False, byte_fallback=False))
    if shape.family == "dream":
        tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(factory.PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    by_id = {value: token for token, value in shape.special_ids.items()}
    specials = [by_id.get(i, f"<|reserved_special_token_{i - first}|>") for i in range(first, last + 1)]
    tokenizer.add_special_tokens([AddedToken(token, special=True, normalized=False) for token in specials])
    for token, expected in shape.special_ids.items():
        assert tokenizer.token_to_id(token) == expected, (token, tokenizer.token_to_id(token), expected)
    if shape.family == "llada":
        roles = {"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>"}
        tokenizer_class, template = "PreTrainedTokenizerFast", factory.LLADA_CHAT_TEMPLATE
    else:
        roles = {
            "bos_token": "<|beginoftext|>",
            "eos_token": "<|endoftext|>",
            "pad_token": "<|endoftext|>",
            "mask_token": "<|mask|>",
        }
        tokenizer_class, template = "Qwen2Tokenizer", factory.QWEN_CHAT_TEMPLATE
    factory._write_tokenizer(
        path,
        tokenizer,
        tokenizer_class=tokenizer_class,
        chat_template=template,
        special_roles=roles,
        model_max_length=shape.max_len,
    )


def model_config(shape: Shape) -> tuple[dict[str, Any], dict[str, Any]]:
    """(config.json, generation_config.json): the demo layouts' field names with the real models' values."""
    ids = shape.special_ids
    size = ModelSize(
        shape.hidden, shape.layers, shape.heads, shape.kv_heads, shape.intermediate, shape.max_len
    )
    real = {"torch_dtype": "bfloat16"}
    if shape.family == "llada":
        eos, bos = ids["<|endoftext|>"], ids["<|startoftext|>"]
        config = llada_config(size, shape.vocab, ids) | real | {"rope_theta": 500000.0}
        return config, {"bos_token_id": bos, "eos_token_id": eos, "pad_token_id": eos}
    eos = ids["<|endoftext|>"]
    config = qwen2_family_config(size, shape.vocab, ids, is_dream=True) | real
    config |= {"bos_token_id": ids["<|beginoftext|>"], "rope_theta": 1000000.0}
    return config, {"bos_token_id": eos, "eos_token_id": eos, "pad_token_id": eos}


def build_checkpoint(shape: Shape, path: Path, device: Any, dtype: Any, shard_bytes: int, seed: int) -> dict:
    path.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    info = write_weights(shape, path, device, dtype, shard_bytes, seed)
    weights_s = time.perf_counter() - started
    import checkpoint_factory

    write_tokenizer(shape, path)
    config, generation = model_config(shape)
    config["torch_dtype"] = str(dtype).removeprefix("torch.")
    (path / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    (path / "generation_config.json").write_text(json.dumps(generation, indent=2) + "\n")
    checkpoint_factory.assert_tokenizer_consistent(path)  # AutoTokenizer gives the tokenizer.json ids
    return {**info, "weights_s": weights_s, "build_s": time.perf_counter() - started, "path": str(path)}


# ---------------------------------------------------------------------------------------------- timing
class Overtime(BaseException):
    """Raised by the hard-stop alarm; a BaseException so that no `except Exception` in the engine (the
    compile fallback, the step guard) swallows it."""


class Deadline:
    def __init__(self, seconds: float, parent: Deadline | None = None) -> None:
        end = time.monotonic() + max(0.0, seconds)
        self.end = min(end, parent.end) if parent is not None else end

    def left(self) -> float:
        return self.end - time.monotonic()

    def expired(self) -> bool:
        return self.left() <= 0


@contextmanager
def hard_stop(seconds: float) -> Iterator[None]:
    """Interrupt whatever runs (a compile, a forward) `seconds` from now; main thread only."""
    if not hasattr(signal, "setitimer") or seconds <= 0:
        yield
        return

    def _raise(signum: int, frame: Any) -> None:
        raise Overtime(f"hard stop after {seconds:.0f} s")

    previous = signal.signal(signal.SIGALRM, _raise)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def sync(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_gib(device: Any) -> float | None:
    import torch

    return torch.cuda.max_memory_allocated(device) / GIB if device.type == "cuda" else None


def release_memory(device: Any) -> None:
    import torch

    if device.type == "cuda":  # a full collection costs ~0.5 s here: only where memory is scarce
        gc.collect()
        torch.cuda.empty_cache()


# -------------------------------------------------------------------------------------------- sections
def environment(device: Any) -> dict[str, Any]:
    import torch
    import transformers

    info: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "host": platform.node(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "transformers": transformers.__version__,
        "device": str(device),
        "device_name": platform.processor() or platform.machine() or "cpu",
        "cpu_threads": torch.get_num_threads(),
    }
    try:
        import triton

        info["triton"] = triton.__version__
    except Exception:
        info["triton"] = None
    try:
        from vdiff.models import layers

        info["flash_attn_varlen"] = layers.flash_attn_varlen_func is not None
    except Exception as error:
        info["flash_attn_varlen"] = f"unknown: {error}"
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info |= {
            "device_name": torch.cuda.get_device_name(device),
            "device_memory_gib": props.total_memory / GIB,
            "capability": f"{props.major}.{props.minor}",
            "cudnn": torch.backends.cudnn.version(),
        }
    return info


def sdpa_probe(shape: Shape, device: Any, dtype: Any, batch: int, length: int) -> dict[str, Any]:
    """The attention call the models make (vdiff.models.layers.attention: a boolean key mask, GQA when
    kv_heads < heads), and which SDPA kernels can serve it here."""
    import torch
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from vdiff.models.layers import build_attention_mask

    generator = torch.Generator(device=device).manual_seed(0)
    q = torch.randn(
        batch, shape.heads, length, shape.head_dim, device=device, dtype=dtype, generator=generator
    )
    k = torch.randn(
        batch, shape.kv_heads, length, shape.head_dim, device=device, dtype=dtype, generator=generator
    )
    v = torch.randn_like(k)
    mask = build_attention_mask(torch.ones(batch, length, dtype=torch.bool, device=device), length, False)
    gqa = shape.kv_heads != shape.heads
    info: dict[str, Any] = {"batch": batch, "length": length, "gqa": gqa, "mask": "bool [B, 1, L, L]"}
    cuda = torch.backends.cuda
    info["flags"] = {
        "flash": cuda.flash_sdp_enabled(),
        "mem_efficient": cuda.mem_efficient_sdp_enabled(),
        "cudnn": cuda.cudnn_sdp_enabled() if hasattr(cuda, "cudnn_sdp_enabled") else None,
        "math": cuda.math_sdp_enabled(),
    }
    try:
        choice = torch._fused_sdp_choice(
            q, k, v, attn_mask=mask, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=gqa
        )
        info["dispatcher_choice"] = SDPBackend(choice).name
    except Exception as error:
        info["dispatcher_choice"] = f"unknown ({type(error).__name__}: {error})"
    backends = {}
    for name in ("FLASH_ATTENTION", "EFFICIENT_ATTENTION", "CUDNN_ATTENTION", "MATH"):
        backend = getattr(SDPBackend, name, None)
        if backend is None:
            continue
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                with sdpa_kernel([backend]):
                    F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=gqa)
                    sync(device)
                    started = time.perf_counter()
                    F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=gqa)
                    sync(device)
                backends[name] = {"ok": True, "ms": 1000 * (time.perf_counter() - started)}
            except RuntimeError as error:
                reasons = [str(w.message).splitlines()[0][:200] for w in caught]
                reasons = [reason for reason in reasons if "kernel" in reason.lower() or "support" in reason]
                backends[name] = {"ok": False, "error": str(error).splitlines()[0][:200], "why": reasons}
    info["backends"] = backends
    return info


ATTENTION_OP_MARKERS = ("attention", "fmha", "sdpa", "flash", "softmax", "cudnn")


def attention_ops(runner: Any, device: Any, canvas: int) -> list[dict[str, Any]]:
    """The attention ops and kernels one real forward (2 rows) runs, from torch.profiler: which SDPA
    implementation the model actually gets, compiled or not."""
    import torch
    from torch.profiler import ProfilerActivity, profile
    from vdiff.engine.decoding.base import ForwardRequest

    ids = torch.randint(0, 256, (1, canvas), generator=torch.Generator().manual_seed(0))
    requests = [ForwardRequest(ids, torch.arange(canvas), torch.arange(min(canvas, 32)))] * 2
    runner.execute(requests)
    sync(device)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        runner.execute(requests)
        sync(device)
    ops = []
    for event in prof.key_averages():
        if not any(marker in event.key.lower() for marker in ATTENTION_OP_MARKERS):
            continue
        device_us = getattr(event, "device_time_total", None) or getattr(event, "cuda_time_total", 0)
        ops.append(
            {
                "name": event.key[:120],
                "count": event.count,
                "cpu_ms": event.self_cpu_time_total / 1000,
                "device_ms": device_us / 1000,
            }
        )
    return sorted(ops, key=lambda op: -(op["device_ms"] or op["cpu_ms"]))[:10]


def forward_sweep(
    runner: Any,
    shape: Shape,
    device: Any,
    batches: list[int],
    canvases: list[int],
    block: int,
    repeats: int,
    deadline: Deadline,
    notes: list[str],
    label: str,
) -> list[dict[str, Any]]:
    """One no-cache forward of `batch` sequences over a `canvas`-long canvas, logits for one block."""
    import torch
    from vdiff.engine.decoding.base import ForwardRequest

    cells = []
    generator = torch.Generator().manual_seed(0)
    for canvas in canvases:
        for batch in batches:
            if deadline.expired():
                notes.append(
                    f"{label}: forward batch {batch} x canvas {canvas} and later skipped (over budget)"
                )
                return cells
            ids = torch.randint(0, 256, (1, canvas), generator=generator)
            start = max(0, canvas // 2 - block // 2)
            logits = torch.arange(start, min(canvas, start + block))
            request = ForwardRequest(ids, torch.arange(canvas), logits)
            requests = [request] * batch
            cell: dict[str, Any] = {"batch": batch, "canvas": canvas, "logit_positions": len(logits)}
            try:
                reset_peak(device)
                sync(device)
                started = time.perf_counter()
                runner.execute(requests)  # warm-up (and, compiled, any recompile for this shape)
                sync(device)
                cell["first_call_ms"] = 1000 * (time.perf_counter() - started)
                samples = []
                for _ in range(repeats):
                    if samples and deadline.expired():
                        break
                    started = time.perf_counter()
                    runner.execute(requests)
                    sync(device)
                    samples.append(time.perf_counter() - started)
                median = statistics.median(samples)
                cell |= {
                    "ms_per_forward": 1000 * median,
                    "min_ms": 1000 * min(samples),
                    "repeats": len(samples),
                    "tokens_per_s": batch * canvas / median,
                    "tflops": shape.forward_flops(batch, canvas, len(logits)) / median / 1e12,
                    "peak_memory_gib": peak_gib(device),
                }
            except torch.cuda.OutOfMemoryError as error:
                cell["error"] = f"OutOfMemoryError: {str(error).splitlines()[0]}"
                release_memory(device)
            cells.append(cell)
    return cells


def fixed_prompts(count: int, length: int, seed: int) -> list[list[int]]:
    """Distinct prompts of exactly `length` byte-level token ids (no chat template)."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    return [torch.randint(0, 256, (length,), generator=generator).tolist() for _ in range(count)]


def policy_overrides(name: str, steps: int) -> dict[str, Any]:
    """reference+rules+logprobs: the reference schedule (the same forwards) with the logits rules and
    logprobs of bench.logits_cost, so its ms / forward against reference's is what they cost per step."""
    if name == "reference+rules+logprobs":
        from bench.logits_cost import RULES

        return {"decoding": "reference", "steps": steps, **RULES, "logprobs": 5}
    if name == "reference":
        return {"decoding": "reference", "steps": steps}
    return {"decoding": "threshold", "threshold": 0.9}


def engine_runs(
    engine: Any,
    device: Any,
    policies: list[str],
    concurrencies: list[int],
    args: argparse.Namespace,
    deadline: Deadline,
    notes: list[str],
    label: str,
) -> dict[str, Any]:
    """Closed-loop tokens/s per policy and concurrency; every request generates exactly --output-len."""
    from vdiff.sampling_params import SamplingParams

    runs: dict[str, Any] = {}
    prompts = fixed_prompts(max(2, max(concurrencies) * args.waves), args.input_len, args.seed)
    for name in policies:
        overrides = policy_overrides(name, args.steps)
        params = SamplingParams(
            max_tokens=args.output_len, temperature=0.0, ignore_eos=True, seed=0, **overrides
        )
        cells: dict[str, Any] = {"overrides": overrides}
        runs[name] = cells
        if deadline.expired():
            notes.append(f"{label}: engine {name} skipped (over budget)")
            continue
        started = time.perf_counter()
        drive_closed_loop(engine, prompts[:1], params, 1)  # warm-up: one row, then two rows
        drive_closed_loop(engine, prompts[:2], params, 2)
        cells["warm_up_s"] = time.perf_counter() - started
        for concurrency in concurrencies:
            if deadline.expired():
                notes.append(
                    f"{label}: engine {name} at concurrency {concurrency} and up skipped (over budget)"
                )
                break
            batch = prompts[: max(2, concurrency * args.waves)]
            reset_peak(device)
            completions, wall, forwards = drive_closed_loop(engine, batch, params, concurrency)
            tokens = sum(len(done.output.outputs[0].token_ids) for done in completions)
            cells[str(concurrency)] = {
                "requests": len(batch),
                "generated_tokens": tokens,
                "wall_s": wall,
                "tokens_per_s": tokens / wall if wall > 0 else 0.0,
                "batched_forwards": forwards,
                "ms_per_forward": 1000 * wall / forwards if forwards else None,
                "forwards_per_request": statistics.fmean(
                    done.output.stats.num_forwards for done in completions
                ),
                "latency_mean_s": statistics.fmean(done.latency_s for done in completions),
                "peak_memory_gib": peak_gib(device),
            }
    return runs


def tp_row(
    path: Path, args: argparse.Namespace, device: Any, deadline: Deadline, notes: list[str], label: str
) -> dict:
    """-tp 2 over two GPUs (NCCL; on --device cpu two gloo ranks): start time, weights per rank, memory in
    use on each GPU, greedy tokens against -tp 1 and the threshold engine's tokens/s."""
    import torch
    from vdiff.config import EngineConfig
    from vdiff.distributed.group import shutdown_workers
    from vdiff.engine.llm_engine import LLMEngine
    from vdiff.sampling_params import SamplingParams

    prompts = fixed_prompts(4, args.input_len, args.seed)
    greedy = SamplingParams(max_tokens=32, temperature=0.0, decoding="reference", steps=32)

    def engine_for(tp: int) -> Any:
        return LLMEngine(EngineConfig(model=str(path), device=device.type, dtype=args.dtype,
                                      enforce_eager=True, max_num_seqs=max(args.concurrency),
                                      seed=args.seed, tensor_parallel_size=tp))  # fmt: skip

    def tokens(engine: Any) -> list[list[int]]:
        completions, _, _ = drive_closed_loop(engine, prompts, greedy, len(prompts))
        return [list(done.output.outputs[0].token_ids) for done in completions]

    row: dict[str, Any] = {}
    started = time.perf_counter()
    engine = engine_for(2)
    row["start_s"] = time.perf_counter() - started
    row["weight_gib_per_rank"] = [b / GIB for b in engine.loaded.model.parallel_forward.rank_parameter_bytes]
    if device.type == "cuda":
        row["used_gib_per_gpu"] = [
            (total - free) / GIB for free, total in (torch.cuda.mem_get_info(i) for i in range(2))
        ]
    parallel_tokens = tokens(engine)
    row["engine"] = engine_runs(
        engine, device, ["threshold"], [min(args.concurrency)], args, deadline, notes, label
    )
    del engine
    shutdown_workers()
    release_memory(device)
    single = engine_for(1)
    row["same_tokens_as_tp1"] = tokens(single) == parallel_tokens
    row["engine_tp1"] = engine_runs(
        single, device, ["threshold"], [min(args.concurrency)], args, deadline, notes, label
    )
    del single
    release_memory(device)
    return row


def compile_facts(engine: Any) -> dict[str, Any]:
    forward = engine.runner.forward
    facts: dict[str, Any] = {
        "compiled": bool(getattr(forward, "is_compiled", False)),
        "fallback_reason": getattr(forward, "fallback_reason", None),
    }
    try:
        from torch._dynamo.utils import counters

        facts["dynamo_unique_graphs"] = int(counters["stats"]["unique_graphs"])
    except Exception:
        pass
    return facts


def run_model(
    shape: Shape,
    args: argparse.Namespace,
    device: Any,
    dtype: Any,
    deadline: Deadline,
    results: dict[str, Any],
    save: Any,
) -> None:
    """Build the checkpoint, then for enforce_eager True (and False with `compile`): start the engine,
    sweep forwards, drive the engine. Deletes the checkpoint unless --keep-checkpoints."""
    import torch
    from vdiff.config import EngineConfig
    from vdiff.engine.llm_engine import LLMEngine

    notes, failures = results["notes"], results["failures"]
    entry: dict[str, Any] = {"title": shape.title, "shape": _shape_dict(shape), "modes": {}}
    results["models"][shape.key] = entry
    share = deadline.left()
    path = Path(args.work_dir) / shape.key
    needed = shape.num_params * torch.empty((), dtype=dtype).element_size()
    free = shutil.disk_usage(Path(args.work_dir)).free
    if free < needed * 1.05 + GIB:
        failures.append(
            f"{shape.key}: {free / GIB:.1f} GiB free in {args.work_dir}, needs {needed / GIB:.1f}"
        )
        return
    try:
        with section(f"{shape.key}: build checkpoint", failures):
            entry["checkpoint"] = build_checkpoint(
                shape, path, device, dtype, int(args.shard_gb * GIB), args.seed
            )
            release_memory(device)
        save()
        if "checkpoint" not in entry:
            return
        modes = [True] + ([False] if "compile" in args.sections else [])
        for enforce_eager in modes:
            label = f"{shape.key} enforce_eager={enforce_eager}"
            if deadline.expired():
                notes.append(f"{label}: skipped (over budget)")
                continue
            mode: dict[str, Any] = {}
            entry["modes"][str(enforce_eager)] = mode
            engine = None
            with section(f"{label}: engine start", failures):
                reset_peak(device)
                started = time.perf_counter()
                engine = LLMEngine(
                    EngineConfig(
                        model=str(path),
                        device=device.type,
                        dtype=args.dtype,
                        enforce_eager=enforce_eager,
                        max_num_seqs=max(args.concurrency),
                        seed=args.seed,
                    )
                )
                mode["start_s"] = time.perf_counter() - started
                mode["start_peak_memory_gib"] = peak_gib(device)
                mode["num_params"] = sum(p.numel() for p in engine.loaded.model.parameters())
                mode |= compile_facts(engine)
            if engine is None:
                continue
            # each mode gets a fair share of what is left of this model's time
            mode_share = Deadline(deadline.left() / (len(modes) - modes.index(enforce_eager)), deadline)
            if "sdpa" in args.sections and "sdpa" not in entry:
                with section(f"{shape.key}: sdpa probe", failures):
                    entry["sdpa"] = sdpa_probe(
                        shape, device, dtype, min(8, max(args.batches)), max(args.canvas)
                    )
                release_memory(device)
            if "sdpa" in args.sections:  # a profiler that cannot start is a note, not a failure
                with section(f"{label}: attention ops (torch.profiler)", notes):
                    mode["attention_ops"] = attention_ops(engine.runner, device, min(args.canvas))
            # eager: the forward sweep, then the engine; compiled: the engine first (its warm-up takes
            # the recompiles), so that compile on vs off is compared on the engine before anything else
            steps = (
                [("forward", 0.45), ("engine", 1.0)]
                if enforce_eager
                else [("engine", 0.65), ("forward", 1.0)]
            )
            for step, fraction in steps:
                if step not in args.sections:
                    continue
                cap = Deadline(mode_share.left() * fraction, mode_share)
                if step == "forward":
                    with section(f"{label}: forward sweep", failures):
                        mode["forward"] = forward_sweep(
                            engine.runner, shape, device, args.batches, args.canvas, args.block,
                            args.repeats, cap, notes, label,
                        )  # fmt: skip
                        failures.extend(
                            f"{label}: forward batch {c['batch']} x {c['canvas']}: {c['error']}"
                            for c in mode["forward"]
                            if "error" in c
                        )
                else:
                    with section(f"{label}: engine runs", failures):
                        mode["engine"] = engine_runs(
                            engine, device, args.policies, args.concurrency, args, cap, notes, label
                        )
                    mode |= compile_facts(engine)  # a compile failure at serving shapes shows here
                save()
            del engine
            if not enforce_eager:
                torch._dynamo.reset()  # compiled graphs hold the model's weights
            release_memory(device)
        if "tp" in args.sections:
            ranks = torch.cuda.device_count() if device.type == "cuda" else (os.cpu_count() or 1)
            if ranks < 2:
                kind = "GPU(s)" if device.type == "cuda" else "CPU core(s)"
                notes.append(f"{shape.key}: tp 2 skipped ({ranks} {kind} visible, it needs 2)")
            elif deadline.expired():
                notes.append(f"{shape.key}: tp 2 skipped (over budget)")
            else:
                with section(f"{shape.key}: tp 2", failures):
                    entry["tp"] = tp_row(path, args, device, deadline, notes, f"{shape.key} tp 2")
                save()
        entry["elapsed_s"] = share - deadline.left()
    finally:
        if not args.keep_checkpoints:
            shutil.rmtree(path, ignore_errors=True)


RUNNING: list[str] = [""]
"""The section in progress (named by the hard-stop note)."""


@contextmanager
def section(name: str, failures: list[str]) -> Iterator[None]:
    """A failure is recorded (and printed) and the run goes on with the next section."""
    RUNNING[0] = name
    try:
        yield
    except Exception as error:
        failures.append(f"{name}: {type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}")
        traceback.print_exc()


def _shape_dict(shape: Shape) -> dict[str, Any]:
    return {
        "hidden": shape.hidden,
        "layers": shape.layers,
        "heads": shape.heads,
        "kv_heads": shape.kv_heads,
        "intermediate": shape.intermediate,
        "vocab": shape.vocab,
        "mask_token_id": shape.special_ids["<|mdm_mask|>" if shape.family == "llada" else "<|mask|>"],
        "params": shape.num_params,
    }


# -------------------------------------------------------------------------------------------- markdown
def _count(value: int) -> str:
    return f"{value / 1e9:.2f} B" if value >= 1e8 else f"{value / 1e6:.2f} M"


def _f(value: Any, pattern: str = "{:.1f}") -> str:
    return "–" if value is None else pattern.format(value)


def markdown(results: dict[str, Any]) -> str:
    env, settings = results["environment"], results["settings"]
    status = "FAILED" if results["failures"] else "ok"
    lines = [
        f"# GPU check: {env.get('device_name')} ({env.get('device')})",
        "",
        f"{env.get('date')} · torch {env.get('torch')} · CUDA {env.get('cuda')} · cuDNN {env.get('cudnn')} "
        f"· triton {env.get('triton')} · transformers {env.get('transformers')} · flash-attn varlen "
        f"{env.get('flash_attn_varlen')} · {_f(results.get('elapsed_s'), '{:.0f}')} s of a "
        f"{settings['budget_s']:.0f} s budget · status: {status}",
        "",
        f"Random-weight {settings['dtype']} checkpoints at the {'tiny' if settings['small'] else 'real'} "
        "shapes, built on this machine; times are from this one run.",
        "",
        "## Start-up",
        "",
        "| model | params | checkpoint GiB | shards | build s | enforce_eager | engine start s "
        "| compiled | peak GiB after start |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for key, entry in results["models"].items():
        ckpt = entry.get("checkpoint", {})
        for eager, mode in entry["modes"].items():
            compiled = "yes" if mode.get("compiled") else "no"
            if mode.get("fallback_reason"):
                compiled += f" (fell back: {mode['fallback_reason'][:80]})"
            lines.append(
                f"| {key} | {_count(entry['shape']['params'])} "
                f"| {_f(ckpt.get('bytes', 0) / GIB, '{:.2f}')} | {ckpt.get('shards', '–')} "
                f"| {_f(ckpt.get('build_s'))} | {eager} | {_f(mode.get('start_s'))} | {compiled} "
                f"| {_f(mode.get('start_peak_memory_gib'), '{:.2f}')} |"
            )
    lines += [
        "",
        "## SDPA kernel for the models' attention (boolean key mask)",
        "",
        "| model | probe | GQA | dispatcher picks | flags flash / efficient / cudnn / math | per kernel |",
        "|---|---|---|---|---|---|",
    ]
    for key, entry in results["models"].items():
        probe = entry.get("sdpa")
        if not probe:
            continue
        flags = " / ".join(str(probe["flags"][name]) for name in ("flash", "mem_efficient", "cudnn", "math"))
        kernels = "; ".join(
            f"{name}: {b['ms']:.2f} ms"
            if b["ok"]
            else f"{name}: no ({' / '.join(w[:100] for w in b['why'][:2]) or b['error'][:100]})"
            for name, b in probe["backends"].items()
        )
        lines.append(
            f"| {key} | {probe['batch']} x {probe['length']} | {probe['gqa']} | {probe['dispatcher_choice']} "
            f"| {flags} | {kernels} |"
        )
    for key, entry in results["models"].items():
        for eager, mode in entry["modes"].items():
            ops = mode.get("attention_ops")
            if ops:
                listed = ", ".join(
                    f"`{op['name']}` ×{op['count']} ({op['device_ms'] or op['cpu_ms']:.2f} ms)"
                    for op in ops[:6]
                )
                lines.append(f"\n{key}, enforce_eager={eager}, ops of one real forward: {listed}")
    lines += [
        "",
        f"## One forward, no cache (ModelRunner.execute, logits for a {settings['block']}-position block)",
        "",
        "| model | enforce_eager | batch | canvas | ms / forward | first call ms | positions/s | ~TFLOP/s "
        "| peak GiB |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for key, entry in results["models"].items():
        for eager, mode in entry["modes"].items():
            for cell in mode.get("forward", []):
                if "error" in cell:
                    lines.append(
                        f"| {key} | {eager} | {cell['batch']} | {cell['canvas']} | {cell['error'][:60]} "
                        "| | | | |"
                    )
                    continue
                lines.append(
                    f"| {key} | {eager} | {cell['batch']} | {cell['canvas']} | {cell['ms_per_forward']:.1f} "
                    f"| {cell['first_call_ms']:.1f} | {cell['tokens_per_s']:.0f} | {cell['tflops']:.1f} "
                    f"| {_f(cell['peak_memory_gib'], '{:.2f}')} |"
                )
    lines += [
        "",
        f"## Engine tokens/s (LLMEngine, closed loop, {settings['input_len']}-token prompts, exactly "
        f"{settings['output_len']} tokens out, ignore_eos)",
        "",
        "| model | enforce_eager | policy | concurrency | requests | tok/s | forwards | ms / forward "
        "| forwards / request | mean latency s | peak GiB |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for key, entry in results["models"].items():
        for eager, mode in entry["modes"].items():
            for policy, cells in mode.get("engine", {}).items():
                for concurrency, cell in cells.items():
                    if not concurrency.isdigit():
                        continue
                    lines.append(
                        f"| {key} | {eager} | {policy} | {concurrency} | {cell['requests']} "
                        f"| {cell['tokens_per_s']:.1f} | {cell['batched_forwards']} "
                        f"| {_f(cell['ms_per_forward'])} | {cell['forwards_per_request']:.1f} "
                        f"| {cell['latency_mean_s']:.2f} | {_f(cell['peak_memory_gib'], '{:.2f}')} |"
                    )
    lines += [
        "",
        f"reference: {settings['steps']} fixed steps per request; threshold: τ=0.9 (with random "
        "weights it commits about one token per step, so its row is a floor); reference+rules+logprobs: "
        "the reference schedule with penalties, logit_bias, min_p, min_tokens and logprobs 5 "
        "(bench/logits_cost.py's RULES): its ms / forward over reference's is their cost per step.",
    ]
    for key, entry in results["models"].items():
        for eager, mode in entry["modes"].items():
            engine = mode.get("engine", {})
            plain, rules = engine.get("reference", {}), engine.get("reference+rules+logprobs", {})
            for concurrency in settings["concurrency"]:
                a, b = plain.get(str(concurrency), {}), rules.get(str(concurrency), {})
                if a.get("ms_per_forward") and b.get("ms_per_forward"):
                    lines.append(
                        f"- {key}, enforce_eager={eager}, concurrency {concurrency}: rules + logprobs "
                        f"{b['ms_per_forward'] / a['ms_per_forward']:.3f}× reference's ms / forward"
                    )
    for key, entry in results["models"].items():
        row = entry.get("tp")
        if row:
            rate = row["engine"].get("threshold", {}).get(str(min(settings["concurrency"])), {})
            rate_1 = row["engine_tp1"].get("threshold", {}).get(str(min(settings["concurrency"])), {})
            lines += [
                "",
                f"tp 2 ({key}): start {row['start_s']:.1f} s, weights per rank "
                f"{', '.join(f'{g:.3f}' for g in row['weight_gib_per_rank'])} GiB, in use per GPU "
                f"{', '.join(f'{g:.2f}' for g in row.get('used_gib_per_gpu', [])) or '-'} GiB, "
                "greedy tokens = tp 1: "
                f"{row['same_tokens_as_tp1']}, threshold tok/s {_f(rate.get('tokens_per_s'))} "
                f"(tp 1: {_f(rate_1.get('tokens_per_s'))}).",
            ]
    for title, items in (("Notes", results["notes"]), ("Failures", results["failures"])):
        if items:
            lines += ["", f"## {title}", "", *(f"- {item}" for item in items)]
    return "\n".join(lines)


def write_partial(results: dict[str, Any], out_dir: Path, name: str) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{name}.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    (out_dir / f"{name}.md").write_text(markdown(results) + "\n")


# ------------------------------------------------------------------------------------------------ main
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench/gpu_check.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--small", action="store_true", help="tiny shapes (runs on a CPU in seconds)")
    parser.add_argument("--quick", action="store_true", help="one repetition per forward cell (tests)")
    parser.add_argument("--device", default="auto", help="auto (cuda if available, else cpu), cuda, cpu")
    parser.add_argument(
        "--dtype",
        default="auto",
        choices=["auto", "bfloat16", "float16", "float32"],
        help="weights and activations (auto: bfloat16 on CUDA, float32 on CPU)",
    )
    parser.add_argument("--models", nargs="+", default=["llada", "dream"], choices=["llada", "dream"])
    parser.add_argument(
        "--sections",
        nargs="+",
        default=list(SECTIONS),
        choices=SECTIONS,
        help="what to measure; compile = the engine again with enforce_eager=False",
    )
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32, 64], help="forward batch sizes")
    parser.add_argument(
        "--canvas",
        type=int,
        nargs="+",
        default=None,
        help="forward canvas lengths (default 256 1024; --small 64 128)",
    )
    parser.add_argument("--block", type=int, default=32, help="positions projected to the vocabulary")
    parser.add_argument("--repeats", type=int, default=3, help="timed forwards per cell (median)")
    parser.add_argument("--policies", nargs="+", default=list(POLICIES), choices=POLICIES)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16, 64], help="requests in flight")
    parser.add_argument(
        "--waves", type=int, default=1, help="a run sends max(2, concurrency x waves) requests"
    )
    parser.add_argument("--input-len", type=int, default=None, help="prompt tokens (default 64; --small 8)")
    parser.add_argument("--output-len", type=int, default=None, help="tokens out (default 64; --small 16)")
    parser.add_argument(
        "--steps", type=int, default=None, help="reference policy's fixed steps (default output-len / 2)"
    )
    parser.add_argument("--budget-s", type=float, default=420.0, help="soft time box of the whole run")
    parser.add_argument("--grace-s", type=float, default=40.0, help="hard stop this long after the budget")
    parser.add_argument("--work-dir", default=None, help="checkpoint directory (default: a temp dir)")
    parser.add_argument("--keep-checkpoints", action="store_true")
    parser.add_argument("--shard-gb", type=float, default=4.0, help="safetensors shard size (GiB)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--name", default=None, help="result file stem (default gpu; --small gpu-small)")
    parser.add_argument("--out-dir", "--out", dest="out_dir", type=Path, default=RESULTS_DIR,
                        help="where <name>.json and <name>.md go (default bench/results)")  # fmt: skip
    args = parser.parse_args(argv)
    args.canvas = args.canvas or ([64, 128] if args.small else [256, 1024])
    args.input_len = args.input_len or (8 if args.small else 64)
    args.output_len = args.output_len or (16 if args.small else 64)
    args.steps = args.steps or max(1, args.output_len // 2)
    args.name = args.name or ("gpu-small" if args.small else "gpu")
    if args.quick:
        args.repeats = 1
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch
    from vdiff.models.loader import resolve_device

    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    if args.dtype == "auto":
        args.dtype = "bfloat16" if device.type == "cuda" else "float32"
    dtype = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}[args.dtype]
    shapes = SMALL_SHAPES if args.small else FULL_SHAPES
    temp_dir = None
    if args.work_dir is None:
        temp_dir = tempfile.mkdtemp(prefix="vdiff-gpu-check-")
        args.work_dir = temp_dir
    Path(args.work_dir).mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    results: dict[str, Any] = {
        "environment": environment(device),
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "models": {},
        "notes": [],
        "failures": [],
    }
    if device.type != "cuda":
        results["notes"].append(f"device {device}: no CUDA, so torch.compile is off in both modes")

    def save() -> None:
        results["elapsed_s"] = time.monotonic() - started
        write_partial(results, args.out_dir, args.name)

    budget = Deadline(args.budget_s)
    try:
        with hard_stop(args.budget_s + args.grace_s):
            for index, family in enumerate(args.models):
                shape = shapes[family]
                if budget.expired():
                    results["notes"].append(f"{shape.key}: skipped (over budget)")
                    continue
                share = Deadline(budget.left() / (len(args.models) - index), budget)
                run_model(shape, args, device, dtype, share, results, save)
                save()
    except Overtime as stop:
        results["notes"].append(
            f"{stop}: {RUNNING[0] or 'the running section'} interrupted, the rest skipped"
        )
    finally:
        if temp_dir is not None:
            shutil.rmtree(temp_dir, ignore_errors=True)
    imported = [name for name in SERVER_MODULES if name in sys.modules]
    results["server_modules_imported"] = imported
    if imported:
        results["failures"].append(f"the engine path imported {imported}: absent on the GPU machine")
    results["elapsed_s"] = time.monotonic() - started
    save_results(json.loads(json.dumps(results, default=str)), markdown(results), args.out_dir, args.name)
    return 1 if results["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
