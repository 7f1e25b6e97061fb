"""Canvas frames from the engine (engine/canvas_trace.py): replaying a request's frames rebuilds its canvas.

The frames are checked against the engine's own answer: applying every frame's commits to an all-mask
canvas gives the committed answer token for token, the mask count falls to zero, and the policies'
actions add up (APD's accepted runs sum to the tokens committed; threshold's commits are its frames').
"""

from __future__ import annotations

import pytest
from server.fast_decoding_helpers import make_engine
from vdiff.demo import DEMO_MODELS_DIR
from vdiff.engine.llm_engine import LLMEngine
from vdiff.sampling_params import SamplingParams

MESSAGES = [{"role": "user", "content": "Copy 90817."}]


@pytest.fixture(scope="module")
def dream() -> LLMEngine:
    return make_engine(
        DEMO_MODELS_DIR / "dream-demo", draft_model=str(DEMO_MODELS_DIR / "qwen2-ar-mini-demo")
    )


@pytest.fixture(scope="module")
def llada() -> LLMEngine:
    return make_engine(DEMO_MODELS_DIR / "llada-demo")


def _run(engine: LLMEngine, params: SamplingParams) -> tuple[list, list]:
    prompt = engine.tokenizer_info.tokenizer.apply_chat_template(
        MESSAGES, add_generation_prompt=True, tokenize=True, return_dict=False
    )
    engine.add_request("r", prompt, params)
    frames, final = [], None
    while engine.has_unfinished_requests():
        for output in engine.step():
            (choice,) = output.outputs
            frames.extend(choice.canvas_frames or [])
            final = choice
    assert final is not None and final.finished
    return frames, final


@pytest.mark.parametrize(
    ("model", "knobs"),
    [
        ("dream", {"decoding": "threshold", "threshold": 0.7, "block_length": 4}),
        ("dream", {"decoding": "reference", "steps": 8}),
        ("dream", {"decoding": "apd", "apd_max_lookahead": 3}),
        ("llada", {"decoding": "threshold", "threshold": 0.9, "block_length": 4}),
        ("llada", {"decoding": "reference", "steps": 16, "block_length": 4}),
        ("llada", {"decoding": "threshold", "factor": 1.0, "block_length": 4}),
    ],
)
def test_frames_replay_to_the_answer(model: str, knobs: dict, request: pytest.FixtureRequest) -> None:
    engine: LLMEngine = request.getfixturevalue(model)
    params = SamplingParams(max_tokens=16, temperature=0.0, record_canvas=True, **knobs)
    frames, final = _run(engine, params)
    assert len(frames) >= 2
    canvas: list[int | None] = [None] * frames[0].canvas_length
    masks = []
    for number, frame in enumerate(frames, start=1):
        assert frame.step == number and frame.policy == knobs["decoding"]
        for token in frame.committed:
            assert canvas[token.position] is None, "a position is committed once"
            canvas[token.position] = token.token_id
            assert token.text == engine.tokenizer_info.decode([token.token_id], False)[:32]
            assert token.confidence is not None and 0.0 <= token.confidence <= 1.0
        still = [p for p, token in enumerate(canvas) if token is None]
        runs = [p for start, end in frame.masked for p in range(start, end)]
        assert runs == still
        masks.append(frame.num_masked)
        start, end = frame.blocks[frame.block]
        assert all(start <= t.position < end for t in frame.committed) or knobs["decoding"] == "apd"
    assert masks == sorted(masks, reverse=True) and masks[-1] == 0
    answer = canvas[: len(final.token_ids)]
    assert answer == final.token_ids
    if knobs["decoding"] == "apd":
        assert sum(f.action["accepted"] for f in frames) == sum(len(f.committed) for f in frames)
        assert all(1 <= f.action["accepted"] <= f.action["drafted"] for f in frames if f.committed)
    if knobs["decoding"] == "threshold":
        for frame in frames:
            assert frame.action["committed"] == len(frame.committed)
            if knobs.get("factor"):
                assert frame.action["above_threshold"] is None and frame.action["factor"] == knobs["factor"]
            else:
                assert frame.action["above_threshold"] >= len(frame.committed) - 1  # the forced best one


def test_untraced_requests_carry_no_frames(llada: LLMEngine) -> None:
    _, final = _run(llada, SamplingParams(max_tokens=8, temperature=0.0))
    assert final.canvas_frames is None
