"""Structured outputs in the engine, on the shipped demo models (offline LLM and LLMEngine, no HTTP).

Rules matched (vLLM): vllm/v1/structured_output/backend_guidance.py compiles json / json_object / regex /
choice / grammar with llguidance (whitespace_flexible unless disable_any_whitespace) and refuses an invalid
spec at validation (vllm/v1/engine/processor.py -> a 400); a grammar that completes allows only the end
token (finish "stop"), and max_tokens still ends a constrained request with "length"
(vllm/v1/core/sched/utils.py check_stop). The diffusion rule (engine/decoding/constrained.py): commits
from the frontier only, so the grammar state always describes the reported answer.
"""

from __future__ import annotations

import json
import re

import jsonschema
import pytest
import torch
from vdiff.config import EngineConfig
from vdiff.engine.llm import LLM
from vdiff.errors import VdiffValidationError
from vdiff.sampling_params import SamplingParams
from vdiff.structured import StructuredOutputsParams
from vdiff.structured.matcher import GrammarLimitError, GrammarMatcher

from bench.tasks import eval_set

torch.set_num_threads(1)

ANSWER_SCHEMA = {
    "type": "object",
    "properties": {
        "answer": {"type": "string", "pattern": "^[0-9]{1,4}$"},
        "sure": {"type": "boolean"},
    },
    "required": ["answer", "sure"],
    "additionalProperties": False,
}
"""A finite language (at most ~20 tokens compact): every constrained answer must complete in 48 tokens."""
POLICIES = [
    ("dream-demo", {"decoding": "reference"}),
    ("dream-demo", {"decoding": "threshold"}),
    ("dream-demo", {"decoding": "threshold", "kv_cache": "prefix", "block_length": 8}),
    ("llada-demo", {"decoding": "reference", "block_length": 16}),
    ("llada-demo", {"decoding": "threshold", "kv_cache": "dual", "block_length": 16}),
]


@pytest.fixture(scope="module")
def llms() -> dict[str, LLM]:
    return {name: LLM(model=name, device="cpu") for name in ("dream-demo", "llada-demo")}


def chats(num: int) -> list[list[dict[str, str]]]:
    prompts = [case.prompt for task in ("add", "max", "copy") for case in eval_set(task, num)]
    return [[{"role": "user", "content": prompt}] for prompt in prompts]


def constrained(**kwargs) -> StructuredOutputsParams:
    return StructuredOutputsParams(**kwargs)


@pytest.mark.parametrize(("model", "knobs"), POLICIES)
def test_json_schema_outputs_parse_and_validate(llms, model, knobs) -> None:
    """Every output of a json-schema request parses and validates, for every policy, sampled, n = 2."""
    params = SamplingParams(
        max_tokens=48,
        temperature=0.8,
        seed=7,
        n=2,
        structured_outputs=constrained(json=ANSWER_SCHEMA, disable_any_whitespace=True),
        **knobs,
    )
    outputs = llms[model].chat(chats(2), params)
    completions = [completion for output in outputs for completion in output.outputs]
    assert len(completions) == 12
    for completion in completions:
        jsonschema.validate(json.loads(completion.text), ANSWER_SCHEMA)
        assert completion.finish_reason == "stop"


def test_json_object_with_flexible_whitespace_is_json_when_it_finishes(llms) -> None:
    """json_object (response_format json_object): an object; whitespace is allowed (vLLM's default), so a
    tiny model may ramble in it and hit max_tokens, but whatever finishes "stop" parses."""
    params = SamplingParams(max_tokens=64, temperature=0, structured_outputs=constrained(json_object=True))
    outputs = llms["dream-demo"].chat(chats(2), params)
    finished = [o.outputs[0] for o in outputs if o.outputs[0].finish_reason == "stop"]
    for completion in finished:
        assert isinstance(json.loads(completion.text), dict)
    for output in outputs:
        assert output.outputs[0].text.lstrip().startswith("{")


@pytest.mark.parametrize("model", ["dream-demo", "llada-demo"])
def test_regex_outputs_fullmatch(llms, model) -> None:
    pattern = r"(yes|no): [0-9]{2}"
    params = SamplingParams(
        max_tokens=24, temperature=1.0, seed=3, structured_outputs=constrained(regex=pattern)
    )
    for output in llms[model].chat(chats(3), params):
        completion = output.outputs[0]
        assert re.fullmatch(pattern, completion.text), completion.text
        assert completion.finish_reason == "stop"


@pytest.mark.parametrize("decoding", ["reference", "threshold"])
def test_choice_returns_one_of_the_choices(llms, decoding) -> None:
    choices = ("alpha", "beta", "gamma delta")
    params = SamplingParams(
        max_tokens=16,
        temperature=1.0,
        seed=11,
        n=3,
        decoding=decoding,
        structured_outputs=constrained(choice=choices),
    )
    for output in llms["llada-demo"].chat(chats(2), params):
        for completion in output.outputs:
            assert completion.text in choices
            assert completion.finish_reason == "stop"


def test_grammar_outputs_follow_the_grammar(llms) -> None:
    grammar = 'start: "sum=" NUM\nNUM: /[0-9]{1,3}/'
    params = SamplingParams(
        max_tokens=16, temperature=0.5, seed=1, structured_outputs=constrained(grammar=grammar)
    )
    for output in llms["dream-demo"].chat(chats(2), params):
        assert re.fullmatch(r"sum=[0-9]{1,3}", output.outputs[0].text), output.outputs[0].text


def test_free_sequences_in_a_constrained_batch_keep_their_tokens(llms) -> None:
    """Temperature 0: a free request gives the same tokens alone and batched with constrained ones."""
    llm = llms["dream-demo"]
    for knobs in ({"decoding": "reference"}, {"decoding": "threshold"}):
        free = SamplingParams(max_tokens=16, temperature=0, **knobs)
        json_params = SamplingParams(
            max_tokens=32,
            temperature=0,
            structured_outputs=constrained(json=ANSWER_SCHEMA, disable_any_whitespace=True),
            **knobs,
        )
        conversations = chats(2)
        alone = [o.outputs[0].token_ids for o in llm.chat(conversations, free)]
        mixed = llm.chat(
            conversations + conversations, [free] * len(conversations) + [json_params] * len(conversations)
        )
        assert [o.outputs[0].token_ids for o in mixed[: len(conversations)]] == alone
        for output in mixed[len(conversations) :]:
            jsonschema.validate(json.loads(output.outputs[0].text), ANSWER_SCHEMA)


def test_too_small_max_tokens_finishes_length(llms) -> None:
    params = SamplingParams(
        max_tokens=4,
        temperature=0,
        structured_outputs=constrained(json=ANSWER_SCHEMA, disable_any_whitespace=True),
    )
    completion = llms["dream-demo"].chat(chats(1)[:1], params)[0].outputs[0]
    assert completion.finish_reason == "length"
    assert len(completion.token_ids) == 4
    assert completion.text.startswith('{"')


def test_stop_strings_cut_constrained_outputs(llms) -> None:
    params = SamplingParams(
        max_tokens=24, temperature=0, stop=[":"], structured_outputs=constrained(regex=r"(yes|no): [0-9]{2}")
    )
    completion = llms["llada-demo"].chat(chats(1)[:1], params)[0].outputs[0]
    assert completion.text in ("yes", "no")
    assert completion.finish_reason == "stop" and completion.stop_reason == ":"


def test_streamed_frontier_is_always_a_grammatical_prefix(llms) -> None:
    """Every intermediate output is a prefix of the final one (the frontier only grows), and the final
    text validates."""
    engine = llms["dream-demo"].llm_engine
    params = SamplingParams(
        max_tokens=48,
        temperature=0.7,
        seed=5,
        decoding="threshold",
        structured_outputs=constrained(json=ANSWER_SCHEMA, disable_any_whitespace=True),
    )
    prompt = engine.tokenizer_info.encode(engine.tokenizer_info.render_chat(chats(1)[0]))
    engine.add_request("stream", prompt, params)
    snapshots = []
    while engine.has_unfinished_requests():
        for output in engine.step():
            snapshots.append(output.outputs[0].text)
    final = snapshots[-1]
    assert len(snapshots) > 2
    assert all(final.startswith(text) for text in snapshots)
    jsonschema.validate(json.loads(final), ANSWER_SCHEMA)


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"json": {"type": "object", "properties": {"a": {"type": "nosuchtype"}}}}, "json"),
        ({"json": "{not json"}, "json"),
        ({"regex": "([0-9"}, "regex"),
        ({"grammar": "start: (((("}, "grammar"),
        ({"structural_tag": '{"structures": []}'}, "structural_tag"),
        (
            {
                "structural_tag": '{"triggers": ["<f"], '
                '"structures": [{"begin": "<g>", "schema": {}, "end": "</g>"}]}'
            },
            "structural_tag",
        ),
    ],
)
def test_invalid_constraints_are_validation_errors_naming_the_source(llms, kwargs, fragment) -> None:
    engine = llms["llada-demo"].llm_engine
    source = f"structured_outputs.{fragment}"
    params = SamplingParams(max_tokens=8, structured_outputs=StructuredOutputsParams(source=source, **kwargs))
    with pytest.raises(VdiffValidationError) as raised:
        engine.process_request([1, 2, 3], params)
    assert raised.value.param == source
    assert source in str(raised.value)


def test_backend_flag() -> None:
    """--structured-outputs-config as vLLM's (backend auto | guidance here); others fail at startup."""
    EngineConfig(model="llada-demo", structured_outputs_config={"backend": "auto"})
    EngineConfig(
        model="llada-demo", structured_outputs_config={"backend": "guidance", "disable_any_whitespace": True}
    )
    for bad in (
        {"backend": "xgrammar"},
        {"backend": "bogus"},
        {"nope": 1},
        {"reasoning_parser": "deepseek_r1"},
    ):
        with pytest.raises(VdiffValidationError) as raised:
            EngineConfig(model="llada-demo", structured_outputs_config=bad)
        assert raised.value.param == "--structured-outputs-config"


def test_server_wide_disable_any_whitespace() -> None:
    llm = LLM(model="dream-demo", device="cpu", structured_outputs_config={"disable_any_whitespace": True})
    schema = {
        "type": "object",
        "properties": {"n": {"type": "integer", "minimum": 0, "maximum": 9}},
        "required": ["n"],
        "additionalProperties": False,
    }
    params = SamplingParams(max_tokens=24, temperature=0, structured_outputs=constrained(json=schema))
    text = llm.chat(chats(1)[:1], params)[0].outputs[0].text
    assert json.loads(text)["n"] in range(10)
    assert not re.search(r"\s", text)


@pytest.mark.parametrize(("model", "decoding"), [("dream-demo", "threshold"), ("llada-demo", "reference")])
def test_constrained_answers_are_right_at_least_as_often_as_free(llms, model, decoding) -> None:
    """The frontier mask picks the model's best allowed token (not just any allowed one): on the demo
    tasks, regex-constrained greedy answers are right at least as often as free ones."""
    for task, pattern in (("add", r"[0-9]{1,3}"), ("max", r"[0-9]"), ("copy", r"[0-9]+")):
        cases = eval_set(task, 8)
        conversations = [[{"role": "user", "content": case.prompt}] for case in cases]
        free = SamplingParams(max_tokens=16, temperature=0, decoding=decoding)
        regex = SamplingParams(
            max_tokens=16, temperature=0, decoding=decoding, structured_outputs=constrained(regex=pattern)
        )
        right = [
            sum(case.check(output.outputs[0].text) for case, output in zip(cases, outputs, strict=True))
            for outputs in (llms[model].chat(conversations, free), llms[model].chat(conversations, regex))
        ]
        assert right[1] >= right[0] > 0, (task, right)


def test_frontier_mask_keeps_the_best_allowed_token(llms) -> None:
    """FrontierMasks on real logits rows: disallowed tokens get -inf, allowed ones keep their logits, so
    the policy's argmax is the model's best allowed token (here the best digit for regex [0-9])."""
    from vdiff.engine.decoding.base import ForwardResult
    from vdiff.engine.decoding.constrained import FrontierMasks
    from vdiff.engine.sequence import Sequence, plan_blocks

    engine = llms["dream-demo"].llm_engine
    compiled = engine.grammar_backend.compile(constrained(regex="[0-9]"))
    encode = engine.tokenizer_info.encode
    digits = [encode(str(d))[0] for d in range(10)]
    vocab = engine.vocab_size
    logits = torch.randn(1, 3, vocab)
    logits[0, 0, encode("x")[0]] = 50.0  # the model's favourite, not allowed
    logits[0, 0, digits[7]] = 20.0
    seq = Sequence(
        seq_id=0,
        request_id="r",
        index=0,
        prompt_token_ids=[1, 2],
        params=SamplingParams(),
        blocks=plan_blocks(3, None, None, 3),
        mask_token_id=engine.mask_token_id,
        generator=torch.Generator(),
        policy_name="reference",
        grammar=compiled.new_matcher(),
    )
    masks = FrontierMasks(engine.frontier_masks.num_words)
    masks.start([seq])
    result = ForwardResult(logits=logits.clone())
    masks.apply([seq], [result])
    row = result.logits[0, 0]
    assert int(row.argmax()) == digits[7]
    assert torch.isinf(row).sum() == vocab - 10
    assert torch.equal(row[digits], logits[0, 0, digits])
    assert torch.equal(result.logits[0, 1:], logits[0, 1:])  # only the frontier row is masked
    masks.close()


def test_json_runs_never_fall_back(llms) -> None:
    """Every frontier token of a constrained run came from its masked row (no degenerate fallback)."""
    engine = llms["llada-demo"].llm_engine
    prompt = engine.tokenizer_info.encode(engine.tokenizer_info.render_chat(chats(1)[0]))
    params = SamplingParams(
        max_tokens=32,
        temperature=0.8,
        seed=9,
        decoding="threshold",
        structured_outputs=constrained(json=ANSWER_SCHEMA, disable_any_whitespace=True),
    )
    engine.add_request("fallbacks", prompt, params)
    seq = engine.requests["fallbacks"].seqs[0]
    while engine.has_unfinished_requests():
        engine.step()
    assert seq.finish_reason == "stop"
    assert seq.grammar.num_fallbacks == 0 and seq.grammar.num_consumed >= 8


def test_structural_tag_constrains_what_follows_its_trigger(llms) -> None:
    """vLLM's structural_tag: free text until a trigger; from `begin` on, the schema, then `end`."""
    tag = {
        "triggers": ["<f>"],
        "structures": [
            {"begin": "<f>", "schema": {"type": "integer", "minimum": 0, "maximum": 9}, "end": "</f>"}
        ],
    }
    engine = llms["dream-demo"].llm_engine
    compiled = engine.grammar_backend.compile(constrained(structural_tag=json.dumps(tag)))
    matcher = compiled.new_matcher()
    encode = engine.tokenizer_info.encode
    for token in encode("ok <f>7</f>"):
        assert matcher.consume(token)
    refused = compiled.new_matcher()
    assert all(refused.consume(token) for token in encode("ok <f>"))
    assert not refused.consume(encode("x")[0])


PATHOLOGICAL_REGEX = "(a{1000}){1000}"
"""Valid, but its first token makes llguidance's lexer build a million-'a' forced prefix and exceed its
expression limit: the matcher enters its error state, where it allows only the end token."""


def test_a_grammar_beyond_the_parser_limits_is_refused_at_admission_naming_the_source(llms) -> None:
    """An errored matcher must never end an answer "stop" with text that ignores the constraint (the bug:
    '' / "stop" after ~1.6 s). vLLM (vllm/v1/structured_output/backend_guidance.py) only logs the
    LLMatcher error and keeps llguidance's EOS-only mask; here the grammar is probed at admission under
    bounded ParserLimits and refused, quickly, naming params.source."""
    engine = llms["dream-demo"].llm_engine
    source = "structured_outputs.regex"
    params = SamplingParams(
        max_tokens=8,
        temperature=0,
        structured_outputs=StructuredOutputsParams(source=source, regex=PATHOLOGICAL_REGEX),
    )
    with pytest.raises(VdiffValidationError) as raised:
        engine.process_request([1, 2, 3], params)
    assert raised.value.param == source
    assert "too complex" in str(raised.value)
    with pytest.raises(VdiffValidationError):  # the offline API: the exact case of the report
        llms["dream-demo"].chat(
            [[{"role": "user", "content": "x"}]],
            SamplingParams(
                max_tokens=8,
                temperature=0,
                structured_outputs=StructuredOutputsParams(regex=PATHOLOGICAL_REGEX),
            ),
        )


@pytest.mark.parametrize("regex", ["a{20}", "(a{300}){300}"])
def test_long_forced_prefixes_within_the_limits_are_honoured(llms, regex) -> None:
    [output] = llms["dream-demo"].chat(
        [[{"role": "user", "content": "x"}]],
        SamplingParams(max_tokens=8, temperature=0, structured_outputs=constrained(regex=regex)),
    )
    assert output.outputs[0].text == "a" * 8
    assert output.outputs[0].finish_reason == "length"


def test_an_errored_matcher_raises_instead_of_allowing_the_end_token(llms) -> None:
    """Past admission (llguidance's lexer state is shared by a grammar's matchers), a matcher that enters
    its error state fails its own request through the step guard: consume raises GrammarLimitError,
    never reports the end token as the grammar's choice."""
    import llguidance

    backend = llms["dream-demo"].llm_engine.grammar_backend
    grammar = llguidance.LLMatcher.grammar_from_regex(PATHOLOGICAL_REGEX)
    raw = llguidance.LLMatcher(backend.ll_tokenizer, grammar, log_level=0, limits=backend.limits)
    matcher = GrammarMatcher(raw, backend.eos_token_id, backend.vocab_size)
    assert matcher.forced_token() == backend.ll_tokenizer.tokenize_str("a")[0]
    with pytest.raises(GrammarLimitError, match="too many expressions"):
        matcher.consume(matcher.forced_token())
    with pytest.raises(GrammarLimitError):
        matcher.consume(backend.eos_token_id)
