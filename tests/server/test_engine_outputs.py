"""Streaming at the commit frontier, end conditions, early exit, n > 1, validation and admission."""

from __future__ import annotations

import json
from itertools import pairwise
from pathlib import Path

import pytest
from checkpoint_factory import make_llada_checkpoint
from safetensors.torch import load_file, save_file
from vdiff.config import EngineConfig
from vdiff.engine.llm_engine import LLMEngine
from vdiff.engine.outputs import RequestOutput
from vdiff.errors import QueueFullError, VdiffValidationError
from vdiff.sampling_params import SamplingParams

PROMPT = "then the other one sat in the hat"


@pytest.fixture(scope="module")
def engine(llada_checkpoint) -> LLMEngine:
    return LLMEngine(
        EngineConfig(
            model=str(llada_checkpoint), max_num_seqs=2, max_waiting_requests=1, decoding="reference"
        )
    )


@pytest.fixture(scope="module")
def eos_loving_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A LLaDA checkpoint whose LM-head bias makes <|endoftext|> the prediction everywhere."""
    path = make_llada_checkpoint(tmp_path_factory.mktemp("llada-eos"), include_bias=True)
    tensors = load_file(path / "model.safetensors")
    eos_id = json.loads((path / "config.json").read_text())["eos_token_id"]
    tensors["model.transformer.ff_out.bias"][eos_id] += 50.0
    save_file(tensors, path / "model.safetensors", metadata={"format": "pt"})
    return path


def stream(
    engine: LLMEngine, params: SamplingParams, prompt: str = PROMPT, request_id: str = "s"
) -> list[RequestOutput]:
    engine.add_request(request_id, engine.tokenizer_info.encode(prompt), params)
    outputs = []
    while engine.has_unfinished_requests():
        outputs.extend(o for o in engine.step() if o.request_id == request_id)
    return outputs


def test_frontier_stream_is_monotonic_and_adds_up(engine: LLMEngine) -> None:
    outputs = stream(engine, SamplingParams(max_tokens=24, block_length=8, ignore_eos=True))
    final = outputs[-1].outputs[0]
    assert outputs[-1].finished and final.finish_reason == "length"
    assert len(outputs) >= 3  # at least one report per block
    assert not any(o.finished for o in outputs[:-1])
    assert [t for o in outputs for t in o.outputs[0].new_token_ids] == final.token_ids
    assert "".join(o.outputs[0].new_text for o in outputs) == final.text
    for before, after in pairwise(outputs):
        assert after.outputs[0].token_ids[: len(before.outputs[0].token_ids)] == before.outputs[0].token_ids
    assert len(final.token_ids) == 24
    assert final.text == engine.tokenizer_info.decode(final.token_ids)


def _first_fresh_token(tokens: list[int], start: int) -> int:
    return next(i for i in range(start, len(tokens)) if tokens[i] not in tokens[:i])


def test_stop_token_ids_end_early_and_save_forwards(engine: LLMEngine) -> None:
    params = SamplingParams(max_tokens=32, block_length=4, ignore_eos=True)
    full = stream(engine, params)[-1]
    tokens = full.outputs[0].token_ids
    cut = _first_fresh_token(tokens, 3)
    stopped = stream(engine, params.replace(stop_token_ids=[tokens[cut]]))[-1]
    out = stopped.outputs[0]
    assert out.token_ids == tokens[:cut]
    assert (out.finish_reason, out.stop_reason) == ("stop", tokens[cut])
    assert stopped.stats.num_forwards < full.stats.num_forwards


def test_stop_string_truncates_text(engine: LLMEngine) -> None:
    params = SamplingParams(max_tokens=24, block_length=8, ignore_eos=True)
    full = stream(engine, params)[-1].outputs[0]
    stop = full.text[6:9]
    assert stop and full.text.index(stop) <= 6
    outputs = stream(engine, params.replace(stop=[stop]))
    out = outputs[-1].outputs[0]
    assert out.text == full.text[: full.text.index(stop)]
    assert (out.finish_reason, out.stop_reason) == ("stop", stop)
    assert "".join(o.outputs[0].new_text for o in outputs) == out.text
    assert out.token_ids == full.token_ids[: len(out.token_ids)]


def test_eos_at_the_frontier_stops_denoising(eos_loving_checkpoint: Path) -> None:
    engine = LLMEngine(EngineConfig(model=str(eos_loving_checkpoint), decoding="reference"))
    params = SamplingParams(max_tokens=32, block_length=8)  # full schedule: 32 steps
    [out] = stream(engine, params)
    assert out.outputs[0].token_ids == [] and out.outputs[0].text == ""
    assert (out.outputs[0].finish_reason, out.outputs[0].stop_reason) == ("stop", None)
    assert out.stats.num_forwards <= 8  # the first block at most
    assert engine.stats.num_early_exits == 1

    ignoring = stream(engine, params.replace(ignore_eos=True))[-1]
    assert ignoring.stats.num_forwards == 32
    assert ignoring.outputs[0].finish_reason == "length"
    assert set(ignoring.outputs[0].token_ids) <= set(engine.tokenizer_info.eos_token_ids)


def test_n_sequences_share_a_request(engine: LLMEngine) -> None:
    greedy = stream(engine, SamplingParams(n=3, max_tokens=8, block_length=8, ignore_eos=True))[-1]
    assert [o.index for o in greedy.outputs] == [0, 1, 2]  # 3 > max_num_seqs: admitted piecewise
    assert greedy.outputs[0].token_ids == greedy.outputs[1].token_ids == greedy.outputs[2].token_ids
    sampled = stream(engine, SamplingParams(n=2, max_tokens=8, temperature=1.0, seed=9, ignore_eos=True))[-1]
    assert sampled.finished and all(o.finish_reason == "length" for o in sampled.outputs)
    assert sampled.outputs[0].token_ids != sampled.outputs[1].token_ids


@pytest.mark.parametrize(
    ("prompt", "params", "field"),
    [
        ("hi", SamplingParams(max_tokens=511), "max_tokens"),  # context is 512
        ("hi", SamplingParams(max_tokens=8, steps=10**12), "steps"),  # more steps than the context
        ("hi", SamplingParams(stop_token_ids=[10**6]), "stop_token_ids"),
        ("hi", SamplingParams(logit_bias={10**6: 1.0}), "logit_bias"),
        ("hi", SamplingParams(allowed_token_ids=[10**6]), "allowed_token_ids"),
        ("hi", SamplingParams(n=129), "n"),
        ("hi", SamplingParams(logprobs=21), "logprobs"),
        ([], SamplingParams(), "prompt"),
        ([10**9], SamplingParams(), "prompt"),
    ],
)
def test_invalid_requests_raise_validation_errors_naming_the_field(engine, prompt, params, field) -> None:
    prompt_ids = engine.tokenizer_info.encode(prompt) if isinstance(prompt, str) else prompt
    with pytest.raises(VdiffValidationError) as error:
        engine.add_request("bad", prompt_ids, params)
    assert error.value.param == field
    assert not engine.has_unfinished_requests()


def test_sampling_params_reject_bad_values_at_construction() -> None:
    cases = [
        ("steps", 0), ("temperature", -1.0), ("temperature", float("nan")), ("remasking", "x"), ("alg", "x"),
        ("max_tokens", 0), ("top_p", 0.0), ("block_length", 0), ("decoding", "warp"),
        ("alg_temp", float("inf")), ("temperature", 2.5),
        ("factor", -1.0), ("cfg_scale", float("nan")), ("repetition_penalty", 0.0), ("min_p", 5.0),
        ("presence_penalty", 50.0), ("seed", 2**64), ("seed", -(2**63) - 1), ("top_k", -2),
        ("apd_kv_window", 0), ("apd_max_lookahead", 0), ("min_tokens", 17), ("logit_bias", {1: float("nan")}),
        ("allowed_token_ids", []), ("stop", [""]),
    ]  # fmt: skip
    for field, value in cases:
        with pytest.raises(VdiffValidationError) as error:
            SamplingParams(**{field: value})
        assert error.value.param == field


def test_duplicate_request_id_is_rejected(engine: LLMEngine) -> None:
    prompt = engine.tokenizer_info.encode(PROMPT)
    engine.add_request("dup", prompt, SamplingParams(max_tokens=4))
    with pytest.raises(VdiffValidationError) as error:
        engine.add_request("dup", prompt, SamplingParams(max_tokens=4))
    assert error.value.param == "request_id"
    engine.abort_request("dup")


def test_abort_frees_the_slot_and_queue_overflow_is_refused(engine: LLMEngine) -> None:
    prompt = engine.tokenizer_info.encode(PROMPT)
    long = SamplingParams(max_tokens=64, block_length=8, ignore_eos=True)
    engine.add_request("a", prompt, long)
    engine.add_request("b", prompt, long)
    engine.add_request("c", prompt, long)  # waits (max_num_seqs=2)
    with pytest.raises(QueueFullError):
        engine.add_request("d", prompt, long)  # max_waiting_requests=1
    engine.step()
    assert {seq.request_id for seq in engine.scheduler.running} == {"a", "b"}
    aborted = engine.abort_request("a")
    assert aborted is not None and aborted.finished and aborted.outputs[0].finish_reason == "abort"
    engine.step()
    assert {seq.request_id for seq in engine.scheduler.running} == {"b", "c"}
    assert engine.abort_request("a") is None
    engine.abort_request("b")
    engine.abort_request("c")
    assert not engine.has_unfinished_requests()
    assert engine.step() == []
