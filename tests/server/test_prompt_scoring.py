"""Prompt scoring: each prompt token's logprob given the tokens before it, batched like any other work."""

from __future__ import annotations

import math

import pytest
from vdiff.config import EngineConfig
from vdiff.demo import demo_model_path
from vdiff.engine.llm_engine import LLMEngine
from vdiff.errors import VdiffValidationError
from vdiff.sampling_params import SamplingParams

from bench.tasks import eval_set


@pytest.fixture(scope="module", params=["llada-demo", "dream-demo"])
def engine(request: pytest.FixtureRequest) -> LLMEngine:
    return LLMEngine(EngineConfig(model=str(demo_model_path(request.param)), max_num_seqs=8))


def run(engine: LLMEngine, requests: list[tuple[list[int], SamplingParams]]) -> list:
    for index, (prompt, params) in enumerate(requests):
        engine.add_request(f"s{index}", prompt, params)
    final = {}
    while engine.has_unfinished_requests():
        for output in engine.step():
            if output.finished:
                final[output.request_id] = output
    return [final[f"s{index}"] for index in range(len(requests))]


def chat(engine: LLMEngine, text: str) -> list[int]:
    return engine.tokenizer_info.apply_chat_template([{"role": "user", "content": text}])


def continuation_score(output, context_len: int) -> float:
    return sum(entry.logprob for entry in output.prompt_logprobs[context_len:])


def test_every_prompt_token_gets_a_logprob_and_generation_is_unchanged(engine: LLMEngine) -> None:
    prompt = chat(engine, "Copy 90817.")
    [scored] = run(engine, [(prompt, SamplingParams(max_tokens=8, prompt_logprobs=2))])
    entries = scored.prompt_logprobs
    assert len(entries) == len(prompt) and entries[0] is None
    for token, entry in zip(prompt[1:], entries[1:], strict=True):
        assert entry.token_id == token and math.isfinite(entry.logprob) and entry.logprob <= 0
        values = [value for _, value in entry.top]
        assert (
            len(values) == 2 and values == sorted(values, reverse=True) and values[0] >= entry.logprob - 1e-5
        )
    [plain] = run(engine, [(prompt, SamplingParams(max_tokens=8))])
    assert scored.outputs[0].token_ids == plain.outputs[0].token_ids and plain.prompt_logprobs is None


def test_scores_do_not_depend_on_max_tokens_or_the_batch(engine: LLMEngine) -> None:
    prompt = chat(engine, "Sort 3142.") + engine.tokenizer_info.encode("1234")
    [short] = run(engine, [(prompt, SamplingParams(max_tokens=1, prompt_logprobs=0))])
    others = [(chat(engine, "Add 43 and 5."), SamplingParams(max_tokens=16)) for _ in range(3)]
    batched = run(engine, [*others, (prompt, SamplingParams(max_tokens=12, prompt_logprobs=0))])[-1]
    assert [e.logprob for e in batched.prompt_logprobs[1:]] == pytest.approx(
        [e.logprob for e in short.prompt_logprobs[1:]], abs=1e-4
    )


def test_scores_rank_the_right_answer_first(engine: LLMEngine) -> None:
    """lm-eval's multiple choice: the continuation with the highest summed logprob is the answer."""
    tokenizer = engine.tokenizer_info
    right = total = 0
    for instance in eval_set("add", 8) + eval_set("copy", 8) + eval_set("max", 8):
        context = chat(engine, instance.prompt)
        answer = instance.answers[0]
        wrong = answer[:-1] + str((int(answer[-1]) + 1) % 10)
        requests = [
            (context + tokenizer.encode(c), SamplingParams(max_tokens=1, prompt_logprobs=0))
            for c in (answer, wrong)
        ]
        good, bad = (continuation_score(output, len(context)) for output in run(engine, requests))
        right += good > bad
        total += 1
    assert right >= 0.9 * total, f"{right}/{total}"


def test_prompt_logprobs_are_bounded_like_logprobs(engine: LLMEngine) -> None:
    with pytest.raises(VdiffValidationError) as error:
        engine.add_request("x", chat(engine, "hi"), SamplingParams(prompt_logprobs=21))
    assert error.value.param == "prompt_logprobs"
