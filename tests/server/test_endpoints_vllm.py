"""vLLM drop-in endpoints and wire details: models.retrieve and permission, the unknown-model 404 naming
the served models, /v1/responses' 404, /invocations, /tokenize's token_strs, /tokenizer_info, and the
stream chunks' fields and timing (a real uvicorn server with the tiny LLaDA checkpoint)."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from vdiff.config import EngineConfig
from vdiff.engine.protocol import EngineClient
from vdiff.entrypoints.frontend_args import FrontendArgs
from vdiff.entrypoints.launcher import BackgroundServer, default_engine_factory
from vdiff.entrypoints.openai.streaming import sse_data

MODEL = "tiny-llada"
NAMES = [MODEL, "org/alias"]
CHAT_BODY = {"model": MODEL, "messages": [{"role": "user", "content": "hello"}], "max_tokens": 8}


class GatedEngine:
    """The real engine, whose outputs wait for `gate` (a first block that takes as long as the test wants)."""

    def __init__(self, engine: EngineClient) -> None:
        self._engine = engine
        self.gate = threading.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._engine, name)

    async def generate(self, *args: Any) -> AsyncIterator[Any]:
        async for output in self._engine.generate(*args):
            while not self.gate.is_set():
                await asyncio.sleep(0.01)
            yield output


@pytest.fixture(scope="module")
def gated() -> dict[str, GatedEngine]:
    return {}


@pytest.fixture(scope="module")
def server(llada_checkpoint: Path, gated: dict[str, GatedEngine]) -> Iterator[BackgroundServer]:
    def factory(config: EngineConfig) -> EngineClient:
        gated["engine"] = GatedEngine(default_engine_factory(config))
        gated["engine"].gate.set()
        return gated["engine"]  # type: ignore[return-value]

    config = EngineConfig(model=str(llada_checkpoint), served_model_names=NAMES, max_num_seqs=8)
    args = FrontendArgs(enable_tokenizer_info_endpoint=True)
    with BackgroundServer(config, args, engine_factory=factory) as background:
        yield background


@pytest.fixture(scope="module")
def client(server: BackgroundServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=120)


def sse(response: httpx.Response) -> list[dict[str, Any]]:
    lines = [line for line in response.iter_lines() if line.startswith("data: ")]
    assert lines[-1] == "data: [DONE]"
    return [json.loads(line.removeprefix("data: ")) for line in lines[:-1]]


def test_models_retrieve_and_permission_as_vllm(server: BackgroundServer, client: openai.OpenAI) -> None:
    card = client.models.retrieve(MODEL)
    assert card.id == MODEL and card.object == "model"
    assert client.models.retrieve("org/alias").id == "org/alias"  # a name with a slash
    listed = httpx.get(server.url + "/v1/models").json()["data"]
    for entry in listed:
        (permission,) = entry["permission"]
        assert permission["object"] == "model_permission" and permission["id"].startswith("modelperm-")
        assert permission["allow_sampling"] and permission["allow_logprobs"]
        assert permission["organization"] == "*"
        assert not permission["allow_fine_tuning"] and permission["group"] is None
    with pytest.raises(openai.NotFoundError) as raised:
        client.models.retrieve("nope")
    assert "Valid aliases: tiny-llada, org/alias" in str(raised.value)


@pytest.mark.parametrize("path", ["/v1/completions", "/v1/chat/completions", "/tokenize"])
def test_unknown_model_404_names_the_served_models(server: BackgroundServer, path: str) -> None:
    body = {"model": "llada", "prompt": "x", "messages": [{"role": "user", "content": "x"}]}
    if path == "/v1/chat/completions":
        body.pop("prompt")
    if path == "/tokenize":
        body.pop("messages")
    response = httpx.post(server.url + path, json=body, timeout=60)
    assert response.status_code == 404
    error = response.json()["error"]
    assert error["message"] == "The model `llada` does not exist. Valid aliases: tiny-llada, org/alias."
    assert error["type"] == "NotFoundError" and error["param"] == "model"


def test_responses_api_is_a_clear_404(server: BackgroundServer, client: openai.OpenAI) -> None:
    for method, path in (("POST", "/v1/responses"), ("GET", "/v1/responses/resp_1")):
        response = httpx.request(method, server.url + path, json={"model": MODEL, "input": "hi"})
        assert response.status_code == 404
        message = response.json()["error"]["message"]
        assert "Responses API" in message and "/v1/chat/completions" in message
        assert "/v1/completions" in message
    with pytest.raises(openai.NotFoundError):
        client.responses.create(model=MODEL, input="hi")


def test_invocations_dispatch_by_body_shape(server: BackgroundServer) -> None:
    chat = httpx.post(server.url + "/invocations", json=CHAT_BODY, timeout=60)
    assert chat.status_code == 200 and chat.json()["object"] == "chat.completion"
    completion = httpx.post(
        server.url + "/invocations", json={"model": MODEL, "prompt": "a b", "max_tokens": 4}, timeout=60
    )
    assert completion.status_code == 200 and completion.json()["object"] == "text_completion"
    streamed = httpx.post(server.url + "/invocations", json={**CHAT_BODY, "stream": True}, timeout=60)
    assert streamed.headers["content-type"].startswith("text/event-stream")
    assert sse(streamed)[0]["object"] == "chat.completion.chunk"
    neither = httpx.post(server.url + "/invocations", json={"input": "x"})
    assert neither.status_code == 400
    assert neither.json()["error"]["message"] == (
        "Cannot find suitable handler for request. Expected one of: ['ChatCompletionRequest', "
        "'CompletionRequest']"
    )
    broken = httpx.post(
        server.url + "/invocations", content=b"{nope", headers={"Content-Type": "application/json"}
    )
    assert broken.status_code == 400 and "JSON decode error" in broken.json()["error"]["message"]
    unknown = httpx.post(server.url + "/invocations", json={**CHAT_BODY, "model": "x"})
    assert unknown.status_code == 404


def test_tokenize_return_token_strs_and_tokenizer_info(server: BackgroundServer) -> None:
    plain = httpx.post(server.url + "/tokenize", json={"prompt": "the cat"}).json()
    assert plain["token_strs"] is None
    body = httpx.post(server.url + "/tokenize", json={"prompt": "the cat", "return_token_strs": True}).json()
    assert len(body["token_strs"]) == body["count"] == len(body["tokens"])
    state = server.state
    assert state is not None
    tokenizer = state.engine.tokenizer_info.tokenizer
    assert body["token_strs"] == tokenizer.convert_ids_to_tokens(body["tokens"])
    chat = httpx.post(server.url + "/tokenize", json={**CHAT_BODY, "return_token_strs": True}).json()
    assert len(chat["token_strs"]) == chat["count"]
    info = httpx.get(server.url + "/tokenizer_info")
    assert info.status_code == 200
    fields = info.json()
    assert fields["tokenizer_class"] == type(tokenizer).__name__
    assert "vocab_file" not in fields and "merges_file" not in fields
    json.dumps(fields)


def test_chat_stream_chunks_carry_only_the_fields_vllm_sets(server: BackgroundServer) -> None:
    body = {**CHAT_BODY, "stream": True, "stream_options": {"include_usage": True}}
    with httpx.stream("POST", server.url + "/v1/chat/completions", json=body, timeout=60) as response:
        chunks = sse(response)
    role, *content, usage = chunks
    assert role["choices"] == [
        {"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": None, "finish_reason": None}
    ]
    assert "usage" not in role and role["object"] == "chat.completion.chunk" and role["created"] > 0
    assert content, chunks
    for chunk in content:
        (choice,) = chunk["choices"]
        assert "role" not in choice["delta"] and set(choice["delta"]) <= {"content"}
        assert "usage" not in chunk
        assert None not in choice["delta"].values()
    *middle, last = content
    assert all("stop_reason" not in chunk["choices"][0] for chunk in middle)
    assert last["choices"][0]["finish_reason"] in ("stop", "length") and "stop_reason" in last["choices"][0]
    assert usage["choices"] == [] and set(usage) == {"id", "object", "created", "model", "choices", "usage"}
    assert len({chunk["created"] for chunk in chunks}) == 1 and len({chunk["id"] for chunk in chunks}) == 1


def test_completion_stream_chunks_as_vllm(server: BackgroundServer) -> None:
    body = {"model": MODEL, "prompt": "a b", "max_tokens": 8, "stream": True}
    with httpx.stream("POST", server.url + "/v1/completions", json=body, timeout=60) as response:
        chunks = sse(response)
    for chunk in chunks:
        assert "usage" not in chunk
        assert set(chunk["choices"][0]) == {
            "index", "text", "logprobs", "finish_reason", "stop_reason", "prompt_token_ids", "token_ids",
        }  # fmt: skip


def test_openai_client_reads_the_streams(client: openai.OpenAI) -> None:
    chunks = list(client.chat.completions.create(**CHAT_BODY, stream=True))  # type: ignore[call-overload]
    assert chunks[0].choices[0].delta.role == "assistant"
    assert all(chunk.choices[0].delta.role is None for chunk in chunks[1:])
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")
    text = list(client.completions.create(model=MODEL, prompt="a b", max_tokens=4, stream=True))
    assert text[-1].choices[0].finish_reason in ("stop", "length")


def test_stream_sends_headers_and_role_before_the_first_block(
    server: BackgroundServer, gated: dict[str, GatedEngine]
) -> None:
    """A first block that takes long: chat's role chunk and completions' headers arrive at once."""
    engine = gated["engine"]
    engine.gate.clear()
    try:
        started = time.monotonic()
        body = {**CHAT_BODY, "stream": True}
        with httpx.stream("POST", server.url + "/v1/chat/completions", json=body, timeout=30) as response:
            assert response.status_code == 200
            lines = response.iter_lines()
            first = next(lines)
            waited = time.monotonic() - started
            assert json.loads(first.removeprefix("data: "))["choices"][0]["delta"] == {
                "role": "assistant", "content": "",
            }  # fmt: skip
            assert waited < 5 and not engine.gate.is_set()
            engine.gate.set()
            rest = [json.loads(line[6:]) for line in lines if line.startswith("data: {")]
        assert rest[-1]["choices"][0]["finish_reason"] in ("stop", "length")
        engine.gate.clear()
        started = time.monotonic()
        body = {"model": MODEL, "prompt": "a b", "max_tokens": 4, "stream": True}
        with httpx.stream("POST", server.url + "/v1/completions", json=body, timeout=30) as response:
            assert response.status_code == 200 and time.monotonic() - started < 5
            assert response.headers["content-type"].startswith("text/event-stream")
            engine.gate.set()
            assert sse(response)[-1]["choices"][0]["finish_reason"] in ("stop", "length")
    finally:
        engine.gate.set()


def test_errors_before_the_first_block_keep_their_status(server: BackgroundServer) -> None:
    too_long = {**CHAT_BODY, "stream": True, "max_tokens": 10**6}
    response = httpx.post(server.url + "/v1/chat/completions", json=too_long, timeout=60)
    assert response.status_code == 400, response.text


def test_sse_data_writes_only_set_fields() -> None:
    from vdiff.entrypoints.openai.chat_completion.protocol import (
        ChatCompletionStreamChoice,
        ChatCompletionStreamResponse,
        DeltaMessage,
    )

    chunk = ChatCompletionStreamResponse(
        id="x", object="chat.completion.chunk", created=1, model="m",
        choices=[ChatCompletionStreamChoice(index=0, delta=DeltaMessage(content="hi"), finish_reason=None)],
    )  # fmt: skip
    assert json.loads(sse_data(chunk)[6:]) == {
        "id": "x", "object": "chat.completion.chunk", "created": 1, "model": "m",
        "choices": [{"index": 0, "delta": {"content": "hi"}, "finish_reason": None}],
    }  # fmt: skip
    chunk.usage = None
    assert json.loads(sse_data(chunk, exclude_none=True)[6:])["choices"][0] == {
        "index": 0, "delta": {"content": "hi"},
    }  # fmt: skip
