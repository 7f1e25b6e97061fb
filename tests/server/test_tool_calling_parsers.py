"""The tool-call parsers and the forced-call schema, without a server.

Rules matched: vllm/tool_parsers/hermes_tool_parser.py (content before the first <tool_call>, each region
JSON with "name" and "arguments", arguments re-serialized with json.dumps(ensure_ascii=False), a region
that is not such JSON means no calls and the whole text is content; streaming holds back a suffix that
may start a tag and sends a call's name before its arguments); vllm/parser/abstract_parser.py ("required":
a JSON array of {name, parameters}; named: the answer is the arguments); vllm/tool_parsers/utils.py
get_json_schema_from_tools (the schema shapes, $defs hoisted, conflicting $defs refused).
"""

from __future__ import annotations

import json

import jsonschema
import pytest
from vdiff.entrypoints.openai.chat_completion.tools import ChatTool, ToolChoice, tool_call_schema
from vdiff.entrypoints.openai.tool_parsers import TOOL_PARSERS, check_tool_parser
from vdiff.entrypoints.openai.tool_parsers.base import ToolParser
from vdiff.entrypoints.openai.tool_parsers.forced import NamedToolParser, RequiredToolParser
from vdiff.entrypoints.openai.tool_parsers.hermes import HermesToolParser
from vdiff.errors import VdiffValidationError

TWO_CALLS = (
    "Let me check. "
    '<tool_call>\n{"name": "weather", "arguments": {"city": "Zürich", "note": "a } and a \\" inside"}}\n'
    "</tool_call>"
    '<tool_call>{"name": "add", "arguments": {"a": 1, "b": [2, {"c": 3}]}}</tool_call>'
)


def replay(parser: ToolParser, text: str, step: int) -> tuple[str, dict[int, dict[str, str]]]:
    """Feed text as a growing prefix, `step` characters at a time; what the deltas add up to."""
    content, calls = "", {}
    cuts = [*range(step, len(text), step), len(text)]
    for cut in cuts:
        delta = parser.stream(text[:cut], finished=cut == len(text))
        content += delta.content or ""
        for fragment in delta.calls:
            call = calls.setdefault(fragment.index, {"name": None, "arguments": ""})
            if fragment.name is not None:
                assert call["name"] is None, "a call's name comes once"
                call["name"] = fragment.name
            else:
                assert call["name"] is not None, "arguments before the name"
            call["arguments"] += fragment.arguments or ""
    return content, calls


# ------------------------------------------------------------------------------------------------ hermes
def test_hermes_extracts_complete_calls() -> None:
    extracted = HermesToolParser().extract(TWO_CALLS)
    assert extracted.tools_called and extracted.content == "Let me check. "
    assert [(call.name, json.loads(call.arguments)) for call in extracted.calls] == [
        ("weather", {"city": "Zürich", "note": 'a } and a " inside'}),
        ("add", {"a": 1, "b": [2, {"c": 3}]}),
    ]
    assert "Zürich" in extracted.calls[0].arguments  # ensure_ascii=False
    only_call = HermesToolParser().extract('<tool_call>{"name": "f", "arguments": {}}</tool_call>')
    assert only_call.content is None and only_call.calls[0].arguments == "{}"
    open_ended = HermesToolParser().extract('<tool_call>{"name": "f", "arguments": {"x": 1}}')
    assert open_ended.tools_called and json.loads(open_ended.calls[0].arguments) == {"x": 1}


@pytest.mark.parametrize(
    "text",
    [
        "no calls at all",
        "<tool_call>{not json}</tool_call>",
        '<tool_call>{"name": "f"}</tool_call>',  # no arguments
        '<tool_call>{"arguments": {}}</tool_call>',  # no name
        '<tool_call>{"name": 3, "arguments": {}}</tool_call>',
        '<tool_call>["f", {}]</tool_call>',
        '<tool_call>{"name": "f", "arguments": {"x": 1</tool_call>',
    ],
)
def test_hermes_malformed_means_no_calls_and_the_text_as_content(text: str) -> None:
    extracted = HermesToolParser().extract(text)
    assert not extracted.tools_called and extracted.calls == [] and extracted.content == text


@pytest.mark.parametrize("step", [1, 2, 3, 7, 1000])
def test_hermes_streaming_adds_up_to_the_whole_answer(step: int) -> None:
    content, calls = replay(HermesToolParser(), TWO_CALLS, step)
    assert content == "Let me check. "
    whole = HermesToolParser().extract(TWO_CALLS).calls
    assert [calls[index]["name"] for index in sorted(calls)] == [call.name for call in whole]
    for index, call in enumerate(whole):
        assert json.loads(calls[index]["arguments"]) == json.loads(call.arguments)


def test_hermes_streaming_holds_back_a_partial_tag() -> None:
    parser = HermesToolParser()
    assert parser.stream("Hi <tool", finished=False).content == "Hi "
    assert parser.stream("Hi <tool_c", finished=False).empty
    delta = parser.stream('Hi <tool_call>{"na', finished=False)
    assert delta.empty  # the name is not complete yet
    delta = parser.stream('Hi <tool_call>{"name": "f", "arguments": {"x"', finished=False)
    assert [(f.index, f.name, f.arguments) for f in delta.calls] == [(0, "f", None), (0, None, '{"x"')]
    # a held-back suffix that never became a tag is sent when the answer ends
    plain = HermesToolParser()
    assert plain.stream("a <tool", finished=False).content == "a "
    assert plain.stream("a <tool", finished=True).content == "<tool"


def test_hermes_streams_scalar_arguments_when_finished() -> None:
    content, calls = replay(HermesToolParser(), '<tool_call>{"name": "f", "arguments": 5}</tool_call>', 4)
    assert content == "" and calls == {0: {"name": "f", "arguments": "5"}}


# ------------------------------------------------------------------------------------------------ forced
def test_named_parser() -> None:
    extracted = NamedToolParser("add").extract('{"a": 1}')
    assert [(call.name, call.arguments) for call in extracted.calls] == [("add", '{"a": 1}')]
    assert extracted.content is None
    assert not NamedToolParser("add").extract("  ").tools_called
    content, calls = replay(NamedToolParser("add"), '{"a": 1, "b": "x y"}', 3)
    assert content == "" and calls == {0: {"name": "add", "arguments": '{"a": 1, "b": "x y"}'}}


REQUIRED = (
    '[{"name": "add", "parameters": {"a": 1, "s": "]}\\"{"}}, '
    '{"parameters": {"city": "Oslo"}, "name": "weather"}]'
)


def test_required_parser_whole_answer() -> None:
    extracted = RequiredToolParser().extract(REQUIRED)
    assert [(call.name, json.loads(call.arguments)) for call in extracted.calls] == [
        ("add", {"a": 1, "s": ']}"{'}),
        ("weather", {"city": "Oslo"}),
    ]
    for malformed in ("", "[", '{"name": "add"}', '[{"parameters": {}}]', "[1]"):
        assert RequiredToolParser().extract(malformed).calls == []


@pytest.mark.parametrize("step", [1, 2, 5, 1000])
def test_required_parser_streaming_adds_up(step: int) -> None:
    content, calls = replay(RequiredToolParser(), REQUIRED, step)
    assert content == ""
    assert calls[0]["name"] == "add" and json.loads(calls[0]["arguments"]) == {"a": 1, "s": ']}"{'}
    assert calls[1]["name"] == "weather" and json.loads(calls[1]["arguments"]) == {"city": "Oslo"}


def test_required_parser_streaming_survives_garbage_and_deep_text() -> None:
    for text in ("not json", "[[[[" * 5000, '[{"name": 1, "parameters": {}}]', '[{"x": "unterminated'):
        content, calls = replay(RequiredToolParser(), text, 97)
        assert content == "" and calls == {}


# ------------------------------------------------------------------------------------------------ schema
TOOLS = [
    ChatTool.model_validate(
        {"type": "function", "function": {"name": "add", "parameters": {
            "type": "object", "properties": {"a": {"$ref": "#/$defs/Small"}}, "required": ["a"],
            "$defs": {"Small": {"type": "integer", "maximum": 9}},
        }}}
    ),
    ChatTool.model_validate({"type": "function", "function": {"name": "ping"}}),
]  # fmt: skip


def test_required_schema_accepts_calls_and_rejects_the_rest() -> None:
    schema = tool_call_schema(TOOLS, ToolChoice("required"), parallel=True)
    assert schema["$defs"] == {"Small": {"type": "integer", "maximum": 9}} and "maxItems" not in schema
    jsonschema.validate([{"name": "add", "parameters": {"a": 3}}, {"name": "ping", "parameters": {}}], schema)
    for wrong in ([], [{"name": "add", "parameters": {"a": 30}}], [{"name": "nope", "parameters": {}}],
                  [{"name": "add"}]):  # fmt: skip
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(wrong, schema)
    assert TOOLS[0].function.parameters is not None and "$defs" in TOOLS[0].function.parameters  # not mutated
    single = tool_call_schema(TOOLS, ToolChoice("required"), parallel=False)
    assert single["maxItems"] == 1


def test_named_and_unforced_schemas() -> None:
    assert tool_call_schema(TOOLS, ToolChoice("named", "add"), parallel=True) == TOOLS[0].function.parameters
    assert tool_call_schema(TOOLS, ToolChoice("named", "ping"), parallel=True) == {
        "type": "object",
        "properties": {},
    }
    assert tool_call_schema(TOOLS, ToolChoice("auto"), parallel=True) is None
    assert tool_call_schema(TOOLS, ToolChoice("none"), parallel=True) is None
    clash = [
        ChatTool.model_validate(
            {"type": "function", "function": {"name": n, "parameters": {"$defs": {"X": d}}}}
        )
        for n, d in (("f", {"type": "string"}), ("g", {"type": "integer"}))
    ]
    with pytest.raises(VdiffValidationError, match="multiple schemas"):
        tool_call_schema(clash, ToolChoice("required"), parallel=True)


def test_parser_registry_and_startup_checks() -> None:
    assert set(TOOL_PARSERS) == {"hermes"}
    check_tool_parser("hermes", auto_tool_choice=True)
    check_tool_parser(None, auto_tool_choice=False)
    with pytest.raises(
        VdiffValidationError, match=r"invalid tool call parser: x \(chose from \{ hermes \}\)"
    ):
        check_tool_parser("x", auto_tool_choice=False)
    with pytest.raises(VdiffValidationError, match="requires --tool-call-parser"):
        check_tool_parser(None, auto_tool_choice=True)
