"""The one admission stage: resolution order, vLLM's normalisations, and refusals at startup."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from vdiff.config import EngineConfig
from vdiff.engine.llm_engine import LLMEngine
from vdiff.entrypoints.cli_args import all_flags
from vdiff.errors import VdiffValidationError
from vdiff.knobs import KNOBS, MIN_TEMPERATURE, SERVER_KNOBS
from vdiff.sampling_params import SamplingParams


@pytest.fixture(scope="module")
def engine(llada_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> LLMEngine:
    """generation_config.json sampling defaults (vLLM applies them; a request overrides them)."""
    folder = tmp_path_factory.mktemp("generation-config")
    (folder / "generation_config.json").write_text(json.dumps({"temperature": 0.6, "top_k": 7, "top_p": 0.9}))
    return LLMEngine(
        EngineConfig(
            model=str(llada_checkpoint), generation_config=str(folder), block_length=4, max_num_seqs=4
        )
    )


def test_resolution_order_request_then_flag_then_generation_config_then_family(engine: LLMEngine) -> None:
    resolved = engine.input_processor.resolve(SamplingParams())
    assert (resolved.temperature, resolved.top_k, resolved.top_p) == (0.6, 7, 0.9)  # generation_config
    assert resolved.block_length == 4  # --block-length beats the family's 32
    assert resolved.remasking == "low_confidence" and resolved.alg is None  # LLaDA family
    assert (resolved.threshold, resolved.decoding, resolved.kv_cache) == (0.9, "threshold", "none")  # flags
    mine = engine.input_processor.resolve(SamplingParams(temperature=0.0, top_k=3, block_length=2))
    assert (mine.temperature, mine.top_k, mine.block_length) == (0.0, 3, 2)
    unset_means_off = ("alg", "alg_temp", "steps", "factor")  # None: Dream only, one per position, no factor
    assert None not in (getattr(resolved, knob.name) for knob in KNOBS if knob.name not in unset_means_off)


def test_vllm_normalisations(engine: LLMEngine, caplog: pytest.LogCaptureFixture) -> None:
    resolve = engine.input_processor.resolve
    assert resolve(SamplingParams(top_k=0)).top_k == -1  # 0 and -1 both disable, as vLLM
    assert resolve(SamplingParams(top_k=2**64)).top_k == -1  # more than the vocabulary: no filter
    with caplog.at_level(logging.WARNING):
        assert resolve(SamplingParams(temperature=1e-300)).temperature == MIN_TEMPERATURE
    assert "raised to" in caplog.text
    huge = resolve(SamplingParams(kv_cache_vicinity=10**18, apd_max_lookahead=2**64))
    assert huge.kv_cache_vicinity == huge.apd_max_lookahead == engine.max_model_len  # same meaning, bounded


def test_seeds_cover_vllms_range_and_wrap_per_sequence(engine: LLMEngine) -> None:
    prompt = engine.tokenizer_info.encode("hello")
    for seed in (2**63 - 1, -(2**63)):
        engine.add_request(
            f"seed{seed}", prompt, SamplingParams(n=2, seed=seed, max_tokens=2, temperature=1.0)
        )
    while engine.has_unfinished_requests():
        engine.step()
    for seed in (2**64, -(2**63) - 1):
        with pytest.raises(VdiffValidationError) as error:
            SamplingParams(seed=seed)
        assert error.value.param == "seed"


def test_a_request_is_admitted_once(engine: LLMEngine, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = {"validate": 0, "process": 0}
    validate, process = SamplingParams.validate, engine.input_processor.process

    def counting_validate(self: SamplingParams) -> None:
        calls["validate"] += 1
        validate(self)

    def counting_process(*args, **kwargs):
        calls["process"] += 1
        return process(*args, **kwargs)

    monkeypatch.setattr(SamplingParams, "validate", counting_validate)
    monkeypatch.setattr(engine.input_processor, "process", counting_process)
    engine.add_request("once", engine.tokenizer_info.encode("hi"), SamplingParams(max_tokens=2))
    while engine.has_unfinished_requests():
        engine.step()
    assert calls == {"validate": 1, "process": 1}


@pytest.mark.parametrize(
    ("changes", "flag"),
    [
        ({"apd_kv_window": 0}, "--apd-kv-window"),
        ({"apd_max_lookahead": 0}, "--apd-max-lookahead"),
        ({"factor": -1.0}, "--factor"),
        ({"threshold": 0.0}, "--threshold"),
        ({"kv_cache_vicinity": -1}, "--kv-cache-vicinity"),
        ({"diffusion_steps": 0}, "--diffusion-steps"),
        ({"decoding": "warp"}, "--decoding"),
    ],
)
def test_a_server_default_no_request_could_use_fails_at_startup(changes: dict, flag: str) -> None:
    with pytest.raises(VdiffValidationError) as error:
        EngineConfig(model="unused", **changes)
    assert error.value.param == flag


def test_every_server_knob_is_a_flag_with_its_range_in_the_help() -> None:
    flags = {flag.field_name: flag for flag in all_flags()}
    for name, knob in SERVER_KNOBS.items():
        assert flags[name].long_name == knob.flag_name
        assert knob.range_text() in flags[name].help
