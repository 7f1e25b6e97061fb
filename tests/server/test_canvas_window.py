"""The bounded canvas: with the threshold policy max_tokens is an upper bound, not the canvas length."""

from __future__ import annotations

import pytest
from vdiff.config import EngineConfig
from vdiff.demo import demo_model_path
from vdiff.engine.decoding.threshold import ThresholdPolicy
from vdiff.engine.llm_engine import LLMEngine
from vdiff.sampling_params import SamplingParams

PROMPTS = ["Copy 12345.", "Add 43 and 5.", "Sort 3142.", "Reverse 5821."]


@pytest.fixture(scope="module")
def engine() -> LLMEngine:
    return LLMEngine(EngineConfig(model=str(demo_model_path("llada-demo")), max_num_seqs=8))


def answers(engine: LLMEngine, params: SamplingParams) -> list[list[int]]:
    ids = [engine.tokenizer_info.apply_chat_template([{"role": "user", "content": p}]) for p in PROMPTS]
    for index, prompt in enumerate(ids):
        engine.add_request(f"w{index}", prompt, params)
    final = {}
    while engine.has_unfinished_requests():
        for output in engine.step():
            if output.finished:
                final[output.request_id] = output.outputs[0].token_ids
    return [final[f"w{index}"] for index in range(len(PROMPTS))]


def test_answers_do_not_depend_on_max_tokens_above_block_plus_window(engine: LLMEngine) -> None:
    resolved = engine.input_processor.resolve(SamplingParams())
    room = engine.max_model_len - 40  # the chat prompts are shorter than 40 tokens
    assert resolved.canvas_window == 16  # the demo's generation_config.json max_new_tokens
    sizes = [resolved.canvas_window, 64, 128, room]
    results = [answers(engine, SamplingParams(max_tokens=size)) for size in sizes]
    assert all(result == results[0] for result in results[1:])
    assert any(results[0])


def test_a_step_shows_the_model_only_the_window(engine: LLMEngine, monkeypatch: pytest.MonkeyPatch) -> None:
    lengths: list[int] = []
    prepare = ThresholdPolicy.prepare

    def recording_prepare(self, seq):
        request = prepare(self, seq)
        if request is not None:
            lengths.append(request.num_queries - seq.prompt_len)
        return request

    monkeypatch.setattr(ThresholdPolicy, "prepare", recording_prepare)
    params = SamplingParams(max_tokens=200, ignore_eos=True, canvas_window=24, block_length=8)
    answers(engine, params)
    starts = range(0, 200, 8)
    assert set(lengths) == {min(200, start + 24) for start in starts}
    lengths.clear()
    answers(engine, SamplingParams(max_tokens=64, canvas_window=-1))
    assert set(lengths) == {64}  # the whole canvas, every step
