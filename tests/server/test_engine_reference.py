"""Engine reference decoding == plain LLaDA `generate` / Dream `diffusion_generate`, alone and batched."""

from __future__ import annotations

import pytest
import torch
from server.reference_decoding import dream_diffusion_generate, llada_generate
from vdiff.config import EngineConfig
from vdiff.engine.llm_engine import LLMEngine
from vdiff.engine.outputs import RequestOutput
from vdiff.sampling_params import SamplingParams

PROMPTS = [
    "the cat",
    "in the hat sat on a mat",
    "a",
    "then the other one ran in the rain",
    "on and on and on",
]


@pytest.fixture(scope="module")
def llada_engine(llada_checkpoint) -> LLMEngine:
    return LLMEngine(EngineConfig(model=str(llada_checkpoint), max_num_seqs=8, decoding="reference"))


@pytest.fixture(scope="module")
def dream_engine(dream_checkpoint) -> LLMEngine:
    return LLMEngine(EngineConfig(model=str(dream_checkpoint), max_num_seqs=8, decoding="reference"))


def run_all(engine: LLMEngine, requests: list[tuple[list[int], SamplingParams]]) -> list[RequestOutput]:
    """Add every request before the first step; return the final output of each, in order."""
    for index, (prompt, params) in enumerate(requests):
        engine.add_request(f"r{index}", prompt, params)
    final: dict[str, RequestOutput] = {}
    while engine.has_unfinished_requests():
        for output in engine.step():
            if output.finished:
                final[output.request_id] = output
    return [final[f"r{index}"] for index in range(len(requests))]


def _generator(engine: LLMEngine, seed: int | None) -> torch.Generator | None:
    return None if seed is None else torch.Generator(device=engine.loaded.device).manual_seed(seed)


def llada_oracle(engine: LLMEngine, prompt: list[int], params: SamplingParams, gen_length: int) -> list[int]:
    params = engine.input_processor.resolve(params)
    generator = _generator(engine, params.seed)
    tokens = llada_generate(
        engine.loaded.model,
        prompt,
        mask_id=engine.mask_token_id,
        steps=params.steps or gen_length,
        gen_length=gen_length,
        block_length=params.block_length,
        temperature=params.temperature,
        cfg_scale=params.cfg_scale,
        remasking=params.remasking or "low_confidence",
        generator=generator,
    )
    return tokens[: params.max_tokens]


def dream_oracle(engine: LLMEngine, prompt: list[int], params: SamplingParams) -> list[int]:
    params = engine.input_processor.resolve(params)
    generator = _generator(engine, params.seed)
    return dream_diffusion_generate(
        engine.loaded.model,
        prompt,
        mask_id=engine.mask_token_id,
        max_new_tokens=params.max_tokens,
        steps=params.steps or params.max_tokens,
        alg=params.alg,
        alg_temp=params.alg_temp,
        temperature=params.temperature,
        top_p=params.top_p,
        top_k=None if params.top_k < 0 else params.top_k,
        generator=generator,
    )


LLADA_CASES = [
    SamplingParams(max_tokens=16, block_length=8, steps=16, ignore_eos=True),
    SamplingParams(max_tokens=16, block_length=4, steps=8, ignore_eos=True),
    SamplingParams(max_tokens=12, block_length=12, steps=5, ignore_eos=True),
    SamplingParams(max_tokens=16, block_length=8, steps=8, remasking="random", seed=7, ignore_eos=True),
    SamplingParams(max_tokens=8, block_length=8, steps=8, cfg_scale=1.5, ignore_eos=True),
    SamplingParams(max_tokens=16, block_length=8, steps=8, temperature=0.8, seed=3, ignore_eos=True),
]


@pytest.mark.parametrize("params", LLADA_CASES, ids=lambda p: f"bl{p.block_length}-s{p.steps}-{p.remasking}")
def test_llada_matches_reference_generate(llada_engine: LLMEngine, params: SamplingParams) -> None:
    prompt = llada_engine.tokenizer_info.encode(PROMPTS[1])
    [output] = run_all(llada_engine, [(prompt, params)])
    assert output.outputs[0].token_ids == llada_oracle(llada_engine, prompt, params, params.max_tokens)
    assert output.outputs[0].finish_reason == "length"


def test_llada_max_tokens_not_a_block_multiple(llada_engine: LLMEngine) -> None:
    """13 tokens with block 8: the canvas is rounded to 16 (2 blocks), the answer trimmed to 13."""
    prompt = llada_engine.tokenizer_info.encode(PROMPTS[0])
    params = SamplingParams(max_tokens=13, block_length=8, ignore_eos=True)
    [output] = run_all(llada_engine, [(prompt, params)])
    expected = llada_oracle(llada_engine, prompt, params.replace(steps=16), gen_length=16)
    assert output.outputs[0].token_ids == expected
    assert len(expected) == 13


DREAM_CASES = [
    SamplingParams(max_tokens=12, alg="entropy", ignore_eos=True),
    SamplingParams(max_tokens=12, alg="maskgit_plus", steps=6, ignore_eos=True),
    SamplingParams(max_tokens=10, alg="topk_margin", steps=10, ignore_eos=True),
    SamplingParams(max_tokens=12, alg="origin", steps=6, seed=5, ignore_eos=True),
    SamplingParams(max_tokens=12, alg="entropy", top_p=0.9, top_k=20, ignore_eos=True),
    # sampled: the engine skips steps that reveal nothing, so compare where every step reveals something
    SamplingParams(max_tokens=8, alg="maskgit_plus", steps=4, temperature=0.7, seed=11, ignore_eos=True),
    SamplingParams(max_tokens=8, alg="entropy", steps=4, temperature=0.5, top_p=0.9, seed=4, ignore_eos=True),
]


@pytest.mark.parametrize("params", DREAM_CASES, ids=lambda p: f"{p.alg}-s{p.steps}-t{p.temperature}")
def test_dream_matches_reference_diffusion_generate(dream_engine: LLMEngine, params: SamplingParams) -> None:
    prompt = dream_engine.tokenizer_info.encode(PROMPTS[3])
    [output] = run_all(dream_engine, [(prompt, params)])
    assert output.outputs[0].token_ids == dream_oracle(dream_engine, prompt, params)


def test_dream_family_defaults_are_entropy_over_the_whole_canvas(dream_engine: LLMEngine) -> None:
    resolved = dream_engine.input_processor.resolve(SamplingParams(max_tokens=12))
    assert (resolved.alg, resolved.alg_temp, resolved.block_length, resolved.remasking) == (
        "entropy",
        0.0,
        None,
        None,
    )
    prompt = dream_engine.tokenizer_info.encode(PROMPTS[2])
    [output] = run_all(dream_engine, [(prompt, SamplingParams(max_tokens=12, ignore_eos=True))])
    assert output.outputs[0].token_ids == dream_oracle(
        dream_engine, prompt, resolved.replace(ignore_eos=True)
    )


def _assert_batch_matches(engine: LLMEngine, requests, oracle) -> None:
    forwards_before = engine.stats.num_forwards
    outputs = run_all(engine, requests)
    for (prompt, params), output in zip(requests, outputs, strict=True):
        assert output.outputs[0].token_ids == oracle(prompt, params), params
    batch_forwards = engine.stats.num_forwards - forwards_before
    assert engine.stats.max_batch_size == len(requests)
    assert batch_forwards < sum(output.stats.num_forwards for output in outputs)


def test_llada_batch_of_five_mixed_requests_matches_reference(llada_engine: LLMEngine) -> None:
    encode = llada_engine.tokenizer_info.encode
    params = [
        SamplingParams(max_tokens=16, block_length=8, steps=16, ignore_eos=True),
        SamplingParams(max_tokens=8, block_length=4, steps=4, ignore_eos=True),
        SamplingParams(max_tokens=24, block_length=8, steps=12, remasking="random", seed=1, ignore_eos=True),
        SamplingParams(max_tokens=8, block_length=8, steps=8, cfg_scale=1.0, ignore_eos=True),
        SamplingParams(max_tokens=12, block_length=12, steps=6, ignore_eos=True),
    ]
    requests = [(encode(text), p) for text, p in zip(PROMPTS, params, strict=True)]
    assert len({len(prompt) for prompt, _ in requests}) == 5
    _assert_batch_matches(
        llada_engine, requests, lambda prompt, p: llada_oracle(llada_engine, prompt, p, p.max_tokens)
    )


def test_dream_batch_of_five_mixed_requests_matches_reference(dream_engine: LLMEngine) -> None:
    encode = dream_engine.tokenizer_info.encode
    params = [
        SamplingParams(max_tokens=12, alg="entropy", ignore_eos=True),
        SamplingParams(max_tokens=6, alg="maskgit_plus", steps=3, ignore_eos=True),
        SamplingParams(max_tokens=16, alg="topk_margin", steps=8, ignore_eos=True),
        SamplingParams(max_tokens=10, alg="origin", seed=2, ignore_eos=True),
        SamplingParams(max_tokens=8, alg="entropy", steps=8, ignore_eos=True),
    ]
    requests = [(encode(text), p) for text, p in zip(PROMPTS, params, strict=True)]
    _assert_batch_matches(dream_engine, requests, lambda prompt, p: dream_oracle(dream_engine, prompt, p))


def test_sampled_results_do_not_depend_on_batching(llada_engine: LLMEngine) -> None:
    encode = llada_engine.tokenizer_info.encode
    sampled = SamplingParams(max_tokens=8, block_length=8, temperature=1.0, seed=42, n=2, ignore_eos=True)
    [alone] = run_all(llada_engine, [(encode(PROMPTS[0]), sampled)])
    others = [
        (encode(text), SamplingParams(max_tokens=16, temperature=0.9, ignore_eos=True))
        for text in PROMPTS[1:]
    ]
    batched = run_all(llada_engine, [*others, (encode(PROMPTS[0]), sampled)])[-1]
    assert [o.token_ids for o in alone.outputs] == [o.token_ids for o in batched.outputs]
    # each of the n sequences has its own generator (seed + index)
    assert alone.outputs[0].token_ids != alone.outputs[1].token_ids


def test_models_that_cannot_batch_run_one_sequence_per_forward(llada_engine: LLMEngine, monkeypatch) -> None:
    """Remote-code models (supports_batching False) still give reference results, one forward each."""
    monkeypatch.setattr(llada_engine.loaded.model, "supports_batching", False, raising=False)
    encode = llada_engine.tokenizer_info.encode
    params = SamplingParams(max_tokens=8, block_length=4, steps=4, ignore_eos=True)
    requests = [(encode(text), params) for text in PROMPTS[:3]]
    forwards_before = llada_engine.stats.num_forwards
    outputs = run_all(llada_engine, requests)
    for (prompt, p), output in zip(requests, outputs, strict=True):
        assert output.outputs[0].token_ids == llada_oracle(llada_engine, prompt, p, p.max_tokens)
    assert llada_engine.stats.num_forwards - forwards_before == sum(o.stats.num_forwards for o in outputs)
