"""The same task runs through the HTTP server: `vdiff serve` on 127.0.0.1 and the official openai client."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench.engine_driver import RequestRecord, RunRecord
from bench.tasks import TaskInstance

STARTUP_TIMEOUT_S = 180


def vdiff_executable() -> str | None:
    beside_python = Path(sys.executable).with_name("vdiff")
    if beside_python.exists():
        return str(beside_python)
    return shutil.which("vdiff")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_healthy(base_url: str, process: subprocess.Popen, log_path: Path) -> None:
    import httpx

    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(
                f"vdiff serve exited with {process.returncode}: {log_path.read_text()[-2000:]}"
            )
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{base_url}/health", timeout=2).status_code == 200:
                return
        time.sleep(0.5)
    raise RuntimeError(f"vdiff serve did not become healthy in {STARTUP_TIMEOUT_S}s")


@contextlib.contextmanager
def served_model(model_dir: Path, served_name: str, extra_args: list[str], log_path: Path) -> Iterator[str]:
    """`vdiff serve` in a subprocess on a free loopback port; yields the OpenAI base URL."""
    executable = vdiff_executable()
    if executable is None:
        raise FileNotFoundError("the `vdiff` entrypoint is not installed")
    port = _free_port()
    command = [
        executable,
        "serve",
        str(model_dir),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--served-model-name",
        served_name,
        "--max-num-seqs",
        "16",
        "--disable-log-stats",
        "--uvicorn-log-level",
        "warning",
        *extra_args,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    with log_path.open("w") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    base_url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(base_url, process, log_path)
        yield f"{base_url}/v1"
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


async def _closed_loop(
    base_url: str,
    served_name: str,
    instances: list[TaskInstance],
    extra_body: dict[str, Any],
    max_tokens: int,
    concurrency: int,
) -> RunRecord:
    from openai import AsyncOpenAI

    client = AsyncOpenAI(base_url=base_url, api_key="unused", max_retries=0, timeout=300)
    queue: asyncio.Queue[int] = asyncio.Queue()
    for index in range(len(instances)):
        queue.put_nowait(index)
    records: dict[int, RequestRecord] = {}

    async def worker() -> None:
        while not queue.empty():
            index = queue.get_nowait()
            instance = instances[index]
            started = time.perf_counter()
            response = await client.chat.completions.create(
                model=served_name,
                messages=[{"role": "user", "content": instance.prompt}],
                max_tokens=max_tokens,
                temperature=0.0,
                extra_body=extra_body,
            )
            text = response.choices[0].message.content or ""
            records[index] = RequestRecord(
                task=instance.task,
                correct=instance.check(text),
                num_tokens=response.usage.completion_tokens if response.usage else 0,
                num_forwards=0,
                latency_s=time.perf_counter() - started,
                text=text,
            )

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall = time.perf_counter() - started
    await client.close()
    return RunRecord([records[i] for i in range(len(instances))], wall, batched_forwards=0)


def run_http_closed_loop(
    base_url: str,
    served_name: str,
    instances: list[TaskInstance],
    extra_body: dict[str, Any],
    max_tokens: int,
    concurrency: int,
) -> RunRecord:
    return asyncio.run(_closed_loop(base_url, served_name, instances, extra_body, max_tokens, concurrency))


async def _probe(base_url: str, served_name: str, extra_body: dict[str, Any], max_tokens: int) -> str | None:
    """None when the server accepts the policy, else its 4xx message."""
    from openai import AsyncOpenAI, BadRequestError

    client = AsyncOpenAI(base_url=base_url, api_key="unused", max_retries=0, timeout=300)
    try:
        await client.chat.completions.create(
            model=served_name,
            messages=[{"role": "user", "content": "Copy 123."}],
            max_tokens=max_tokens,
            extra_body=extra_body,
        )
    except BadRequestError as error:
        return str(error)
    finally:
        await client.close()
    return None


def probe_policy(base_url: str, served_name: str, extra_body: dict[str, Any], max_tokens: int) -> str | None:
    return asyncio.run(_probe(base_url, served_name, extra_body, max_tokens))
