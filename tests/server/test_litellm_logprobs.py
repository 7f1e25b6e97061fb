"""LiteLLM's hosted_vllm provider gets logprobs from vdiff on both endpoints (a real client, loopback)."""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from types import ModuleType

import httpx
import pytest
from vdiff.config import EngineConfig
from vdiff.demo import demo_model_path
from vdiff.entrypoints.frontend_args import FrontendArgs
from vdiff.entrypoints.launcher import BackgroundServer

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no fetch of the price list at import

# Importing litellm is slow; test_logprobs_api runs the OpenAI and LangChain clients by default.
pytestmark = pytest.mark.slow

MODEL = "llada-demo"
MESSAGES = [{"role": "user", "content": "Add 43 and 5."}]


@pytest.fixture(scope="module")
def litellm() -> ModuleType:
    """Imported here, not at collection, so a default (not slow) run never pays for it."""
    return pytest.importorskip("litellm")


@pytest.fixture(scope="module")
def server() -> Iterator[BackgroundServer]:
    config = EngineConfig(model=str(demo_model_path(MODEL)), served_model_names=[MODEL])
    with BackgroundServer(config, FrontendArgs()) as background:
        yield background


def test_chat_logprobs_through_litellm(server: BackgroundServer, litellm: ModuleType) -> None:
    response = litellm.completion(
        model=f"hosted_vllm/{MODEL}", api_base=server.url + "/v1", api_key="unused", messages=MESSAGES,
        logprobs=True, top_logprobs=2, max_tokens=8, temperature=0,
    )  # fmt: skip
    choice = response.choices[0]
    assert choice.message.content == "48"
    content = choice.logprobs.content
    assert [entry.token for entry in content] == ["4", "8"]
    assert all(
        math.isfinite(entry.logprob) and entry.logprob <= 0 and len(entry.top_logprobs) == 2
        for entry in content
    )


def test_completion_logprobs_through_litellm(server: BackgroundServer, litellm: ModuleType) -> None:
    chat = {"model": MODEL, "messages": MESSAGES, "max_tokens": 1, "return_prompt_text": True}
    prompt = httpx.post(server.url + "/v1/chat/completions", json=chat, timeout=60).json()["prompt_text"]
    response = litellm.text_completion(
        model=f"hosted_vllm/{MODEL}", api_base=server.url + "/v1", api_key="unused", prompt=prompt,
        logprobs=1, max_tokens=8, temperature=0,
    )  # fmt: skip
    choice = response.choices[0]
    assert choice.text == "48"
    assert choice.logprobs.tokens == ["4", "8"]
    assert all(value <= 0 for value in choice.logprobs.token_logprobs)
