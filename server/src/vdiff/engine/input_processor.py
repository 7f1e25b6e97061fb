"""The one admission stage (vLLM's input processor): resolve, check and freeze a request, once.

It runs on the caller's thread (the event loop for the server), reads nothing the engine thread writes,
and returns an immutable EngineRequest that the engine thread only schedules.

Resolution, per knob (vdiff.knobs): request > server flag > generation_config.json > model family >
fallback. Choosing a Dream `alg` selects Dream's rule, `remasking` LLaDA's.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from vdiff.config import EngineConfig
from vdiff.engine.block_manager import most_cache_tokens
from vdiff.engine.decoding.base import DecodingPolicy
from vdiff.errors import VdiffValidationError
from vdiff.knobs import KNOBS, MIN_TEMPERATURE, Knob
from vdiff.models.registry import FamilySpec
from vdiff.sampling_params import SamplingParams
from vdiff.structured.backend import CompiledGrammar, GuidanceBackend
from vdiff.tokenizer import TokenizerInfo

logger = logging.getLogger(__name__)

MAX_N = 128
"""OpenAI's bound on `n`; with the scheduler's bound on waiting sequences, what one request may queue."""
DREAM_ONLY = ("alg", "alg_temp")
LLADA_ONLY = ("remasking",)


@dataclass(frozen=True, slots=True)
class EngineRequest:
    """A request as the engine thread receives it: resolved, checked, immutable."""

    request_id: str
    prompt_token_ids: tuple[int, ...]
    params: SamplingParams
    """Every knob filled in."""
    arrival_time: float
    grammar: CompiledGrammar | None = None
    """The compiled structured-outputs constraint (params.structured_outputs), checked at admission."""


class InputProcessor:
    def __init__(
        self,
        config: EngineConfig,
        family: FamilySpec,
        generation_config: Mapping[str, Any],
        tokenizer_info: TokenizerInfo,
        vocab_size: int,
        max_model_len: int,
        policies: Mapping[str, DecodingPolicy],
        grammar_backend: GuidanceBackend | None = None,
    ) -> None:
        self.config = config
        self.grammar_backend = grammar_backend
        self.family = family
        self.tokenizer_info = tokenizer_info
        self.vocab_size = vocab_size
        self.max_model_len = max_model_len
        self.policies = policies
        self.generation_defaults = self._generation_defaults(generation_config)
        self.cache_capacity_tokens: int | None = None
        """The whole cache budget in tokens (set by the engine once it is measured); None = unbounded."""
        self.verifier_ratio = 0.0
        self.max_num_batched_tokens: int | None = None
        """The step budget (set by the engine); a canvas that must be forwarded whole may not exceed it."""
        self._clamped_temperature_logged = False

    @staticmethod
    def _generation_defaults(generation_config: Mapping[str, Any]) -> dict[str, Any]:
        """The knobs generation_config.json sets; a value no request could use fails at startup."""
        defaults = {}
        for knob in KNOBS:
            if knob.generation_key is not None and generation_config.get(knob.generation_key) is not None:
                param = f"generation_config.json {knob.generation_key}"
                defaults[knob.name] = knob.check(generation_config[knob.generation_key], param)
        return defaults

    # ------------------------------------------------------------------ admission
    def process(
        self,
        request_id: str,
        prompt_token_ids: list[int] | tuple[int, ...],
        params: SamplingParams,
        prompt_param: str = "prompt",
    ) -> EngineRequest:
        if not isinstance(params, SamplingParams):
            raise VdiffValidationError("params must be a SamplingParams", "params")
        prompt = self._check_prompt(prompt_token_ids, params, prompt_param)
        self._check_token_ids(params)
        if params.n > MAX_N:
            raise VdiffValidationError(f"n ({params.n}) must be at most {MAX_N}", "n")
        for name, asked in (("logprobs", params.logprobs), ("prompt_logprobs", params.prompt_logprobs)):
            if asked is not None and asked > self.config.max_logprobs:
                kind = "sample" if name == "logprobs" else "prompt"
                raise VdiffValidationError(
                    f"Requested {kind} logprobs of {asked}, which is greater than max allowed: "
                    f"{self.config.max_logprobs}",
                    name,
                )
        resolved = self.resolve(params)
        self._check_schedule(resolved)
        self._check_cache_fits(resolved, len(prompt))
        self.policies[resolved.decoding].validate(resolved, self.family.name)
        return EngineRequest(request_id, prompt, resolved, time.time(), self._compile_grammar(resolved))

    def _compile_grammar(self, params: SamplingParams) -> CompiledGrammar | None:
        """Compile the constraint once, here (an invalid schema/regex/grammar is a 400 naming its field)."""
        constraint = params.structured_outputs
        if constraint is None:
            return None
        if self.grammar_backend is None:
            raise VdiffValidationError(
                f"{constraint.source}: structured outputs are not available on this engine", constraint.source
            )
        return self.grammar_backend.compile(constraint)

    def _check_prompt(
        self, prompt_token_ids: list[int] | tuple[int, ...], params: SamplingParams, param: str
    ) -> tuple[int, ...]:
        # lengths first: O(1), so a huge prompt is refused before anything walks it
        num_prompt = len(prompt_token_ids)
        if not num_prompt:
            raise VdiffValidationError("The prompt must contain at least one token", param)
        max_model_len = self.max_model_len
        if num_prompt >= max_model_len:
            raise VdiffValidationError(
                f"This model's maximum context length is {max_model_len} tokens; the prompt has "
                f"{num_prompt} tokens. Please shorten the prompt.",
                param,
            )
        if num_prompt + params.max_tokens > max_model_len:
            raise VdiffValidationError(
                f"This model's maximum context length is {max_model_len} tokens. However, you requested "
                f"{num_prompt + params.max_tokens} tokens ({num_prompt} in the prompt, {params.max_tokens} "
                "in the completion). Please reduce the length of the prompt or completion.",
                "max_tokens",
            )
        prompt = tuple(prompt_token_ids)
        if not all(type(token) is int for token in prompt) or not (
            min(prompt) >= 0 and max(prompt) < self.vocab_size
        ):
            raise VdiffValidationError(f"Prompt token ids must be integers in [0, {self.vocab_size})", param)
        return prompt

    def _check_token_ids(self, params: SamplingParams) -> None:
        vocab = self.vocab_size
        for name, ids in (
            ("stop_token_ids", params.stop_token_ids),
            ("allowed_token_ids", params.allowed_token_ids or ()),
            ("logit_bias", tuple(params.logit_bias or ())),
        ):
            outside = [token_id for token_id in ids if token_id >= vocab]
            if outside:
                raise VdiffValidationError(
                    f"{name} contains token ids outside the vocabulary [0, {vocab}): {outside[:5]}", name
                )

    def _check_schedule(self, params: SamplingParams) -> None:
        """The work one request may ask for is bounded by the context (a step schedule is a list)."""
        if params.steps is not None and params.steps > self.max_model_len:
            raise VdiffValidationError(
                f"steps ({params.steps}) exceeds the model's context ({self.max_model_len} positions)",
                "steps",
            )

    def _check_cache_fits(self, params: SamplingParams, prompt_len: int) -> None:
        """A request whose cache could never fit the whole budget is refused; one that fits later waits."""
        if self.cache_capacity_tokens is None and self.max_num_batched_tokens is None:
            return
        max_tokens = params.max_tokens
        block = max_tokens if params.block_length is None else min(params.block_length, max_tokens)
        canvas = prompt_len + min(-(-max_tokens // block) * block, self.max_model_len - prompt_len)
        if params.decoding == "block" and params.block_length is not None:  # absolute blocks (plan_blocks)
            aligned = -(-(prompt_len + max_tokens) // params.block_length) * params.block_length
            canvas = min(aligned, max(self.max_model_len, prompt_len + max_tokens))
        if self.max_num_batched_tokens is not None and params.decoding != "block":
            rows = 2 if params.cfg_scale > 0 else 1
            if rows * canvas > self.max_num_batched_tokens:
                raise VdiffValidationError(
                    f"the request's canvas ({rows * canvas} positions with the prompt) is forwarded whole "
                    f"and exceeds --max-num-batched-tokens ({self.max_num_batched_tokens}); only "
                    "block-diffusion models (decoding 'block') prefill a long prompt in chunks",
                    "max_tokens",
                )
        need = most_cache_tokens(prompt_len, params, canvas, self.verifier_ratio)
        if self.cache_capacity_tokens is not None and need > self.cache_capacity_tokens:
            raise VdiffValidationError(
                f"the request's KV cache ({need} tokens) does not fit the server's cache budget "
                f"({self.cache_capacity_tokens} tokens, --kv-cache-memory-bytes / --gpu-memory-utilization): "
                "lower max_tokens or use kv_cache 'none'",
                "max_tokens",
            )

    # ----------------------------------------------------------------- resolution
    def resolve(self, params: SamplingParams) -> SamplingParams:
        """Fill every None knob (and the derived fields) without validating the request again."""
        use_dream_rule = params.alg is not None or (
            params.remasking is None and self.family.dream_alg is not None
        )
        values: dict[str, Any] = {}
        for knob in KNOBS:
            if (knob.name in DREAM_ONLY and not use_dream_rule) or (
                knob.name in LLADA_ONLY and use_dream_rule
            ):
                values[knob.name] = None
                continue
            values[knob.name] = self._pick(knob, getattr(params, knob.name))
        if use_dream_rule and values["alg"] is None:
            values["alg"] = "entropy"
        values["top_k"] = (
            -1 if values["top_k"] in (0, -1) or values["top_k"] >= self.vocab_size else values["top_k"]
        )
        values["temperature"] = self._floor_temperature(values["temperature"], "temperature")
        if values["alg_temp"] is not None:
            values["alg_temp"] = self._floor_temperature(values["alg_temp"], "alg_temp")
        for knob in KNOBS:
            if knob.context_bound and values[knob.name] is not None:
                values[knob.name] = min(values[knob.name], self.max_model_len)
        window = values["canvas_window"]
        if values["decoding"] == "threshold" and window is not None and window > 0:
            # a bounded canvas decodes block by block: no block is longer than the window
            values["block_length"] = min(values["block_length"] or window, window)
        if params.bad_words:
            values["bad_words_token_ids"] = self._bad_word_ids(params.bad_words)
        return params.resolved(**values)

    def _pick(self, knob: Knob, requested: Any) -> Any:
        if requested is not None:
            return requested
        if knob.flag is not None and getattr(self.config, knob.flag) is not None:
            return getattr(self.config, knob.flag)
        if knob.name in self.generation_defaults:
            return self.generation_defaults[knob.name]
        if knob.family_attr is not None and getattr(self.family, knob.family_attr) is not None:
            return getattr(self.family, knob.family_attr)
        return knob.fallback

    def _floor_temperature(self, value: float, name: str) -> float:
        if 0 < value < MIN_TEMPERATURE:
            if not self._clamped_temperature_logged:
                logger.warning(
                    "%s %s is less than %s, which may cause numerical errors (nan or inf); raised to %s "
                    "(as vLLM does)",
                    name,
                    value,
                    MIN_TEMPERATURE,
                    MIN_TEMPERATURE,
                )
                self._clamped_temperature_logged = True
            return MIN_TEMPERATURE
        return value

    def _bad_word_ids(self, words: tuple[str, ...]) -> tuple[tuple[int, ...], ...]:
        """Each bad word as tokens, alone and after a space (vLLM bans both spellings)."""
        encoded: dict[tuple[int, ...], None] = {}
        for word in words:
            for text in (word, " " + word.lstrip()):
                ids = tuple(self.tokenizer_info.encode(text, add_special_tokens=False))
                if ids:
                    encoded[ids] = None
        return tuple(encoded)
