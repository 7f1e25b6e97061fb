"""Prompt scoring over HTTP, as lm-eval's local-completions loglikelihood sends it (echo + logprobs)."""

from __future__ import annotations

import math
from collections.abc import Iterator

import httpx
import pytest
from vdiff.config import EngineConfig
from vdiff.demo import demo_model_path
from vdiff.entrypoints.frontend_args import FrontendArgs
from vdiff.entrypoints.launcher import BackgroundServer

from bench.tasks import eval_set

MODEL = "llada-demo"


@pytest.fixture(scope="module")
def server() -> Iterator[BackgroundServer]:
    config = EngineConfig(model=str(demo_model_path(MODEL)), served_model_names=[MODEL])
    with BackgroundServer(config, FrontendArgs()) as background:
        yield background


def post(server: BackgroundServer, path: str, **body) -> httpx.Response:
    return httpx.post(server.url + path, json={"model": MODEL, **body}, timeout=120)


def chat_ids(server: BackgroundServer, text: str) -> list[int]:
    response = post(server, "/tokenize", messages=[{"role": "user", "content": text}])
    return response.json()["tokens"]


def text_ids(server: BackgroundServer, text: str) -> list[int]:
    return post(server, "/tokenize", prompt=text, add_special_tokens=False).json()["tokens"]


def loglikelihood(
    server: BackgroundServer, context: list[int], continuation: list[int]
) -> tuple[float, bool]:
    """lm-eval's local-completions request and parse_logprobs: sum over [ctxlen:-1], greedy check."""
    response = post(
        server, "/v1/completions", prompt=context + continuation, max_tokens=1, logprobs=1, echo=True,
        temperature=0, seed=1234,
    )  # fmt: skip
    assert response.status_code == 200, response.text
    logprobs = response.json()["choices"][0]["logprobs"]
    assert len(logprobs["tokens"]) == len(context) + len(continuation) + 1
    assert logprobs["token_logprobs"][0] is None and logprobs["top_logprobs"][0] is None
    values = logprobs["token_logprobs"][len(context) : -1]
    tops = logprobs["top_logprobs"][len(context) : -1]
    assert all(math.isfinite(value) and value <= 0 for value in values)
    greedy = all(value == max(top.values()) for value, top in zip(values, tops, strict=True))
    return sum(values), greedy


@pytest.mark.slow  # 24 scoring requests; test_prompt_scoring ranks the answers in the engine
def test_lm_eval_style_multiple_choice_ranks_the_right_answer(server: BackgroundServer) -> None:
    right = total = 0
    for instance in eval_set("add", 6) + eval_set("copy", 6):
        context = chat_ids(server, instance.prompt)
        answer = instance.answers[0]
        wrong = answer[:-1] + str((int(answer[-1]) + 1) % 10)
        good, _ = loglikelihood(server, context, text_ids(server, answer))
        bad, bad_greedy = loglikelihood(server, context, text_ids(server, wrong))
        right += good > bad
        total += 1
        assert not (bad_greedy and good > bad)  # a wrong continuation can't be greedy when the right one wins
    assert right >= 0.9 * total, f"{right}/{total}"


def test_prompt_logprobs_field_on_both_endpoints(server: BackgroundServer) -> None:
    prompt = chat_ids(server, "Copy 12345.")
    body = post(
        server, "/v1/completions", prompt=prompt, max_tokens=4, prompt_logprobs=2, temperature=0
    ).json()
    entries = body["choices"][0]["prompt_logprobs"]
    assert len(entries) == len(prompt) and entries[0] is None
    for token, entry in zip(prompt[1:], entries[1:], strict=True):
        own = entry[str(token)]
        assert own["rank"] >= 1 and own["logprob"] <= 0 and len(entry) in (3, 4)  # the token + top 2
    chat = post(
        server, "/v1/chat/completions", messages=[{"role": "user", "content": "Copy 12345."}], max_tokens=4,
        prompt_logprobs=0, temperature=0,
    ).json()  # fmt: skip
    assert chat["prompt_logprobs"][0] is None and len(chat["prompt_logprobs"]) == len(prompt)
    streamed = post(server, "/v1/completions", prompt=prompt, prompt_logprobs=1, stream=True)
    assert streamed.status_code == 400 and streamed.json()["error"]["param"] == "prompt_logprobs"
