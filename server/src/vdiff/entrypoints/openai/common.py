"""Wire types shared by every OpenAI endpoint: lenient base model, errors, usage, diffusion knobs."""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, create_model, model_validator

from vdiff.entrypoints.openai import canvas_stream, field_rules, structured_fields
from vdiff.entrypoints.openai.structured_fields import ResponseFormat, StructuredOutputsRequest
from vdiff.entrypoints.openai.text_input import check_text
from vdiff.errors import VdiffValidationError
from vdiff.knobs import KNOBS, KNOBS_BY_NAME
from vdiff.sampling_params import SamplingParams
from vdiff.structured.params import StructuredOutputsParams

logger = logging.getLogger(__name__)

_warned_fields: set[tuple[str, str]] = set()


class OpenAIBaseModel(BaseModel):
    """Accepts unknown fields like vLLM does, and logs each one at WARNING the first time it is seen (the
    legacy guided_* fields arrive as extra fields too, and are read: structured_fields)."""

    model_config = ConfigDict(extra="allow")

    @model_validator(mode="after")
    def _log_extra_fields(self) -> OpenAIBaseModel:
        if self.model_extra:
            kind = type(self).__name__
            new = sorted(
                name
                for name in self.model_extra
                if (kind, name) not in _warned_fields and name not in structured_fields.LEGACY_TYPES
            )
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


CACHE_SALT_FORBIDDEN = ("@", "/", "\\", "\x00")


class UsageInfo(OpenAIBaseModel):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0


class PromptLogprob(OpenAIBaseModel):
    """vLLM's prompt_logprobs entry (a dict of these, keyed by token id, per prompt position)."""

    logprob: float
    rank: int | None = None
    decoded_token: str | None = None


class StreamOptions(OpenAIBaseModel):
    include_usage: bool | None = False
    continuous_usage_stats: bool | None = False


KnobFields = create_model(
    "KnobFields",
    __base__=OpenAIBaseModel,
    **{knob.name: (knob.kind | None, None) for knob in KNOBS},  # type: ignore[call-overload]
)
"""The decoding knobs as request fields (vdiff.knobs; sent through the openai client's extra_body)."""


class SamplingRequest(KnobFields):  # type: ignore[misc, valid-type]
    """Fields both generation endpoints share, plus the one bridge to the engine's SamplingParams.

    Every field of vLLM's request models is declared (with vLLM's default): honoured, or refused by
    field_rules when set to a value vdiff cannot honour."""

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
    """Accepted and ignored, as in vLLM."""
    best_of: int | None = None
    """Gone from vLLM 0.33; accepted when it equals n (every generation is returned, none ranked)."""
    session_id: str | None = None
    """Routing affinity between related requests; one engine per server, so nothing to route."""
    truncate_prompt_tokens: int | None = Field(default=None, ge=-1)
    truncation_side: Literal["left", "right"] | None = None
    request_id: str | None = None
    return_tokens_as_token_ids: bool | None = None
    return_token_ids: bool | None = None
    cache_salt: str | None = None
    # Declared so a value is type-checked and refused by name (field_rules.SHARED), never ignored.
    use_beam_search: bool | None = False
    length_penalty: float | None = 1.0
    priority: int | None = 0
    watermarking: bool | None = None
    prompt_logprobs: int | None = None
    logprob_token_ids: list[int] | None = None
    structured_outputs: StructuredOutputsRequest | None = None
    response_format: ResponseFormat | None = None
    return_weight_versions: bool | None = False
    routed_experts_prompt_start: int | None = 0
    return_token_offsets: bool | None = False
    mm_payload: str | None = "tensors"
    return_mm_kwargs: bool | None = None
    kv_transfer_params: Any = None
    ec_transfer_params: Any = None
    vllm_xargs: Any = None
    repetition_detection: Any = None
    thinking_token_budget: int | None = None
    stream_interval: int | None = None
    stream_canvas: bool = False
    """vdiff: also stream the canvas of every denoising step (canvas_stream.py)."""

    def requested_max_tokens(self) -> int | None:  # pragma: no cover - overridden
        raise NotImplementedError

    def requested_logprobs(self) -> int | None:  # pragma: no cover - overridden
        raise NotImplementedError

    refused_fields: ClassVar[tuple[field_rules.Refused, ...]] = ()
    """The endpoint's own refusals, on top of field_rules.SHARED and field_rules.REMOVED."""
    _constraint: StructuredOutputsParams | None = PrivateAttr(default=None)
    _constraint_checked: bool = PrivateAttr(default=False)

    def structured_constraint(self) -> StructuredOutputsParams | None:
        """The one constraint of structured_outputs, response_format or guided_* (structured_fields)."""
        if not self._constraint_checked:
            self._constraint = self.find_constraint()
            self._constraint_checked = True
        return self._constraint

    def find_constraint(self) -> StructuredOutputsParams | None:
        return structured_fields.one_constraint(
            structured_fields.from_structured_outputs(self.structured_outputs),
            structured_fields.from_response_format(self.response_format),
            structured_fields.from_legacy_fields(self.model_extra or {}),
        )

    def check_supported(self) -> None:
        field_rules.check_refused(self, (*field_rules.SHARED, *self.refused_fields, *field_rules.REMOVED))
        self.structured_constraint()
        check_text(self.request_id, "request_id")
        if self.stream and self.requested_prompt_logprobs() is not None:
            param = "prompt_logprobs" if self.prompt_logprobs is not None else "echo"
            raise VdiffValidationError(field_rules.PROMPT_SCORING_STREAM, param)
        if self.prompt_logprobs is not None and self.prompt_logprobs < 0:
            raise VdiffValidationError(
                f"prompt_logprobs must be >= 0, got {self.prompt_logprobs}", "prompt_logprobs"
            )
        if self.best_of is not None and self.best_of != self.n:
            raise VdiffValidationError(
                "best_of must equal n: vdiff returns every generation and does not rank candidates", "best_of"
            )
        if self.stream_options is not None and self.stream_options.model_fields_set and not self.stream:
            raise VdiffValidationError(
                "Stream options can only be defined when `stream=True`.", "stream_options"
            )
        if self.cache_salt is not None and (
            not self.cache_salt
            or len(self.cache_salt) > 128
            or any(char in self.cache_salt for char in CACHE_SALT_FORBIDDEN)
        ):
            raise VdiffValidationError(
                "Parameter 'cache_salt' must be a non-empty string of at most 128 characters and must not "
                "contain '@', '/', '\\', or NUL.",
                "cache_salt",
            )

    @property
    def tokens_as_ids(self) -> bool:
        return bool(self.return_tokens_as_token_ids)

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
            "prompt_logprobs": self.requested_prompt_logprobs(),
            "structured_outputs": self.structured_constraint(),
            "record_canvas": canvas_stream.wants_canvas(self, max_tokens),
        }
        for name in (*KNOBS_BY_NAME, "seed", "logit_bias", "allowed_token_ids", "bad_words"):
            value = getattr(self, name)
            if value is not None:
                values[name] = value
        if self.seed == -1:  # vLLM: -1 means unseeded
            values.pop("seed")
        if self.stop is not None:
            values["stop"] = [self.stop] if isinstance(self.stop, str) else list(self.stop)
        if self.stop_token_ids is not None:
            values["stop_token_ids"] = list(self.stop_token_ids)
        return SamplingParams(**values)

    def requested_prompt_logprobs(self) -> int | None:
        return self.prompt_logprobs

    @property
    def include_usage_in_stream(self) -> bool:
        return self.stream_options is not None and bool(self.stream_options.include_usage)

    @property
    def include_continuous_usage(self) -> bool:
        """vLLM: usage on every chunk only together with include_usage."""
        return self.include_usage_in_stream and bool(self.stream_options.continuous_usage_stats)  # type: ignore[union-attr]

    def response_id(self, prefix: str) -> str:
        """vLLM's response id: the client's request_id under the endpoint's prefix, else a random one."""
        return f"{prefix}-{self.request_id}" if self.request_id else random_id(prefix)


def usage_counts(prompt_tokens: int, completion_tokens: int) -> UsageInfo:
    return UsageInfo(
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        total_tokens=prompt_tokens + completion_tokens,
    )


def random_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


def unix_time() -> int:
    return int(time.time())


FinishReason = Literal["stop", "length", "abort", "tool_calls"] | None
