"""A real `vdiff serve -tp 2` on loopback (rank 0 + one worker process over gloo), driven with the openai
client: the same answers as `-tp 1` streamed and concurrent; a killed worker turns /health red and the
server exits non-zero; SIGTERM stops every rank; a bad N is refused before anything loads."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import openai
import pytest
from checkpoint_factory import make_llada_checkpoint
from server.tensor_parallel_helpers import free_port

pytestmark = pytest.mark.slow

PROMPTS = ["the story of", "add 43 and 5", "one two"]


def children(pid: int) -> list[int]:
    """Direct child processes (from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def is_running(pid: int) -> bool:
    try:
        state = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


class Server:
    def __init__(self, model: Path, tp: int, log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log.open("w+")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "vdiff.entrypoints.cli", "serve", str(model), "-tp", str(tp),
             "--host", "127.0.0.1", "--port", str(self.port), "--served-model-name", "tiny",
             "--shutdown-grace-period", "5", "--device", "cpu"],
            stdout=self.log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.output()
            try:
                if httpx.get(self.url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        else:
            raise TimeoutError(self.output())
        self.client = openai.OpenAI(base_url=self.url + "/v1", api_key="none", max_retries=0)

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()


@pytest.fixture(scope="module")
def servers(
    llada_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Server, Server]]:
    logs = tmp_path_factory.mktemp("tp-server")
    single = Server(llada_checkpoint, 1, logs / "tp1.log")
    parallel = Server(llada_checkpoint, 2, logs / "tp2.log")
    yield single, parallel
    for server in (single, parallel):
        server.stop()


def complete(server: Server, prompt: str) -> str:
    response = server.client.completions.create(model="tiny", prompt=prompt, max_tokens=16, temperature=0)
    return response.choices[0].text


def stream_chat(server: Server, content: str) -> str:
    stream = server.client.chat.completions.create(
        model="tiny",
        messages=[{"role": "user", "content": content}],
        max_tokens=16,
        temperature=0,
        stream=True,
    )
    return "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)


def test_two_ranks_answer_as_one_streamed_and_concurrent(servers: tuple[Server, Server]) -> None:
    single, parallel = servers
    assert len(children(parallel.process.pid)) == 1  # the worker
    expected = [complete(single, prompt) for prompt in PROMPTS]
    with ThreadPoolExecutor(len(PROMPTS)) as pool:  # batched in the parallel server's engine
        got = list(pool.map(lambda prompt: complete(parallel, prompt), PROMPTS))
    assert got == expected and any(expected)
    streamed = [stream_chat(single, "hi"), stream_chat(single, "add 2 and 2")]
    with ThreadPoolExecutor(2) as pool:
        assert list(pool.map(lambda text: stream_chat(parallel, text), ["hi", "add 2 and 2"])) == streamed


def test_a_killed_worker_turns_health_red_and_the_server_exits_non_zero(
    llada_checkpoint: Path, tmp_path: Path
) -> None:
    server = Server(llada_checkpoint, 2, tmp_path / "kill.log")
    try:
        [worker] = children(server.process.pid)
        assert complete(server, "one two") is not None
        os.kill(worker, signal.SIGKILL)
        statuses = []
        deadline = time.monotonic() + 30
        while server.process.poll() is None and time.monotonic() < deadline:
            try:
                statuses.append(httpx.get(server.url + "/health", timeout=1).status_code)
            except httpx.HTTPError:
                statuses.append(None)
            time.sleep(0.05)
        assert server.process.wait(30) != 0, server.output()
        assert any(status is not None and status >= 500 for status in statuses), statuses
        assert 200 not in statuses[statuses.index(next(s for s in statuses if s and s >= 500)) :]
        assert "worker rank 1" in server.output() and "exited" in server.output()
    finally:
        server.stop()


def test_sigterm_stops_every_rank(llada_checkpoint: Path, tmp_path: Path) -> None:
    server = Server(llada_checkpoint, 2, tmp_path / "term.log")
    [worker] = children(server.process.pid)
    server.process.send_signal(signal.SIGTERM)
    assert server.process.wait(60) == 0, server.output()
    deadline = time.monotonic() + 10
    while is_running(worker) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not is_running(worker)


def test_sizes_that_do_not_fit_are_refused_before_loading(tmp_path: Path) -> None:
    odd = make_llada_checkpoint(tmp_path / "odd", d_model=48, n_heads=3, n_kv_heads=3)
    for argv, message in (
        ([str(odd), "-tp", "2"], "--tensor-parallel-size 2 must divide the model's 3 attention heads"),
        ([str(odd), "-tp", str((os.cpu_count() or 1) + 1)], "CPU core(s) of this machine"),
    ):
        result = subprocess.run(
            [sys.executable, "-m", "vdiff.entrypoints.cli", "serve", *argv, "--device", "cpu", "--port", "0"],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr
