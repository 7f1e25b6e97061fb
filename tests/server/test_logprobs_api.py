"""Logprobs over HTTP with the real openai client (and LangChain when installed), whole and streamed.

Contract with the engine: with SamplingParams.logprobs set, each CompletionOutput carries `logprobs`
aligned with `token_ids` and `new_logprobs` aligned with `new_token_ids` (vdiff.engine.outputs)."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import openai
import pytest
from vdiff.config import EngineConfig
from vdiff.demo import demo_model_path, is_demo_model_available
from vdiff.entrypoints.frontend_args import FrontendArgs
from vdiff.entrypoints.launcher import BackgroundServer

pytestmark = pytest.mark.skipif(not is_demo_model_available(), reason="the demo checkpoint is not installed")

MODEL = "llada-demo"
TOP = 3
FIELDS: dict[str, Any] = {"model": MODEL, "max_tokens": 12, "temperature": 0}
EXTRA = {"ignore_eos": True, "block_length": 4, "steps": 12}
"""Several blocks, so a stream has several chunks."""
MESSAGES = [{"role": "user", "content": "hello there"}]


@pytest.fixture(scope="module")
def server() -> Iterator[BackgroundServer]:
    config = EngineConfig(model=str(demo_model_path(MODEL)), served_model_names=[MODEL])
    with BackgroundServer(config, FrontendArgs()) as background:
        yield background


@pytest.fixture(scope="module")
def client(server: BackgroundServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(demo_model_path(MODEL)))


def token_strings(tokenizer: Any, ids: list[int]) -> list[str]:
    """Each id decoded alone, special tokens kept (vLLM's token strings)."""
    return [tokenizer.decode([token_id], skip_special_tokens=False) for token_id in ids]


def check_value(logprob: float) -> None:
    assert math.isfinite(logprob) and logprob <= 0


def check_chat_content(content: list[Any], num_tokens: int, top: int) -> None:
    assert len(content) == num_tokens
    for entry in content:
        check_value(entry.logprob)
        assert entry.bytes == list(entry.token.encode("utf-8"))
        assert len(entry.top_logprobs) == top
        values = [alternative.logprob for alternative in entry.top_logprobs]
        assert values == sorted(values, reverse=True)
        for value in values:
            check_value(value)
        if top:
            assert entry.logprob <= values[0] + 1e-6


def test_completion_logprobs(client: openai.OpenAI, tokenizer: Any) -> None:
    result = client.completions.create(
        prompt="the cat", logprobs=TOP, **FIELDS, extra_body={**EXTRA, "return_token_ids": True}
    )
    choice = result.choices[0]
    logprobs = choice.logprobs
    assert logprobs is not None
    num_tokens = result.usage.completion_tokens
    assert len(logprobs.tokens) == len(logprobs.token_logprobs) == len(logprobs.top_logprobs) == num_tokens
    token_ids = choice.model_extra["token_ids"]
    assert logprobs.tokens == token_strings(tokenizer, token_ids)
    assert "".join(logprobs.tokens) == tokenizer.decode(token_ids, skip_special_tokens=False)
    offsets = [0]
    for token in logprobs.tokens[:-1]:
        offsets.append(offsets[-1] + len(token))
    assert logprobs.text_offset == offsets
    for token, value, top in zip(
        logprobs.tokens, logprobs.token_logprobs, logprobs.top_logprobs, strict=True
    ):
        check_value(value)
        assert top[token] == value  # the sampled token is listed, plus the top alternatives (OpenAI's k + 1)
        assert TOP <= len(top) <= TOP + 1
        for alternative in top.values():
            check_value(alternative)
        ranked = sorted(top.values(), reverse=True)
        assert value >= ranked[TOP - 1] - 1e-6 if len(top) == TOP else True  # greedy: the argmax was taken


def test_completion_logprobs_streamed(client: openai.OpenAI) -> None:
    whole = client.completions.create(prompt="the cat", logprobs=TOP, **FIELDS, extra_body=EXTRA)
    chunks = list(
        client.completions.create(
            prompt="the cat", logprobs=TOP, stream=True, **FIELDS, extra_body=EXTRA,
            stream_options={"include_usage": True},
        )
    )  # fmt: skip
    tokens, offsets, values = [], [], []
    for chunk in chunks:
        if chunk.choices and chunk.choices[0].logprobs is not None:
            tokens += chunk.choices[0].logprobs.tokens
            offsets += chunk.choices[0].logprobs.text_offset
            values += chunk.choices[0].logprobs.token_logprobs
    assert len(tokens) == chunks[-1].usage.completion_tokens
    assert tokens == whole.choices[0].logprobs.tokens
    assert offsets == whole.choices[0].logprobs.text_offset
    assert values == pytest.approx(whole.choices[0].logprobs.token_logprobs, abs=1e-5)


def test_chat_logprobs(client: openai.OpenAI, tokenizer: Any) -> None:
    result = client.chat.completions.create(
        messages=MESSAGES, logprobs=True, top_logprobs=TOP, **FIELDS,
        extra_body={**EXTRA, "return_token_ids": True},
    )  # fmt: skip
    choice = result.choices[0]
    content = choice.logprobs.content
    check_chat_content(content, result.usage.completion_tokens, TOP)
    ids = choice.model_extra["token_ids"]
    assert [entry.token for entry in content] == token_strings(tokenizer, ids)
    assert choice.message.content == tokenizer.decode(ids, skip_special_tokens=True)
    bare = client.chat.completions.create(messages=MESSAGES, logprobs=True, **FIELDS, extra_body=EXTRA)
    check_chat_content(bare.choices[0].logprobs.content, bare.usage.completion_tokens, 0)
    none = client.chat.completions.create(messages=MESSAGES, **FIELDS, extra_body=EXTRA)
    assert none.choices[0].logprobs is None


def test_chat_logprobs_streamed(client: openai.OpenAI, tokenizer: Any) -> None:
    chunks = list(
        client.chat.completions.create(
            messages=MESSAGES, logprobs=True, top_logprobs=TOP, stream=True, **FIELDS, extra_body=EXTRA,
            stream_options={"include_usage": True},
        )
    )  # fmt: skip
    content = [
        entry
        for chunk in chunks
        if chunk.choices and chunk.choices[0].logprobs is not None
        for entry in chunk.choices[0].logprobs.content
    ]
    check_chat_content(content, chunks[-1].usage.completion_tokens, TOP)
    text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
    joined = "".join(entry.token for entry in content)
    assert (
        tokenizer.decode(tokenizer.encode(joined, add_special_tokens=False), skip_special_tokens=True) == text
    )


def test_return_tokens_as_token_ids(client: openai.OpenAI) -> None:
    result = client.completions.create(
        prompt="the cat", logprobs=1, **FIELDS,
        extra_body={**EXTRA, "return_tokens_as_token_ids": True, "return_token_ids": True},
    )  # fmt: skip
    ids = result.choices[0].model_extra["token_ids"]
    assert result.choices[0].logprobs.tokens == [f"token_id:{token_id}" for token_id in ids]
    assert all(key.startswith("token_id:") for top in result.choices[0].logprobs.top_logprobs for key in top)


def test_logprob_requests_that_vllm_refuses(client: openai.OpenAI) -> None:
    cases = [
        ({"messages": MESSAGES, "top_logprobs": 2}, "top_logprobs"),  # without logprobs: true
        ({"messages": MESSAGES, "logprobs": True, "top_logprobs": 21}, "top_logprobs"),  # over --max-logprobs
        ({"messages": MESSAGES, "logprobs": True, "top_logprobs": -2}, "top_logprobs"),
    ]
    for body, param in cases:
        with pytest.raises(openai.BadRequestError) as info:
            client.chat.completions.create(**FIELDS, **body)
        assert info.value.body["param"] == param
    with pytest.raises(openai.BadRequestError) as info:
        client.completions.create(prompt="x", logprobs=-2, **FIELDS)
    assert info.value.body["param"] == "logprobs"


def test_langchain_chat_openai_logprobs(server: BackgroundServer) -> None:
    langchain_openai = pytest.importorskip("langchain_openai")
    chat = langchain_openai.ChatOpenAI(
        model=MODEL, base_url=server.url + "/v1", api_key="unused", logprobs=True, top_logprobs=2,
        max_tokens=8, temperature=0, max_retries=0, extra_body={"ignore_eos": True},
    )  # fmt: skip
    message = chat.invoke("hello there")
    content = message.response_metadata["logprobs"]["content"]
    assert content and len(content) == message.response_metadata["token_usage"]["completion_tokens"]
    for entry in content:
        check_value(entry["logprob"])
        assert len(entry["top_logprobs"]) == 2
