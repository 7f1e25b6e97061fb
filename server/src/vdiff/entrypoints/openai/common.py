"""Wire types shared by every OpenAI endpoint: lenient base model, errors, usage, diffusion knobs."""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, model_validator

from vdiff.errors import VdiffValidationError
from vdiff.sampling_params import SamplingParams

logger = logging.getLogger(__name__)

DIFFUSION_FIELDS = (
    "steps", "block_length", "remasking", "cfg_scale", "alg", "alg_temp", "eps", "decoding", "threshold",
    "factor", "kv_cache", "kv_cache_vicinity", "apd_mixture_weight", "apd_kv_window", "apd_max_lookahead",
)  # fmt: skip
"""Per-request diffusion knobs (sent through the openai client's extra_body); names match SamplingParams."""


class OpenAIBaseModel(BaseModel):
    """Accepts unknown fields like vLLM does, and logs them at debug level."""

    model_config = ConfigDict(extra="allow")

    @model_validator(mode="after")
    def _log_extra_fields(self) -> OpenAIBaseModel:
        if self.model_extra:
            logger.debug("%s ignores unknown fields: %s", type(self).__name__, sorted(self.model_extra))
        return self


class ErrorInfo(OpenAIBaseModel):
    message: str
    type: str
    param: str | None = None
    code: int


class ErrorResponse(OpenAIBaseModel):
    error: ErrorInfo


class UsageInfo(OpenAIBaseModel):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0


class StreamOptions(OpenAIBaseModel):
    include_usage: bool = False
    continuous_usage_stats: bool = False


class SamplingRequest(OpenAIBaseModel):
    """Fields both generation endpoints share, plus the one bridge to the engine's SamplingParams."""

    model: str | None = None
    n: int = 1
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    seed: int | None = None
    stop: str | list[str] | None = None
    stop_token_ids: list[int] | None = None
    ignore_eos: bool = False
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = None
    logprobs: Any = None
    # Diffusion knobs (extra_body).
    steps: int | None = None
    block_length: int | None = None
    remasking: str | None = None
    cfg_scale: float | None = None
    alg: str | None = None
    alg_temp: float | None = None
    eps: float | None = None
    decoding: str | None = None
    threshold: float | None = None
    factor: float | None = None
    kv_cache: str | None = None
    kv_cache_vicinity: int | None = None
    apd_mixture_weight: float | None = None
    apd_kv_window: int | None = None
    apd_max_lookahead: int | None = None

    def requested_max_tokens(self) -> int | None:  # pragma: no cover - overridden
        raise NotImplementedError

    def check_supported(self) -> None:
        if self.logprobs not in (None, False, 0):
            raise VdiffValidationError("logprobs are not supported by vdiff", "logprobs")
        if self.stream_options is not None and not self.stream:
            raise VdiffValidationError("stream_options is only allowed when stream is true", "stream_options")

    def to_sampling_params(self, max_tokens: int) -> SamplingParams:
        """Only fields the client set override SamplingParams' defaults (and so the model family's)."""
        self.check_supported()
        values: dict[str, Any] = {"max_tokens": max_tokens, "n": self.n, "ignore_eos": self.ignore_eos}
        for name in ("temperature", "top_p", "top_k", "seed", *DIFFUSION_FIELDS):
            value = getattr(self, name)
            if value is not None:
                values[name] = value
        if self.stop is not None:
            values["stop"] = [self.stop] if isinstance(self.stop, str) else list(self.stop)
        if self.stop_token_ids is not None:
            values["stop_token_ids"] = list(self.stop_token_ids)
        return SamplingParams(**values)

    @property
    def include_usage_in_stream(self) -> bool:
        return self.stream_options is not None and self.stream_options.include_usage


def random_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


def unix_time() -> int:
    return int(time.time())


FinishReason = Literal["stop", "length", "abort"] | None
