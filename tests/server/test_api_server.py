"""The OpenAI-compatible server end to end: real uvicorn on loopback, a tiny LLaDA checkpoint in the real
layout, the real engine, driven by the official openai client (raw httpx where the client hides the wire)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from server.metrics_scrape import scrape
from vdiff.config import EngineConfig
from vdiff.entrypoints.frontend_args import FrontendArgs
from vdiff.entrypoints.launcher import BackgroundServer

MODEL = "tiny-llada"
MULTI_BLOCK = {"block_length": 4, "steps": 16}
"""16 tokens in 4 blocks: the commit frontier advances at least once per block."""


@pytest.fixture(scope="module")
def server(llada_checkpoint: Path) -> Iterator[BackgroundServer]:
    config = EngineConfig(model=str(llada_checkpoint), served_model_names=[MODEL, "alias"], max_num_seqs=8)
    with BackgroundServer(config, FrontendArgs()) as background:
        yield background


@pytest.fixture(scope="module")
def client(server: BackgroundServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=120)


def test_models_lists_every_served_name(client: openai.OpenAI) -> None:
    assert [model.id for model in client.models.list().data] == [MODEL, "alias"]


def test_completion_text_usage_and_finish_reason(server: BackgroundServer, client: openai.OpenAI) -> None:
    prompt = "the cat sat on"
    result = client.completions.create(model=MODEL, prompt=prompt, max_tokens=8, temperature=0)
    choice = result.choices[0]
    assert result.object == "text_completion" and result.model == MODEL
    assert choice.finish_reason in ("stop", "length")
    prompt_ids = httpx.post(server.url + "/tokenize", json={"model": MODEL, "prompt": prompt}).json()[
        "tokens"
    ]
    assert result.usage.prompt_tokens == len(prompt_ids)
    assert 0 < result.usage.completion_tokens <= 8
    assert result.usage.total_tokens == result.usage.prompt_tokens + result.usage.completion_tokens
    if choice.finish_reason == "length":
        assert result.usage.completion_tokens == 8
    again = client.completions.create(model="alias", prompt=prompt, max_tokens=8, temperature=0)
    assert again.choices[0].text == choice.text and again.model == "alias"


def test_streamed_chunks_concatenate_to_the_whole_text(client: openai.OpenAI) -> None:
    kwargs = {"model": MODEL, "prompt": "once upon a time", "max_tokens": 16, "temperature": 0}
    whole = client.completions.create(**kwargs, extra_body=MULTI_BLOCK)
    chunks = list(
        client.completions.create(
            **kwargs, stream=True, stream_options={"include_usage": True}, extra_body=MULTI_BLOCK
        )
    )
    text_chunks = [chunk for chunk in chunks if chunk.choices and chunk.choices[0].text]
    assert len(text_chunks) >= 2, "the text must arrive as the frontier advances, not in one piece at the end"
    choice_chunks = [chunk for chunk in chunks if chunk.choices]
    assert choice_chunks[-1].choices[0].finish_reason == whole.choices[0].finish_reason
    assert all(chunk.choices[0].finish_reason is None for chunk in choice_chunks[:-1])
    assert "".join(chunk.choices[0].text for chunk in choice_chunks) == whole.choices[0].text
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == whole.usage.completion_tokens


def test_chat_whole_and_streamed(client: openai.OpenAI) -> None:
    kwargs = {"model": MODEL, "messages": [{"role": "user", "content": "hello there"}], "temperature": 0}
    whole = client.chat.completions.create(**kwargs, max_completion_tokens=16, extra_body=MULTI_BLOCK)
    message = whole.choices[0].message
    assert whole.object == "chat.completion" and message.role == "assistant"
    assert whole.usage.completion_tokens > 0 and whole.usage.prompt_tokens > 3
    chunks = list(
        client.chat.completions.create(**kwargs, max_tokens=16, stream=True, extra_body=MULTI_BLOCK)
    )
    assert chunks[0].choices[0].delta.role == "assistant"
    streamed = "".join(chunk.choices[0].delta.content or "" for chunk in chunks)
    assert streamed == message.content
    assert chunks[-1].choices[0].finish_reason == whole.choices[0].finish_reason
    assert sum(1 for chunk in chunks if chunk.choices[0].delta.content) >= 2


def test_n_choices_prompt_lists_and_token_prompts(client: openai.OpenAI) -> None:
    sampled = client.completions.create(
        model=MODEL, prompt="a b c", max_tokens=4, n=3, temperature=1.0, seed=7
    )
    assert sorted(choice.index for choice in sampled.choices) == [0, 1, 2]
    repeat = client.completions.create(
        model=MODEL, prompt="a b c", max_tokens=4, n=3, temperature=1.0, seed=7
    )
    assert [c.text for c in sorted(repeat.choices, key=lambda c: c.index)] == [
        c.text for c in sorted(sampled.choices, key=lambda c: c.index)
    ]
    two = client.completions.create(
        model=MODEL, prompt=["the cat", "a dog"], max_tokens=4, n=2, temperature=0
    )
    assert sorted(choice.index for choice in two.choices) == [0, 1, 2, 3]
    single = client.completions.create(model=MODEL, prompt="a dog", max_tokens=4, temperature=0)
    assert {c.index: c.text for c in two.choices}[2] == single.choices[0].text
    ids = client.completions.create(model=MODEL, prompt=[5, 6, 7], max_tokens=4, temperature=0)
    assert ids.usage.prompt_tokens == 3


def test_stop_string_cuts_the_text(client: openai.OpenAI) -> None:
    kwargs = {"model": MODEL, "prompt": "the quick brown fox", "max_tokens": 16, "temperature": 0}
    text = client.completions.create(**kwargs).choices[0].text
    assert len(text) >= 4
    stop = text[2:4]
    cut = client.completions.create(**kwargs, stop=[stop]).choices[0]
    assert cut.text == text[: text.find(stop)]
    assert cut.finish_reason == "stop"


def test_tokenize_detokenize_round_trip(server: BackgroundServer) -> None:
    tokens = httpx.post(server.url + "/tokenize", json={"prompt": "hello world"}).json()
    assert tokens["count"] == len(tokens["tokens"]) > 0 and tokens["max_model_len"] > 0
    text = httpx.post(server.url + "/detokenize", json={"tokens": tokens["tokens"]}).json()["prompt"]
    assert text.endswith("hello world")
    chat = httpx.post(server.url + "/tokenize", json={"messages": [{"role": "user", "content": "hi"}]}).json()
    assert chat["count"] > tokens["count"] - 3


def test_health_ping_version(server: BackgroundServer) -> None:
    assert httpx.get(server.url + "/health").status_code == 200
    assert httpx.get(server.url + "/ping").status_code == 200
    assert httpx.get(server.url + "/version").json()["version"]


BAD_REQUESTS = [
    ("/v1/completions", b"{not json", 400, None),
    ("/v1/completions", {"model": MODEL, "prompt": "x", "max_tokens": -1}, 400, "max_tokens"),
    ("/v1/completions", {"model": MODEL, "prompt": "x", "max_tokens": "many"}, 400, "max_tokens"),
    ("/v1/completions", {"model": MODEL, "prompt": "x", "temperature": -1}, 400, "temperature"),
    ("/v1/completions", {"model": MODEL, "prompt": "x", "max_tokens": 100000}, 400, "max_tokens"),
    ("/v1/completions", {"model": MODEL, "prompt": "x", "remasking": "sideways"}, 400, "remasking"),
    ("/v1/completions", {"model": MODEL, "prompt": "x", "decoding": "magic"}, 400, "decoding"),
    ("/v1/completions", {"model": MODEL, "prompt": "x", "n": 0}, 400, "n"),
    ("/v1/completions", {"model": MODEL, "prompt": [10**9]}, 400, "prompt"),
    ("/v1/completions", {"model": MODEL, "prompt": []}, 400, "prompt"),
    ("/v1/completions", {"model": MODEL}, 400, "prompt"),
    ("/v1/completions", {"model": MODEL, "prompt": "x", "logprobs": 21}, 400, "logprobs"),
    ("/v1/completions", {"model": "gpt-4", "prompt": "x"}, 404, "model"),
    ("/v1/chat/completions", {"model": MODEL, "messages": "hi"}, 400, "messages"),
    ("/v1/chat/completions", {"model": MODEL, "messages": []}, 400, "messages"),
    ("/v1/chat/completions", {"model": MODEL, "messages": [{"role": "user", "content": "x"}], "top_p": 0},
     400, "top_p"),
    ("/v1/chat/completions", {"model": MODEL, "messages": [{"content": "x"}]}, 400, "messages.0.role"),
    ("/detokenize", {"tokens": [-1]}, 400, "tokens"),
    ("/v1/nothing-here", {}, 404, None),
]  # fmt: skip


@pytest.mark.parametrize(("path", "body", "status", "param"), BAD_REQUESTS)
def test_bad_requests_get_openai_errors(
    server: BackgroundServer, path: str, body: object, status: int, param: str | None
) -> None:
    if isinstance(body, bytes):
        response = httpx.post(server.url + path, content=body, headers={"content-type": "application/json"})
    else:
        response = httpx.post(server.url + path, json=body)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == status and error["message"]
    assert error["param"] == param
    assert "Traceback" not in response.text


def test_server_still_serves_after_bad_requests(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.completions.create(model=MODEL, prompt="x", max_tokens=-5)
    assert info.value.status_code == 400
    assert client.completions.create(model=MODEL, prompt="x", max_tokens=2).choices[0].finish_reason


def test_concurrent_streams_are_batched(server: BackgroundServer, client: openai.OpenAI) -> None:
    before = scrape(server)
    results: dict[int, str] = {}
    errors: list[BaseException] = []

    def stream(index: int) -> None:
        try:
            chunks = client.completions.create(
                model=MODEL, prompt=f"story {index}", max_tokens=16, temperature=0, stream=True,
                extra_body=MULTI_BLOCK,
            )  # fmt: skip
            results[index] = "".join(chunk.choices[0].text for chunk in chunks if chunk.choices)
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=stream, args=(index,)) for index in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not errors and len(results) == 8
    for index in (0, 5):  # each batched answer equals the same request served alone
        alone = client.completions.create(
            model=MODEL, prompt=f"story {index}", max_tokens=16, temperature=0, extra_body=MULTI_BLOCK
        )
        assert results[index] == alone.choices[0].text
    after = scrape(server)
    steps = after["vdiff:engine_steps_total"] - before["vdiff:engine_steps_total"]
    forwards_taken = (
        after["vdiff:forward_passes_per_request_sum"] - before["vdiff:forward_passes_per_request_sum"]
    )
    multi_sequence_steps = (after["vdiff:batch_size_count"] - before["vdiff:batch_size_count"]) - (
        after["vdiff:batch_size_bucket{le=1.0}"] - before["vdiff:batch_size_bucket{le=1.0}"]
    )
    assert multi_sequence_steps > 0
    assert forwards_taken > steps, "requests shared forward passes"


def test_disconnect_mid_stream_aborts_the_request(server: BackgroundServer) -> None:
    before = scrape(server)
    body = {"model": MODEL, "prompt": "a long story", "max_tokens": 256, "steps": 256, "block_length": 8}
    body |= {"stream": True, "ignore_eos": True}
    with httpx.stream("POST", server.url + "/v1/completions", json=body, timeout=60) as response:
        assert response.status_code == 200
        first = next(response.iter_lines())
        assert first.startswith("data: ") and json.loads(first[6:])["choices"]
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        metrics = scrape(server)
        aborted = metrics["vllm:request_success_total{finished_reason=abort}"]
        if aborted > before["vllm:request_success_total{finished_reason=abort}"]:
            break
        time.sleep(0.05)
    assert aborted > before["vllm:request_success_total{finished_reason=abort}"]
    assert metrics["vllm:num_requests_running"] == 0


METRIC_NAMES = (
    "vllm:num_requests_running", "vllm:num_requests_waiting", "vllm:request_success_total",
    "vllm:prompt_tokens_total", "vllm:generation_tokens_total", "vllm:time_to_first_token_seconds_bucket",
    "vllm:inter_token_latency_seconds_bucket", "vllm:e2e_request_latency_seconds_bucket",
    "vllm:request_queue_time_seconds_bucket", "vllm:request_prompt_tokens_bucket",
    "vllm:request_generation_tokens_bucket", "vllm:request_params_max_tokens_bucket",
    "vdiff:forward_passes_per_request_bucket", "vdiff:tokens_committed_per_step_bucket",
    "vdiff:denoising_steps_per_request_bucket", "vdiff:batch_size_bucket", "vdiff:engine_steps_total",
)  # fmt: skip


def test_metrics_expose_every_name_after_traffic(server: BackgroundServer, client: openai.OpenAI) -> None:
    client.completions.create(model=MODEL, prompt="metrics", max_tokens=8, extra_body=MULTI_BLOCK)
    text = httpx.get(server.url + "/metrics").text
    for name in METRIC_NAMES:
        assert f"\n{name}{{" in text, name
    assert 'model_name="tiny-llada"' in text
    metrics = scrape(server)
    assert metrics["vllm:generation_tokens_total"] > 0 and metrics["vllm:prompt_tokens_total"] > 0
    assert metrics["vllm:time_to_first_token_seconds_count"] > 0
    assert metrics["vllm:inter_token_latency_seconds_count"] > 0
    assert metrics["vllm:request_success_total{finished_reason=length}"] > 0
