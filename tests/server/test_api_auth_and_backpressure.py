"""API key enforcement and backpressure on a real server: 401 without the key (probes stay open), 429 with
Retry-After when the one batch slot and the (empty) waiting queue are taken, service again afterwards."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from vdiff.config import EngineConfig
from vdiff.entrypoints.frontend_args import FrontendArgs
from vdiff.entrypoints.launcher import BackgroundServer

MODEL = "tiny-llada"
API_KEY = "s3cret-key"
LONG_STREAM = {
    "model": MODEL, "prompt": "a long story", "max_tokens": 256, "steps": 256, "block_length": 8,
    "ignore_eos": True,
}  # fmt: skip
"""Hundreds of denoising steps: still running while the test sends the overflowing request."""


@pytest.fixture(scope="module")
def server(llada_checkpoint: Path) -> Iterator[BackgroundServer]:
    config = EngineConfig(
        model=str(llada_checkpoint), served_model_names=[MODEL], max_num_seqs=1, max_waiting_requests=0
    )
    with BackgroundServer(config, FrontendArgs(api_key=API_KEY)) as background:
        yield background


def client(server: BackgroundServer, api_key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key=api_key, max_retries=0, timeout=120)


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": API_KEY}])
@pytest.mark.parametrize(
    ("method", "path"), [("GET", "/v1/models"), ("POST", "/v1/completions"), ("POST", "/tokenize")]
)
def test_missing_or_wrong_key_is_401(server: BackgroundServer, method: str, path: str, headers: dict) -> None:
    response = httpx.request(method, server.url + path, headers=headers, json={"model": MODEL, "prompt": "x"})
    assert response.status_code == 401
    error = response.json()["error"]
    assert error["code"] == 401 and error["type"] == "AuthenticationError" and "API key" in error["message"]


def test_probes_and_metrics_stay_open(server: BackgroundServer) -> None:
    for path in ("/health", "/ping", "/version", "/metrics"):
        assert httpx.get(server.url + path).status_code == 200, path


def test_openai_client_with_and_without_the_key(server: BackgroundServer) -> None:
    with pytest.raises(openai.AuthenticationError):
        client(server, "nope").models.list()
    result = client(server, API_KEY).completions.create(model=MODEL, prompt="hi", max_tokens=4)
    assert result.choices[0].finish_reason in ("stop", "length")


def test_full_queue_is_429_with_retry_after_then_recovers(server: BackgroundServer) -> None:
    headers = {"Authorization": f"Bearer {API_KEY}"}
    authorized = client(server, API_KEY)
    body = {**LONG_STREAM, "stream": True}
    with httpx.stream(
        "POST", server.url + "/v1/completions", json=body, headers=headers, timeout=60
    ) as stream:
        lines = stream.iter_lines()  # keep a reference: a collected iterator closes the connection
        first = next(lines)
        assert stream.status_code == 200, first
        assert json.loads(first.removeprefix("data: "))["choices"], first  # the slot is taken now
        overflow = httpx.post(
            server.url + "/v1/completions", json={"model": MODEL, "prompt": "x"}, headers=headers, timeout=60
        )
        assert overflow.status_code == 429
        assert int(overflow.headers["Retry-After"]) >= 1
        assert overflow.json()["error"]["type"] == "RateLimitError"
        with pytest.raises(openai.RateLimitError):
            authorized.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x"}])
    # Closing the stream aborted its request: the slot is free again.
    result = authorized.completions.create(model=MODEL, prompt="x", max_tokens=4)
    assert result.choices[0].finish_reason in ("stop", "length")
