"""The `hermes` tool-call format: `<tool_call>{"name": ..., "arguments": {...}}</tool_call>`, used by
Hermes 2 Pro and the Qwen2.5 family (Dream-7B's chat template asks for exactly this).

vLLM's vllm/tool_parsers/hermes_tool_parser.py (Hermes2ProToolParser): the content is the text before the
first <tool_call>; each region (closed, or open to the end) is JSON with "name" and "arguments"; the
arguments go out as JSON text (json.dumps(..., ensure_ascii=False)); any region that is not such JSON
means no calls, the whole text is content. Streaming re-reads the text so far: content up to the first
tag (holding back a suffix that may start one), each call's name once complete, then its arguments as
they grow (the value found by brace matching, strings respected)."""

from __future__ import annotations

import json
import re

from vdiff.entrypoints.openai.tool_parsers.base import (
    ArgumentStreams,
    ExtractedToolCalls,
    ParsedCall,
    StreamDelta,
    ToolParser,
    partial_tag_overlap,
)

START, END = "<tool_call>", "</tool_call>"
CALL = re.compile(r"<tool_call>(.*?)</tool_call>|<tool_call>(.*)", re.DOTALL)
NAME = re.compile(r'"name"\s*:\s*"([^"]+)"')
ARGUMENTS = re.compile(r'"arguments"\s*:\s*')


class HermesToolParser(ToolParser):
    def __init__(self) -> None:
        self.sent_content = 0
        self.arguments = ArgumentStreams()

    def extract(self, text: str) -> ExtractedToolCalls:
        if START not in text:
            return ExtractedToolCalls(False, [], text)
        calls = []
        for closed, open_ended in CALL.findall(text):
            try:
                call = json.loads(closed or open_ended)
                name, arguments = call["name"], call["arguments"]
            except (ValueError, KeyError, TypeError):
                return ExtractedToolCalls(False, [], text)
            if not isinstance(name, str):
                return ExtractedToolCalls(False, [], text)
            calls.append(ParsedCall(name, json.dumps(arguments, ensure_ascii=False)))
        content = text[: text.index(START)]
        return ExtractedToolCalls(True, calls, content or None)

    def stream(self, text: str, *, finished: bool) -> StreamDelta:
        delta = StreamDelta(content=self._content(text, finished))
        for index, (body, _) in enumerate(regions(text)):
            match = NAME.search(body)
            arguments = arguments_text(body)
            if arguments is None and finished:
                arguments = scalar_arguments(body)
            fragments = self.arguments.delta(index, match.group(1) if match else None, arguments)
            if index not in self.arguments.named:
                break  # call i+1 waits until call i has its name
            delta.calls.extend(fragments)
        return delta

    def _content(self, text: str, finished: bool) -> str | None:
        if START in text:
            sendable = text.index(START)
        else:
            sendable = len(text) - (0 if finished else partial_tag_overlap(text, START))
        if sendable <= self.sent_content:
            return None
        content, self.sent_content = text[self.sent_content : sendable], sendable
        return content


def regions(text: str) -> list[tuple[str, bool]]:
    """Each <tool_call> region's body (stripped) and whether it is closed."""
    found, position = [], 0
    while (start := text.find(START, position)) != -1:
        body_start = start + len(START)
        end = text.find(END, body_start)
        if end != -1:
            found.append((text[body_start:end].strip(), True))
            position = end + len(END)
            continue
        body = text[body_start:]
        overlap = partial_tag_overlap(body, END)
        found.append(((body[:-overlap] if overlap else body).strip(), False))
        break
    return found


def arguments_text(body: str) -> str | None:
    """The "arguments" value's text in a call body, complete or as far as it goes (brace matching)."""
    match = ARGUMENTS.search(body)
    if match is None:
        return None
    raw = body[match.end() :]
    if not raw:
        return None
    if raw[0] not in "{[":
        return None  # a scalar: only the whole answer can tell where it ends
    opening, closing = raw[0], "}" if raw[0] == "{" else "]"
    depth, in_string, escaped = 0, False, False
    for position, char in enumerate(raw):
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char == opening:
            depth += 1
        elif char == closing:
            depth -= 1
            if depth == 0:
                return raw[: position + 1]
    return raw


def scalar_arguments(body: str) -> str | None:
    """A finished call whose arguments are not an object or array: its value as JSON text, if it parses."""
    try:
        call = json.loads(body)
    except ValueError:
        return None
    if not isinstance(call, dict) or "arguments" not in call:
        return None
    return json.dumps(call["arguments"], ensure_ascii=False)
