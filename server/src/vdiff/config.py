"""The one engine configuration object; the CLI, the offline LLM API and the server all build it."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from vdiff.errors import VdiffValidationError, check_choice
from vdiff.knobs import ServerKnobs, check_server_knobs
from vdiff.structured.config import StructuredOutputsConfig

DTYPES = ("auto", "float32", "float16", "bfloat16", "half", "float")
DTYPE_ALIASES = {"half": "float16", "float": "float32"}
"""vLLM's dtype spellings: half is float16, float is float32 (normalised in EngineConfig)."""
DEVICES = ("auto", "cuda", "mps", "cpu")
QUANTIZATIONS = ("bitsandbytes", "bitsandbytes-4bit", "bitsandbytes-8bit")


@dataclass(slots=True)
class EngineConfig(ServerKnobs):  # type: ignore[misc, valid-type]
    """Everything the engine needs to load a model and schedule requests.

    The server defaults of the decoding knobs (--diffusion-steps, --block-length, --threshold, ...) are
    inherited keyword fields declared in vdiff.knobs; None takes the model family's default.
    """

    model: str
    """Local directory, shipped demo model name (llada-demo, dream-demo, ...) or Hugging Face repo id
    (from the Hugging Face cache, downloaded when missing unless HF_HUB_OFFLINE is set)."""
    tokenizer: str | None = None
    """Tokenizer directory or repo id (default: the model's own)."""
    revision: str | None = None
    """Revision (branch, tag or commit) of a Hugging Face repo id."""
    download_dir: str | None = None
    """Directory where Hugging Face repo ids are looked up and downloaded (default: the Hugging Face cache,
    HF_HUB_CACHE)."""
    hf_token: str | None = None
    """Hugging Face token for downloading gated or private repos; the bare flag uses the token of
    `hf auth login` (default: HF_TOKEN, as huggingface_hub)."""
    trust_remote_code: bool = False
    """Allow the checkpoint's own modelling code (transformers AutoModel fallback, unbatched)."""
    dtype: str = "auto"
    """Weight and activation dtype: auto (the checkpoint's torch_dtype), float32 (or float), float16 (or
    half), bfloat16."""
    device: str = "auto"
    """Device: auto (cuda > mps > cpu), cuda, mps, cpu."""
    quantization: str | None = None
    """bitsandbytes (4-bit), bitsandbytes-4bit or bitsandbytes-8bit weight quantization (CUDA only)."""
    enforce_eager: bool = False
    """Never torch.compile the model forward (by default it is compiled on CUDA, eager elsewhere)."""
    seed: int = 0
    """Seed of the per-request generators when a request sets no seed."""
    max_model_len: int | None = None
    """Longest prompt + completion in tokens (default: config.json's max_sequence_length or
    max_position_embeddings, capped where a family was trained on less, e.g. Dream at 2048; else 2048)."""
    max_num_seqs: int = 256
    """Most sequences denoised together in one batched forward (n>1 counts n), as vLLM's default; the cache
    budget (--gpu-memory-utilization, --kv-cache-memory-bytes) decides how many actually run."""
    max_num_batched_tokens: int | None = None
    """Most query positions one engine step forwards (default: max(8192, --max-model-len)); sequences over
    it wait for the next step. Block-diffusion models prefill a longer prompt in chunks; for the others a
    canvas is forwarded whole, so a request whose canvas exceeds it is refused."""
    tensor_parallel_size: int = 1
    """Ranks the model is split over (vLLM's -tp): N processes on this machine, one per GPU (NCCL) or,
    on CPU, one per core (gloo); heads, MLP and vocabulary are split, each rank loads only its slices."""
    gpu_memory_utilization: float = 0.92
    """Fraction of the GPU's memory vdiff may use (vLLM's meaning and default): weights and the profiled
    peak of the largest step come first, the rest holds the KV caches."""
    kv_cache_memory_bytes: int | None = None
    """Bytes for the KV caches (block cache, APD caches), instead of what --gpu-memory-utilization leaves;
    on a CPU the default is a tenth of the machine's memory."""
    max_waiting_requests: int = 256
    """Bounded waiting queue beyond --max-num-seqs; a request over it gets HTTP 429 with Retry-After."""
    max_logprobs: int = 20
    """Most log-probabilities one request may ask for (logprobs, top_logprobs), as vLLM's flag."""
    chat_template: str | None = None
    """Chat template file or literal Jinja template (default: the tokenizer's)."""
    generation_config: str = "auto"
    """'auto' reads generation_config.json from the model (its temperature, top_p, top_k, min_p,
    repetition_penalty and diffusion keys become request defaults, as vLLM does); 'vllm' or 'vdiff' ignores
    it; or a directory holding one."""
    override_generation_config: dict[str, Any] = field(default_factory=dict)
    """JSON object merged over the generation config, as vLLM: '{"temperature": 0.5}' (with
    --generation-config vllm only these keys are used)."""
    draft_model: str | None = None
    """Causal AR verifier checkpoint for APD (e.g. a small Qwen2 sharing the tokenizer), loaded at startup:
    needed by --decoding apd and by requests that pick decoding apd under another default policy."""
    structured_outputs_config: dict[str, Any] = field(default_factory=dict)
    """JSON object, as vLLM's: {"backend": "auto" | "guidance", "disable_any_whitespace": bool,
    "disable_additional_properties": bool, "disable_fallback": bool}; "auto" is guidance (llguidance), other
    vLLM backends are refused at startup (docs/structured-outputs.md)."""
    served_model_names: list[str] = field(default_factory=list)
    """Names clients use in "model" (default: the model argument); the first labels the metrics."""

    def __post_init__(self) -> None:
        check_choice(self.dtype, DTYPES, "--dtype")
        self.dtype = DTYPE_ALIASES.get(self.dtype, self.dtype)
        if not isinstance(self.override_generation_config, dict):
            raise VdiffValidationError(
                "--override-generation-config must be a JSON object", "--override-generation-config"
            )
        if self.hf_token == "":
            self.hf_token = None
        check_choice(self.device, DEVICES, "--device")
        check_choice(self.quantization, QUANTIZATIONS, "--quantization", optional=True)
        if self.max_num_seqs < 1:
            raise VdiffValidationError("--max-num-seqs must be at least 1", "--max-num-seqs")
        if self.max_num_batched_tokens is not None and self.max_num_batched_tokens < 1:
            raise VdiffValidationError(
                "--max-num-batched-tokens must be at least 1", "--max-num-batched-tokens"
            )
        if self.tensor_parallel_size < 1:
            raise VdiffValidationError("--tensor-parallel-size must be at least 1", "--tensor-parallel-size")
        if not 0 < self.gpu_memory_utilization <= 1:
            raise VdiffValidationError(
                "--gpu-memory-utilization must be in (0, 1]", "--gpu-memory-utilization"
            )
        if self.kv_cache_memory_bytes is not None and self.kv_cache_memory_bytes < 0:
            raise VdiffValidationError("--kv-cache-memory-bytes must be >= 0", "--kv-cache-memory-bytes")
        if self.max_waiting_requests < 0:
            raise VdiffValidationError("--max-waiting-requests must be >= 0", "--max-waiting-requests")
        if self.max_model_len is not None and self.max_model_len < 2:
            raise VdiffValidationError("--max-model-len must be at least 2", "--max-model-len")
        if self.max_logprobs < 0:
            raise VdiffValidationError("--max-logprobs must be >= 0", "--max-logprobs")
        check_server_knobs(self)
        StructuredOutputsConfig.from_flag(self.structured_outputs_config)
        if self.decoding == "apd" and not self.draft_model:
            raise VdiffValidationError("--decoding apd needs --draft-model", "--draft-model")

    @classmethod
    def field_names(cls) -> set[str]:
        return {f.name for f in fields(cls)}
