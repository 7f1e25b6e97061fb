"""Every README.md snippet that talks to a server works as pasted against `make serve`.

A real `vdiff serve` (no model: the built-in demo, as `make serve` runs it) on a free port; each ```bash
block whose commands are curls to localhost:8000 and each ```python block runs with localhost:8000
rewritten to that port. A curl must get HTTP 200 and a non-empty answer, a snippet must exit 0, and an
answer the README shows (a `# {...}` line after a curl, a `# value` comment after a print) must be what
comes back. The README's first curl is the quick start: its answer is checked exactly.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from vdiff.demo import is_demo_model_available

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
SNIPPET_TIMEOUT_S = 180

pytestmark = pytest.mark.skipif(not is_demo_model_available(), reason="the demo checkpoint is not installed")


def blocks(language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", README.read_text(), re.DOTALL | re.MULTILINE)


def curl_blocks() -> list[str]:
    """The bash blocks that are curls to the local server (not the make / vdiff / oc ones)."""
    bash = blocks("bash")
    return [block for block in bash if block.lstrip().startswith("curl") and "localhost:8000" in block]


def python_blocks() -> list[str]:
    return blocks("python")


def test_the_readme_has_the_snippets_this_file_runs() -> None:
    assert len(curl_blocks()) >= 3 and len(python_blocks()) >= 2
    first = blocks("bash")[0]
    assert first.startswith("make serve") and "make test" in first, "the README starts with serve + test"
    for block in curl_blocks() + python_blocks():
        for model in re.findall(r'"model":\s*"([^"]+)"|model="([^"]+)"', block):
            assert "llada-demo" in model, f"a snippet asks for a model `make serve` does not serve: {model}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`vdiff serve` as `make serve` runs it (no model), on a free port."""
    port = free_port()
    log = (tmp_path_factory.mktemp("serve") / "serve.log").open("w+")
    vdiff = Path(sys.executable).with_name("vdiff")
    command = [str(vdiff)] if vdiff.exists() else [sys.executable, "-m", "vdiff.entrypoints.cli"]
    process = subprocess.Popen(
        [*command, "serve", "--host", "127.0.0.1", "--port", str(port)], stdout=log, stderr=subprocess.STDOUT
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            if process.poll() is not None:
                log.seek(0)
                pytest.fail(f"vdiff serve exited {process.returncode}:\n{log.read()}")
            try:
                if httpx.get(base + "/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "vdiff serve did not become healthy"
            time.sleep(0.2)
        yield base
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


def localize(snippet: str, url: str) -> str:
    return snippet.replace("http://localhost:8000", url)


def shown_answers(snippet: str) -> list[str]:
    """What the README says a snippet prints: `# {json}` lines after a curl, `# value` after print(...)."""
    answers = []
    for line in snippet.splitlines():
        shown = re.match(r"\s*# (\{.*)", line)
        if shown:
            answers += re.findall(r'"content": "([^"]+)"', shown.group(1))
        printed = re.match(r"\s*print\(.*\)\s+# (\S+)$", line)
        if printed:
            answers.append(printed.group(1))
    return answers


@pytest.mark.slow  # a real `vdiff serve` subprocess (and one interpreter per snippet)
@pytest.mark.parametrize("index", range(len(curl_blocks())))
def test_readme_curl_works_as_pasted(url: str, index: int) -> None:
    snippet = curl_blocks()[index]
    # Keep the command as pasted; a curl wrapper only appends the status so it can be checked.
    wrapper = "curl() { command curl -w '\\nHTTP %{http_code}' \"$@\"; }\n"
    result = subprocess.run(
        ["bash", "-e", "-o", "pipefail", "-c", wrapper + localize(snippet, url)],
        capture_output=True, text=True, timeout=SNIPPET_TIMEOUT_S,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    body, _, status = result.stdout.rpartition("\nHTTP ")
    assert status.strip() == "200", result.stdout
    choice = json.loads(body)["choices"][0]
    answer = choice["message"]["content"] if "message" in choice else choice["text"]
    assert answer.strip(), f"the demo returned an empty answer to a README snippet:\n{snippet}"
    for expected in shown_answers(snippet):
        assert answer == expected, f"README shows {expected!r}, the server said {answer!r}"


@pytest.mark.slow  # a real `vdiff serve` subprocess (and one interpreter per snippet)
@pytest.mark.parametrize("index", range(len(python_blocks())))
def test_readme_python_works_as_pasted(url: str, index: int) -> None:
    snippet = python_blocks()[index]
    env = {**os.environ, "OPENAI_BASE_URL": url + "/v1", "PYTHONUNBUFFERED": "1"}
    result = subprocess.run(
        [sys.executable, "-c", localize(snippet, url)],
        capture_output=True, text=True, timeout=SNIPPET_TIMEOUT_S, env=env, cwd=REPO,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    assert lines, f"a README snippet printed nothing:\n{snippet}"
    for expected in shown_answers(snippet):
        assert expected in lines, f"README shows {expected!r}; the snippet printed {result.stdout!r}"
    assert all(line.strip() for line in lines)
