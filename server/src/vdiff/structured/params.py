"""What a request constrains its output to (vLLM's StructuredOutputsParams, vllm/sampling_params.py).

Exactly one constraint kind is set. `source` is the request field the constraint came from
(`response_format`, `structured_outputs.json`, `guided_regex`, `tool_choice`, ...), so an invalid
schema or regex is refused with a 400 that names what the client actually sent.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from vdiff.errors import VdiffValidationError

KINDS = ("json", "regex", "choice", "grammar", "json_object", "structural_tag")


@dataclass(frozen=True, slots=True, eq=False)
class StructuredOutputsParams:
    json: str | dict[str, Any] | None = None
    """A JSON schema (object or its JSON text)."""
    regex: str | None = None
    choice: tuple[str, ...] | None = None
    grammar: str | None = None
    """A Lark/EBNF grammar, as the backend accepts it."""
    json_object: bool | None = None
    """Any JSON object (response_format json_object)."""
    structural_tag: str | None = None
    disable_any_whitespace: bool = False
    disable_additional_properties: bool = False
    whitespace_pattern: str | None = None
    source: str = "structured_outputs"

    def __post_init__(self) -> None:
        if self.choice is not None:
            if isinstance(self.choice, str) or not all(isinstance(item, str) for item in self.choice):
                raise VdiffValidationError(f"{self.source}: choice must be a list of strings", self.source)
            object.__setattr__(self, "choice", tuple(self.choice))
            if not self.choice:
                raise VdiffValidationError(f"{self.source}: choice must not be empty", self.source)
        if self.json_object is False:
            object.__setattr__(self, "json_object", None)
        kinds = self.kinds
        if len(kinds) != 1:
            found = ", ".join(kinds) or "none"
            raise VdiffValidationError(
                f"{self.source}: exactly one of {', '.join(KINDS)} must be set (found: {found})",
                self.source,
            )

    @property
    def kinds(self) -> list[str]:
        return [kind for kind in KINDS if getattr(self, kind) is not None]

    @property
    def kind(self) -> str:
        return self.kinds[0]
