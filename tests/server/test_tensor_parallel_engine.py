"""-tp 2 against -tp 1 in the engine (in-process rank 0, one real worker process over gloo on loopback):
token-identical answers at temperature 0 for LLaDA, Dream, SDAR, LLaDA2, LLaDA-MoE, the shipped demo models
and APD, batched and with the KV-cache modes; each rank holds about half of the weights; a family without
tensor parallelism and sizes that do not fit are refused.

The reference is the same engine at tensor_parallel_size 1: vLLM's bar for a parallel layout is the
same greedy answers as a baseline layout
(test_compare_tp, vllm/tests/distributed/test_pipeline_parallel.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from checkpoint_factory import (
    make_dream_checkpoint,
    make_fast_dllm_v2_checkpoint,
    make_llada2_checkpoint,
    make_llada_checkpoint,
    make_llada_moe_checkpoint,
    make_sdar_checkpoint,
)
from server.fast_decoding_helpers import PROMPTS, make_engine, run
from vdiff.config import EngineConfig
from vdiff.demo import demo_model_path
from vdiff.distributed.group import check_parallel_model, current_group, shutdown_workers
from vdiff.distributed.messages import parameter_bytes
from vdiff.engine.llm_engine import LLMEngine
from vdiff.errors import VdiffValidationError
from vdiff.sampling_params import SamplingParams

pytestmark = pytest.mark.slow

GREEDY = {"temperature": 0.0, "max_tokens": 16}
MODES = [
    {"decoding": "reference"},
    {"decoding": "threshold", "kv_cache": "prefix"},
    {"decoding": "threshold", "kv_cache": "dual", "n": 2},
]


@pytest.fixture(scope="module", autouse=True)
def _stop_workers() -> Iterator[None]:
    yield
    shutdown_workers()


def answers(
    model: Path | str, tp: int, modes: list[dict], **config: object
) -> tuple[list[list[int]], LLMEngine]:
    engine = make_engine(model, tensor_parallel_size=tp, **config)
    jobs = [(prompt, SamplingParams(**GREEDY, **mode)) for mode in modes for prompt in PROMPTS]
    finished = run(engine, jobs, stagger_steps=1)  # requests join mid-flight: batches of mixed shapes
    return [item.token_ids for item in finished], engine


@pytest.mark.parametrize("make", [make_llada_checkpoint, make_dream_checkpoint], ids=["llada", "dream"])
def test_random_checkpoints_answer_the_same_on_two_ranks(make, tmp_path: Path) -> None:
    """Sharded safetensors, GQA (Dream 4/2 heads, LLaDA 4/4), q/k/v biases: the same tokens for every
    decoding and cache mode, batched; rank 0 and the worker each hold about half of the weights."""
    path = make(tmp_path / "ckpt", sharded=True)
    single, single_engine = answers(path, 1, MODES)
    parallel, parallel_engine = answers(path, 2, MODES)
    assert parallel == single
    assert any(len(set(tokens)) > 1 for tokens in single)  # not a degenerate model
    full = parameter_bytes(single_engine.loaded.model)
    per_rank = parallel_engine.loaded.model.parallel_forward.rank_parameter_bytes
    assert len(per_rank) == 2
    for size in per_rank:  # norms are replicated, everything else split
        assert 0.45 * full < size < 0.6 * full, (size, full)


@pytest.mark.parametrize("name", ["llada-demo", "dream-demo"])
def test_demo_models_answer_the_same_on_two_ranks(name: str) -> None:
    path = demo_model_path(name)
    engine = make_engine(path, tensor_parallel_size=1)
    prompt = engine.tokenizer_info.encode("Add 43 and 5.")
    jobs = [(prompt, SamplingParams(temperature=0.0, max_tokens=24)), (PROMPTS[0], SamplingParams(**GREEDY))]
    single = [item.token_ids for item in run(engine, jobs)]
    parallel = [item.token_ids for item in run(make_engine(path, tensor_parallel_size=2), jobs)]
    assert parallel == single


def test_apd_with_a_replicated_key_value_head_answers_the_same_on_two_ranks() -> None:
    """dream-demo with the qwen2-ar-mini-demo verifier (GQA 2/1: at tp 2 its one key/value head is held
    by both ranks; tied embeddings): the verifier is sharded over the same group, with its own cache."""
    config = {"decoding": "apd", "draft_model": str(demo_model_path("qwen2-ar-mini-demo"))}
    path = demo_model_path("dream-demo")
    jobs = [(prompt, SamplingParams(**GREEDY)) for prompt in PROMPTS]
    single = [item.token_ids for item in run(make_engine(path, tensor_parallel_size=1, **config), jobs)]
    engine = make_engine(path, tensor_parallel_size=2, **config)
    parallel = [item.token_ids for item in run(engine, jobs)]
    assert parallel == single
    verifier = engine._policies["apd"].verifier
    assert verifier.runner.model.parallel_forward.group is current_group()


def test_sdar_block_diffusion_answers_the_same_on_two_ranks(tmp_path: Path) -> None:
    """SDAR (Qwen3 layout, per-head q/k norms replicated, block-causal attention): the exact cache of
    finished blocks grows in a buffer on every rank (mirrored allocate-and-assign), decoding `block`."""
    path = make_sdar_checkpoint(tmp_path / "sdar")
    jobs = [(prompt, SamplingParams(**GREEDY)) for prompt in PROMPTS]
    single = [
        item.token_ids for item in run(make_engine(path, tensor_parallel_size=1), jobs, stagger_steps=1)
    ]
    parallel = [
        item.token_ids for item in run(make_engine(path, tensor_parallel_size=2), jobs, stagger_steps=1)
    ]
    assert parallel == single


def test_llada2_fused_qkv_answers_the_same_on_two_ranks(tmp_path: Path) -> None:
    """LLaDA2 (BailingMoeV2): each rank reads its rows of each of Q, K and V from the fused
    query_key_value tensor; MoE with shared experts and a group-limited router; block decoding."""
    path = make_llada2_checkpoint(tmp_path / "llada2")
    jobs = [(prompt, SamplingParams(**GREEDY)) for prompt in PROMPTS]
    single = [
        item.token_ids for item in run(make_engine(path, tensor_parallel_size=1), jobs, stagger_steps=1)
    ]
    parallel = [
        item.token_ids for item in run(make_engine(path, tensor_parallel_size=2), jobs, stagger_steps=1)
    ]
    assert parallel == single
    assert any(len(set(tokens)) > 1 for tokens in single)


def test_llada_moe_answers_the_same_on_two_ranks(tmp_path: Path) -> None:
    """LLaDA-MoE (per-head q/k norms, a dense and an MoE layer, routed experts with a correction bias and a
    shared expert): the router runs on every rank over the same all-reduced hidden state, each expert's
    intermediate width is split (vLLM's MoE tensor parallelism), one all-reduce sums the block."""
    path = make_llada_moe_checkpoint(tmp_path / "moe")
    jobs = [(prompt, SamplingParams(**GREEDY, **mode)) for mode in MODES[:2] for prompt in PROMPTS]
    single = [
        item.token_ids for item in run(make_engine(path, tensor_parallel_size=1), jobs, stagger_steps=1)
    ]
    engine = make_engine(path, tensor_parallel_size=2)
    parallel = [item.token_ids for item in run(engine, jobs, stagger_steps=1)]
    assert parallel == single
    assert any(len(set(tokens)) > 1 for tokens in single)
    full = parameter_bytes(make_engine(path).loaded.model)
    assert all(size < 0.6 * full for size in engine.loaded.model.parallel_forward.rank_parameter_bytes)


def test_families_without_tensor_parallelism_and_bad_sizes_are_refused(tmp_path: Path) -> None:
    remote = tmp_path / "remote"
    remote.mkdir()
    (remote / "config.json").write_text('{"model_type": "some_other_dllm"}')
    config = EngineConfig(model=str(remote), tensor_parallel_size=2, trust_remote_code=True)
    with pytest.raises(VdiffValidationError, match="remote family has no tensor-parallel implementation"):
        check_parallel_model(config)
    # Fast-dLLM v2 reuses SDAR's layers, but its class declares no tensor parallelism of its own
    fast = make_fast_dllm_v2_checkpoint(tmp_path / "fast")
    with pytest.raises(VdiffValidationError, match="fast_dllm_v2 family has no tensor-parallel"):
        check_parallel_model(EngineConfig(model=str(fast), tensor_parallel_size=2))
    odd = make_llada_checkpoint(tmp_path / "odd", d_model=48, n_heads=3, n_kv_heads=3)
    with pytest.raises(VdiffValidationError, match="must divide the model's 3 attention heads"):
        check_parallel_model(EngineConfig(model=str(odd), tensor_parallel_size=2))
