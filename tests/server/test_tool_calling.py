"""Tool calling over HTTP on the demo model: forced calls constrained to the call JSON, auto calls parsed
by the hermes parser, in the message and in streamed deltas (real uvicorn on loopback, the openai client).

Rules matched (vLLM): chat_completion/protocol.py check_tool_usage (messages quoted in the 400s);
renderers/online_renderer.py ('"auto" tool choice requires --enable-auto-tool-choice and --tool-call-parser
to be set'); tool_parsers/utils.py get_json_schema_from_tools ("required": an array of {name, parameters},
anyOf over the tools; named: the function's parameters); chat_completion/serving.py (content "" and the
calls for forced choices; finish_reason "tool_calls" for required/auto, "stop" for a named call; ids
"chatcmpl-tool-..."; a call's first delta has id, type and name, later ones arguments); serve/utils/
tool_calls_utils.py (parallel_tool_calls false keeps call 0); vllm entrypoints' startup checks
("--enable-auto-tool-choice requires --tool-call-parser", "invalid tool call parser: ...").
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import openai
import pytest
from vdiff.config import EngineConfig
from vdiff.demo import demo_model_path, is_demo_model_available
from vdiff.entrypoints import cli
from vdiff.entrypoints.frontend_args import FrontendArgs
from vdiff.entrypoints.launcher import BackgroundServer
from vdiff.errors import VdiffValidationError

pytestmark = pytest.mark.skipif(
    not is_demo_model_available("dream-demo"), reason="the demo checkpoint is not installed"
)

MODEL = "dream-demo"
CHAT = "/v1/chat/completions"
TEMPLATE = (
    "{%- if tools %}<|im_start|>system\n<tools>{% for tool in tools %}{{ tool.function.name }} {% endfor %}"
    "</tools><|im_end|>\n{% endif %}"
    "{%- for message in messages %}"
    "{%- if message.role == 'assistant' and message.tool_calls %}<|im_start|>assistant\n{{ message.content }}"
    "{%- for call in message.tool_calls %}<tool_call>"
    '{"name": "{{ call.function.name }}", "arguments": {{ call.function.arguments | tojson }}}'
    "</tool_call>{%- endfor %}<|im_end|>\n"
    "{%- elif message.role == 'tool' %}<|im_start|>user\n<tool_response>{{ message.content }}"
    "</tool_response><|im_end|>\n"
    "{%- else %}<|im_start|>{{ message.role }}\n{{ message.content }}<|im_end|>\n{%- endif %}"
    "{%- endfor %}{%- if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
"""Qwen2.5's tool template cut to the demo's 256-token context (its tool list by name only): calls as
<tool_call> in the assistant turn, answers as <tool_response>."""
ADD = {
    "type": "function",
    "function": {
        "name": "add",
        "description": "Add two numbers.",
        "parameters": {
            "type": "object",
            "properties": {
                "a": {"type": "integer", "minimum": 0, "maximum": 99},
                "b": {"type": "integer", "minimum": 0, "maximum": 9},
            },
            "required": ["a", "b"],
            "additionalProperties": False,
        },
    },
}
WEATHER = {
    "type": "function",
    "function": {
        "name": "weather",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "enum": ["Paris", "Oslo"]}},
            "required": ["city"],
            "additionalProperties": False,
        },
    },
}
TOOLS = [ADD, WEATHER]
SCHEMAS = {tool["function"]["name"]: tool["function"]["parameters"] for tool in TOOLS}
MESSAGES = [{"role": "user", "content": "Add 43 and 5."}]
NAMED_ADD = {"type": "function", "function": {"name": "add"}}


@pytest.fixture(scope="module")
def server() -> Iterator[BackgroundServer]:
    """vLLM's "required" schema leaves each call object open to extra keys, and the tiny demo model
    wanders into them; disable_additional_properties (vLLM's option) closes them."""
    config = EngineConfig(
        model=str(demo_model_path(MODEL)),
        served_model_names=[MODEL],
        chat_template=TEMPLATE,
        structured_outputs_config={"disable_any_whitespace": True, "disable_additional_properties": True},
    )
    args = FrontendArgs(enable_auto_tool_choice=True, tool_call_parser="hermes")
    with BackgroundServer(config, args) as background:
        yield background


@pytest.fixture(scope="module")
def client(server: BackgroundServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=300)


def post(server: BackgroundServer, **fields: Any) -> httpx.Response:
    body: dict[str, Any] = {"model": MODEL, "messages": MESSAGES, "max_tokens": 64, "tools": TOOLS}
    body.update(fields)
    return httpx.post(server.url + CHAT, json=body, timeout=300)


def ok(server: BackgroundServer, **fields: Any) -> dict[str, Any]:
    response = post(server, **fields)
    assert response.status_code == 200, response.text
    return response.json()


def refused(server: BackgroundServer, param: str, **fields: Any) -> str:
    response = post(server, **fields)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == param, error
    return error["message"]


def check_call(call: dict[str, Any]) -> None:
    assert call["id"].startswith("chatcmpl-tool-") and call["type"] == "function"
    name = call["function"]["name"]
    assert name in SCHEMAS
    jsonschema.validate(json.loads(call["function"]["arguments"]), SCHEMAS[name])


def streamed(client: openai.OpenAI, **fields: Any) -> tuple[list[dict[str, Any]], str | None, str]:
    """The calls a stream's deltas add up to (by index, as clients accumulate them), its finish reason and
    its content."""
    calls: dict[int, dict[str, Any]] = {}
    finish, content = None, ""
    stream = client.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True, **fields)
    for chunk in stream:
        for choice in chunk.choices:
            finish = choice.finish_reason or finish
            content += choice.delta.content or ""
            for delta in choice.delta.tool_calls or []:
                call = calls.setdefault(
                    delta.index, {"id": None, "type": None, "function": {"name": None, "arguments": ""}}
                )
                if delta.id is not None:
                    assert call["id"] is None, "a call's id comes once"
                    call["id"], call["type"] = delta.id, delta.type
                    call["function"]["name"] = delta.function.name
                elif call["id"] is None:
                    raise AssertionError("arguments before the call's first delta")
                call["function"]["arguments"] += (delta.function and delta.function.arguments) or ""
    return [calls[index] for index in sorted(calls)], finish, content


# ------------------------------------------------------------------------------------------------ forced
def test_required_returns_well_formed_tool_calls(server: BackgroundServer) -> None:
    """parallel_tool_calls false bounds the array at one call (maxItems 1), so the answer completes."""
    for seed in range(3):
        body = ok(
            server,
            tool_choice="required",
            parallel_tool_calls=False,
            temperature=0.8,
            seed=seed,
            max_tokens=96,
        )
        choice = body["choices"][0]
        assert choice["message"]["content"] == ""
        assert choice["finish_reason"] == "tool_calls"
        (call,) = choice["message"]["tool_calls"]
        check_call(call)


def test_required_calls_whole_and_streamed_agree(server: BackgroundServer, client: openai.OpenAI) -> None:
    """An open-ended call array (parallel calls allowed): the stream's deltas add up to the calls of the
    whole answer (greedy decoding). Several calls in one answer: the parallel_tool_calls test."""
    body = ok(server, tool_choice="required", max_tokens=96, temperature=0)
    choice = body["choices"][0]
    assert choice["finish_reason"] == "tool_calls" and choice["message"]["content"] == ""
    whole = choice["message"]["tool_calls"]
    assert whole
    for call in whole:
        check_call(call)
    calls, finish, content = streamed(
        client, tools=TOOLS, tool_choice="required", max_tokens=96, temperature=0
    )
    assert finish == "tool_calls" and content == ""
    assert [(c["function"]["name"], json.loads(c["function"]["arguments"])) for c in calls] == [
        (c["function"]["name"], json.loads(c["function"]["arguments"])) for c in whole
    ]
    assert len({call["id"] for call in calls}) == len(calls)


def test_a_cut_required_answer_has_no_calls(server: BackgroundServer) -> None:
    """vLLM: an answer that is not a whole call array (max_tokens cut it) is no calls, finish "length"."""
    choice = ok(server, tool_choice="required", max_tokens=12)["choices"][0]
    assert choice["finish_reason"] == "length"
    assert "tool_calls" not in choice["message"] and choice["message"]["content"] == ""


def test_named_function_returns_its_call(server: BackgroundServer) -> None:
    body = ok(server, tool_choice=NAMED_ADD, n=2, temperature=0.8, seed=1)
    for choice in body["choices"]:
        (call,) = choice["message"]["tool_calls"]
        assert call["function"]["name"] == "add"
        check_call(call)
        assert choice["finish_reason"] == "stop"  # OpenAI: a named call stops
        assert choice["message"]["content"] == ""


def test_forced_calls_stream_as_tool_call_deltas(client: openai.OpenAI) -> None:
    calls, finish, content = streamed(client, tools=TOOLS, tool_choice=NAMED_ADD, max_tokens=64)
    (call,) = calls
    assert call["function"]["name"] == "add" and finish == "stop" and content == ""
    check_call(call)
    calls, finish, content = streamed(client, tools=TOOLS, tool_choice="required", parallel_tool_calls=False)
    (call,) = calls
    assert finish == "tool_calls" and content == ""
    check_call(call)


def test_openai_client_reads_the_calls(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(
        model=MODEL, messages=MESSAGES, tools=TOOLS, tool_choice=NAMED_ADD, max_tokens=64
    )
    (call,) = completion.choices[0].message.tool_calls
    assert call.function.name == "add"
    jsonschema.validate(json.loads(call.function.arguments), SCHEMAS["add"])


# ------------------------------------------------------------------------------------------------ auto
HERMES_CALL = r'<tool_call>\{"name": "add", "arguments": \{"a": [0-9], "b": [0-9]\}\}</tool_call>'


def test_auto_parses_hermes_calls(server: BackgroundServer) -> None:
    """A regex forces the answer into the hermes format, so the parser's extraction is what is tested."""
    body = ok(server, structured_outputs={"regex": "Sure\\. " + HERMES_CALL}, max_tokens=100)
    choice = body["choices"][0]
    (call,) = choice["message"]["tool_calls"]
    check_call(call)
    assert choice["message"]["content"] == "Sure. "
    assert choice["finish_reason"] == "tool_calls"
    plain = ok(server, structured_outputs={"regex": "[a-z]{1,6}"})["choices"][0]
    assert "tool_calls" not in plain["message"] and plain["finish_reason"] in ("stop", "length")
    assert plain["message"]["content"]


def test_auto_streams_hermes_calls(client: openai.OpenAI) -> None:
    calls, finish, content = streamed(
        client,
        tools=TOOLS,
        max_tokens=100,
        extra_body={"structured_outputs": {"regex": "Sure\\. " + HERMES_CALL}},
    )
    assert (finish, content) == ("tool_calls", "Sure. "), calls
    (call,) = calls
    check_call(call)


def test_parallel_tool_calls_false_keeps_one_call(server: BackgroundServer, client: openai.OpenAI) -> None:
    two_calls = {"structured_outputs": {"regex": HERMES_CALL + HERMES_CALL}, "max_tokens": 150}
    both = ok(server, **two_calls)["choices"][0]["message"]["tool_calls"]
    assert len(both) == 2
    (first,) = ok(server, parallel_tool_calls=False, **two_calls)["choices"][0]["message"]["tool_calls"]
    check_call(first)
    calls, finish, _ = streamed(client, tools=TOOLS, parallel_tool_calls=False, extra_body=two_calls)
    (call,) = calls
    check_call(call)
    assert finish == "tool_calls"


def test_none_renders_the_tools_and_returns_text(server: BackgroundServer) -> None:
    body = ok(server, tool_choice="none", return_prompt_text=True, max_tokens=8)
    assert "<tools>add weather </tools>" in body["prompt_text"]
    assert "tool_calls" not in body["choices"][0]["message"]


def test_a_tool_round_trip_renders_the_call_and_the_answer(server: BackgroundServer) -> None:
    history = [
        *MESSAGES,
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"id": "call_1", "type": "function",
                            "function": {"name": "add", "arguments": '{"a": 43, "b": 5}'}}],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "48"},
    ]  # fmt: skip
    body = ok(server, messages=history, tool_choice="none", return_prompt_text=True, max_tokens=8)
    assert '<tool_call>{"name": "add", "arguments": {"a": 43, "b": 5}}</tool_call>' in body["prompt_text"]
    assert "<tool_response>48</tool_response>" in body["prompt_text"]
    bad = [*history[:1], {**history[1], "tool_calls": [{"function": {"name": "add", "arguments": "{"}}]}]
    refused(server, "messages", messages=bad, tool_choice="none")


# ------------------------------------------------------------------------------------------------ refusals
def test_tool_choice_mistakes_are_400_with_vllms_messages(server: BackgroundServer) -> None:
    assert refused(server, "tools", tools=[]).startswith("`tools` must not be an empty array")
    assert refused(server, "tool_choice", tools=None, tool_choice="required") == (
        "When using `tool_choice`, `tools` must be set."
    )
    assert "Invalid value for `tool_choice`: sometimes!" in refused(
        server, "tool_choice", tool_choice="sometimes"
    )
    refused(server, "tool_choice.function", tool_choice={"type": "function"})
    refused(server, "tool_choice.function.name", tool_choice={"type": "function", "function": {}})
    refused(server, "tool_choice.function.name", tool_choice={"type": "function", "function": {"name": ""}})
    assert refused(server, "tool_choice", tool_choice={"type": "function", "function": {"name": "nope"}}) == (
        "The tool specified in `tool_choice` does not match any of the specified `tools`"
    )
    refused(server, "tools.0.function.name", tools=[{"type": "function", "function": {}}])
    refused(server, "tools.0.type", tools=[{"type": "retrieval", "function": {"name": "f"}}])
    # a forced call is a constraint: another one with it is a 400 (vLLM: "not both")
    refused(server, "tool_choice", tool_choice=NAMED_ADD, structured_outputs={"regex": "a"})
    refused(server, "tool_choice", tool_choice="required", response_format={"type": "json_object"})
    conflicting = [
        {"type": "function", "function": {"name": n, "parameters": {"$defs": {"X": {"type": t}}}}}
        for n, t in (("f", "string"), ("g", "integer"))
    ]
    refused(server, "tools", tools=conflicting, tool_choice="required")
    deep: dict[str, Any] = {"type": "string"}
    for _ in range(70):
        deep = {"type": "object", "properties": {"a": deep}}
    deep_tool = [{"type": "function", "function": {"name": "f", "parameters": deep}}]
    refused(server, "tools", tools=deep_tool, tool_choice="none")


@pytest.mark.slow  # starts a server of its own
def test_auto_needs_the_flags_and_none_may_exclude_the_tools(tmp_path: Path) -> None:
    config = EngineConfig(
        model=str(demo_model_path(MODEL)), served_model_names=[MODEL], chat_template=TEMPLATE
    )
    args = FrontendArgs(tool_call_parser="hermes", exclude_tools_when_tool_choice_none=True)
    with BackgroundServer(config, args) as plain:
        # vLLM's serving_chat: tools is None for the template when tool_choice is "none" and the flag is on
        base = {
            "model": MODEL,
            "messages": MESSAGES,
            "tools": TOOLS,
            "return_prompt_text": True,
            "max_tokens": 2,
        }
        none = httpx.post(plain.url + CHAT, json={**base, "tool_choice": "none"}, timeout=300).json()
        assert "<tools>" not in none["prompt_text"]
        named = httpx.post(plain.url + CHAT, json={**base, "tool_choice": NAMED_ADD}, timeout=300).json()
        assert "<tools>add weather </tools>" in named["prompt_text"]
        for fields in ({"tools": TOOLS}, {"tools": TOOLS, "tool_choice": "auto"}):
            response = httpx.post(plain.url + CHAT, json={"model": MODEL, "messages": MESSAGES, **fields})
            assert response.status_code == 400
            assert response.json()["error"]["message"] == (
                '"auto" tool choice requires --enable-auto-tool-choice and --tool-call-parser to be set'
            )
        forced = {"model": MODEL, "messages": MESSAGES, "tools": TOOLS, "tool_choice": NAMED_ADD}
        assert httpx.post(plain.url + CHAT, json=forced, timeout=300).status_code == 200  # needs no flag


def test_parser_flags_are_checked_at_startup(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(VdiffValidationError, match="invalid tool call parser: nope"):
        FrontendArgs(tool_call_parser="nope")
    with pytest.raises(VdiffValidationError, match="--enable-auto-tool-choice requires --tool-call-parser"):
        FrontendArgs(enable_auto_tool_choice=True)
    model_dir = tmp_path / "model"
    model_dir.mkdir()  # empty: had anything tried to load it, the error would be another one
    with pytest.raises(SystemExit) as exit_info:
        cli.serve([str(model_dir), "--enable-auto-tool-choice", "--tool-call-parser", "nope"], {})
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "--tool-call-parser" in err and "hermes" in err and "Traceback" not in err


def test_langchain_bind_tools_reads_the_calls(server: BackgroundServer) -> None:
    langchain_openai = pytest.importorskip("langchain_openai")
    llm = langchain_openai.ChatOpenAI(
        model=MODEL,
        base_url=server.url + "/v1",
        api_key="unused",
        max_tokens=64,
        temperature=0,
        max_retries=0,
    )
    message = llm.bind_tools([ADD], tool_choice="add").invoke("Add 43 and 5.")
    (call,) = message.tool_calls
    assert call["name"] == "add" and call["id"].startswith("chatcmpl-tool-")
    jsonschema.validate(call["args"], SCHEMAS["add"])
