"""Per-sequence logits rules and logprobs inside the batched engine, for every policy and cache mode."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from vdiff.config import EngineConfig
from vdiff.engine.decoding.threshold import ThresholdPolicy
from vdiff.engine.llm_engine import LLMEngine
from vdiff.errors import RequestFailedError
from vdiff.sampling_params import SamplingParams

PROMPTS = ["Add 43 and 5.", "Copy 12345.", "Sort 3 1 2.", "Reverse abc."]


@pytest.fixture(scope="module")
def engine(llada_checkpoint: Path, llada_ar_checkpoint: Path) -> LLMEngine:
    return LLMEngine(
        EngineConfig(model=str(llada_checkpoint), draft_model=str(llada_ar_checkpoint), max_num_seqs=8)
    )


def run(engine: LLMEngine, requests: list[tuple[str, SamplingParams]]) -> list:
    for index, (prompt, params) in enumerate(requests):
        engine.add_request(f"r{index}", engine.tokenizer_info.encode(prompt), params)
    final = {}
    while engine.has_unfinished_requests():
        for output in engine.step():
            if output.finished:
                final[output.request_id] = output
    return [final[f"r{index}"].outputs[0] for index in range(len(requests))]


POLICIES = [
    {"decoding": "threshold"},
    {"decoding": "threshold", "threshold": 0.5, "kv_cache": "dual", "kv_cache_vicinity": 0},
    {"decoding": "reference", "steps": 12},
    {"decoding": "reference", "steps": 12, "cfg_scale": 1.0},
    {"decoding": "apd"},
]


@pytest.mark.parametrize("knobs", POLICIES, ids=lambda k: "-".join(str(v) for v in k.values()))
def test_logprobs_are_the_committed_tokens_under_their_step_distribution(engine: LLMEngine, knobs) -> None:
    params = SamplingParams(max_tokens=12, block_length=4, logprobs=3, ignore_eos=True, **knobs)
    [output] = run(engine, [(PROMPTS[0], params)])
    assert len(output.logprobs) == len(output.token_ids) == 12
    for token_id, entry in zip(output.token_ids, output.logprobs, strict=True):
        assert entry.token_id == token_id
        assert math.isfinite(entry.logprob) and entry.logprob <= 0
        values = [value for _, value in entry.top]
        assert len(entry.top) == 3 and values == sorted(values, reverse=True)
        if "cfg_scale" not in knobs:  # greedy from the raw distribution: the committed token is its mode
            assert entry.top[0][0] == token_id and entry.top[0][1] == pytest.approx(entry.logprob)
    without = run(engine, [(PROMPTS[0], params.replace(logprobs=None))])[0]
    assert without.token_ids == output.token_ids and without.logprobs is None


def test_rules_and_logprobs_do_not_depend_on_the_batch(engine: LLMEngine) -> None:
    ruled = SamplingParams(
        max_tokens=8, block_length=4, logprobs=2, repetition_penalty=1.3, presence_penalty=0.5,
        frequency_penalty=0.4, logit_bias={5: 3.0}, min_tokens=4, ignore_eos=False,
    )  # fmt: skip
    [alone] = run(engine, [(PROMPTS[1], ruled)])
    batch = run(
        engine,
        [(PROMPTS[0], SamplingParams(max_tokens=8)), (PROMPTS[1], ruled), (PROMPTS[2], ruled.replace(n=2))],
    )
    assert batch[1].token_ids == alone.token_ids
    # batched matmuls round differently in the last bits; the tokens are what must not change
    assert [e.logprob for e in batch[1].logprobs] == pytest.approx(
        [e.logprob for e in alone.logprobs], abs=1e-4
    )
    plain = run(engine, [(PROMPTS[1], SamplingParams(max_tokens=8, block_length=4))])[0]
    assert plain.token_ids != alone.token_ids  # the rules changed the answer


def test_logit_bias_allowed_tokens_bad_words_and_min_tokens_shape_the_answer(engine: LLMEngine) -> None:
    forced, allowed, banned = run(
        engine,
        [
            (PROMPTS[0], SamplingParams(max_tokens=6, logit_bias={40: 100.0}, ignore_eos=True)),
            (PROMPTS[0], SamplingParams(max_tokens=6, allowed_token_ids=[30, 31], ignore_eos=True)),
            (PROMPTS[0], SamplingParams(max_tokens=6, ignore_eos=True)),
        ],
    )
    assert forced.token_ids == [40] * 6
    assert set(allowed.token_ids) <= {30, 31}
    word = engine.tokenizer_info.decode([banned.token_ids[0]])
    [without_word] = run(
        engine, [(PROMPTS[0], SamplingParams(max_tokens=6, ignore_eos=True, bad_words=[word]))]
    )
    assert banned.token_ids[0] not in without_word.token_ids
    eos = engine.tokenizer_info.eos_token_ids[0]
    [held] = run(engine, [(PROMPTS[0], SamplingParams(max_tokens=8, min_tokens=5, logit_bias={eos: 50.0}))])
    assert len(held.token_ids) == 5 and held.finish_reason == "stop"  # ends at the first allowed position


def test_a_failing_sequence_fails_only_its_request(
    engine: LLMEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    healthy = SamplingParams(max_tokens=8, block_length=4)
    expected = run(engine, [(PROMPTS[0], healthy), (PROMPTS[2], healthy)])
    commit = ThresholdPolicy.commit

    def failing_commit(self, seqs, results):
        if any(seq.params.seed == 666 for seq in seqs):
            raise RuntimeError("probability tensor contains either inf, nan or element < 0")
        return commit(self, seqs, results)

    monkeypatch.setattr(ThresholdPolicy, "commit", failing_commit)
    outputs, failures = {}, []
    for index, (prompt, params) in enumerate([(PROMPTS[0], healthy), (PROMPTS[1], healthy.replace(seed=666)),
                                              (PROMPTS[2], healthy)]):  # fmt: skip
        engine.add_request(f"f{index}", engine.tokenizer_info.encode(prompt), params)
    while engine.has_unfinished_requests():
        for output in engine.step():
            outputs[output.request_id] = output
        failures.extend(engine.pop_failures())
    assert [request_id for request_id, _ in failures] == ["f1"]
    assert isinstance(failures[0][1], RequestFailedError)
    assert outputs["f0"].outputs[0].token_ids == expected[0].token_ids
    assert outputs["f2"].outputs[0].token_ids == expected[1].token_ids
    monkeypatch.undo()
    assert run(engine, [(PROMPTS[1], healthy)])[0].finish_reason is not None  # the engine goes on
