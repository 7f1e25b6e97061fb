"""Structured outputs over HTTP, with vLLM's fields and meaning, on the demo model (real uvicorn on
loopback, the real openai client, LangChain and LiteLLM).

Rules matched (vLLM 0.33, vllm/entrypoints/generate/base/protocol.py structured_outputs_from_response_format
and the chat/completion protocol.py validators): response_format json_object -> json_object, json_schema ->
json (its "schema"; "json_schema" missing is a 400 with vLLM's message), structural_tag -> structural_tag;
structured_outputs carries json / regex / choice / grammar / json_object / structural_tag and exactly one
of them; both endpoints read both fields; a schema nests at most 64 levels. vLLM <= 0.11's guided_json /
guided_regex / guided_choice / guided_grammar / guided_whitespace_pattern keep their meaning (vLLM 0.33
ignores them: "accepted and ignored" is a defect here), and request-level backend selection is refused
unless it names the server's backend (vLLM v1's processor). Two constraints at once are a 400 naming the
second field; nothing malformed is a 5xx.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from typing import Any

import httpx
import jsonschema
import openai
import pytest
from pydantic import BaseModel, Field
from vdiff.config import EngineConfig
from vdiff.demo import demo_model_path, is_demo_model_available
from vdiff.entrypoints.frontend_args import FrontendArgs
from vdiff.entrypoints.launcher import BackgroundServer
from vdiff.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest
from vdiff.entrypoints.openai.completion.protocol import CompletionRequest

from bench.tasks import eval_set

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no fetch of the price list at import

pytestmark = pytest.mark.skipif(not is_demo_model_available(), reason="the demo checkpoint is not installed")

MODEL = "llada-demo"
CHAT, COMPLETIONS = "/v1/chat/completions", "/v1/completions"
CHAT_SLOW = pytest.param(CHAT, marks=pytest.mark.slow)
"""For the long refusal tables: the same checks run by default on /v1/completions."""
ANSWER_SCHEMA = {
    "type": "object",
    "properties": {"answer": {"type": "string", "pattern": "^[0-9]{1,4}$"}, "sure": {"type": "boolean"}},
    "required": ["answer", "sure"],
    "additionalProperties": False,
}
"""A finite language: every constrained answer completes well within MAX_TOKENS."""
MAX_TOKENS = 48


class Answer(BaseModel):
    answer: str = Field(pattern=r"^[0-9]{1,4}$")
    sure: bool


@pytest.fixture(scope="module")
def server() -> Iterator[BackgroundServer]:
    """JSON without free whitespace (--structured-outputs-config), so clients that cannot send
    structured_outputs options (openai parse, LangChain, LiteLLM) still get compact answers."""
    config = EngineConfig(
        model=str(demo_model_path(MODEL)),
        served_model_names=[MODEL],
        structured_outputs_config={"disable_any_whitespace": True},
    )
    with BackgroundServer(config, FrontendArgs()) as background:
        yield background


@pytest.fixture(scope="module")
def client(server: BackgroundServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=300)


def post(server: BackgroundServer, path: str, **fields: Any) -> httpx.Response:
    body: dict[str, Any] = {"model": MODEL, "max_tokens": MAX_TOKENS, "temperature": 0}
    body.update({"prompt": "Add 43 and 5."} if path == COMPLETIONS else {"messages": chat("Add 43 and 5.")})
    body.update(fields)
    return httpx.post(server.url + path, json=body, timeout=300)


def ok(server: BackgroundServer, path: str, **fields: Any) -> dict[str, Any]:
    response = post(server, path, **fields)
    assert response.status_code == 200, response.text
    return response.json()


def refused(server: BackgroundServer, path: str, param: str, **fields: Any) -> str:
    response = post(server, path, **fields)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == param, error
    return error["message"]


def chat(prompt: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": prompt}]


def texts(body: dict[str, Any]) -> list[str]:
    return [choice.get("text", (choice.get("message") or {}).get("content")) for choice in body["choices"]]


def demo_prompts(num: int) -> list[str]:
    return [case.prompt for task in ("add", "max", "copy", "count") for case in eval_set(task, num)]


# ------------------------------------------------------------------------------------------------ mapping
def test_structured_outputs_fields_map_onto_the_engine() -> None:
    """Each field lands on StructuredOutputsParams with its kind and the field it came from (no server)."""
    cases = [
        ({"structured_outputs": {"regex": "[0-9]+"}}, "regex", "[0-9]+", "structured_outputs.regex"),
        ({"structured_outputs": {"choice": ["a", "b"]}}, "choice", ("a", "b"), "structured_outputs.choice"),
        ({"structured_outputs": {"json": ANSWER_SCHEMA}}, "json", ANSWER_SCHEMA, "structured_outputs.json"),
        (
            {"structured_outputs": {"grammar": 'start: "a"'}},
            "grammar",
            'start: "a"',
            "structured_outputs.grammar",
        ),
        (
            {"structured_outputs": {"json_object": True}},
            "json_object",
            True,
            "structured_outputs.json_object",
        ),
        ({"response_format": {"type": "json_object"}}, "json_object", True, "response_format"),
        (
            {
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {"name": "a", "schema": ANSWER_SCHEMA},
                }
            },
            "json",
            ANSWER_SCHEMA,
            "response_format",
        ),
        ({"guided_json": ANSWER_SCHEMA}, "json", ANSWER_SCHEMA, "guided_json"),
        ({"guided_regex": "x+"}, "regex", "x+", "guided_regex"),
        ({"guided_choice": ["p", "q"]}, "choice", ("p", "q"), "guided_choice"),
        ({"guided_grammar": 'start: "b"'}, "grammar", 'start: "b"', "guided_grammar"),
    ]
    for fields, kind, value, source in cases:
        for request in (
            CompletionRequest(prompt="hi", **fields),
            ChatCompletionRequest(messages=chat("hi"), **fields),
        ):
            request.check_supported()
            params = request.to_sampling_params(8).structured_outputs
            assert params is not None and params.kind == kind and params.source == source, fields
            assert getattr(params, kind) == value
    options = CompletionRequest(
        prompt="hi",
        structured_outputs={
            "json": {"type": "object"},
            "disable_any_whitespace": True,
            "whitespace_pattern": " ",
        },
    ).to_sampling_params(8)
    assert options.structured_outputs.disable_any_whitespace
    assert options.structured_outputs.whitespace_pattern == " "
    legacy = CompletionRequest(prompt="hi", guided_json={"type": "object"}, guided_whitespace_pattern="[ ]?")
    assert legacy.to_sampling_params(8).structured_outputs.whitespace_pattern == "[ ]?"
    for plain in ({}, {"response_format": {"type": "text"}}, {"structured_outputs": None}):
        assert CompletionRequest(prompt="hi", **plain).to_sampling_params(8).structured_outputs is None


@pytest.mark.parametrize("path", [COMPLETIONS, CHAT_SLOW])
def test_bad_structured_fields_are_400_naming_the_field(server: BackgroundServer, path: str) -> None:
    schema_format = {"type": "json_schema", "json_schema": {"name": "a", "schema": ANSWER_SCHEMA}}
    assert refused(server, path, "response_format.type", response_format={"type": "bogus"})
    message = refused(server, path, "response_format", response_format={"type": "json_schema"})
    assert message == "When response_format type is 'json_schema', the 'json_schema' field must be provided."
    refused(
        server, path, "response_format", response_format={"type": "json_schema", "json_schema": {"name": "a"}}
    )
    refused(
        server,
        path,
        "response_format.json_schema.name",
        response_format={"type": "json_schema", "json_schema": {"schema": {}}},
    )
    refused(server, path, "response_format", response_format={"type": "json_object", "schema": ANSWER_SCHEMA})
    message = refused(server, path, "response_format", response_format={"type": "structural_tag"})
    assert message == "Invalid response_format structural_tag specification."
    refused(server, path, "structured_outputs", structured_outputs={})
    refused(server, path, "structured_outputs", structured_outputs={"regex": "a", "choice": ["a"]})
    refused(server, path, "structured_outputs.bogus", structured_outputs={"bogus": 1})
    refused(server, path, "structured_outputs.choice", structured_outputs={"choice": []})
    refused(server, path, "structured_outputs.choice.0", structured_outputs={"choice": [1, 2]})
    # two constraints at once: the second field is named
    refused(server, path, "response_format", structured_outputs={"regex": "a"}, response_format=schema_format)
    refused(server, path, "guided_regex", structured_outputs={"regex": "a"}, guided_regex="b")
    refused(server, path, "guided_regex", guided_json=ANSWER_SCHEMA, guided_regex="b")
    refused(server, path, "guided_choice", response_format={"type": "json_object"}, guided_choice=["x"])
    refused(server, path, "guided_whitespace_pattern", guided_whitespace_pattern=" ")
    refused(server, path, "guided_whitespace_pattern", guided_regex="a", guided_whitespace_pattern=" ")
    refused(server, path, "guided_choice", guided_choice="ab")
    refused(server, path, "guided_decoding_backend", guided_decoding_backend="xgrammar")
    ok(server, path, guided_decoding_backend="guidance", guided_choice=["48", "49"])


@pytest.mark.parametrize("path", [COMPLETIONS, CHAT_SLOW])
def test_malformed_schemas_are_400_never_5xx(server: BackgroundServer, path: str) -> None:
    deep: dict[str, Any] = {"type": "string"}
    for _ in range(70):
        deep = {"type": "object", "properties": {"a": deep}}
    deep_format = {"type": "json_schema", "json_schema": {"name": "deep", "schema": deep}}
    assert "nested too deeply" in refused(server, path, "response_format", response_format=deep_format)
    text = "[" * 100_000 + "]" * 100_000
    assert "nested too deeply" in refused(
        server, path, "structured_outputs.json", structured_outputs={"json": text}
    )
    refused(server, path, "structured_outputs.json", structured_outputs={"json": "{not json"})
    refused(server, path, "structured_outputs.json", structured_outputs={"json": "[1, 2]"})
    refused(server, path, "guided_json", guided_json="{not json")
    refused(server, path, "guided_json", guided_json=[1, 2])
    refused(server, path, "structured_outputs.json", structured_outputs={"json": 5})
    # shapes only the grammar backend can judge: still a 400 naming the field, never a 5xx
    bad_types = {"type": "json_schema", "json_schema": {"name": "a", "schema": {"type": 12}}}
    refused(server, path, "response_format", response_format=bad_types)
    refused(server, path, "structured_outputs.regex", structured_outputs={"regex": "(unclosed"})
    refused(server, path, "guided_regex", guided_regex="[z-a]")
    refused(server, path, "structured_outputs.grammar", structured_outputs={"grammar": "start: ((("})
    # valid, but beyond the parser limits (a million-'a' forced prefix): a 400, never '' with "stop"
    message = refused(
        server, path, "structured_outputs.regex", structured_outputs={"regex": "(a{1000}){1000}"}
    )
    assert "too complex" in message
    refused(server, path, "guided_regex", guided_regex="(a{1000}){1000}")
    # passes admission (the first mask and token fit), hits the limit after the first token: still a 400
    # naming the field (the step guard passes a validation error through), never a 500
    message = refused(server, path, "guided_regex", guided_regex="(b|c)(d|e)(a{1000}){1000}")
    assert "mid-answer" in message
    body = ok(server, path, max_tokens=8, structured_outputs={"regex": "(a{300}){300}"})
    assert texts(body) == ["a" * 8]
    assert body["choices"][0]["finish_reason"] == "length"


# ------------------------------------------------------------------------------------------------ outputs
@pytest.mark.parametrize("path", [COMPLETIONS, CHAT])
def test_json_schema_outputs_validate_on_the_demo_prompts(server: BackgroundServer, path: str) -> None:
    schema_format = {"type": "json_schema", "json_schema": {"name": "answer", "schema": ANSWER_SCHEMA,
                                                            "strict": True}}  # fmt: skip
    for prompt in demo_prompts(2):
        prompt_field = {"prompt": prompt} if path == COMPLETIONS else {"messages": chat(prompt)}
        body = ok(server, path, response_format=schema_format, n=2, temperature=0.8, seed=5, **prompt_field)
        for text, choice in zip(texts(body), body["choices"], strict=True):
            jsonschema.validate(json.loads(text), ANSWER_SCHEMA)
            assert choice["finish_reason"] == "stop"


@pytest.mark.parametrize("path", [COMPLETIONS, CHAT])
def test_json_object_and_legacy_guided_json(server: BackgroundServer, path: str) -> None:
    assert isinstance(json.loads(texts(ok(server, path, response_format={"type": "json_object"}))[0]), dict)
    jsonschema.validate(json.loads(texts(ok(server, path, guided_json=ANSWER_SCHEMA))[0]), ANSWER_SCHEMA)
    text = texts(ok(server, path, structured_outputs={"json": json.dumps(ANSWER_SCHEMA)}))[0]
    jsonschema.validate(json.loads(text), ANSWER_SCHEMA)


@pytest.mark.parametrize("path", [COMPLETIONS, CHAT])
def test_choice_returns_one_of_the_choices(server: BackgroundServer, path: str) -> None:
    choices = ["yes", "no", "maybe later"]
    for fields in ({"guided_choice": choices}, {"structured_outputs": {"choice": choices}}):
        body = ok(server, path, n=3, temperature=1.0, seed=3, **fields)
        assert all(text in choices for text in texts(body))


@pytest.mark.slow  # test_structured_engine compares constrained and free accuracy in the engine
def test_choice_on_the_max_task_is_right_at_least_as_often_as_free_decoding(server: BackgroundServer) -> None:
    """The choices are the prompt's digits: the constraint can only remove wrong answers."""
    cases = eval_set("max", 24)
    free = constrained = 0
    for case in cases:
        digits = sorted(set(re.findall(r"[0-9]", case.prompt)))
        free += case.check(texts(ok(server, CHAT, messages=chat(case.prompt), max_tokens=4))[0])
        answer = texts(ok(server, CHAT, messages=chat(case.prompt), max_tokens=4, guided_choice=digits))[0]
        assert answer in digits
        constrained += case.check(answer)
    assert constrained >= free


@pytest.mark.parametrize("path", [COMPLETIONS, CHAT])
def test_regex_and_grammar_outputs_match(server: BackgroundServer, path: str) -> None:
    for fields in ({"structured_outputs": {"regex": "[0-9]{2,3}"}}, {"guided_regex": "[0-9]{2,3}"}):
        body = ok(server, path, n=2, temperature=1.0, seed=11, **fields)
        assert all(re.fullmatch("[0-9]{2,3}", text) for text in texts(body)), texts(body)
    grammar = 'start: "sum=" NUMBER\nNUMBER: /[0-9]{1,3}/'
    for fields in ({"structured_outputs": {"grammar": grammar}}, {"guided_grammar": grammar}):
        assert re.fullmatch("sum=[0-9]{1,3}", texts(ok(server, path, **fields))[0])


def test_legacy_guided_fields_keep_their_meaning(server: BackgroundServer) -> None:
    """vLLM <= 0.11: guided_json / guided_regex / guided_choice / guided_grammar constrain the output and
    guided_whitespace_pattern shapes guided_json's whitespace."""
    jsonschema.validate(
        json.loads(texts(ok(server, COMPLETIONS, guided_json=ANSWER_SCHEMA))[0]), ANSWER_SCHEMA
    )
    assert re.fullmatch("[0-9]{2,3}", texts(ok(server, COMPLETIONS, guided_regex="[0-9]{2,3}"))[0])
    assert texts(ok(server, COMPLETIONS, guided_choice=["48", "84"]))[0] in ("48", "84")
    assert texts(ok(server, COMPLETIONS, guided_grammar='start: "ok" | "no"'))[0] in ("ok", "no")
    text = texts(ok(server, COMPLETIONS, guided_json=ANSWER_SCHEMA, guided_whitespace_pattern=""))[0]
    assert json.loads(text) and not re.search(r"\s", text)


@pytest.mark.parametrize("path", [COMPLETIONS, CHAT])
def test_streamed_structured_output_concatenates_to_valid_json(server: BackgroundServer, path: str) -> None:
    body: dict[str, Any] = {
        "model": MODEL,
        "max_tokens": MAX_TOKENS,
        "stream": True,
        "guided_json": ANSWER_SCHEMA,
    }
    body.update({"prompt": "Copy 90817."} if path == COMPLETIONS else {"messages": chat("Copy 90817.")})
    pieces, finish = [], None
    with httpx.stream("POST", server.url + path, json=body, timeout=300) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            choice = json.loads(line[6:])["choices"][0]
            pieces.append(choice.get("text") or (choice.get("delta") or {}).get("content") or "")
            finish = choice.get("finish_reason") or finish
    assert len([piece for piece in pieces if piece]) >= 1
    jsonschema.validate(json.loads("".join(pieces)), ANSWER_SCHEMA)
    assert finish == "stop"


# ------------------------------------------------------------------------------------------------ clients
def test_openai_parse_returns_a_pydantic_object(client: openai.OpenAI) -> None:
    completion = client.chat.completions.parse(
        model=MODEL, messages=chat("Max of 5192."), response_format=Answer, max_tokens=MAX_TOKENS
    )
    parsed = completion.choices[0].message.parsed
    assert isinstance(parsed, Answer)
    assert re.fullmatch("[0-9]{1,4}", parsed.answer)


def test_langchain_with_structured_output_json_schema(server: BackgroundServer) -> None:
    langchain_openai = pytest.importorskip("langchain_openai")
    llm = langchain_openai.ChatOpenAI(
        model=MODEL, base_url=server.url + "/v1", api_key="unused", max_tokens=MAX_TOKENS, temperature=0,
        max_retries=0,
    )  # fmt: skip
    result = llm.with_structured_output(Answer, method="json_schema").invoke("Add 43 and 5.")
    assert isinstance(result, Answer)


@pytest.mark.slow  # importing litellm is slow; both endpoints have OpenAI and LangChain client tests here
def test_litellm_response_format(server: BackgroundServer) -> None:
    litellm = pytest.importorskip("litellm")
    response = litellm.completion(
        model=f"hosted_vllm/{MODEL}", api_base=server.url + "/v1", api_key="unused",
        messages=chat("Sort 3142."), response_format=Answer, max_tokens=MAX_TOKENS, temperature=0,
    )  # fmt: skip
    Answer.model_validate_json(response.choices[0].message.content)
    schema_format = {"type": "json_schema", "json_schema": {"name": "answer", "schema": ANSWER_SCHEMA}}
    response = litellm.completion(
        model=f"hosted_vllm/{MODEL}", api_base=server.url + "/v1", api_key="unused",
        messages=chat("Reverse 5821."), response_format=schema_format, max_tokens=MAX_TOKENS,
    )  # fmt: skip
    jsonschema.validate(json.loads(response.choices[0].message.content), ANSWER_SCHEMA)
