"""Wire types shared by every OpenAI endpoint: lenient base model, errors, usage, diffusion knobs."""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, create_model, model_validator

from vdiff.errors import VdiffValidationError
from vdiff.knobs import KNOBS, KNOBS_BY_NAME
from vdiff.sampling_params import SamplingParams

logger = logging.getLogger(__name__)

_warned_fields: set[tuple[str, str]] = set()


class OpenAIBaseModel(BaseModel):
    """Accepts unknown fields like vLLM does, and logs each one at WARNING the first time it is seen."""

    model_config = ConfigDict(extra="allow")

    @model_validator(mode="after")
    def _log_extra_fields(self) -> OpenAIBaseModel:
        if self.model_extra:
            kind = type(self).__name__
            new = sorted(name for name in self.model_extra if (kind, name) not in _warned_fields)
            if new:
                _warned_fields.update((kind, name) for name in new)
                logger.warning("The following fields were present in the %s but ignored: %s", kind, new)
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


KnobFields = create_model(
    "KnobFields",
    __base__=OpenAIBaseModel,
    **{knob.name: (knob.kind | None, None) for knob in KNOBS},  # type: ignore[call-overload]
)
"""The decoding knobs as request fields (vdiff.knobs; sent through the openai client's extra_body)."""


class SamplingRequest(KnobFields):  # type: ignore[misc, valid-type]
    """Fields both generation endpoints share, plus the one bridge to the engine's SamplingParams."""

    model: str | None = None
    n: int = 1
    seed: int | None = None
    stop: str | list[str] | None = None
    stop_token_ids: list[int] | None = None
    include_stop_str_in_output: bool = False
    ignore_eos: bool = False
    min_tokens: int = 0
    logit_bias: dict[str, float] | None = None
    allowed_token_ids: list[int] | None = None
    bad_words: list[str] | None = None
    skip_special_tokens: bool = True
    spaces_between_special_tokens: bool = True
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = None

    def requested_max_tokens(self) -> int | None:  # pragma: no cover - overridden
        raise NotImplementedError

    def requested_logprobs(self) -> int | None:  # pragma: no cover - overridden
        raise NotImplementedError

    def check_supported(self) -> None:
        if self.stream_options is not None and self.stream_options.model_fields_set and not self.stream:
            raise VdiffValidationError(
                "Stream options can only be defined when `stream=True`.", "stream_options"
            )

    def to_sampling_params(self, max_tokens: int) -> SamplingParams:
        """Only fields the client set override SamplingParams' defaults (and so the server's)."""
        values: dict[str, Any] = {
            "max_tokens": max_tokens,
            "n": self.n,
            "ignore_eos": self.ignore_eos,
            "include_stop_str_in_output": self.include_stop_str_in_output,
            "min_tokens": self.min_tokens,
            "skip_special_tokens": self.skip_special_tokens,
            "spaces_between_special_tokens": self.spaces_between_special_tokens,
            "logprobs": self.requested_logprobs(),
        }
        for name in (*KNOBS_BY_NAME, "seed", "logit_bias", "allowed_token_ids", "bad_words"):
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
