"""A chat answer as `tool_calls`: the whole message, or the stream deltas, with vLLM's finish reasons.

vLLM's vllm/entrypoints/openai/chat_completion/serving.py (chat_completion_full_generator and
chat_completion_stream_generator) and vllm/entrypoints/serve/utils/tool_calls_utils.py:
- forced calls ("required", named) answer with content "" and the calls; "auto" with the parser's content
  (null when empty) and calls, or the plain text when it found none.
- finish_reason "tool_calls": whole answers for "required" that stopped and for "auto" that called tools;
  streams when a call was streamed and the choice was not named and stopped. A named call keeps "stop".
- parallel_tool_calls false keeps the first call only (index 0 in deltas).
- call ids are "chatcmpl-tool-<random hex>" (make_tool_call_id); a call's first delta carries its id,
  type "function" and name, later ones only arguments.
"""

from __future__ import annotations

import uuid

from vdiff.entrypoints.openai.chat_completion.protocol import (
    ChatMessageOut,
    DeltaFunctionCall,
    DeltaMessage,
    DeltaToolCall,
    FunctionCall,
    ToolCall,
)
from vdiff.entrypoints.openai.chat_completion.tools import ToolChoice
from vdiff.entrypoints.openai.tool_parsers import TOOL_PARSERS, ToolParser
from vdiff.entrypoints.openai.tool_parsers.forced import NamedToolParser, RequiredToolParser


def make_tool_call_id() -> str:
    return f"chatcmpl-tool-{uuid.uuid4().hex}"


def new_tool_parser(choice: ToolChoice, auto_parser: str | None) -> ToolParser | None:
    """A fresh parser for one choice's answer (None: the answer is plain content)."""
    if choice.mode == "named":
        return NamedToolParser(choice.name or "")
    if choice.mode == "required":
        return RequiredToolParser()
    if choice.mode == "auto" and auto_parser is not None:
        return TOOL_PARSERS[auto_parser]()
    return None


def final_message(
    role: str,
    echo: str,
    text: str,
    choice: ToolChoice,
    parser: ToolParser,
    finish_reason: str | None,
    *,
    parallel: bool,
) -> tuple[ChatMessageOut, str | None]:
    extracted = parser.extract(text)
    calls = [
        ToolCall(id=make_tool_call_id(), function=FunctionCall(name=call.name, arguments=call.arguments))
        for call in extracted.calls
    ]
    if not parallel:
        calls = calls[:1]
    if choice.mode == "auto":
        content = extracted.content if extracted.tools_called else text
        called = bool(calls)
    else:
        content, called = "", choice.mode == "required" and finish_reason == "stop"
    if echo:
        content = echo + (content or "")
    return ChatMessageOut(
        role=role, content=content, tool_calls=calls
    ), "tool_calls" if called else finish_reason


class ToolStream:
    """One choice's stream: each output's text so far becomes a delta of content and call fragments."""

    def __init__(self, choice: ToolChoice, parser: ToolParser, *, parallel: bool) -> None:
        self.choice = choice
        self.parser = parser
        self.parallel = parallel
        self.ids: dict[int, str] = {}
        self.streamed = False

    def delta(self, text: str, *, finished: bool) -> DeltaMessage | None:
        parsed = self.parser.stream(text, finished=finished)
        calls: list[DeltaToolCall] = []
        for fragment in parsed.calls:
            if not self.parallel and fragment.index != 0:
                continue
            if calls and calls[-1].index == fragment.index and fragment.name is None:
                call = calls.pop()  # a call's name and its first arguments go out as one delta
            else:
                call = DeltaToolCall(index=fragment.index)
            if fragment.name is not None:
                call.id = self.ids.setdefault(fragment.index, make_tool_call_id())
                call.type = "function"
                call.function = DeltaFunctionCall(name=fragment.name)
            if fragment.arguments is not None:
                if call.function is None:
                    call.function = DeltaFunctionCall(arguments=fragment.arguments)
                else:
                    call.function.arguments = fragment.arguments
            calls.append(call)
        if not calls and not parsed.content:
            return None
        self.streamed = self.streamed or bool(calls)
        delta = DeltaMessage()
        if parsed.content:
            delta.content = parsed.content
        if calls:
            delta.tool_calls = calls
        return delta

    def finish_reason(self, reason: str | None) -> str | None:
        if self.streamed and self.choice.mode != "named" and reason == "stop":
            return "tool_calls"
        return reason
