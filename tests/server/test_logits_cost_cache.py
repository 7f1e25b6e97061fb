"""The per-step bookkeeping of the logits rules: params compiled once per sequence, not once per step.

The rules' results themselves are checked against an independent reference in test_logits_processors.py;
these tests check that the cache on the Sequence is what a step uses, and that it gives the same logits
bit for bit as compiling the params on the spot.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch
from server.test_logits_processors import EOS, MASK, VOCAB, random_batch
from vdiff.config import EngineConfig
from vdiff.engine.decoding.logits_processors import SeqRules, compile_rules, process_logits
from vdiff.engine.llm_engine import LLMEngine
from vdiff.sampling_params import SamplingParams

RULES = {
    "repetition_penalty": 1.1,
    "presence_penalty": 0.3,
    "frequency_penalty": 0.2,
    "logit_bias": {11: 0.5, 22: -0.5},
    "min_p": 0.05,
    "min_tokens": 4,
}


@pytest.fixture(scope="module")
def engine(llada_checkpoint: Path) -> LLMEngine:
    return LLMEngine(EngineConfig(model=str(llada_checkpoint), max_num_seqs=4))


def test_each_sequence_compiles_its_rules_once(engine: LLMEngine) -> None:
    params = SamplingParams(max_tokens=12, block_length=4, ignore_eos=True, logprobs=2, **RULES)
    for index in range(2):
        engine.add_request(f"c{index}", engine.tokenizer_info.encode("Copy 12345."), params)
    seqs = [seq for request in engine.requests.values() for seq in request.seqs]
    assert all(seq.needs_logits_processing and seq.logits_rules is None for seq in seqs)
    engine.step()
    first = [seq.logits_rules for seq in seqs]
    assert all(isinstance(rules, SeqRules) for rules in first)
    assert first[0].repetition == pytest.approx(1.1) and first[0].min_tokens == 4
    steps = 1
    while engine.has_unfinished_requests():
        engine.step()
        steps += 1
    assert steps > 1
    assert all(seq.logits_rules is rules for seq, rules in zip(seqs, first, strict=True))


def test_plain_sequence_gets_no_rules(engine: LLMEngine) -> None:
    engine.add_request("plain", engine.tokenizer_info.encode("Copy 12345."), SamplingParams(max_tokens=8))
    [seq] = engine.requests["plain"].seqs
    while engine.has_unfinished_requests():
        engine.step()
    assert not seq.needs_logits_processing and seq.logits_rules is None


@pytest.mark.parametrize("seed", range(40))
def test_cached_rules_give_the_same_logits_bit_for_bit(seed: int) -> None:
    rng = random.Random(seed)
    batch = random_batch(rng, rng.randrange(1, 17))
    logits, params = batch[0], batch[2]
    rules = [compile_rules(p, VOCAB, [EOS]) for p in params]
    fresh = process_logits(*batch, MASK, [EOS])
    for _ in range(2):  # a cached SeqRules is read, never changed, by a step
        assert torch.equal(process_logits(*batch, MASK, [EOS], rules=rules), fresh)
    private = logits.clone()
    assert process_logits(private, *batch[1:], MASK, [EOS], in_place=True, rules=rules) is private
    assert torch.equal(private, fresh)
