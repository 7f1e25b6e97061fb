"""The memory-aware engine: a cache budget in blocks, admission, growth, preemption, the step budget."""

from __future__ import annotations

import pytest
from vdiff.config import EngineConfig
from vdiff.demo import demo_model_path
from vdiff.engine.block_manager import BLOCK_SIZE, BlockManager
from vdiff.engine.llm_engine import LLMEngine
from vdiff.engine.memory_budget import available_bytes, kv_bytes_per_token
from vdiff.errors import VdiffValidationError
from vdiff.sampling_params import SamplingParams

MODEL = str(demo_model_path("llada-demo"))
PROMPTS = ["Copy 12345.", "Add 43 and 5.", "Sort 3142.", "Reverse 5821.", "Max of 5192.", "Copy 90817."]


def bytes_per_token() -> int:
    return kv_bytes_per_token(LLMEngine(EngineConfig(model=MODEL, kv_cache_memory_bytes=0)).runner)


def run(engine: LLMEngine, requests: list[tuple[str, SamplingParams]], watch=None) -> list:
    for index, (prompt, params) in enumerate(requests):
        ids = engine.tokenizer_info.apply_chat_template([{"role": "user", "content": prompt}])
        engine.add_request(f"c{index}", ids, params)
    final = {}
    for _ in range(10_000):
        if not engine.has_unfinished_requests():
            break
        for output in engine.step():
            if output.finished:
                final[output.request_id] = output.outputs[0]
        if watch is not None:
            watch(engine)
    return [final[f"c{index}"] for index in range(len(requests))]


def test_the_kv_bytes_of_a_position_are_measured_from_the_model() -> None:
    engine = LLMEngine(EngineConfig(model=MODEL, kv_cache_memory_bytes=0))
    config = engine.loaded.hf_config
    head_dim = config["d_model"] // config["n_heads"]
    expected = config["n_layers"] * 2 * (config.get("n_kv_heads") or config["n_heads"]) * head_dim * 4  # fp32
    assert kv_bytes_per_token(engine.runner) == expected


@pytest.mark.slow  # 2 x 64 requests; preemption also runs in test_sdar and test_structured_engine_policies
def test_a_tiny_budget_queues_and_preempts_but_every_request_finishes() -> None:
    per_token = bytes_per_token()
    engine = LLMEngine(
        EngineConfig(model=MODEL, kv_cache_memory_bytes=10 * BLOCK_SIZE * per_token, max_num_seqs=64)
    )
    assert engine.cache_scheduler.blocks.num_blocks == 10
    params = SamplingParams(
        max_tokens=64, ignore_eos=True, kv_cache="dual", kv_cache_vicinity=0, block_length=16
    )
    usage: list[float] = []
    outputs = run(
        engine,
        [(PROMPTS[i % len(PROMPTS)], params) for i in range(64)],
        lambda e: usage.append(e.kv_cache_usage),
    )
    assert all(output.finish_reason == "length" and len(output.token_ids) == 64 for output in outputs)
    assert engine.num_preemptions > 0 and max(usage) <= 1.0
    assert engine.cache_scheduler.blocks.num_free_blocks == 10  # everything freed at the end
    roomy = LLMEngine(EngineConfig(model=MODEL, max_num_seqs=64))
    expected = run(roomy, [(PROMPTS[i % len(PROMPTS)], params) for i in range(64)])
    same = sum(a.token_ids[:16] == b.token_ids[:16] for a, b in zip(outputs, expected, strict=True))
    assert same >= 56  # the first block is decoded before any cache could be dropped


def test_a_request_that_can_never_fit_is_refused_naming_max_tokens() -> None:
    engine = LLMEngine(EngineConfig(model=MODEL, kv_cache_memory_bytes=4 * BLOCK_SIZE * bytes_per_token()))
    ids = engine.tokenizer_info.encode("Copy 12345.")
    with pytest.raises(VdiffValidationError) as error:
        engine.add_request("big", ids, SamplingParams(max_tokens=200, kv_cache="dual"))
    assert error.value.param == "max_tokens"
    engine.add_request("small", ids, SamplingParams(max_tokens=200))  # no cache: nothing to hold
    engine.abort_request("small")


def test_a_step_forwards_at_most_max_num_batched_tokens(monkeypatch: pytest.MonkeyPatch) -> None:
    engine = LLMEngine(EngineConfig(model=MODEL, max_num_batched_tokens=256, max_num_seqs=32))
    sizes: list[int] = []
    execute = engine.runner.execute

    def recording_execute(requests):
        sizes.append(sum(request.num_rows * request.num_queries for request in requests))
        return execute(requests)

    monkeypatch.setattr(engine.runner, "execute", recording_execute)
    outputs = run(engine, [(PROMPTS[i % len(PROMPTS)], SamplingParams(max_tokens=16)) for i in range(16)])
    assert all(output.finish_reason is not None for output in outputs)
    assert sizes and max(sizes) <= 256


def test_a_canvas_over_the_step_budget_is_refused_unless_it_can_be_chunked() -> None:
    engine = LLMEngine(EngineConfig(model=MODEL, max_num_batched_tokens=100))  # the demo's context is 256
    ids = engine.tokenizer_info.encode("Copy 12345. " * 4)
    with pytest.raises(VdiffValidationError) as error:
        engine.add_request("long", ids, SamplingParams(max_tokens=96))
    assert error.value.param == "max_tokens" and "--max-num-batched-tokens" in error.value.message
    engine.add_request("short", ids, SamplingParams(max_tokens=16))
    engine.abort_request("short")


def test_budget_flags_are_checked_at_startup() -> None:
    for changes, flag in (({"gpu_memory_utilization": 0.0}, "--gpu-memory-utilization"),
                          ({"kv_cache_memory_bytes": -1}, "--kv-cache-memory-bytes")):  # fmt: skip
        with pytest.raises(VdiffValidationError) as error:
            EngineConfig(model=MODEL, **changes)
        assert error.value.param == flag


def test_block_tables_grow_never_shrink_and_free_everything() -> None:
    blocks = BlockManager(4)
    blocks.hold(1, 20)
    assert blocks.num_held(1) == 2 and blocks.usage == 0.5
    blocks.hold(1, 5)
    assert blocks.num_held(1) == 2
    assert not blocks.can_hold(2, 3 * BLOCK_SIZE) and blocks.can_hold(2, 2 * BLOCK_SIZE)
    blocks.free([1])
    assert blocks.usage == 0.0
    assert available_bytes(0.9, 100, 40) == 50 and available_bytes(0.5, 100, 60) == 0
