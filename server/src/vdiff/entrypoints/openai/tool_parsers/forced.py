"""The answers of a forced tool call, whose text the constraint fixed (chat_completion/tools.py).

vLLM's vllm/parser/abstract_parser.py (DelegatingParser._extract_tool_calls) and
vllm/tool_parsers/streaming.py:
- a named function: the whole answer is the arguments JSON; an empty (or blank) answer means no call;
  streamed, the first fragment carries the name and every later one the new text as arguments.
- "required": the answer is a JSON array of {"name", "parameters"}; each becomes a call whose arguments
  are json.dumps(parameters, ensure_ascii=False); an answer that is not such an array means no calls.
  Streamed, a call goes out once its name is complete, then its "parameters" text as it grows.
Neither has content besides the calls."""

from __future__ import annotations

import json
from dataclasses import dataclass

from vdiff.entrypoints.openai.tool_parsers.base import (
    ArgumentStreams,
    ExtractedToolCalls,
    ParsedCall,
    StreamDelta,
    ToolParser,
)

WHITESPACE = " \t\n\r"


class NamedToolParser(ToolParser):
    def __init__(self, name: str) -> None:
        self.name = name
        self.arguments = ArgumentStreams()

    def extract(self, text: str) -> ExtractedToolCalls:
        if not text.strip():
            return ExtractedToolCalls(False, [], None)
        return ExtractedToolCalls(True, [ParsedCall(self.name, text)], None)

    def stream(self, text: str, *, finished: bool) -> StreamDelta:
        if not text:
            return StreamDelta()
        return StreamDelta(calls=self.arguments.delta(0, self.name, text))


class RequiredToolParser(ToolParser):
    def __init__(self) -> None:
        self.arguments = ArgumentStreams()

    def extract(self, text: str) -> ExtractedToolCalls:
        try:
            items = json.loads(text)
        except ValueError:
            return ExtractedToolCalls(False, [], None)
        if not isinstance(items, list) or not all(
            isinstance(item, dict) and isinstance(item.get("name"), str) for item in items
        ):
            return ExtractedToolCalls(False, [], None)
        calls = [
            ParsedCall(item["name"], json.dumps(item.get("parameters"), ensure_ascii=False)) for item in items
        ]
        return ExtractedToolCalls(bool(calls), calls, None)

    def stream(self, text: str, *, finished: bool) -> StreamDelta:
        delta = StreamDelta()
        for index, call in enumerate(scan_calls(text)):
            arguments = (
                text[call.arguments_start : call.arguments_end] if call.arguments_start is not None else None
            )
            if arguments is not None and call.arguments_end is None:
                arguments = arguments.rstrip(WHITESPACE)
            fragments = self.arguments.delta(index, call.name, arguments)
            if index not in self.arguments.named:
                break
            delta.calls.extend(fragments)
        return delta


@dataclass(slots=True)
class ScannedCall:
    name: str | None = None
    arguments_start: int | None = None
    arguments_end: int | None = None
    """None while the "parameters" value is still open."""


def scan_calls(text: str) -> list[ScannedCall]:
    """The calls of a (partial) `[{"name": ..., "parameters": ...}, ...]` text, without recursion: each
    element's name once its string is closed and where its "parameters" value starts (and ends)."""
    calls: list[ScannedCall] = []
    position = _skip(text, 0)
    if position >= len(text) or text[position] != "[":
        return calls
    position += 1
    while (position := _skip(text, position)) < len(text):
        char = text[position]
        if char == ",":
            position += 1
            continue
        if char != "{":
            return calls
        call = ScannedCall()
        calls.append(call)
        position += 1
        while True:
            position = _skip(text, position)
            if position >= len(text):
                return calls
            char = text[position]
            if char == "}":
                position += 1
                break
            if char == ",":
                position += 1
                continue
            key_end = _string_end(text, position) if char == '"' else None
            if key_end is None:
                return calls
            key = _loads(text[position:key_end])
            position = _skip(text, key_end)
            if position >= len(text) or text[position] != ":":
                return calls
            start = _skip(text, position + 1)
            if start >= len(text):
                return calls
            if key == "parameters":
                call.arguments_start = start
            end = _value_end(text, start)
            if end is None:
                return calls
            if key == "parameters":
                call.arguments_end = end
            elif key == "name" and isinstance(name := _loads(text[start:end]), str):
                call.name = name
            position = end
    return calls


def _skip(text: str, position: int) -> int:
    while position < len(text) and text[position] in WHITESPACE:
        position += 1
    return position


def _string_end(text: str, position: int) -> int | None:
    """The index after the closing quote of the string opened at position, or None if still open."""
    index = position + 1
    while index < len(text):
        char = text[index]
        if char == "\\":
            index += 2
            continue
        if char == '"':
            return index + 1
        index += 1
    return None


def _value_end(text: str, position: int) -> int | None:
    """The index after the JSON value starting at position, or None if it may still continue."""
    char = text[position]
    if char == '"':
        return _string_end(text, position)
    if char in "[{":
        depth, index = 0, position
        while index < len(text):
            char = text[index]
            if char == '"':
                end = _string_end(text, index)
                if end is None:
                    return None
                index = end
                continue
            if char in "[{":
                depth += 1
            elif char in "]}":
                depth -= 1
                if depth == 0:
                    return index + 1
            index += 1
        return None
    index = position
    while index < len(text) and text[index] not in ",}]" + WHITESPACE:
        index += 1
    return index if index < len(text) else None


def _loads(text: str) -> object:
    try:
        return json.loads(text)
    except ValueError:
        return None
