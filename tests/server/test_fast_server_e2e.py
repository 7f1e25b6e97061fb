"""Fast decoding end to end: real uvicorn on loopback serving a tiny Dream with a Qwen2 verifier
(--draft-model), per-request policy overrides through the openai client's extra_body."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
from server.fast_decoding_helpers import make_engine, run
from server.metrics_scrape import scrape
from vdiff.config import EngineConfig
from vdiff.entrypoints.frontend_args import FrontendArgs
from vdiff.entrypoints.launcher import BackgroundServer
from vdiff.entrypoints.stats import log_stats_forever
from vdiff.sampling_params import SamplingParams

MODEL = "tiny-dream"
PROMPT_IDS = [5, 6, 7, 8, 9]
OVERRIDES = [
    {"decoding": "apd", "apd_mixture_weight": 0.5, "apd_max_lookahead": 6, "apd_kv_window": 2},
    {
        "decoding": "threshold",
        "threshold": 0.5,
        "kv_cache": "dual",
        "block_length": 4,
        "kv_cache_vicinity": 3,
    },
    {"decoding": "threshold", "factor": 1.5, "kv_cache": "prefix", "block_length": 4},
]


@pytest.fixture(scope="module")
def server(dream_checkpoint: Path, qwen2_ar_checkpoint: Path) -> Iterator[BackgroundServer]:
    config = EngineConfig(
        model=str(dream_checkpoint), served_model_names=[MODEL], draft_model=str(qwen2_ar_checkpoint)
    )
    with BackgroundServer(config, FrontendArgs()) as background:
        yield background


@pytest.fixture(scope="module")
def client(server: BackgroundServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=120)


@pytest.mark.parametrize("overrides", OVERRIDES, ids=lambda o: "-".join(f"{k}={v}" for k, v in o.items()))
def test_override_matches_the_offline_engine_streamed_or_not(
    client: openai.OpenAI, dream_checkpoint: Path, qwen2_ar_checkpoint: Path, overrides: dict
) -> None:
    kwargs = {
        "model": MODEL,
        "prompt": PROMPT_IDS,
        "max_tokens": 16,
        "temperature": 0,
        "extra_body": overrides,
    }
    whole = client.completions.create(**kwargs)
    chunks = [chunk for chunk in client.completions.create(**kwargs, stream=True) if chunk.choices]
    assert "".join(chunk.choices[0].text for chunk in chunks) == whole.choices[0].text

    engine = make_engine(dream_checkpoint, draft_model=str(qwen2_ar_checkpoint))
    offline = run(engine, [(PROMPT_IDS, SamplingParams(max_tokens=16, temperature=0, **overrides))])[0]
    assert whole.choices[0].text == engine.tokenizer_info.decode(offline.token_ids)
    assert whole.usage.completion_tokens == len(offline.token_ids)


@pytest.mark.parametrize(
    "bad",
    [
        {"decoding": "fastest"},
        {"kv_cache": "triple"},
        {"threshold": 1.5},
        {"apd_mixture_weight": -0.1},
        {"kv_cache_vicinity": -1},
    ],
)
def test_invalid_decoding_overrides_are_400(client: openai.OpenAI, bad: dict) -> None:
    with pytest.raises(openai.BadRequestError):
        client.completions.create(model=MODEL, prompt="hi", max_tokens=4, extra_body=bad)


def test_apd_drafts_show_in_vllm_spec_decode_metrics(server: BackgroundServer, client: openai.OpenAI) -> None:
    before = scrape(server)
    client.completions.create(
        model=MODEL,
        prompt=PROMPT_IDS,
        max_tokens=16,
        temperature=0,
        extra_body={"decoding": "apd", "apd_mixture_weight": 0.5, "ignore_eos": True},
    )
    after = scrape(server)

    def grown(name: str) -> float:
        return after[name] - before.get(name, 0.0)

    drafts = grown("vllm:spec_decode_num_drafts_total")
    draft_tokens = grown("vllm:spec_decode_num_draft_tokens_total")
    accepted = grown("vllm:spec_decode_num_accepted_tokens_total")
    assert drafts > 0 and 0 <= accepted <= draft_tokens
    per_position = [
        grown(f"vllm:spec_decode_num_accepted_tokens_per_pos_total{{position={i}}}")
        for i in range(int(draft_tokens))
        if f"vllm:spec_decode_num_accepted_tokens_per_pos_total{{position={i}}}" in after
    ]
    assert sum(per_position) == accepted
    # every APD step commits its frontier token plus the accepted draft: 16 tokens in all
    steps = grown("vdiff:denoising_steps_per_request_sum")
    assert steps + accepted == 16


def test_stats_log_reports_apd_acceptance(
    server: BackgroundServer, client: openai.OpenAI, caplog: pytest.LogCaptureFixture
) -> None:
    client.completions.create(
        model=MODEL, prompt=PROMPT_IDS, max_tokens=12, temperature=0, extra_body={"decoding": "apd"}
    )
    assert server.state is not None
    state = server.state

    def logged() -> bool:
        return any("APD drafts: mean acceptance length" in record.message for record in caplog.records)

    async def poll() -> None:  # until the line appears (bounded), instead of a fixed window
        task = asyncio.create_task(log_stats_forever(state, 0.05))
        try:
            for _ in range(200):
                if logged():
                    return
                await asyncio.sleep(0.05)
        finally:
            task.cancel()

    with caplog.at_level(logging.INFO, logger="vdiff.stats"):
        asyncio.run(poll())
    assert logged()
