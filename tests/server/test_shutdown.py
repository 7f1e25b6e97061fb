"""SIGTERM on `vdiff serve` (a real subprocess): readiness drops to 503, new requests get 503, the request in
flight still finishes, and the process exits 0 within the grace period instead of waiting for SIGKILL."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.slow  # a real server subprocess; test_async_engine drains in-process

GRACE_PERIOD_S = 60


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until_healthy(url: str, process: subprocess.Popen, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert process.poll() is None, process.stderr.read() if process.stderr else "server exited"
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise TimeoutError("vdiff serve did not become healthy")


def test_sigterm_drains_in_flight_requests_and_exits_zero(llada_checkpoint: Path, tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = (tmp_path / "server.log").open("w+")
    process = subprocess.Popen(
        [sys.executable, "-m", "vdiff.entrypoints.cli", "serve", str(llada_checkpoint), "--host", "127.0.0.1",
         "--port", str(port), "--served-model-name", "tiny", "--shutdown-grace-period", str(GRACE_PERIOD_S)],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        wait_until_healthy(url, process)
        body = {
            "model": "tiny", "prompt": "a long story", "max_tokens": 96, "steps": 96, "block_length": 8,
            "ignore_eos": True, "stream": True,
        }  # fmt: skip
        events: list[dict] = []
        first_chunk = threading.Event()

        def stream() -> None:
            with httpx.stream("POST", url + "/v1/completions", json=body, timeout=GRACE_PERIOD_S) as response:
                for line in response.iter_lines():
                    if line.startswith("data: {"):
                        events.append(json.loads(line[6:]))
                        first_chunk.set()

        client = threading.Thread(target=stream)
        client.start()
        assert first_chunk.wait(60)
        process.send_signal(signal.SIGTERM)
        signalled_at = time.monotonic()
        assert not any(event["choices"][0]["finish_reason"] for event in list(events)), "still in flight"

        health = httpx.get(url + "/health", timeout=5)
        assert health.status_code == 503
        refused = httpx.post(url + "/v1/completions", json={"model": "tiny", "prompt": "x"}, timeout=5)
        assert refused.status_code == 503 and refused.json()["error"]["code"] == 503

        assert process.wait(GRACE_PERIOD_S + 10) == 0
        assert time.monotonic() - signalled_at < GRACE_PERIOD_S
        client.join(10)
        finish_reasons = [event["choices"][0]["finish_reason"] for event in events if event.get("choices")]
        assert finish_reasons[-1] == "length", "the in-flight request finished normally"
        text = "".join(event["choices"][0]["text"] for event in events if event.get("choices"))
        assert text
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    log.seek(0)
    output = log.read()
    assert "resolved configuration" in output and "draining" in output
    assert "Traceback" not in output
