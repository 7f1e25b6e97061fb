"""The one engine configuration object; the CLI, the offline LLM API and the server all build it."""

from __future__ import annotations

from dataclasses import dataclass, field, fields

from vdiff.errors import VdiffValidationError, check_choice
from vdiff.sampling_params import DECODING_POLICIES, DREAM_ALGORITHMS, KV_CACHE_MODES, REMASKING_STRATEGIES

DTYPES = ("auto", "float32", "float16", "bfloat16")
DEVICES = ("auto", "cuda", "mps", "cpu")
QUANTIZATIONS = ("bitsandbytes", "bitsandbytes-4bit", "bitsandbytes-8bit")


@dataclass(slots=True)
class EngineConfig:
    """Everything the engine needs to load a model and schedule requests.

    Diffusion fields set to None take the model family's defaults (see vdiff.models.registry).
    """

    model: str
    """Local directory, shipped demo model name (llada-demo, dream-demo, ...) or Hugging Face repo id
    (resolved from the local cache)."""
    tokenizer: str | None = None
    """Tokenizer directory or repo id (default: the model's own)."""
    revision: str | None = None
    """Revision of a Hugging Face repo id in the local cache."""
    trust_remote_code: bool = False
    """Allow the checkpoint's own modelling code (transformers AutoModel fallback, unbatched)."""
    dtype: str = "auto"
    """Weight and activation dtype: auto (the checkpoint's torch_dtype), float32, float16, bfloat16."""
    device: str = "auto"
    """Device: auto (cuda > mps > cpu), cuda, mps, cpu."""
    quantization: str | None = None
    """bitsandbytes (4-bit), bitsandbytes-4bit or bitsandbytes-8bit weight quantization (CUDA only)."""
    enforce_eager: bool = False
    """Never torch.compile the model forward (by default it is compiled on CUDA, eager elsewhere)."""
    seed: int = 0
    """Seed of the per-request generators when a request sets no seed."""
    max_model_len: int | None = None
    """Longest prompt + completion in tokens (default: the model's max_position_embeddings)."""
    max_num_seqs: int = 16
    """Most sequences denoised together in one batched forward (n>1 counts n)."""
    max_waiting_requests: int = 256
    """Bounded waiting queue beyond --max-num-seqs; a request over it gets HTTP 429 with Retry-After."""
    chat_template: str | None = None
    """Chat template file or literal Jinja template (default: the tokenizer's)."""
    generation_config: str = "auto"
    """'auto' reads generation_config.json from the model; 'vdiff' ignores it; or a directory path."""
    # Diffusion defaults for requests that do not set them.
    diffusion_steps: int | None = None
    """Default denoising steps per request (default: the model family's)."""
    block_length: int | None = None
    """Default semi-autoregressive block length in tokens (default: the model family's)."""
    remasking: str | None = None
    """LLaDA default remasking: low_confidence or random."""
    dream_alg: str | None = None
    """Dream default unmasking algorithm: origin, maskgit_plus, topk_margin or entropy."""
    # Fast decoding defaults.
    decoding: str = "threshold"
    """Default unmasking policy: threshold (Fast-dLLM parallel), reference (the family's published
    decoder, one step per --diffusion-steps) or apd (needs --draft-model)."""
    threshold: float = 0.9
    """Confidence threshold of the threshold policy, in (0, 1]."""
    factor: float | None = None
    """Fast-dLLM factor rule instead of a fixed threshold (threshold policy)."""
    kv_cache: str = "none"
    """Approximate KV cache for fast decoding: none, prefix or dual."""
    kv_cache_vicinity: int = 16
    """Positions left of the current block recomputed at every step instead of read from the cache
    (0 = Fast-dLLM's cache as published)."""
    draft_model: str | None = None
    """Causal AR verifier checkpoint for --decoding apd (e.g. a small Qwen2 sharing the tokenizer)."""
    apd_mixture_weight: float = 0.7
    """APD mixture weight R between the diffusion and AR distributions, in [0, 1]."""
    apd_kv_window: int = 16
    """APD window W of recent tokens recomputed without the KV cache."""
    apd_max_lookahead: int = 64
    """APD maximum lookahead M: masked positions proposed per step."""
    served_model_names: list[str] = field(default_factory=list)
    """Names clients use in "model" (default: the model argument); the first labels the metrics."""

    def __post_init__(self) -> None:
        check_choice(self.dtype, DTYPES, "--dtype")
        check_choice(self.device, DEVICES, "--device")
        check_choice(self.quantization, QUANTIZATIONS, "--quantization", optional=True)
        if self.max_num_seqs < 1:
            raise VdiffValidationError("--max-num-seqs must be at least 1", "--max-num-seqs")
        if self.max_waiting_requests < 0:
            raise VdiffValidationError("--max-waiting-requests must be >= 0", "--max-waiting-requests")
        if self.max_model_len is not None and self.max_model_len < 2:
            raise VdiffValidationError("--max-model-len must be at least 2", "--max-model-len")
        if self.diffusion_steps is not None and self.diffusion_steps < 1:
            raise VdiffValidationError("--diffusion-steps must be at least 1", "--diffusion-steps")
        if self.block_length is not None and self.block_length < 1:
            raise VdiffValidationError("--block-length must be at least 1", "--block-length")
        check_choice(self.remasking, REMASKING_STRATEGIES, "--remasking", optional=True)
        check_choice(self.dream_alg, DREAM_ALGORITHMS, "--dream-alg", optional=True)
        check_choice(self.decoding, DECODING_POLICIES, "--decoding")
        if not 0 < self.threshold <= 1:
            raise VdiffValidationError("--threshold must be in (0, 1]", "--threshold")
        check_choice(self.kv_cache, KV_CACHE_MODES, "--kv-cache")
        if self.kv_cache_vicinity < 0:
            raise VdiffValidationError("--kv-cache-vicinity must be >= 0", "--kv-cache-vicinity")
        if self.decoding == "apd" and not self.draft_model:
            raise VdiffValidationError("--decoding apd needs --draft-model", "--draft-model")
        if not 0 <= self.apd_mixture_weight <= 1:
            raise VdiffValidationError("--apd-mixture-weight must be in [0, 1]", "--apd-mixture-weight")

    @classmethod
    def field_names(cls) -> set[str]:
        return {f.name for f in fields(cls)}
