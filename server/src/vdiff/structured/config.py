"""--structured-outputs-config: vLLM's StructuredOutputsConfig (vllm/config/structured_outputs.py), the
keys vdiff honours, and the refusal of the rest."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from vdiff.errors import VdiffValidationError

FLAG = "--structured-outputs-config"
BACKENDS = ("auto", "guidance", "xgrammar", "outlines", "lm-format-enforcer")
"""vLLM's backend names; vdiff ships `guidance` (llguidance), and "auto" picks it."""
AVAILABLE = ("guidance",)
UNSUPPORTED_KEYS = {
    "reasoning_parser": "reasoning parsers are not supported by vdiff",
    "reasoning_parser_plugin": "reasoning parsers are not supported by vdiff",
    "enable_in_reasoning": "reasoning parsers are not supported by vdiff",
}


@dataclass(frozen=True, slots=True)
class StructuredOutputsConfig:
    backend: str = "guidance"
    """The resolved backend ("auto" becomes "guidance": measured in bench/structured_backends.py)."""
    disable_fallback: bool = False
    """vLLM: do not fall back to another backend on error. vdiff never falls back (an invalid
    constraint is a 400), so both values behave as vLLM's True."""
    disable_any_whitespace: bool = False
    """JSON outputs carry no whitespace between tokens (vLLM's meaning)."""
    disable_additional_properties: bool = False
    """JSON schemas without `additionalProperties` get `false` (vLLM's guidance-backend meaning)."""

    @classmethod
    def from_flag(cls, value: dict[str, Any] | None) -> StructuredOutputsConfig:
        """Parse the flag's JSON object; an unknown key or an unavailable backend fails at startup."""
        if value is not None and not isinstance(value, dict):
            raise VdiffValidationError(f"{FLAG} must be a JSON object", FLAG)
        value = dict(value or {})
        for key, reason in UNSUPPORTED_KEYS.items():
            if value.get(key) not in (None, "", False):
                raise VdiffValidationError(f"{FLAG}: {key}: {reason}", FLAG)
            value.pop(key, None)
        known = {"backend", "disable_fallback", "disable_any_whitespace", "disable_additional_properties"}
        unknown = sorted(set(value) - known)
        if unknown:
            raise VdiffValidationError(
                f"{FLAG}: unknown key(s) {', '.join(unknown)} (known: {', '.join(sorted(known))})", FLAG
            )
        backend = value.get("backend", "auto")
        if backend not in BACKENDS:
            raise VdiffValidationError(
                f"{FLAG}: backend {backend!r} is not one of {', '.join(BACKENDS)}", FLAG
            )
        if backend == "auto":
            backend = "guidance"
        if backend not in AVAILABLE:
            raise VdiffValidationError(
                f"{FLAG}: backend {backend!r} is not available in vdiff (available: auto, "
                f"{', '.join(AVAILABLE)}; see docs/structured-outputs.md for why llguidance)",
                FLAG,
            )
        for key in known - {"backend"}:
            if key in value and not isinstance(value[key], bool):
                raise VdiffValidationError(f"{FLAG}: {key} must be true or false", FLAG)
        return cls(
            backend=backend,
            disable_fallback=bool(value.get("disable_fallback", False)),
            disable_any_whitespace=bool(value.get("disable_any_whitespace", False)),
            disable_additional_properties=bool(value.get("disable_additional_properties", False)),
        )
