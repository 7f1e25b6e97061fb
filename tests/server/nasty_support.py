"""Helpers of test_nasty_inputs: a real `vdiff serve` subprocess under an address-space cap, a /health
prober thread, raw-JSON posting and OpenAI error-shape assertions."""

from __future__ import annotations

import json
import resource
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

ADDRESS_SPACE_CAP = 6 * 2**30
STARTUP_TIMEOUT_S = 90.0
REQUEST_TIMEOUT_S = 30.0
PROBE_INTERVAL_S = 0.1
PROBE_MAX_LATENCY_S = 1.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def cap_address_space() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE_CAP, ADDRESS_SPACE_CAP))


class ServerProcess:
    """`python -m vdiff.entrypoints.cli serve MODEL` on a free loopback port, its output in a log file."""

    def __init__(self, model: str, log_path: Path, *extra_args: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        command = [
            sys.executable, "-m", "vdiff.entrypoints.cli", "serve", model, "--host", "127.0.0.1",
            "--port", str(self.port), "--disable-log-stats", *extra_args,
        ]  # fmt: skip
        self._log = log_path.open("w+")
        self.process = subprocess.Popen(
            command, stdout=self._log, stderr=subprocess.STDOUT, preexec_fn=cap_address_space
        )

    def wait_until_healthy(self, timeout: float = STARTUP_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                if httpx.get(self.url + "/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"the server did not become healthy in {timeout} s:\n{self.log_tail()}")

    def alive(self) -> bool:
        return self.process.poll() is None

    def log_tail(self, chars: int = 6000) -> str:
        self._log.flush()
        text = self.log_path.read_text(errors="replace")
        return text[-chars:]

    def log_errors(self, lines: int = 12) -> str:
        """The last lines of the log's tracebacks that are vdiff's own (frames and exception lines)."""
        kept = [
            line
            for line in self.log_tail(40000).splitlines()
            if "site-packages" not in line and ("/vdiff/" in line or "Error" in line or "error" in line)
        ]
        return "\n".join(kept[-lines:])

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(8)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self._log.close()


PROBE_SCRIPT = """
import sys, time, httpx
url, out, interval, lifetime = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4])
ends = time.monotonic() + lifetime
with open(out, "a", buffering=1) as log, httpx.Client(timeout=2) as client:
    while time.monotonic() < ends:
        started = time.monotonic()
        try:
            status = str(client.get(url + "/health").status_code)
        except httpx.HTTPError as error:
            status = type(error).__name__
        log.write(f"{started:.3f} {time.monotonic() - started:.4f} {status}\\n")
        time.sleep(interval)
"""


class HealthProbe:
    """GET /health every 0.1 s from its own process (so the test's GIL cannot delay it); every answer must
    be 200 in under a second."""

    def __init__(self, url: str, out: Path, lifetime_s: float = 600) -> None:
        self.url = url
        self.out = out
        self.lifetime_s = lifetime_s
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.out.write_text("")
        args = [self.url, str(self.out), str(PROBE_INTERVAL_S), str(self.lifetime_s)]
        self.process = subprocess.Popen([sys.executable, "-c", PROBE_SCRIPT, *args])

    def records(self) -> list[tuple[float, float, str]]:
        rows = []
        for line in self.out.read_text().splitlines():
            parts = line.split()
            if len(parts) == 3:
                rows.append((float(parts[0]), float(parts[1]), parts[2]))
        return rows

    @property
    def latencies(self) -> list[float]:
        return [latency for _, latency, _ in self.records()]

    @staticmethod
    def _failures(rows: list[tuple[float, float, str]]) -> list[str]:
        return [
            f"/health at t={started:.1f}: {status} in {latency:.2f} s"
            for started, latency, status in rows
            if status != "200" or latency >= PROBE_MAX_LATENCY_S
        ]

    @property
    def failures(self) -> list[str]:
        return self._failures(self.records())

    def mark(self) -> int:
        return len(self.records())

    def assert_healthy_since(self, mark: int) -> None:
        assert self.process is not None and self.process.poll() is None, "the /health probe stopped"
        new_failures = self._failures(self.records()[mark:])
        assert not new_failures, f"/health misbehaved during the request: {new_failures[:5]}"

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


def post_raw(
    url: str,
    path: str,
    body: str | bytes,
    timeout: float = REQUEST_TIMEOUT_S,
    client: httpx.Client | None = None,
) -> httpx.Response:
    """POST a JSON text as is (it may hold NaN, 1e999 or \\ud800 escapes that json.dumps would not write)."""
    content = body.encode() if isinstance(body, str) else body
    headers = {"content-type": "application/json"}
    if client is not None:
        return client.post(url + path, content=content, headers=headers, timeout=timeout)
    return httpx.post(url + path, content=content, headers=headers, timeout=timeout)


def error_of(response: httpx.Response) -> dict[str, Any]:
    """The OpenAI error object, asserting its exact shape."""
    try:
        payload = response.json()
    except json.JSONDecodeError as error:
        raise AssertionError(f"not JSON: {response.text[:500]!r}") from error
    assert isinstance(payload, dict) and set(payload) == {"error"}, payload
    error = payload["error"]
    assert set(error) == {"message", "type", "param", "code"}, error
    assert isinstance(error["message"], str) and error["message"], error
    assert isinstance(error["type"], str) and error["type"], error
    assert error["code"] == response.status_code, error
    json.dumps(payload, ensure_ascii=False).encode("utf-8")  # no lone surrogate echoed back
    return error


def param_matches(actual: str | None, expected: str) -> bool:
    """`prompt` matches pydantic's `prompt.str` / `prompt.0` locations too."""
    return actual == expected or (actual is not None and actual.startswith(expected + "."))


def answer_text(path: str, payload: dict[str, Any]) -> list[str]:
    """The text of every choice of a completion or chat completion."""
    if path.endswith("/chat/completions"):
        return [choice["message"]["content"] for choice in payload["choices"]]
    return [choice["text"] for choice in payload["choices"]]
