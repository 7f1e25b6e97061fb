"""The decoding knobs, declared once: type, range, server flag, generation_config key, family default.

Everything else is generated from KNOBS: the fields of SamplingParams (per request, None = unset), the
server-default fields of EngineConfig (and so the CLI flags, VDIFF_* variables and --config keys), the
request fields of the OpenAI endpoints, and the resolution order of the input processor:
request > server flag > generation_config.json > model family > fallback.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, make_dataclass
from typing import Any

from vdiff.errors import VdiffValidationError

REMASKING_STRATEGIES = ("low_confidence", "random")
DREAM_ALGORITHMS = ("origin", "maskgit_plus", "topk_margin", "entropy")
DECODING_POLICIES = ("reference", "threshold", "apd", "block")
KV_CACHE_MODES = ("none", "prefix", "dual")

CANVAS_WINDOW_DEFAULT = 256
"""Without a max_new_tokens in generation_config.json: the chat default of max_tokens, so answers up to
256 tokens are decoded exactly as on the whole canvas (bench/canvas_window.py, docs/decoding.md)."""
MIN_TEMPERATURE = 1e-2
"""vLLM's floor (_MAX_TEMP in vllm/sampling_params.py): 0 < T < 0.01 is raised to 0.01, with a warning,
because softmax(l / T) overflows to inf/NaN below it."""


@dataclass(frozen=True, slots=True)
class Knob:
    name: str
    """Request field, SamplingParams attribute and extra_body key."""
    kind: type
    help: str
    fallback: Any = None
    """The value when no layer sets it."""
    choices: tuple[str, ...] = ()
    low: float | None = None
    low_open: bool = False
    high: float | None = None
    high_open: bool = False
    flag: str | None = None
    """EngineConfig field holding the server default (its --flag); None: no server flag."""
    flag_default: Any = None
    generation_key: str | None = None
    """Key of generation_config.json that supplies a default."""
    family_attr: str | None = None
    """FamilySpec attribute that supplies a default."""
    context_bound: bool = False
    """Values above the model's context mean the same as the context: the input processor clamps them."""
    forbidden: tuple[Any, ...] = ()
    """Values inside the range that mean nothing (canvas_window 0)."""

    @property
    def flag_name(self) -> str | None:
        return None if self.flag is None else "--" + self.flag.replace("_", "-")

    def range_text(self) -> str:
        if self.choices:
            return "one of " + ", ".join(self.choices)
        if self.forbidden:
            allowed = Knob(
                self.name,
                self.kind,
                self.help,
                low=self.low,
                low_open=self.low_open,
                high=self.high,
                high_open=self.high_open,
            ).range_text()
            return f"{allowed} except {', '.join(map(str, self.forbidden))}"
        if self.low is not None and self.high is not None:
            return (
                f"{'(' if self.low_open else '['}{self.low:g}, {self.high:g}{')' if self.high_open else ']'}"
            )
        if self.low is not None:
            return f"{'>' if self.low_open else '>='} {self.low:g}"
        if self.high is not None:
            return f"{'<' if self.high_open else '<='} {self.high:g}"
        return f"a {self.kind.__name__}"

    def check(self, value: Any, param: str) -> Any:
        """The value in the knob's type; VdiffValidationError naming `param` when it can never be served."""
        if value is None:
            return None
        value = _coerce(value, self.kind, param)
        if self.choices:
            if value not in self.choices:
                raise VdiffValidationError(f"{param} must be {self.range_text()}, got {value!r}", param)
            return value
        if value in self.forbidden:
            raise VdiffValidationError(f"{param} must be {self.range_text()}, got {value!r}", param)
        too_low = self.low is not None and (value <= self.low if self.low_open else value < self.low)
        too_high = self.high is not None and (value >= self.high if self.high_open else value > self.high)
        if too_low or too_high:
            raise VdiffValidationError(f"{param} must be {self.range_text()}, got {value!r}", param)
        return value


def _coerce(value: Any, kind: type, param: str) -> Any:
    if kind is str:
        if not isinstance(value, str):
            raise VdiffValidationError(f"{param} must be a string", param)
        return value
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise VdiffValidationError(f"{param} must be a number", param)
    if kind is int:
        if isinstance(value, float):
            if not value.is_integer():
                raise VdiffValidationError(f"{param} must be an integer, got {value!r}", param)
            value = int(value)
        return value
    value = float(value)
    if not math.isfinite(value):
        raise VdiffValidationError(f"{param} must be a finite number, got {value!r}", param)
    return value


KNOBS: tuple[Knob, ...] = (
    # sampling (vLLM's meaning and ranges)
    Knob("temperature", float, "Sampling temperature; 0 is greedy.", 0.0, low=0, high=2,
         generation_key="temperature"),
    Knob("top_p", float, "Nucleus sampling mass.", 1.0, low=0, low_open=True, high=1,
         generation_key="top_p"),
    Knob("top_k", int, "Keep the k most likely tokens; 0 or -1 disables.", -1, low=-1,
         generation_key="top_k"),
    Knob("min_p", float, "Drop tokens below min_p times the most likely one's probability.", 0.0, low=0,
         high=1, generation_key="min_p"),
    Knob("repetition_penalty", float, "Penalty on tokens of the prompt and the committed output.", 1.0,
         low=0, low_open=True, generation_key="repetition_penalty"),
    Knob("presence_penalty", float, "Penalty on tokens present in the committed output.", 0.0, low=-2,
         high=2),
    Knob("frequency_penalty", float, "Penalty per occurrence in the committed output.", 0.0, low=-2,
         high=2),
    # diffusion schedule
    Knob("steps", int, "Denoising steps per request (default: one per canvas position).", low=1,
         flag="diffusion_steps"),
    Knob("block_length", int, "Semi-autoregressive block length in tokens (default: the model family's).",
         low=1, flag="block_length", generation_key="block_length", family_attr="block_length"),
    Knob("remasking", str, "LLaDA remasking: low_confidence or random.", "low_confidence",
         choices=REMASKING_STRATEGIES, flag="remasking", generation_key="remasking", family_attr="remasking"),
    Knob("cfg_scale", float, "LLaDA classifier-free guidance scale (0 = off).", 0.0, low=0, high=100),
    Knob("alg", str, "Dream unmasking algorithm: origin, maskgit_plus, topk_margin or entropy.",
         choices=DREAM_ALGORITHMS, flag="dream_alg", generation_key="alg", family_attr="dream_alg"),
    Knob("alg_temp", float, "Dream position-sampling temperature (0 = most confident first).", 0.0, low=0,
         high=100, generation_key="alg_temp", family_attr="alg_temp"),
    Knob("eps", float, "Dream's time schedule floor.", 1e-3, low=0, low_open=True, high=1, high_open=True),
    # fast decoding
    Knob("decoding", str, "Unmasking policy: threshold (Fast-dLLM parallel), reference (the family's "
         "published decoder, one step per --diffusion-steps), apd (needs --draft-model) or block (exact "
         "block cache, for block-diffusion models). Default: the family's (block for SDAR), else threshold.",
         "threshold", choices=DECODING_POLICIES, flag="decoding", family_attr="decoding"),
    Knob("threshold", float, "Confidence threshold of the threshold and block policies. Default: the "
         "family's (0.95 for LLaDA2, its generate() default), else 0.9.", 0.9, low=0, low_open=True, high=1,
         flag="threshold", generation_key="threshold", family_attr="threshold"),
    Knob("factor", float, "Fast-dLLM factor rule instead of a fixed threshold (threshold policy).", low=0,
         low_open=True, flag="factor"),
    Knob("canvas_window", int, "Generation positions the threshold policy shows the model, from the current "
         "block's start (blocks are at most this long); -1 shows the whole canvas, so the answer depends on "
         "max_tokens. Default: the checkpoint's generation_config.json max_new_tokens, else 256. The "
         "reference policy always decodes the whole canvas.", CANVAS_WINDOW_DEFAULT, low=-1, forbidden=(0,),
         flag="canvas_window", generation_key="max_new_tokens", context_bound=True),
    Knob("kv_cache", str, "Approximate KV cache for fast decoding: none, prefix or dual.",
         choices=KV_CACHE_MODES, flag="kv_cache", flag_default="none"),
    Knob("kv_cache_vicinity", int, "Positions left of the current block recomputed at every step instead "
         "of read from the cache (0 = Fast-dLLM's cache as published).", low=0, flag="kv_cache_vicinity",
         flag_default=16, context_bound=True),
    Knob("apd_mixture_weight", float, "APD mixture weight R between the diffusion and AR distributions.",
         low=0, high=1, flag="apd_mixture_weight", flag_default=0.7),
    Knob("apd_kv_window", int, "APD window W of recent tokens recomputed without the KV cache.", low=1,
         flag="apd_kv_window", flag_default=16, context_bound=True),
    Knob("apd_max_lookahead", int, "APD maximum lookahead M: masked positions proposed per step.", low=1,
         flag="apd_max_lookahead", flag_default=64, context_bound=True),
)  # fmt: skip

KNOBS_BY_NAME: dict[str, Knob] = {knob.name: knob for knob in KNOBS}
SERVER_KNOBS: dict[str, Knob] = {knob.flag: knob for knob in KNOBS if knob.flag is not None}
"""EngineConfig field -> knob."""


def _annotation(knob: Knob, nullable: bool) -> str:
    return f"{knob.kind.__name__} | None" if nullable else knob.kind.__name__


def _request_fields() -> list[tuple[str, str, Any]]:
    return [(knob.name, _annotation(knob, True), field(default=None, kw_only=True)) for knob in KNOBS]


def _server_fields() -> list[tuple[str, str, Any]]:
    return [
        (
            knob.flag,
            _annotation(knob, knob.flag_default is None),
            field(default=knob.flag_default, kw_only=True),
        )
        for knob in KNOBS
        if knob.flag is not None
    ]


RequestKnobs = make_dataclass("RequestKnobs", _request_fields(), frozen=True, slots=True)
"""Base of SamplingParams: every knob, None = not set by the request."""
ServerKnobs = make_dataclass("ServerKnobs", _server_fields(), slots=True)
"""Base of EngineConfig: the server defaults (--diffusion-steps, --threshold, ...)."""


def check_server_knobs(config: Any) -> None:
    """Refuse at startup a server default that no request could legally use, naming its flag."""
    for name, knob in SERVER_KNOBS.items():
        value = knob.check(getattr(config, name), knob.flag_name or name)
        object.__setattr__(config, name, value)
