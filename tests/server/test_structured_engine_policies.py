"""Structured outputs with APD (draft model) and the block policy (SDAR, LLaDA2), on random-weight
checkpoints in the real layouts (tests/checkpoint_factory.py): the commit rule of
engine/decoding/constrained.py holds for every policy, and free sequences batched with constrained ones
keep their tokens (temperature 0, as vLLM keeps unconstrained rows of a batch unmasked:
vllm/v1/structured_output/__init__.py grammar_bitmask fills only structured requests' rows).
"""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import torch
from checkpoint_factory import make_llada2_checkpoint, make_sdar_checkpoint
from server.fast_decoding_helpers import PROMPTS, make_engine, run, run_one_by_one
from vdiff.sampling_params import SamplingParams
from vdiff.structured import StructuredOutputsParams

torch.set_num_threads(1)

SCHEMA = {
    "type": "object",
    "properties": {"id": {"type": "integer", "minimum": 0, "maximum": 999}, "ok": {"type": "boolean"}},
    "required": ["id", "ok"],
    "additionalProperties": False,
}
CHOICES = ("red", "green", "blue")


def json_params(**knobs) -> SamplingParams:
    constraint = StructuredOutputsParams(json=SCHEMA, disable_any_whitespace=True)
    return SamplingParams(max_tokens=32, structured_outputs=constraint, **knobs)


def choice_params(**knobs) -> SamplingParams:
    return SamplingParams(max_tokens=16, structured_outputs=StructuredOutputsParams(choice=CHOICES), **knobs)


def check_outputs(engine, finished, kinds) -> None:
    decode = engine.tokenizer_info.decode
    for result, kind in zip(finished, kinds, strict=True):
        text = decode(result.token_ids)
        if kind == "json":
            jsonschema.validate(json.loads(text), SCHEMA)
        else:
            assert text in CHOICES
        assert result.finish_reason == "stop"


@pytest.fixture(scope="module")
def apd_engine(dream_checkpoint: Path, qwen2_ar_checkpoint: Path):
    return make_engine(dream_checkpoint, draft_model=str(qwen2_ar_checkpoint))


@pytest.fixture(scope="module")
def sdar_engine(tmp_path_factory: pytest.TempPathFactory):
    return make_engine(make_sdar_checkpoint(tmp_path_factory.mktemp("sdar-structured")))


@pytest.fixture(scope="module")
def llada2_engine(tmp_path_factory: pytest.TempPathFactory):
    return make_engine(make_llada2_checkpoint(tmp_path_factory.mktemp("llada2-structured"), block_size=4))


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_apd_constrained_outputs_are_valid(apd_engine, temperature) -> None:
    knobs = {"decoding": "apd", "temperature": temperature, "seed": 3}
    jobs = [(PROMPTS[0], json_params(**knobs)), (PROMPTS[1], choice_params(**knobs))]
    jobs += [(PROMPTS[2], json_params(n=2, **knobs))]
    finished = run(apd_engine, jobs)
    check_outputs(apd_engine, finished, ["json", "choice", "json"])


def test_apd_free_sequences_keep_their_tokens(apd_engine) -> None:
    free = SamplingParams(max_tokens=16, temperature=0, decoding="apd")
    alone = run_one_by_one(apd_engine, [(prompt, free) for prompt in PROMPTS[:2]])
    mixed = run(
        apd_engine,
        [(PROMPTS[0], free), (PROMPTS[2], json_params(decoding="apd", temperature=0)), (PROMPTS[1], free)],
    )
    assert [mixed[0].token_ids, mixed[2].token_ids] == [result.token_ids for result in alone]
    check_outputs(apd_engine, [mixed[1]], ["json"])


@pytest.mark.parametrize("engine_name", ["sdar_engine", "llada2_engine"])
@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_block_policy_constrained_outputs_are_valid(request, engine_name, temperature) -> None:
    engine = request.getfixturevalue(engine_name)
    knobs = {"decoding": "block", "temperature": temperature, "seed": 5}
    jobs = [(PROMPTS[0], json_params(**knobs)), (PROMPTS[3], choice_params(n=2, **knobs))]
    check_outputs(engine, run(engine, jobs), ["json", "choice"])


def test_block_policy_free_sequences_keep_their_tokens(sdar_engine) -> None:
    free = SamplingParams(max_tokens=12, temperature=0, decoding="block")
    alone = run_one_by_one(sdar_engine, [(PROMPTS[1], free), (PROMPTS[2], free)])
    mixed = run(
        sdar_engine,
        [(PROMPTS[1], free), (PROMPTS[0], json_params(decoding="block", temperature=0)), (PROMPTS[2], free)],
    )
    assert [mixed[0].token_ids, mixed[2].token_ids] == [result.token_ids for result in alone]


def test_threshold_with_cache_and_staggered_arrivals(dream_checkpoint: Path) -> None:
    """Constrained requests joining mid-flight beside free ones, with the dual cache and n > 1."""
    engine = make_engine(dream_checkpoint)
    knobs = {"decoding": "threshold", "kv_cache": "dual", "block_length": 8, "temperature": 0.9, "seed": 2}
    jobs = [
        (PROMPTS[0], SamplingParams(max_tokens=16, **knobs)),
        (PROMPTS[1], json_params(n=2, **knobs)),
        (PROMPTS[2], choice_params(**knobs)),
    ]
    finished = run(engine, jobs, stagger_steps=2)
    check_outputs(engine, finished[1:], ["json", "choice"])


def test_preempted_constrained_sequences_keep_their_grammar_state() -> None:
    """A tiny cache budget preempts sequences (their caches start over, their canvases stay): the grammar
    state describes the committed answer, so constrained outputs stay valid across preemptions."""
    from vdiff.config import EngineConfig
    from vdiff.engine.block_manager import BLOCK_SIZE
    from vdiff.engine.llm_engine import LLMEngine
    from vdiff.engine.memory_budget import kv_bytes_per_token

    per_token = kv_bytes_per_token(LLMEngine(EngineConfig(model="llada-demo", device="cpu")).runner)
    engine = LLMEngine(
        EngineConfig(model="llada-demo", device="cpu", kv_cache_memory_bytes=10 * BLOCK_SIZE * per_token)
    )
    cache = {"kv_cache": "dual", "kv_cache_vicinity": 0, "block_length": 16, "decoding": "threshold"}
    long_digits = {"type": "string", "pattern": "^[0-9]{24,30}$"}
    constraint = StructuredOutputsParams(json=long_digits)
    jobs = []
    for index in range(24):
        prompt = PROMPTS[index % len(PROMPTS)]
        if index % 3:
            jobs.append((prompt, SamplingParams(max_tokens=64, ignore_eos=True, **cache)))
        else:
            jobs.append((prompt, SamplingParams(max_tokens=48, structured_outputs=constraint, **cache)))
    finished = run(engine, jobs)
    assert engine.num_preemptions > 0
    for index in range(0, 24, 3):
        text = engine.tokenizer_info.decode(finished[index].token_ids)
        jsonschema.validate(json.loads(text), long_digits)
        assert finished[index].finish_reason == "stop"
