"""Every vLLM request field vdiff cannot honour, with the reason: a non-default value is a 400 naming it.

vLLM 0.33's request models declare these fields (tests/server/vllm_protocol_fields.py is the inventory);
vdiff declares them too, so a value is type-checked, never logged as unknown, and refused here when it asks
for something vdiff does not do. The principle: a field is honoured with vLLM's meaning, or refused."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from vdiff.errors import VdiffValidationError


def unset(value: Any) -> bool:
    return value is None or value is False or value == [] or value == {} or value == ""


def equals(*allowed: Any) -> Callable[[Any], bool]:
    def check(value: Any) -> bool:
        return value is None or value in allowed

    return check


def _all_zero(value: Any) -> bool:
    return value is None or (isinstance(value, dict) and not any(value.values()))


@dataclass(frozen=True, slots=True)
class Refused:
    name: str
    reason: str
    allowed: Callable[[Any], bool] = unset


PROMPT_SCORING_STREAM = "prompt logprobs are not supported with stream=true (as vLLM)"

SHARED: tuple[Refused, ...] = (
    Refused("use_beam_search", "beam search is not supported: a diffusion model denoises the whole answer "
            "canvas at once, there are no left-to-right beams to extend"),
    Refused("length_penalty", "length_penalty only applies to beam search, which vdiff does not support",
            equals(1.0)),
    Refused("priority", "priority scheduling is not supported: requests are scheduled first come, first "
            "served", equals(0)),
    Refused("watermarking", "no watermark is configured: vdiff has no output watermarking"),
    Refused("logprob_token_ids", "logprobs of chosen token ids are not supported; use logprobs"),
    Refused("return_weight_versions", "weight versions are not tracked (no live weight updates)"),
    Refused("routed_experts_prompt_start", "the models are not mixture-of-experts: there is no routed-expert "
            "data", equals(0)),
    Refused("return_token_offsets", "token offsets are returned by vLLM's /render endpoints only, which "
            "vdiff does not serve"),
    Refused("mm_payload", "the models are text-only: there is no multimodal payload", equals("tensors")),
    Refused("return_mm_kwargs", "the models are text-only: there are no multimodal kwargs",
            lambda value: value is None),
    Refused("kv_transfer_params", "disaggregated prefill (KV transfer) is not supported"),
    Refused("ec_transfer_params", "encoder-cache transfer is not supported (the models are text-only)"),
    Refused("vllm_xargs", "engine extra args are not consumed by vdiff; its decoding knobs are top-level "
            "fields (see api-reference.md)"),
    Refused("repetition_detection", "repetition detection is not implemented", _all_zero),
    Refused("thinking_token_budget", "thinking budgets need a reasoning parser, which vdiff does not have",
            equals(-1)),
    Refused("stream_interval", "a stream sends one chunk per commit-frontier advance; batching more tokens "
            "per chunk is not implemented", equals(1)),
)  # fmt: skip

COMPLETION: tuple[Refused, ...] = (
    Refused("suffix", "suffix (fill-in-the-middle) needs a FIM model; the diffusion models served have no "
            "FIM rendering"),
    Refused("prompt_embeds", "prompt embeddings are not supported; send text or token ids"),
)  # fmt: skip

CHAT: tuple[Refused, ...] = (
    Refused("media_io_kwargs", "the models are text-only: there is no media to load"),
    Refused("mm_processor_kwargs", "the models are text-only: there is no multimodal processor"),
    Refused("include_reasoning", "there is no reasoning parser: the answer has no separate reasoning to drop",
            equals(True)),
)  # fmt: skip

REMOVED: tuple[Refused, ...] = (
    Refused("guided_decoding_backend", "request-level structured output backend selection is not "
            "supported (as vLLM v1): the server's backend is 'guidance' (llguidance, "
            "--structured-outputs-config); remove the field", equals("guidance")),
    Refused("logits_processors", "per-request logits processors are not supported"),
    *(
        Refused(name, "repetition detection is not implemented", equals(0))
        for name in ("max_repetition_pattern_size", "min_repetition_pattern_size", "repetition_min_count")
    ),
)  # fmt: skip
"""Fields older vLLM releases declared; they arrive as extra fields (guided_json, guided_regex,
guided_choice, guided_grammar and guided_whitespace_pattern are honoured: structured_fields.py)."""


def check_refused(request: BaseModel, rules: Iterable[Refused]) -> None:
    """Raise a 400 naming the first field set to a value vdiff cannot honour."""
    extra = request.model_extra or {}
    declared = type(request).model_fields
    for rule in rules:
        if rule.name in declared:
            value = getattr(request, rule.name)
        elif rule.name in extra:
            value = extra[rule.name]
        else:
            continue
        if not rule.allowed(value):
            shown = repr(value)
            shown = shown if len(shown) <= 80 else shown[:77] + "..."
            raise VdiffValidationError(f"{rule.name}={shown} is not supported: {rule.reason}.", rule.name)
