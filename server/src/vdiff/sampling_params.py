"""Per-request sampling and diffusion decoding parameters (vLLM-like)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from vdiff.errors import VdiffValidationError, check_choice

REMASKING_STRATEGIES = ("low_confidence", "random")
DREAM_ALGORITHMS = ("origin", "maskgit_plus", "topk_margin", "entropy")
DECODING_POLICIES = ("reference", "threshold", "apd")
KV_CACHE_MODES = ("none", "prefix", "dual")


@dataclass(slots=True)
class SamplingParams:
    """What to generate and how to decode it.

    Fields left as None are filled from the model family's defaults and the checkpoint's
    `generation_config.json` by `resolve()` before the request is scheduled.
    """

    n: int = 1
    max_tokens: int = 16
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = -1
    seed: int | None = None
    stop: list[str] = field(default_factory=list)
    stop_token_ids: list[int] = field(default_factory=list)
    ignore_eos: bool = False
    # Diffusion knobs. None means "model family default".
    steps: int | None = None
    block_length: int | None = None
    remasking: str | None = None  # LLaDA: low_confidence | random
    cfg_scale: float = 0.0  # LLaDA classifier-free guidance
    alg: str | None = None  # Dream: origin | maskgit_plus | topk_margin | entropy
    alg_temp: float | None = None
    eps: float = 1e-3  # Dream's time schedule floor
    # Fast decoding (see docs/configuration.md). None means "server default".
    decoding: str | None = None  # reference | threshold | apd
    threshold: float | None = None
    factor: float | None = None
    kv_cache: str | None = None  # none | prefix | dual
    kv_cache_vicinity: int | None = None  # positions left of the block recomputed every step
    apd_mixture_weight: float | None = None
    apd_kv_window: int | None = None
    apd_max_lookahead: int | None = None

    def __post_init__(self) -> None:
        if isinstance(self.stop, str):
            self.stop = [self.stop]
        self.validate()

    def validate(self) -> None:
        """Raise VdiffValidationError naming the field for values that can never be served."""
        if self.n < 1:
            raise VdiffValidationError("n must be at least 1", "n")
        if self.max_tokens < 1:
            raise VdiffValidationError("max_tokens must be at least 1", "max_tokens")
        if self.temperature < 0:
            raise VdiffValidationError("temperature must be non-negative", "temperature")
        if not 0 < self.top_p <= 1:
            raise VdiffValidationError("top_p must be in (0, 1]", "top_p")
        if self.top_k == 0 or self.top_k < -1:
            raise VdiffValidationError("top_k must be -1 (disabled) or at least 1", "top_k")
        if self.steps is not None and self.steps < 1:
            raise VdiffValidationError("steps must be at least 1", "steps")
        if self.block_length is not None and self.block_length < 1:
            raise VdiffValidationError("block_length must be at least 1", "block_length")
        check_choice(self.remasking, REMASKING_STRATEGIES, "remasking", optional=True)
        check_choice(self.alg, DREAM_ALGORITHMS, "alg", optional=True)
        if self.alg_temp is not None and self.alg_temp < 0:
            raise VdiffValidationError("alg_temp must be non-negative", "alg_temp")
        if self.cfg_scale < 0:
            raise VdiffValidationError("cfg_scale must be non-negative", "cfg_scale")
        if not 0 < self.eps < 1:
            raise VdiffValidationError("eps must be in (0, 1)", "eps")
        check_choice(self.decoding, DECODING_POLICIES, "decoding", optional=True)
        if self.threshold is not None and not 0 < self.threshold <= 1:
            raise VdiffValidationError("threshold must be in (0, 1]", "threshold")
        if self.factor is not None and self.factor <= 0:
            raise VdiffValidationError("factor must be positive", "factor")
        check_choice(self.kv_cache, KV_CACHE_MODES, "kv_cache", optional=True)
        if self.kv_cache_vicinity is not None and self.kv_cache_vicinity < 0:
            raise VdiffValidationError("kv_cache_vicinity must be >= 0", "kv_cache_vicinity")
        if self.apd_mixture_weight is not None and not 0 <= self.apd_mixture_weight <= 1:
            raise VdiffValidationError("apd_mixture_weight must be in [0, 1]", "apd_mixture_weight")
        if self.apd_kv_window is not None and self.apd_kv_window < 1:
            raise VdiffValidationError("apd_kv_window must be at least 1", "apd_kv_window")
        if self.apd_max_lookahead is not None and self.apd_max_lookahead < 1:
            raise VdiffValidationError("apd_max_lookahead must be at least 1", "apd_max_lookahead")

    def replace(self, **changes: object) -> SamplingParams:
        return dataclasses.replace(self, **changes)
