"""The HTTP layer against hostile or careless clients, on the real server with the demo model: bodies over
the cap get 413 fast, huge prompts are tokenized off the event loop, invalid Unicode is a 4xx (never a
500), and an engine that dies makes `vdiff serve` exit non-zero."""

from __future__ import annotations

import asyncio
import json
import resource
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from starlette.types import Receive, Scope, Send
from vdiff.config import EngineConfig
from vdiff.demo import demo_model_path, is_demo_model_available
from vdiff.entrypoints.body_limit import RequestBodyLimit
from vdiff.entrypoints.frontend_args import FrontendArgs
from vdiff.entrypoints.launcher import BackgroundServer
from vdiff.errors import VdiffValidationError

pytestmark = pytest.mark.skipif(not is_demo_model_available(), reason="the demo checkpoint is not installed")

MODEL = "llada-demo"
MAX_PROMPTS = 4
TWENTY_MB = 20 * 1024 * 1024
ADDRESS_SPACE_CAP = 8 * 1024**3
BAD = "\ud800"
"""A lone surrogate: json.dumps sends it as the JSON escape \\ud800, which no UTF-8 text can hold."""


@pytest.fixture(scope="module")
def server() -> Iterator[BackgroundServer]:
    config = EngineConfig(model=str(demo_model_path(MODEL)), served_model_names=[MODEL])
    with BackgroundServer(config, FrontendArgs(max_prompts_per_request=MAX_PROMPTS)) as background:
        yield background


def post_raw(server: BackgroundServer, path: str, body: bytes) -> httpx.Response:
    return httpx.post(
        server.url + path, content=body, headers={"content-type": "application/json"}, timeout=60
    )


def assert_openai_error(response: httpx.Response, status: int, param: str | None = None) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["code"] == status
    if param is not None:
        assert error["param"] == param, error
    return error


class HealthProbe:
    """Polls /health from a thread while something else runs; records the slowest answer."""

    def __init__(self, server: BackgroundServer) -> None:
        self.url = server.url + "/health"
        self.latencies: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run)

    def _run(self) -> None:
        with httpx.Client(timeout=10) as client:
            while not self._stop.is_set():
                started = time.monotonic()
                assert client.get(self.url).status_code == 200
                self.latencies.append(time.monotonic() - started)
                time.sleep(0.05)

    def __enter__(self) -> HealthProbe:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(15)


def test_body_over_the_cap_is_refused_from_its_content_length(server: BackgroundServer) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        started = time.monotonic()
        sock.sendall(
            b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {TWENTY_MB}\r\n\r\n".encode()
        )
        reply = b""
        while b"}}" not in reply:
            chunk = sock.recv(4096)
            assert chunk, reply
            reply += chunk
    assert time.monotonic() - started < 1
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413")
    assert json.loads(body)["error"]["type"] == "RequestTooLargeError"


def test_twenty_mb_prompt_is_refused_fast_while_health_stays_responsive(server: BackgroundServer) -> None:
    body = json.dumps({"model": MODEL, "prompt": "a" * TWENTY_MB}).encode()
    with HealthProbe(server) as probe:
        started = time.monotonic()
        response = post_raw(server, "/v1/completions", body)
        elapsed = time.monotonic() - started
        time.sleep(0.2)
    error = assert_openai_error(response, 413)
    assert "--max-request-body-bytes" in error["message"]
    assert elapsed < 2
    assert probe.latencies and max(probe.latencies) < 1


def test_chunked_body_over_the_cap_is_refused_while_read(server: BackgroundServer) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"prompt": "'
        for _ in range(TWENTY_MB // 65536):
            yield b"a" * 65536
        yield b'"}'

    response = httpx.post(server.url + "/v1/completions", content=chunks(), timeout=30)
    assert_openai_error(response, 413)
    assert httpx.get(server.url + "/health").status_code == 200


def test_body_limit_reads_no_more_than_the_limit() -> None:
    limit, chunk = 1000, 100
    received: list[int] = []
    sent: list[dict] = []

    async def receive() -> dict:
        received.append(chunk)
        return {"type": "http.request", "body": b"x" * chunk, "more_body": True}

    async def send(message: dict) -> None:
        sent.append(message)

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        while (await receive()).get("more_body"):
            pass

    scope = {"type": "http", "method": "POST", "path": "/", "headers": []}
    asyncio.run(RequestBodyLimit(app, max_body_bytes=limit)(scope, receive, send))
    assert sum(received) == limit + chunk
    assert sent[0]["type"] == "http.response.start" and sent[0]["status"] == 413


def test_limits_below_one_are_refused_naming_the_flag() -> None:
    for field, flag in (
        ("max_request_body_bytes", "--max-request-body-bytes"),
        ("max_prompts_per_request", "--max-prompts-per-request"),
    ):
        with pytest.raises(VdiffValidationError) as raised:
            FrontendArgs(**{field: 0})
        assert raised.value.param == flag and flag in raised.value.message


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/completions", {"prompt": "the cat sat. " * (160 * 1024), "max_tokens": 4}),
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": "the cat sat. " * (160 * 1024)}]}),
    ],
)
def test_huge_prompt_is_tokenized_off_the_event_loop(server: BackgroundServer, path: str, body: dict) -> None:
    with HealthProbe(server) as probe:
        time.sleep(0.1)
        response = httpx.post(server.url + path, json={"model": MODEL, **body}, timeout=60)
        time.sleep(0.1)
    assert "maximum context length" in assert_openai_error(response, 400)["message"]
    assert len(probe.latencies) >= 3 and max(probe.latencies) < 1


def test_too_many_prompts_are_refused_before_tokenizing(server: BackgroundServer) -> None:
    prompts = ["fine"] * MAX_PROMPTS + [BAD]  # the cap, not the bad text, is what gets reported
    response = post_raw(server, "/v1/completions", json.dumps({"model": MODEL, "prompt": prompts}).encode())
    error = assert_openai_error(response, 400, "prompt")
    assert str(MAX_PROMPTS) in error["message"]


@pytest.mark.parametrize(
    ("path", "body", "status", "param"),
    [
        ("/v1/completions", {"prompt": BAD, "max_tokens": 2}, 400, "prompt"),
        ("/v1/completions", {"prompt": ["ok", BAD], "max_tokens": 2}, 400, "prompt"),
        ("/tokenize", {"prompt": BAD}, 400, "prompt"),
        ("/tokenize", {"messages": [{"role": "user", "content": BAD}]}, 400, "messages"),
        ("/detokenize", {"tokens": [BAD]}, 400, None),
        ("/detokenize", {"model": BAD, "tokens": [1]}, 404, "model"),
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": BAD}]}, 400, "messages"),
        ("/v1/chat/completions", {"messages": [{"role": BAD, "content": "hi"}]}, 400, "messages"),
        (
            "/v1/chat/completions",
            {"messages": [{"role": "user", "content": [{"type": "text", "text": BAD}]}]},
            400,
            "messages",
        ),
        (
            "/v1/chat/completions",
            {"messages": [{"role": "user", "content": "hi"}], "chat_template_kwargs": {BAD: 1}},
            400,
            "chat_template_kwargs",
        ),
        ("/v1/completions", {"model": BAD, "prompt": "hi"}, 404, "model"),
        ("/v1/chat/completions", {"model": BAD, "messages": []}, 404, "model"),
    ],
)
def test_lone_surrogates_are_client_errors(
    server: BackgroundServer, path: str, body: dict, status: int, param: str | None
) -> None:
    error = assert_openai_error(post_raw(server, path, json.dumps(body).encode()), status, param)
    assert BAD not in error["message"]


DYING_ENGINE_SCRIPT = """
import sys

from vdiff.engine import llm_engine
from vdiff.entrypoints import cli


def broken_step(self):
    raise RuntimeError("injected engine failure")


llm_engine.LLMEngine.step = broken_step
cli.main(["serve", "llada-demo", "--host", "127.0.0.1", "--port", sys.argv[1], "--disable-log-stats"])
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def cap_address_space() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE_CAP, ADDRESS_SPACE_CAP))


@pytest.mark.slow  # a real server subprocess; test_async_engine covers a dead engine in-process
def test_dead_engine_makes_the_server_exit_non_zero(tmp_path: Path) -> None:
    script = tmp_path / "dying_engine.py"
    script.write_text(DYING_ENGINE_SCRIPT)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = (tmp_path / "server.log").open("w+")
    process = subprocess.Popen(
        [sys.executable, str(script), str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        preexec_fn=cap_address_space,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None and time.monotonic() < deadline, "the server did not start"
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        sent_at = time.monotonic()
        try:
            response = httpx.post(url + "/v1/completions", json={"prompt": "hi", "max_tokens": 4}, timeout=15)
            assert_openai_error(response, 503)
        except httpx.HTTPError:
            pass  # the server may already be closing the connection
        try:
            health_status = httpx.get(url + "/health", timeout=2).status_code
        except httpx.HTTPError:
            health_status = None
        assert health_status in (503, None)
        assert process.wait(15) != 0
        assert time.monotonic() - sent_at < 15
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    log.seek(0)
    output = log.read()
    assert "injected engine failure" in output and "exiting with status 1" in output
