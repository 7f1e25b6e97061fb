"""The offline API: `from vdiff import LLM, SamplingParams`, generate and chat through one batched engine."""

from __future__ import annotations

import pytest
from vdiff import LLM, SamplingParams
from vdiff.errors import VdiffValidationError

PARAMS = SamplingParams(max_tokens=8, block_length=8, ignore_eos=True)


@pytest.fixture(scope="module")
def llm(dream_checkpoint) -> LLM:
    return LLM(model=str(dream_checkpoint), max_num_seqs=4, max_waiting_requests=1, dtype="float32")


def test_generate_accepts_text_lists_and_token_ids(llm: LLM) -> None:
    prompts = ["the cat", "in the hat", "a", "then the other one", "on and on", "sat"]
    batched = llm.generate(prompts, PARAMS)  # 6 prompts > max_num_seqs + waiting room: fed as slots free up
    assert [o.prompt_token_ids for o in batched] == [
        llm.tokenizer_info.encode(p, add_special_tokens=True) for p in prompts
    ]
    assert all(o.finished and len(o.outputs[0].token_ids) == 8 for o in batched)
    assert llm.llm_engine.stats.max_batch_size == 4
    [alone] = llm.generate(prompts[3], PARAMS)
    assert alone.outputs[0].token_ids == batched[3].outputs[0].token_ids
    [from_ids] = llm.generate(batched[3].prompt_token_ids, PARAMS)
    assert from_ids.outputs[0].text == batched[3].outputs[0].text


def test_per_prompt_params(llm: LLM) -> None:
    outputs = llm.generate(["a", "b"], [PARAMS, PARAMS.replace(max_tokens=3)])
    assert [len(o.outputs[0].token_ids) for o in outputs] == [8, 3]
    with pytest.raises(VdiffValidationError):
        llm.generate(["a", "b"], [PARAMS])


def test_chat_uses_the_chat_template(llm: LLM) -> None:
    conversation = [{"role": "user", "content": "hi there"}]
    [output] = llm.chat(conversation, PARAMS)
    expected_prompt = llm.tokenizer_info.apply_chat_template(conversation)
    assert output.prompt_token_ids == expected_prompt
    assert "<|im_start|>" in llm.tokenizer_info.decode(expected_prompt, skip_special_tokens=False)
    both = llm.chat([conversation, [{"role": "user", "content": "bye"}]], PARAMS)
    assert both[0].outputs[0].token_ids == output.outputs[0].token_ids
    assert len(both) == 2


def test_unknown_engine_argument_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="max_num_sequences"):
        LLM(model="unused", max_num_sequences=4)
