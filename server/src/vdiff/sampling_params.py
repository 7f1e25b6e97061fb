"""Per-request sampling and diffusion decoding parameters (vLLM's SamplingParams, plus the knobs)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from vdiff.errors import VdiffValidationError
from vdiff.knobs import KNOBS, RequestKnobs
from vdiff.structured.params import StructuredOutputsParams

SEED_MIN, SEED_MAX = -(2**63), 2**63 - 1
"""vLLM's bounds for `seed` (torch.iinfo(torch.long), vllm/entrypoints/openai protocol)."""
LOGIT_BIAS_LIMIT = 100.0
"""vLLM clamps every logit_bias value to [-100, 100]."""


@dataclass(frozen=True, slots=True)
class SamplingParams(RequestKnobs):  # type: ignore[misc, valid-type]
    """What to generate and how to decode it; immutable.

    The decoding knobs (temperature, top_p, top_k, min_p, penalties, steps, block_length, threshold, ...,
    see vdiff.knobs) are inherited keyword fields; None means "not set": the input processor fills them
    from the server flags, `generation_config.json` and the model family before the request is scheduled.
    Intrinsic ranges are checked here, once; checks that need the model (context length, vocabulary) are
    the input processor's.
    """

    n: int = 1
    max_tokens: int = 16
    seed: int | None = None
    stop: tuple[str, ...] = ()
    stop_token_ids: tuple[int, ...] = ()
    include_stop_str_in_output: bool = False
    ignore_eos: bool = False
    min_tokens: int = 0
    """No end token (EOS or stop_token_ids) at generation positions before this one."""
    logit_bias: dict[int, float] | None = None
    allowed_token_ids: tuple[int, ...] | None = None
    bad_words: tuple[str, ...] | None = None
    bad_words_token_ids: tuple[tuple[int, ...], ...] | None = None
    """Filled by the input processor from bad_words (each word with and without a leading space)."""
    logprobs: int | None = None
    """Return the log-probability of each committed token and of this many alternatives (0 = none)."""
    prompt_logprobs: int | None = None
    """Score the prompt first: each prompt token's log-probability given the tokens before it (the
    left-to-right factorization, engine/prompt_scoring.py), with this many alternatives."""
    skip_special_tokens: bool = True
    spaces_between_special_tokens: bool = True
    structured_outputs: StructuredOutputsParams | None = None
    """Constrain the output (JSON schema, regex, choice, grammar): vdiff.structured."""
    record_canvas: bool = False
    """vdiff: record a CanvasFrame per denoising step (engine/canvas_trace.py; HTTP's stream_canvas)."""

    def __post_init__(self) -> None:
        _set(self, "stop", _as_tuple(self.stop, str, "stop"))
        _set(self, "stop_token_ids", _as_tuple(self.stop_token_ids, int, "stop_token_ids"))
        if self.allowed_token_ids is not None:
            _set(self, "allowed_token_ids", _as_tuple(self.allowed_token_ids, int, "allowed_token_ids"))
        if self.bad_words is not None:
            _set(self, "bad_words", _as_tuple(self.bad_words, str, "bad_words"))
        self.validate()

    def validate(self) -> None:
        """Raise VdiffValidationError naming the field for values that can never be served."""
        for knob in KNOBS:
            _set(self, knob.name, knob.check(getattr(self, knob.name), knob.name))
        _check_int(self.n, "n", low=1)
        _check_int(self.max_tokens, "max_tokens", low=1)
        _check_int(self.min_tokens, "min_tokens", low=0)
        if self.min_tokens > self.max_tokens:
            raise VdiffValidationError(
                f"min_tokens must be less than or equal to max_tokens={self.max_tokens}, "
                f"got {self.min_tokens}",
                "min_tokens",
            )
        if self.seed is not None:
            _check_int(self.seed, "seed", low=SEED_MIN, high=SEED_MAX)
        for token_id in self.stop_token_ids:
            _check_int(token_id, "stop_token_ids", low=0)
        if any(stop == "" for stop in self.stop):
            raise VdiffValidationError("stop strings must not be empty", "stop")
        if self.logit_bias is not None:
            _set(self, "logit_bias", _checked_bias(self.logit_bias))
        if self.allowed_token_ids is not None:
            if not self.allowed_token_ids:
                raise VdiffValidationError(
                    "allowed_token_ids is not allowed to be empty", "allowed_token_ids"
                )
            for token_id in self.allowed_token_ids:
                _check_int(token_id, "allowed_token_ids", low=0)
        if self.logprobs is not None:
            _check_int(self.logprobs, "logprobs", low=0)
        if self.prompt_logprobs is not None:
            _check_int(self.prompt_logprobs, "prompt_logprobs", low=0)
        if self.structured_outputs is not None and not isinstance(
            self.structured_outputs, StructuredOutputsParams
        ):
            raise VdiffValidationError(
                "structured_outputs must be a StructuredOutputsParams", "structured_outputs"
            )

    def replace(self, **changes: object) -> SamplingParams:
        return dataclasses.replace(self, **changes)

    def resolved(self, **values: object) -> SamplingParams:
        """A copy with `values` set, without validating again (the input processor's own checks ran)."""
        copy = object.__new__(SamplingParams)
        for item in dataclasses.fields(self):
            _set(copy, item.name, values.get(item.name, getattr(self, item.name)))
        return copy


def _set(params: SamplingParams, name: str, value: Any) -> None:
    object.__setattr__(params, name, value)


def _as_tuple(values: Any, kind: type, param: str) -> tuple[Any, ...]:
    if isinstance(values, str | int) and not isinstance(values, bool):
        values = [values]
    if not isinstance(values, Iterable):
        raise VdiffValidationError(f"{param} must be a list", param)
    items = tuple(values)
    for item in items:
        if not isinstance(item, kind) or isinstance(item, bool):
            raise VdiffValidationError(f"{param} must be a list of {kind.__name__}", param)
        if isinstance(item, str) and not _is_unicode(item):
            raise VdiffValidationError(f"{param} is not valid Unicode text (a lone surrogate)", param)
    return items


def _is_unicode(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _check_int(value: Any, param: str, *, low: int | None = None, high: int | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise VdiffValidationError(f"{param} must be an integer", param)
    if (low is not None and value < low) or (high is not None and value > high):
        bounds = f"[{low}, {high}]" if high is not None else f">= {low}"
        raise VdiffValidationError(f"{param} must be {bounds}, got {value}", param)


def _checked_bias(bias: Any) -> dict[int, float]:
    if not isinstance(bias, dict):
        raise VdiffValidationError("logit_bias must map token ids to numbers", "logit_bias")
    checked: dict[int, float] = {}
    for key, value in bias.items():
        try:
            token_id = int(key)
        except (TypeError, ValueError):
            raise VdiffValidationError(f"logit_bias key {key!r} is not a token id", "logit_bias") from None
        if token_id < 0 or isinstance(value, bool) or not isinstance(value, int | float):
            raise VdiffValidationError(
                f"logit_bias[{key!r}] must be a number for a token id >= 0", "logit_bias"
            )
        if not math.isfinite(value):
            raise VdiffValidationError(f"logit_bias[{key!r}] must be finite", "logit_bias")
        checked[token_id] = max(-LOGIT_BIAS_LIMIT, min(LOGIT_BIAS_LIMIT, float(value)))
    return checked
