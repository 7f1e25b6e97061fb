"""Every request field of vLLM 0.33's /v1/completions and /v1/chat/completions is either honoured with
vLLM's meaning or refused with a 400 naming it: nothing is accepted and silently ignored.

The inventory is vllm_protocol_fields.py; this file lists each of its fields in exactly one of HONOURED
(with the test that shows the effect) or REFUSED (with a value that must get a 400 naming the field), and
fails when vLLM's inventory gains a field neither table lists. Real server, demo model, loopback HTTP."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from server.vllm_protocol_fields import CHAT_FIELDS, COMPLETION_FIELDS, REMOVED_FIELDS
from vdiff.config import EngineConfig
from vdiff.demo import demo_model_path, is_demo_model_available
from vdiff.entrypoints.frontend_args import FrontendArgs
from vdiff.entrypoints.launcher import BackgroundServer

pytestmark = pytest.mark.skipif(not is_demo_model_available(), reason="the demo checkpoint is not installed")

MODEL = "llada-demo"
COMPLETIONS, CHAT = "/v1/completions", "/v1/chat/completions"
HERE = Path(__file__).parent
USER = [{"role": "user", "content": "hello there"}]

# ------------------------------------------------------------------------------------------------ tables
_SHARED_HONOURED = {
    "model": "test_api_server.py::test_models_lists_every_served_name",
    "frequency_penalty": (
        "test_logits_processors.py::test_frequency_and_presence_count_only_committed_output_tokens"
    ),
    "presence_penalty": "test_penalty_and_sampling_ranges_are_400",
    "repetition_penalty": "test_penalty_and_sampling_ranges_are_400",
    "logit_bias": "test_logit_bias_forces_a_token",
    "seed": "test_seed_bounds",
    "stop": "test_api_server.py::test_stop_string_cuts_the_text",
    "stream": "test_api_server.py::test_streamed_chunks_concatenate_to_the_whole_text",
    "stream_options": "test_continuous_usage_stats_puts_usage_on_every_chunk",
    "temperature": "test_non_finite_temperature_is_400",
    "top_p": "test_api_server.py::test_bad_requests_get_openai_errors",
    "top_k": "test_top_k_zero_disables",
    "min_p": "test_penalty_and_sampling_ranges_are_400",
    "user": "test_accepted_metadata_fields",
    "n": "test_n_and_best_of",
    "stop_token_ids": "test_engine_outputs.py::test_stop_token_ids_end_early_and_save_forwards",
    "include_stop_str_in_output": "test_include_stop_str_in_output",
    "ignore_eos": "test_min_tokens_holds_off_the_end",
    "min_tokens": "test_min_tokens_holds_off_the_end",
    "skip_special_tokens": "test_skip_special_tokens",
    "spaces_between_special_tokens": "test_skip_special_tokens",
    "truncate_prompt_tokens": "test_truncate_prompt_tokens",
    "truncation_side": "test_truncate_prompt_tokens",
    "allowed_token_ids": "test_allowed_token_ids_restrict_the_output",
    "bad_words": "test_logits_processors.py::test_single_token_bad_word_is_banned_everywhere",
    "add_special_tokens": "test_add_special_tokens",
    "request_id": "test_request_id_is_the_response_id",
    "session_id": "test_accepted_metadata_fields",
    "return_tokens_as_token_ids": "test_logprobs_api.py::test_return_tokens_as_token_ids",
    "return_token_ids": "test_logit_bias_forces_a_token",
    "cache_salt": "test_cache_salt_is_validated",
    "logprobs": "test_logprobs_api.py::test_completion_logprobs",
    "max_tokens": "test_api_server.py::test_completion_text_usage_and_finish_reason",
    "prompt_logprobs": "test_prompt_scoring_api.py::test_prompt_logprobs_field_on_both_endpoints",
    "structured_outputs": "test_structured_api.py::test_structured_outputs_fields_map_onto_the_engine",
    "response_format": "test_structured_api.py::test_json_schema_outputs_validate_on_the_demo_prompts",
}
HONOURED: dict[str, dict[str, str]] = {
    COMPLETIONS: {
        **_SHARED_HONOURED,
        "prompt": "test_api_server.py::test_n_choices_prompt_lists_and_token_prompts",
        "echo": "test_completion_echo",
    },
    CHAT: {
        **_SHARED_HONOURED,
        "logprobs": "test_logprobs_api.py::test_chat_logprobs",
        "messages": "test_api_server.py::test_chat_whole_and_streamed",
        "top_logprobs": "test_logprobs_api.py::test_chat_logprobs",
        "max_tokens": "test_api_server.py::test_chat_whole_and_streamed",
        "max_completion_tokens": "test_api_server.py::test_chat_whole_and_streamed",
        "tools": "test_template_variables_need_template_support",
        "documents": "test_template_variables_need_template_support",
        "reasoning_effort": "test_template_variables_need_template_support",
        "echo": "test_continue_final_message_and_echo",
        "add_generation_prompt": "test_continue_final_message_and_echo",
        "continue_final_message": "test_continue_final_message_and_echo",
        "chat_template": "test_per_request_chat_template",
        "chat_template_kwargs": "test_per_request_chat_template",
        "return_prompt_text": "test_per_request_chat_template",
        "tool_choice": "test_tool_calling.py::test_required_returns_well_formed_tool_calls",
        "parallel_tool_calls": "test_tool_calling.py::test_parallel_tool_calls_false_keeps_one_call",
    },
}

_SHARED_REFUSED: dict[str, Any] = {
    "use_beam_search": True,
    "length_penalty": 0.5,
    "priority": 1,
    "watermarking": True,
    "logprob_token_ids": [5],
    "return_weight_versions": True,
    "routed_experts_prompt_start": 1,
    "return_token_offsets": True,
    "mm_payload": "none",
    "return_mm_kwargs": False,
    "kv_transfer_params": {"do_remote_prefill": True},
    "ec_transfer_params": {"cache": 1},
    "vllm_xargs": {"diffusion_max_steps": 4},
    "repetition_detection": {"max_pattern_size": 4, "min_pattern_size": 1, "min_count": 2},
    "thinking_token_budget": 10,
    "stream_interval": 4,
}
REFUSED: dict[str, dict[str, Any]] = {
    COMPLETIONS: {**_SHARED_REFUSED, "suffix": "the end", "prompt_embeds": "AAAA"},
    CHAT: {
        **_SHARED_REFUSED,
        "include_reasoning": False,
        "media_io_kwargs": {"image": {}},
        "mm_processor_kwargs": {"size": 4},
    },
}
REMOVED_HONOURED = {
    name: "test_structured_api.py::test_legacy_guided_fields_keep_their_meaning"
    for name in (
        "guided_json",
        "guided_regex",
        "guided_choice",
        "guided_grammar",
        "guided_whitespace_pattern",
    )
}
"""vLLM <= 0.11's guided decoding fields: vLLM 0.33 ignores them, vdiff honours their old meaning."""
REMOVED_REFUSED: dict[str, Any] = {
    "best_of": 3,
    "guided_decoding_backend": "xgrammar",
    "logits_processors": ["my.module:Processor"],
    "max_repetition_pattern_size": 4,
    "min_repetition_pattern_size": 1,
    "repetition_min_count": 2,
}
INVENTORY = {COMPLETIONS: COMPLETION_FIELDS, CHAT: CHAT_FIELDS}


def base(path: str, **fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"model": MODEL, "max_tokens": 4}
    body.update({"prompt": "the cat"} if path == COMPLETIONS else {"messages": USER})
    body.update(fields)
    return body


# ------------------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def server() -> Iterator[BackgroundServer]:
    config = EngineConfig(model=str(demo_model_path(MODEL)), served_model_names=[MODEL])
    with BackgroundServer(config, FrontendArgs(trust_request_chat_template=True)) as background:
        yield background


@pytest.fixture(scope="module")
def client(server: BackgroundServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=120)


def post(server: BackgroundServer, path: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(server.url + path, json=body, timeout=120)


def ok(server: BackgroundServer, path: str, **fields: Any) -> dict[str, Any]:
    response = post(server, path, base(path, **fields))
    assert response.status_code == 200, response.text
    return response.json()


def refused(server: BackgroundServer, path: str, param: str, body: dict[str, Any] | bytes) -> str:
    if isinstance(body, bytes):
        response = httpx.post(
            server.url + path, content=body, headers={"content-type": "application/json"}, timeout=60
        )
    else:
        response = post(server, path, body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == param, error
    return error["message"]


def token_ids(server: BackgroundServer, text: str) -> list[int]:
    response = httpx.post(server.url + "/tokenize", json={"prompt": text, "add_special_tokens": False})
    return response.json()["tokens"]


def sse(server: BackgroundServer, path: str, body: dict[str, Any]) -> list[dict[str, Any]]:
    with httpx.stream("POST", server.url + path, json=body, timeout=120) as response:
        assert response.status_code == 200, response.read()
        lines = [line for line in response.iter_lines() if line.startswith("data: ")]
    assert lines[-1] == "data: [DONE]"
    return [json.loads(line[len("data: ") :]) for line in lines[:-1]]


# ------------------------------------------------------------------------------------------------ the tables
@pytest.mark.parametrize("path", [COMPLETIONS, CHAT])
def test_every_vllm_field_is_honoured_or_refused(path: str) -> None:
    names = {field.name for field in INVENTORY[path]}
    honoured, refused_names = set(HONOURED[path]), set(REFUSED[path])
    assert not honoured & refused_names, f"in both tables: {sorted(honoured & refused_names)}"
    assert names - honoured - refused_names == set(), "vLLM fields neither honoured nor refused"
    assert (honoured | refused_names) - names == set(), "tables list fields vLLM does not have"


def test_removed_fields_are_refused() -> None:
    listed = {name.strip() for field in REMOVED_FIELDS for name in field.name.split(",")}
    assert listed == set(REMOVED_REFUSED) | set(REMOVED_HONOURED)
    assert not set(REMOVED_REFUSED) & set(REMOVED_HONOURED)


def test_honoured_pointers_name_existing_tests() -> None:
    for path in (COMPLETIONS, CHAT, "removed"):
        for name, pointer in (REMOVED_HONOURED if path == "removed" else HONOURED[path]).items():
            module, _, test = pointer.rpartition("::")
            text = (HERE / (module or Path(__file__).name)).read_text()
            assert f"def {test}(" in text, f"{name}: {pointer} does not exist"


@pytest.mark.parametrize(
    ("path", "name"), [(path, name) for path in (COMPLETIONS, CHAT) for name in REFUSED[path]]
)
def test_refused_fields_get_400_naming_them(server: BackgroundServer, path: str, name: str) -> None:
    message = refused(server, path, name, base(path, **{name: REFUSED[path][name]}))
    assert "not supported" in message or "not implemented" in message


@pytest.mark.parametrize(
    ("path", "name"), [(path, name) for path in (COMPLETIONS, CHAT) for name in REMOVED_REFUSED]
)
def test_removed_fields_get_400_naming_them(server: BackgroundServer, path: str, name: str) -> None:
    refused(server, path, name, base(path, **{name: REMOVED_REFUSED[name]}))


@pytest.mark.parametrize("path", [COMPLETIONS, CHAT])
def test_refused_fields_at_their_default_are_accepted(server: BackgroundServer, path: str) -> None:
    defaults = {
        "use_beam_search": False, "length_penalty": 1.0, "priority": 0, "watermarking": False,
        "prompt_logprobs": None, "logprob_token_ids": None, "structured_outputs": None,
        "response_format": {"type": "text"}, "return_weight_versions": False,
        "routed_experts_prompt_start": 0,
        "return_token_offsets": False, "mm_payload": "tensors", "kv_transfer_params": None,
        "thinking_token_budget": -1, "stream_interval": 1, "guided_json": None,
    }  # fmt: skip
    ok(server, path, **defaults)


# ------------------------------------------------------------------------------------------------ behaviour
@pytest.mark.parametrize("path", [COMPLETIONS, CHAT])
def test_logit_bias_forces_a_token(server: BackgroundServer, path: str) -> None:
    forced = token_ids(server, "cat")[0]
    body = ok(
        server, path, temperature=0, ignore_eos=True, max_tokens=8, logit_bias={str(forced): 100},
        return_token_ids=True,
    )  # fmt: skip
    choice = body["choices"][0]
    assert choice["token_ids"] == [forced] * 8
    assert body["usage"]["completion_tokens"] == 8


def test_min_tokens_holds_off_the_end(server: BackgroundServer) -> None:
    eos = {"311": 100, "307": 100}  # the demo's end tokens, made overwhelmingly likely
    early = ok(server, COMPLETIONS, temperature=0, max_tokens=16, logit_bias=eos)
    assert early["usage"]["completion_tokens"] < 6
    held = ok(
        server, COMPLETIONS, temperature=0, max_tokens=16, logit_bias=eos, min_tokens=6, ignore_eos=False
    )
    assert held["usage"]["completion_tokens"] >= 6


def test_allowed_token_ids_restrict_the_output(server: BackgroundServer) -> None:
    allowed = sorted(set(token_ids(server, "dog sat")))
    body = ok(
        server, COMPLETIONS, temperature=1.0, seed=3, ignore_eos=True, max_tokens=12,
        allowed_token_ids=allowed,
        return_token_ids=True,
    )  # fmt: skip
    generated = body["choices"][0]["token_ids"]
    assert len(generated) == 12 and set(generated) <= set(allowed)


def test_include_stop_str_in_output(server: BackgroundServer) -> None:
    """Needs the output side of include_stop_str_in_output (engine output processor)."""
    fields = {"prompt": "Once upon a time", "temperature": 0, "max_tokens": 24, "ignore_eos": True}
    plain = ok(server, COMPLETIONS, **fields)["choices"][0]["text"]
    starts = [
        k for k in range(1, len(plain) - 1) if plain.find(plain[k : k + 2]) == k and plain[k : k + 2].strip()
    ]
    assert starts, f"no stop string to pick in the greedy text {plain!r}"
    stop = plain[starts[0] : starts[0] + 2]
    cut = ok(server, COMPLETIONS, stop=[stop], **fields)["choices"][0]
    kept = ok(server, COMPLETIONS, stop=[stop], include_stop_str_in_output=True, **fields)["choices"][0]
    assert cut["finish_reason"] == kept["finish_reason"] == "stop"
    assert cut["text"] == plain[: starts[0]]
    assert kept["text"] == plain[: starts[0]] + stop


def test_continue_final_message_and_echo(server: BackgroundServer) -> None:
    prefill = "The answer is"
    messages = [*USER, {"role": "assistant", "content": prefill}]
    body = ok(
        server, CHAT, messages=messages, continue_final_message=True, return_prompt_text=True, echo=True
    )
    assert body["prompt_text"].endswith(prefill), body["prompt_text"]
    assert body["choices"][0]["message"]["content"].startswith(prefill)
    opened = ok(server, CHAT, messages=messages, return_prompt_text=True)
    assert opened["prompt_text"].endswith("<|start_header_id|>assistant<|end_header_id|>\n\n")
    closed = ok(server, CHAT, messages=messages, add_generation_prompt=False, return_prompt_text=True)
    assert closed["prompt_text"].endswith(prefill + "<|eot_id|>")
    refused(server, CHAT, "continue_final_message", base(CHAT, messages=messages, continue_final_message=True,
                                                          add_generation_prompt=True))  # fmt: skip
    chunks = sse(
        server, CHAT, base(CHAT, messages=messages, continue_final_message=True, echo=True, stream=True)
    )
    streamed = "".join(
        chunk["choices"][0]["delta"].get("content") or "" for chunk in chunks if chunk["choices"]
    )
    assert streamed.startswith(prefill)
    not_assistant = ok(server, CHAT, echo=True, temperature=0)
    plain = ok(server, CHAT, temperature=0)
    assert not_assistant["choices"][0]["message"]["content"] == plain["choices"][0]["message"]["content"]


def test_per_request_chat_template(server: BackgroundServer) -> None:
    template = "{% for m in messages %}[{{ m['role'] }}|{{ greeting }}] {{ m['content'] }}\n{% endfor %}"
    body = ok(
        server, CHAT, chat_template=template, chat_template_kwargs={"greeting": "hey"},
        return_prompt_text=True,
        return_token_ids=True,
    )  # fmt: skip
    assert body["prompt_text"] == "[user|hey] hello there\n"
    assert body["prompt_token_ids"] == token_ids(server, body["prompt_text"])
    assert body["usage"]["prompt_tokens"] == len(body["prompt_token_ids"])
    refused(server, CHAT, "messages", base(CHAT, chat_template="{{ raise_exception('no') }}"))


def test_template_variables_need_template_support(server: BackgroundServer) -> None:
    documents = [{"title": "doc", "text": "cats purr"}]
    tools = [{"type": "function", "function": {"name": "f", "parameters": {}}}]
    for name, value in (("documents", documents), ("tools", tools), ("reasoning_effort", "low")):
        fields = {name: value, "tool_choice": "none"} if name == "tools" else {name: value}
        refused(server, CHAT, name, base(CHAT, **fields))  # the demo template never reads it
    template = (
        "{% for d in documents or [] %}<doc>{{ d['text'] }}</doc>{% endfor %}"
        "{% for t in tools or [] %}<tool>{{ t['function']['name'] }}</tool>{% endfor %}"
        "<effort>{{ reasoning_effort }}</effort>{% for m in messages %}{{ m['content'] }}{% endfor %}"
    )
    body = ok(
        server, CHAT, chat_template=template, documents=documents, tools=tools, tool_choice="none",
        reasoning_effort="low", return_prompt_text=True,
    )  # fmt: skip
    assert body["prompt_text"] == "<doc>cats purr</doc><tool>f</tool><effort>low</effort>hello there"
    refused(server, CHAT, "tool_choice", base(CHAT, chat_template=template, tools=tools))  # tools -> auto
    refused(server, CHAT, "tools", base(CHAT, tools=[]))
    refused(server, CHAT, "tool_choice", base(CHAT, tool_choice="auto"))  # vLLM: tool_choice needs tools


@pytest.mark.parametrize("path", [COMPLETIONS, CHAT])
def test_continuous_usage_stats_puts_usage_on_every_chunk(server: BackgroundServer, path: str) -> None:
    body = base(
        path, max_tokens=16, temperature=0, ignore_eos=True, stream=True, block_length=4, steps=16,
        stream_options={"include_usage": True, "continuous_usage_stats": True},
    )  # fmt: skip
    chunks = sse(server, path, body)
    content, last = chunks[:-1], chunks[-1]
    assert last["choices"] == [] and last["usage"]["completion_tokens"] > 0
    assert content and all(chunk["usage"] is not None for chunk in content)
    counts = [chunk["usage"]["completion_tokens"] for chunk in content]
    assert counts == sorted(counts) and counts[-1] == last["usage"]["completion_tokens"]
    assert all(chunk["usage"]["prompt_tokens"] == last["usage"]["prompt_tokens"] for chunk in content)
    without = sse(server, path, {**body, "stream_options": {"include_usage": True}})
    assert all(chunk.get("usage") is None for chunk in without[:-1])
    refused(server, path, "stream_options", base(path, stream_options={"include_usage": True}))


def test_seed_bounds(server: BackgroundServer) -> None:
    refused(server, COMPLETIONS, "seed", base(COMPLETIONS, seed=2**64))
    body = ok(server, COMPLETIONS, seed=2**63 - 1, n=2, temperature=1.0)
    assert len(body["choices"]) == 2
    ok(server, COMPLETIONS, seed=-1, temperature=1.0)  # vLLM: -1 is unseeded


def test_top_k_zero_disables(server: BackgroundServer) -> None:
    ok(server, COMPLETIONS, top_k=0, temperature=1.0, seed=1)


@pytest.mark.parametrize("raw", ["NaN", "1e999", "-Infinity"])
@pytest.mark.parametrize("path", [COMPLETIONS, CHAT])
def test_non_finite_temperature_is_400(server: BackgroundServer, path: str, raw: str) -> None:
    body = json.dumps(base(path)).rstrip("}") + f', "temperature": {raw}}}'
    refused(server, path, "temperature", body.encode())


@pytest.mark.parametrize(
    ("name", "value"),
    [("repetition_penalty", 0), ("min_p", 5), ("presence_penalty", 50), ("frequency_penalty", -3)],
)
def test_penalty_and_sampling_ranges_are_400(server: BackgroundServer, name: str, value: float) -> None:
    refused(server, COMPLETIONS, name, base(COMPLETIONS, **{name: value}))
    ok(server, COMPLETIONS, repetition_penalty=1.3, presence_penalty=1.0, min_p=0.1, temperature=1.0)


def test_use_beam_search_is_400(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.completions.create(model=MODEL, prompt="x", max_tokens=4, extra_body={"use_beam_search": True})
    assert info.value.body["param"] == "use_beam_search"


def test_n_and_best_of(server: BackgroundServer) -> None:
    body = ok(server, COMPLETIONS, n=3, best_of=3, temperature=1.0, seed=5)
    assert sorted(choice["index"] for choice in body["choices"]) == [0, 1, 2]
    refused(server, COMPLETIONS, "best_of", base(COMPLETIONS, n=1, best_of=2))


def test_completion_echo(server: BackgroundServer) -> None:
    prompt = "the cat sat"
    body = ok(server, COMPLETIONS, prompt=prompt, echo=True, temperature=0, n=2)
    plain = ok(server, COMPLETIONS, prompt=prompt, temperature=0)
    for choice in body["choices"]:
        assert choice["text"] == prompt + plain["choices"][0]["text"]
    ids = token_ids(server, prompt)
    as_ids = ok(server, COMPLETIONS, prompt=ids, echo=True, temperature=0)
    assert as_ids["choices"][0]["text"].startswith(prompt)
    chunks = sse(server, COMPLETIONS, base(COMPLETIONS, prompt=prompt, echo=True, temperature=0, stream=True))
    assert "".join(chunk["choices"][0]["text"] for chunk in chunks) == body["choices"][0]["text"]
    # echo with logprobs scores the prompt (test_prompt_scoring_api.py); not while streaming, as vLLM
    stream = base(COMPLETIONS, echo=True, logprobs=1, stream=True)
    assert "stream" in refused(server, COMPLETIONS, "echo", stream)


def test_truncate_prompt_tokens(server: BackgroundServer) -> None:
    prompt = "the cat sat on the mat"
    ids = token_ids(server, prompt)
    body = ok(server, COMPLETIONS, prompt=prompt, truncate_prompt_tokens=3, return_token_ids=True)
    assert body["usage"]["prompt_tokens"] == 3 and body["choices"][0]["prompt_token_ids"] == ids[-3:]
    right = ok(server, COMPLETIONS, prompt=prompt, truncate_prompt_tokens=3, truncation_side="right",
               return_token_ids=True)  # fmt: skip
    assert right["choices"][0]["prompt_token_ids"] == ids[:3]
    whole = ok(server, COMPLETIONS, prompt=prompt, truncate_prompt_tokens=-1)
    assert whole["usage"]["prompt_tokens"] == len(ids)
    chat = ok(server, CHAT, truncate_prompt_tokens=2)
    assert chat["usage"]["prompt_tokens"] == 2
    refused(server, COMPLETIONS, "truncate_prompt_tokens", base(COMPLETIONS, truncate_prompt_tokens=10**6))
    refused(server, COMPLETIONS, "truncate_prompt_tokens", base(COMPLETIONS, truncate_prompt_tokens=-2))


def test_add_special_tokens(server: BackgroundServer) -> None:
    prompt = "the cat"
    for flag in (True, False):
        expected = httpx.post(server.url + "/tokenize", json={"prompt": prompt, "add_special_tokens": flag})
        body = ok(server, COMPLETIONS, prompt=prompt, add_special_tokens=flag, return_token_ids=True)
        assert body["choices"][0]["prompt_token_ids"] == expected.json()["tokens"]
    plain = ok(server, CHAT, return_prompt_text=True, return_token_ids=True)
    assert plain["prompt_token_ids"] == token_ids(server, plain["prompt_text"])


def test_skip_special_tokens(server: BackgroundServer) -> None:
    special = 309  # <|start_header_id|>
    fields = {"temperature": 0, "ignore_eos": True, "max_tokens": 3, "logit_bias": {str(special): 100}}
    skipped = ok(server, COMPLETIONS, **fields)["choices"][0]["text"]
    kept = ok(server, COMPLETIONS, skip_special_tokens=False, **fields)["choices"][0]["text"]
    assert "<|start_header_id|>" not in skipped and kept.count("<|start_header_id|>") == 3
    spaced = ok(server, COMPLETIONS, skip_special_tokens=False, spaces_between_special_tokens=True, **fields)
    joined = ok(server, COMPLETIONS, skip_special_tokens=False, spaces_between_special_tokens=False, **fields)
    assert spaced["choices"][0]["text"].replace(" ", "") == joined["choices"][0]["text"].replace(" ", "")


@pytest.mark.parametrize(("path", "prefix"), [(COMPLETIONS, "cmpl"), (CHAT, "chatcmpl")])
def test_request_id_is_the_response_id(server: BackgroundServer, path: str, prefix: str) -> None:
    assert ok(server, path, request_id="abc-123")["id"] == f"{prefix}-abc-123"
    assert ok(server, path, request_id="abc-123")["id"] == f"{prefix}-abc-123"  # reusable: not the engine id
    assert ok(server, path)["id"].startswith(prefix + "-")


def test_accepted_metadata_fields(server: BackgroundServer) -> None:
    ok(server, COMPLETIONS, user="someone", session_id="conversation-1")
    ok(server, CHAT, user="someone", session_id="conversation-1")


def test_cache_salt_is_validated(server: BackgroundServer) -> None:
    ok(server, COMPLETIONS, cache_salt="tenant-a")
    for bad in ("", "a/b", "x" * 129):
        refused(server, COMPLETIONS, "cache_salt", base(COMPLETIONS, cache_salt=bad))
