"""Chat `tools` and `tool_choice`: validation with vLLM's messages, and the JSON schema a forced call is
constrained to.

vLLM (vllm/entrypoints/openai/chat_completion/protocol.py: check_tool_usage; vllm/tool_parsers/utils.py:
get_json_schema_from_tools; vllm/renderers/online_renderer.py: render_chat):
- `tools: []` is a 400; tools without tool_choice mean "auto"; a tool_choice other than "none" needs tools.
- "none": the tools are rendered by the chat template, nothing is parsed or constrained.
- "auto": needs --enable-auto-tool-choice and --tool-call-parser; the parser extracts calls from free text.
- "required": the output is constrained to a JSON array (minItems 1) of {"name", "parameters"} objects,
  anyOf over the tools (each tool's $defs hoisted to the top); parallel_tool_calls false adds maxItems 1
  (vLLM's newer grammar path limits the call count the same way).
- a named function: the output is constrained to that function's parameters schema.
vLLM 0.33 also demands --tool-call-parser for "required" and a named function; vdiff does not, because the
constraint alone fixes the output format (docs/vllm-compatibility.md).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Literal

from vdiff.entrypoints.openai.common import OpenAIBaseModel
from vdiff.entrypoints.openai.structured_fields import check_schema
from vdiff.errors import VdiffValidationError
from vdiff.structured.params import StructuredOutputsParams

ToolMode = Literal["none", "auto", "required", "named"]
AUTO_NEEDS_FLAGS = '"auto" tool choice requires --enable-auto-tool-choice and --tool-call-parser to be set'
CORRECT_USAGE = 'Correct usage: `{"type": "function", "function": {"name": "my_function"}}`'
EMPTY_PARAMETERS = {"type": "object", "properties": {}}


class FunctionDefinition(OpenAIBaseModel):
    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class ChatTool(OpenAIBaseModel):
    type: Literal["function"] = "function"
    function: FunctionDefinition

    def template_dict(self) -> dict[str, Any]:
        """What the chat template sees (vLLM: tool.model_dump(), strict only when set)."""
        function: dict[str, Any] = {
            "name": self.function.name,
            "description": self.function.description,
            "parameters": self.function.parameters,
        }
        if self.function.strict is not None:
            function["strict"] = self.function.strict
        return {"type": self.type, "function": function}


@dataclass(frozen=True, slots=True)
class ToolChoice:
    mode: ToolMode
    name: str | None = None
    """The function of a named tool_choice."""


def resolve_tool_choice(
    tools: list[ChatTool] | None, tool_choice: Any, sent: bool, *, auto_enabled: bool
) -> ToolChoice:
    """vLLM's check_tool_usage; an explicit null behaves as vLLM's serving does (auto parsing when the
    server has auto tool choice on, else plain content)."""
    if tools == []:
        raise VdiffValidationError(
            "`tools` must not be an empty array. Either provide at least one tool or omit the field "
            "entirely.",
            "tools",
        )
    if not sent:
        return ToolChoice("auto" if tools else "none")
    if tool_choice is None:
        return ToolChoice("auto" if tools and auto_enabled else "none")
    if tool_choice == "none":
        return ToolChoice("none")
    if tools is None:
        raise VdiffValidationError("When using `tool_choice`, `tools` must be set.", "tool_choice")
    if tool_choice in ("auto", "required"):
        return ToolChoice(tool_choice)
    if not isinstance(tool_choice, dict):
        raise VdiffValidationError(
            f'Invalid value for `tool_choice`: {tool_choice}! Only named tools, "none", "auto" or '
            '"required" are supported.',
            "tool_choice",
        )
    if tool_choice.get("type", "function") != "function":
        raise VdiffValidationError(
            f"Invalid `type` in `tool_choice`: {tool_choice.get('type')!r}! {CORRECT_USAGE}",
            "tool_choice.type",
        )
    function = tool_choice.get("function")
    if not isinstance(function, dict):
        raise VdiffValidationError(
            f"Invalid value for `function`: `{function}` in `tool_choice`! {CORRECT_USAGE}",
            "tool_choice.function",
        )
    if "name" not in function:
        raise VdiffValidationError(
            f"Expected field `name` in `function` in `tool_choice`! {CORRECT_USAGE}",
            "tool_choice.function.name",
        )
    name = function["name"]
    if not isinstance(name, str) or not name:
        raise VdiffValidationError(
            f"Invalid `name` in `function`: `{name}` in `tool_choice`! {CORRECT_USAGE}",
            "tool_choice.function.name",
        )
    if not any(tool.function.name == name for tool in tools):
        raise VdiffValidationError(
            "The tool specified in `tool_choice` does not match any of the specified `tools`", "tool_choice"
        )
    return ToolChoice("named", name)


def tool_call_schema(tools: list[ChatTool], choice: ToolChoice, *, parallel: bool) -> dict[str, Any] | None:
    """The JSON schema a forced call is constrained to (None for "none" and "auto")."""
    if choice.mode == "named":
        (tool,) = [tool for tool in tools if tool.function.name == choice.name][:1]
        parameters = tool.function.parameters
        return check_schema(parameters, "tools") if parameters else dict(EMPTY_PARAMETERS)  # type: ignore[return-value]
    if choice.mode != "required":
        return None
    definitions: dict[str, Any] = {}
    alternatives = []
    for tool in tools:
        parameters = copy.deepcopy(tool.function.parameters) if tool.function.parameters else None
        if parameters is not None:
            check_schema(parameters, "tools", allow_text=False)
            for name, schema in (parameters.pop("$defs", None) or {}).items():
                if name in definitions and definitions[name] != schema:
                    raise VdiffValidationError(
                        f"Tool definition '{name}' has multiple schemas, which is not supported.", "tools"
                    )
                definitions[name] = schema
        alternatives.append(
            {
                "properties": {
                    "name": {"type": "string", "enum": [tool.function.name]},
                    "parameters": parameters or dict(EMPTY_PARAMETERS),
                },
                "required": ["name", "parameters"],
            }
        )
    schema: dict[str, Any] = {
        "type": "array",
        "minItems": 1,
        "items": {"type": "object", "anyOf": alternatives},
    }
    if not parallel:
        schema["maxItems"] = 1
    if definitions:
        schema["$defs"] = definitions
    return schema


def tool_constraint(
    tools: list[ChatTool] | None, choice: ToolChoice, *, parallel: bool
) -> StructuredOutputsParams | None:
    if not tools:
        return None
    schema = tool_call_schema(tools, choice, parallel=parallel)
    return None if schema is None else StructuredOutputsParams(json=schema, source="tool_choice")
