"""Tool-call parsers for tool_choice "auto" (--tool-call-parser NAME), one module per format, and the
parsers of a forced call's constrained answer (forced.py)."""

from __future__ import annotations

from vdiff.entrypoints.openai.tool_parsers.base import ToolParser
from vdiff.entrypoints.openai.tool_parsers.hermes import HermesToolParser
from vdiff.errors import VdiffValidationError

TOOL_PARSERS: dict[str, type[ToolParser]] = {"hermes": HermesToolParser}
"""--tool-call-parser's choices (vLLM's names)."""


def check_tool_parser(name: str | None, *, auto_tool_choice: bool) -> None:
    """Startup checks of --tool-call-parser / --enable-auto-tool-choice, with vLLM's messages."""
    if auto_tool_choice and not name:
        raise VdiffValidationError(
            "--enable-auto-tool-choice requires --tool-call-parser", "--tool-call-parser"
        )
    if name is not None and name not in TOOL_PARSERS:
        raise VdiffValidationError(
            f"invalid tool call parser: {name} (chose from {{ {','.join(sorted(TOOL_PARSERS))} }})",
            "--tool-call-parser",
        )


__all__ = ["TOOL_PARSERS", "ToolParser", "check_tool_parser"]
