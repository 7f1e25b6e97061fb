"""vLLM-compatible /metrics on a real server with real traffic: the names a vLLM Grafana dashboard queries,
the model_name and engine labels, vLLM's bucket boundaries, per-step token counting and aborts."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families
from server.metrics_scrape import scrape
from vdiff.config import EngineConfig
from vdiff.entrypoints.frontend_args import FrontendArgs
from vdiff.entrypoints.launcher import BackgroundServer

MODEL = "tiny-llada"
LONG = {"max_tokens": 256, "steps": 256, "block_length": 8, "ignore_eos": True, "stream": True}
"""A stream long enough to scrape while it runs (one committed token per step, or close to it)."""

DASHBOARD_METRICS = (
    "vllm:e2e_request_latency_seconds_bucket", "vllm:e2e_request_latency_seconds_sum",
    "vllm:e2e_request_latency_seconds_count", "vllm:prompt_tokens_total", "vllm:generation_tokens_total",
    "vllm:inter_token_latency_seconds_bucket", "vllm:inter_token_latency_seconds_sum",
    "vllm:inter_token_latency_seconds_count", "vllm:request_time_per_output_token_seconds_bucket",
    "vllm:request_time_per_output_token_seconds_sum", "vllm:request_time_per_output_token_seconds_count",
    "vllm:num_requests_running", "vllm:num_requests_waiting", "vllm:time_to_first_token_seconds_bucket",
    "vllm:time_to_first_token_seconds_sum", "vllm:time_to_first_token_seconds_count",
    "vllm:kv_cache_usage_perc", "vllm:request_prompt_tokens_bucket", "vllm:request_generation_tokens_bucket",
    "vllm:request_success_total", "vllm:request_queue_time_seconds_sum",
    "vllm:request_prefill_time_seconds_sum", "vllm:request_decode_time_seconds_sum",
    "vllm:request_max_num_generation_tokens_sum",
)  # fmt: skip
"""Every series queried by vLLM's official Grafana dashboard, examples/observability/prometheus_grafana/
grafana.json (formerly examples/online_serving/prometheus_grafana/grafana.json), as published with the
vLLM docs (docs.vllm.ai/en/latest/examples/observability/prometheus_grafana/)."""
OLDER_DASHBOARD_METRICS = (
    "vllm:time_per_output_token_seconds_bucket",
    "vllm:time_per_output_token_seconds_sum",
)
"""Queried by the older revisions of that dashboard (the deprecated name of the inter-token latency)."""
OTHER_VLLM_METRICS = (
    "vllm:iteration_tokens_total_bucket", "vllm:request_inference_time_seconds_bucket",
    "vllm:request_params_max_tokens_bucket", "vllm:request_params_n_bucket", "vllm:num_preemptions_total",
    "vllm:engine_sleep_state", "vllm:diffusion_num_denoising_steps_total",
    "vllm:diffusion_num_committed_tokens_total",
)  # fmt: skip

# vLLM 0.33.0, vllm/v1/metrics/buckets.py
VLLM_REQUEST_LATENCY = [0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0,
                        120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0]  # fmt: skip
VLLM_TTFT = [0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0,
             40.0, 80.0, 160.0, 640.0, 2560.0]  # fmt: skip
VLLM_ITL = [0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0,
            40.0, 80.0]  # fmt: skip
VLLM_ITERATION_TOKENS = [1, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384]
EXPECTED_BUCKETS = {
    "vllm:time_to_first_token_seconds": VLLM_TTFT,
    "vllm:inter_token_latency_seconds": VLLM_ITL,
    "vllm:time_per_output_token_seconds": VLLM_ITL,
    "vllm:request_time_per_output_token_seconds": VLLM_ITL,
    "vllm:e2e_request_latency_seconds": VLLM_REQUEST_LATENCY,
    "vllm:request_queue_time_seconds": VLLM_REQUEST_LATENCY,
    "vllm:request_inference_time_seconds": VLLM_REQUEST_LATENCY,
    "vllm:request_prefill_time_seconds": VLLM_REQUEST_LATENCY,
    "vllm:request_decode_time_seconds": VLLM_REQUEST_LATENCY,
    "vllm:iteration_tokens_total": VLLM_ITERATION_TOKENS,
    "vllm:request_params_n": [1, 2, 5, 10, 20],
}
TOKEN_COUNT_HISTOGRAMS = (
    "vllm:request_prompt_tokens", "vllm:request_generation_tokens", "vllm:request_max_num_generation_tokens",
    "vllm:request_params_max_tokens",
)  # fmt: skip


def build_1_2_5(max_value: int) -> list[float]:
    """vLLM's build_1_2_5_buckets, written out again so the test does not trust the code it checks."""
    values = [m * 10**e for e in range(12) for m in (1, 2, 5)]
    return [float(v) for v in values if v <= max_value]


@pytest.fixture(scope="module")
def server(llada_checkpoint: Path) -> Iterator[BackgroundServer]:
    config = EngineConfig(model=str(llada_checkpoint), served_model_names=[MODEL], max_num_seqs=1)
    with BackgroundServer(config, FrontendArgs()) as background:
        yield background


@pytest.fixture(scope="module")
def client(server: BackgroundServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=120)


def families(server: BackgroundServer) -> dict[str, object]:
    return {family.name: family for family in text_string_to_metric_families(_text(server))}


def _text(server: BackgroundServer) -> str:
    return httpx.get(server.url + "/metrics").text


def test_every_dashboard_series_has_model_name_and_engine(
    server: BackgroundServer, client: openai.OpenAI
) -> None:
    client.completions.create(model=MODEL, prompt="dashboards", max_tokens=8, extra_body={"block_length": 4})
    client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "hi"}], max_completion_tokens=4
    )
    samples = [
        sample for family in text_string_to_metric_families(_text(server)) for sample in family.samples
    ]
    for name in DASHBOARD_METRICS + OLDER_DASHBOARD_METRICS + OTHER_VLLM_METRICS:
        matching = [sample for sample in samples if sample.name == name]
        assert matching, name
        assert all(s.labels.get("model_name") == MODEL and s.labels.get("engine") == "0" for s in matching), (
            name
        )
    info = [sample for sample in samples if sample.name == "vllm:cache_config_info"]
    assert len(info) == 1 and info[0].labels["engine"] == "0" and info[0].value == 1
    assert int(info[0].labels["block_size"]) > 0
    reasons = {s.labels["finished_reason"] for s in samples if s.name == "vllm:request_success_total"}
    assert {"stop", "length", "abort", "error", "repetition"} <= reasons
    metrics = scrape(server)
    grown = (
        "vllm:request_prefill_time_seconds_count", "vllm:request_decode_time_seconds_count",
        "vllm:request_inference_time_seconds_count", "vllm:iteration_tokens_total_count",
        "vllm:request_max_num_generation_tokens_count", "vllm:time_to_first_token_seconds_count",
    )  # fmt: skip
    for name in grown:
        assert metrics[name] > 0, name
    assert metrics["vllm:iteration_tokens_total_sum"] >= metrics["vllm:generation_tokens_total"]
    assert metrics["vllm:num_preemptions_total"] == 0 and metrics["vllm:kv_cache_usage_perc"] == 0


def test_http_and_process_metrics(server: BackgroundServer, client: openai.OpenAI) -> None:
    client.models.list()
    text = _text(server)
    if "http_requests_total" not in text:
        pytest.skip("instrument_app() is not wired into build_app")
    assert 'handler="/v1/models"' in text and "http_request_duration_seconds_bucket" in text
    assert 'handler="/metrics"' not in text  # excluded, as vLLM
    assert "process_cpu_seconds_total" in text or "python_info" in text


def test_buckets_equal_vllms(server: BackgroundServer) -> None:
    found = families(server)
    max_model_len = int(httpx.get(server.url + "/v1/models").json()["data"][0]["max_model_len"])
    expected = dict(EXPECTED_BUCKETS) | {name: build_1_2_5(max_model_len) for name in TOKEN_COUNT_HISTOGRAMS}
    for name, buckets in expected.items():
        family = found[name]
        bounds = [float(s.labels["le"]) for s in family.samples if s.name == name + "_bucket"]
        assert bounds[:-1] == [float(b) for b in buckets] and bounds[-1] == float("inf"), name


def test_generation_tokens_grow_while_a_request_runs(server: BackgroundServer) -> None:
    before = wait_idle(server)["vllm:generation_tokens_total"]
    running_values = []
    body = {"model": MODEL, "prompt": "a long story"} | LONG
    with httpx.stream("POST", server.url + "/v1/completions", json=body, timeout=120) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            metrics = scrape(server)
            if metrics["vllm:num_requests_running"] == 1:  # same snapshot: the request is still running
                running_values.append(metrics["vllm:generation_tokens_total"])
            if len(set(running_values)) >= 3:
                break
    assert len(set(running_values)) >= 2, running_values
    assert min(running_values) > before, "tokens are counted as the frontier advances, not at the end"
    assert running_values == sorted(running_values)


def wait_idle(server: BackgroundServer) -> dict[str, float]:
    """The metrics once no request runs or waits (an earlier test's aborted stream is fully counted)."""
    deadline = time.monotonic() + 30
    while True:
        metrics = scrape(server)
        idle = metrics["vllm:num_requests_running"] == 0 and metrics["vllm:num_requests_waiting"] == 0
        if idle or time.monotonic() > deadline:
            return metrics
        time.sleep(0.05)


@pytest.mark.slow  # six 480-step requests; test_api_server covers aborts on disconnect
def test_abort_before_the_first_output_is_counted(server: BackgroundServer) -> None:
    """A request whose client goes away while it waits in the queue (max_num_seqs=1, busy) is an abort."""
    abort = "vllm:request_success_total{finished_reason=abort}"
    before = wait_idle(server)
    busy = {"model": MODEL, "prompt": "busy", "max_tokens": 480, "steps": 480, "block_length": 8}
    done: list[int] = []

    def occupy() -> None:
        httpx.post(server.url + "/v1/completions", json=busy | {"ignore_eos": True}, timeout=120)
        done.append(1)

    threads = [threading.Thread(target=occupy) for _ in range(6)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # every busy request is in the engine before ours arrives
        metrics = scrape(server)
        if metrics["vllm:num_requests_running"] + metrics["vllm:num_requests_waiting"] + len(done) >= len(
            threads
        ):
            break
        time.sleep(0.005)
    url = httpx.URL(server.url)
    queued = json.dumps({"model": MODEL, "prompt": "never runs", "max_tokens": 4}).encode()
    with socket.create_connection((url.host, url.port)) as sock:
        head = f"POST /v1/completions HTTP/1.1\r\nHost: {url.host}\r\nContent-Type: application/json\r\n"
        sock.sendall(f"{head}Content-Length: {len(queued)}\r\n\r\n".encode() + queued)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # until the engine holds every unfinished request, ours too
            finished = len(done)
            metrics = scrape(server)
            in_engine = metrics["vllm:num_requests_running"] + metrics["vllm:num_requests_waiting"]
            if in_engine + finished >= len(threads) + 1 and metrics["vllm:num_requests_waiting"] >= 1:
                break
            time.sleep(0.005)
    # the client went away while its request waited behind the others: it never produced an output
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        metrics = scrape(server)
        if metrics[abort] > before[abort]:
            break
        time.sleep(0.05)
    for thread in threads:
        thread.join(120)
    after = wait_idle(server)
    assert after[abort] == before[abort] + 1
    assert after["vllm:request_success_total{finished_reason=length}"] == (
        before["vllm:request_success_total{finished_reason=length}"] + len(threads)
    )
    assert after["vllm:e2e_request_latency_seconds_count"] == (
        before["vllm:e2e_request_latency_seconds_count"] + len(threads) + 1
    )
