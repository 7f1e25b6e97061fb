"""Threshold decoding and the Fast-dLLM block cache through the real engine on tiny real checkpoints."""

from __future__ import annotations

from pathlib import Path

import pytest
from checkpoint_factory import make_dream_checkpoint, make_llada_checkpoint
from server.fast_decoding_helpers import PROMPTS, make_engine, run, run_one_by_one
from vdiff.engine.llm_engine import LLMEngine
from vdiff.sampling_params import SamplingParams

GEN = 16


@pytest.fixture(scope="module")
def llada_engine(llada_checkpoint: Path) -> LLMEngine:
    return make_engine(llada_checkpoint)


@pytest.fixture(scope="module")
def dream_engine(dream_checkpoint: Path) -> LLMEngine:
    return make_engine(dream_checkpoint)


@pytest.fixture(scope="module", params=["llada", "dream"])
def one_layer_engine(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> LLMEngine:
    """With one layer a key/value depends only on its own token and position, so a block cache is exact
    as long as the cached tokens did not change: cached and uncached decoding must agree token for token."""
    factory = make_llada_checkpoint if request.param == "llada" else make_dream_checkpoint
    return make_engine(factory(tmp_path_factory.mktemp(f"{request.param}-1layer"), n_layers=1))


def _params(**changes) -> SamplingParams:
    base = {"max_tokens": GEN, "ignore_eos": True, "block_length": 4}
    return SamplingParams(**(base | changes))


def _tokens(engine: LLMEngine, params: SamplingParams, prompts=PROMPTS) -> list[list[int]]:
    return [result.token_ids for result in run_one_by_one(engine, [(p, params) for p in prompts])]


@pytest.mark.parametrize("temperature", [0.0, 0.8])
def test_threshold_one_equals_reference_one_token_per_step(
    llada_engine: LLMEngine, temperature: float
) -> None:
    reference = _tokens(
        llada_engine,
        _params(decoding="reference", steps=GEN, remasking="low_confidence", temperature=temperature, seed=3),
    )
    threshold = _tokens(
        llada_engine, _params(decoding="threshold", threshold=1.0, temperature=temperature, seed=3)
    )
    assert threshold == reference


def test_threshold_one_equals_reference_on_dream(dream_engine: LLMEngine) -> None:
    reference = _tokens(dream_engine, _params(decoding="reference", steps=GEN, remasking="low_confidence"))
    assert _tokens(dream_engine, _params(decoding="threshold", threshold=1.0)) == reference


def test_lower_threshold_commits_several_tokens_per_forward(llada_engine: LLMEngine) -> None:
    jobs = [(p, _params(decoding="threshold", threshold=0.3)) for p in PROMPTS]
    results = run_one_by_one(llada_engine, jobs)
    assert all(len(r.token_ids) == GEN for r in results)
    assert sum(r.num_forwards for r in results) < GEN * len(PROMPTS)


def test_factor_rule_decodes_in_parallel(llada_engine: LLMEngine) -> None:
    results = run_one_by_one(llada_engine, [(p, _params(decoding="threshold", factor=2.0)) for p in PROMPTS])
    assert all(len(r.token_ids) == GEN for r in results)
    assert sum(r.num_forwards for r in results) < GEN * len(PROMPTS)


@pytest.mark.parametrize("mode", ["prefix", "dual"])
@pytest.mark.parametrize("threshold", [1.0, 0.5])
def test_block_cache_is_exact_where_the_cached_keys_cannot_be_stale(
    one_layer_engine: LLMEngine, mode: str, threshold: float
) -> None:
    uncached = _tokens(one_layer_engine, _params(decoding="threshold", threshold=threshold))
    cached = _tokens(one_layer_engine, _params(decoding="threshold", threshold=threshold, kv_cache=mode))
    assert cached == uncached


def test_cache_none_is_the_uncached_path(dream_engine: LLMEngine) -> None:
    uncached = _tokens(
        dream_engine, SamplingParams(max_tokens=GEN, ignore_eos=True, block_length=4, decoding="threshold")
    )
    assert _tokens(dream_engine, _params(decoding="threshold", kv_cache="none")) == uncached


class _ShapeSpy:
    """Wraps the real model and records (num_queries, num_cached_keys) of every forward."""

    def __init__(self, model) -> None:
        self.model, self.calls = model, []

    def __getattr__(self, name: str):
        return getattr(self.model, name)

    def __call__(self, input_ids, position_ids, attention_mask=None, past_key_values=None, **kwargs):
        cached = 0 if past_key_values is None else past_key_values[0][0].shape[2]
        self.calls.append((input_ids.shape[1], cached))
        return self.model(input_ids, position_ids, attention_mask, past_key_values, **kwargs)


@pytest.mark.parametrize("engine_name", ["llada_engine", "dream_engine"])
def test_prefix_cache_with_a_vicinity_over_the_whole_prefix_equals_no_cache(
    engine_name: str, request: pytest.FixtureRequest
) -> None:
    """Multi-layer models: every cached step recomputes every position (the vicinity covers the prefix,
    prefix mode queries all later ones), so the cached path must reproduce uncached decoding exactly."""
    engine: LLMEngine = request.getfixturevalue(engine_name)
    uncached = _tokens(engine, _params(decoding="threshold", threshold=0.7))
    covering = _tokens(
        engine, _params(decoding="threshold", threshold=0.7, kv_cache="prefix", kv_cache_vicinity=512)
    )
    assert covering == uncached


@pytest.mark.parametrize(("mode", "cached_query_len"), [("prefix", {8, 7, 6, 5, 4, 3, 2, 1}), ("dual", {4})])
def test_cached_decoding_refreshes_once_per_block_and_queries_less(
    llada_engine: LLMEngine, mode: str, cached_query_len: set[int]
) -> None:
    params = _params(decoding="threshold", threshold=1.0, kv_cache=mode, kv_cache_vicinity=0, max_tokens=8)
    spy = _ShapeSpy(llada_engine.runner.model)
    llada_engine.runner.forward = spy
    try:
        result = run(llada_engine, [(PROMPTS[0], params)])[0]
    finally:
        llada_engine.runner.forward = spy.model
    canvas = len(PROMPTS[0]) + 8
    assert len(result.token_ids) == 8
    assert result.num_forwards == 8  # one per token at τ = 1: the refresh forward also decodes
    refreshes = [call for call in spy.calls if call == (canvas, 0)]
    assert len(refreshes) == 2  # two blocks of 4
    cached_calls = [call for call in spy.calls if call != (canvas, 0)]
    assert len(cached_calls) == 6
    assert all(queries + cached == canvas for queries, cached in cached_calls)
    assert {queries for queries, _ in cached_calls} <= cached_query_len


@pytest.mark.parametrize("engine_name", ["llada_engine", "dream_engine"])
def test_batched_equals_unbatched_for_every_policy_with_staggered_arrivals(
    engine_name: str, request: pytest.FixtureRequest
) -> None:
    engine: LLMEngine = request.getfixturevalue(engine_name)
    policies = [
        _params(decoding="reference", steps=8),
        _params(decoding="threshold", threshold=0.7),
        _params(decoding="threshold", threshold=0.7, kv_cache="prefix"),
        _params(decoding="threshold", threshold=0.7, kv_cache="dual", block_length=8),
        _params(decoding="threshold", factor=1.5, kv_cache="dual"),
    ]
    jobs = [(PROMPTS[i % len(PROMPTS)], params) for i, params in enumerate(policies)]
    alone = run_one_by_one(engine, jobs)
    together = run(engine, jobs, stagger_steps=2)
    assert [r.token_ids for r in together] == [r.token_ids for r in alone]


def test_end_token_finishes_early_without_decoding_the_rest(llada_engine: LLMEngine) -> None:
    eos = llada_engine.tokenizer_info.eos_token_ids
    free = run(llada_engine, [(PROMPTS[0], _params(decoding="threshold", threshold=1.0, max_tokens=48))])[0]
    stop_at = free.token_ids[3]
    stopped = run(
        llada_engine,
        [(PROMPTS[0], _params(decoding="threshold", threshold=1.0, max_tokens=48, stop_token_ids=[stop_at]))],
    )[0]
    assert stopped.finish_reason == "stop"
    assert stopped.token_ids == free.token_ids[: free.token_ids.index(stop_at)]
    assert stopped.num_forwards < free.num_forwards
    assert eos  # the family's end tokens take the same path (OutputProcessor) as stop_token_ids
