"""No request can hurt the server: one real `vdiff serve llada-demo` subprocess under a 6 GiB address-space
cap gets a table of hostile or careless requests (non-finite and huge numbers, lone surrogates, wrong types,
conflicting knobs, huge bodies, abandoned streams). Every answer is < 500 (a 4xx in OpenAI's error shape,
naming `param` where one field is at fault), /health answers 200 in < 1 s throughout, and the server still
serves afterwards. Then schemathesis fuzzes the generation, tokenize and models endpoints for 5xx.

Bodies are raw JSON text: Python's json would not write NaN as a client may, nor 1e999, nor `\\ud800`."""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from server.nasty_support import (
    REQUEST_TIMEOUT_S,
    HealthProbe,
    ServerProcess,
    answer_text,
    error_of,
    param_matches,
    post_raw,
)
from vdiff.demo import is_demo_model_available

pytestmark = [
    pytest.mark.skipif(not is_demo_model_available(), reason="the demo checkpoint is not installed"),
    pytest.mark.slow,  # a real server subprocess; test_http_hardening sends hostile requests in-process
]

MODEL = "llada-demo"
COMPLETIONS = "/v1/completions"
CHAT = "/v1/chat/completions"
BAD = r"\ud800"
"""A lone surrogate as a JSON escape: valid JSON text, but no UTF-8 string can hold it."""
PROMPT = '"prompt": "Copy 90817.", "max_tokens": 8'
MESSAGES = '"messages": [{"role": "user", "content": "Copy 90817."}], "max_tokens": 8'
BASE = {COMPLETIONS: PROMPT, CHAT: MESSAGES}


@dataclass(frozen=True)
class Case:
    id: str
    path: str
    body: str
    """Raw JSON text."""
    status: int
    reason: str
    """One line: why this status is the right answer."""
    param: str | None = None
    """The field the 4xx must name (pydantic's `field.sub` locations match too)."""
    text: bool = True
    """For a 200: every choice must have non-empty text."""
    then_serves: bool = False
    """After it, a normal request must still get 200 with text (the engine survived)."""


def case(
    id: str, path: str, extra: str, status: int, reason: str, param: str | None = None, **flags: bool
) -> Case:
    """A case that adds `extra` (raw JSON members) to the endpoint's normal body."""
    body = "{" + BASE[path] + (", " + extra if extra else "") + "}"
    return Case(f"{'chat' if path == CHAT else 'cmpl'}-{id}", path, body, status, reason, param, **flags)


def both(
    id: str, extra: str, status: int, reason: str, param: str | None = None, **flags: bool
) -> list[Case]:
    return [case(id, path, extra, status, reason, param, **flags) for path in (COMPLETIONS, CHAT)]


# ---------------------------------------------------------------- non-finite and extreme numbers, every field
NON_FINITE = ("NaN", "Infinity", "-Infinity", "1e999")
"""Python's json (and so Starlette) parses all four, 1e999 as inf: each must be a 400 naming the field."""

FLOAT_FIELDS: dict[str, tuple[int, int]] = {
    # field: (status for 1e308, status for 1e-300); ranges from vdiff.knobs
    "temperature": (400, 200),  # [0, 2]; 1e-300 is floored to 0.01 like vLLM
    "top_p": (400, 200),  # (0, 1]
    "min_p": (400, 200),  # [0, 1]
    "repetition_penalty": (200, 200),  # (0, inf): any positive value must be served
    "presence_penalty": (400, 200),  # [-2, 2]
    "frequency_penalty": (400, 200),  # [-2, 2]
    "threshold": (400, 200),  # (0, 1]
    "factor": (200, 200),  # (0, inf)
    "cfg_scale": (400, 200),  # [0, 100]
    "alg_temp": (400, 200),  # [0, 100]: above float32's range it would turn into inf/inf = NaN
    "eps": (400, 200),  # (0, 1)
    "apd_mixture_weight": (400, 200),  # [0, 1]; only read by decoding apd
}
INT_FIELDS = ("top_k", "steps", "block_length", "kv_cache_vicinity", "max_tokens", "n", "seed", "min_tokens")
"""Integers: 1e308 does not fit one and 1e-300 has a fraction, so both are a 400 (pydantic's int rules)."""


def numeric_cases() -> dict[str, list[Case]]:
    """Per endpoint and field, its six values (grouped so the table stays a few dozen tests)."""
    groups: dict[str, list[Case]] = {}
    for path in (COMPLETIONS, CHAT):
        int_fields = (
            (*INT_FIELDS, "logprobs")
            if path == COMPLETIONS
            else (*INT_FIELDS, "max_completion_tokens", "top_logprobs")
        )
        for name in (*FLOAT_FIELDS, *int_fields, *(("logprobs-bool",) if path == CHAT else ())):
            field = name.removesuffix("-bool")
            cases = [case(f"{field}={value}", path, f'"{field}": {value}', 400, "not finite", field)
                     for value in NON_FINITE]  # fmt: skip
            if name in FLOAT_FIELDS:
                huge, tiny = FLOAT_FIELDS[name]
                cases.append(case(f"{name}=1e308", path, f'"{name}": 1e308', huge, "knob range", name))
                cases.append(case(f"{name}=1e-300", path, f'"{name}": 1e-300', tiny, "knob range", name))
            else:  # an int (1e308 does not fit, 1e-300 has a fraction) or chat's boolean logprobs
                for value in ("1e308", "1e-300"):
                    cases.append(
                        case(f"{field}={value}", path, f'"{field}": {value}', 400, "not an int", field)
                    )
            groups[cases[0].id.split("=")[0]] = cases
    return groups


NUMERIC = numeric_cases()


# ---------------------------------------------------------------------------------- everything else, by hand
HANDWRITTEN: list[Case] = [
    # The crashers: each once killed the engine loop; now a 4xx/200 and the engine keeps serving.
    *both("crasher-maskgit-alg_temp-nan", '"decoding": "reference", "alg": "maskgit_plus", "alg_temp": NaN',
          400, "alg_temp must be finite", "alg_temp", then_serves=True),
    *both("crasher-entropy-alg_temp-1e999", '"decoding": "reference", "alg": "entropy", "alg_temp": 1e999',
          400, "1e999 parses as inf", "alg_temp", then_serves=True),
    *both("crasher-origin-temperature-1e-300",
          '"decoding": "reference", "alg": "origin", "temperature": 1e-300', 200,
          "temperature floored to 0.01 like vLLM", then_serves=True),
    # Finite but extreme values of open-ended knobs, on the code paths that use them.
    *both("maskgit-alg_temp-1e308", '"decoding": "reference", "alg": "maskgit_plus", "alg_temp": 1e308',
          400, "alg_temp range is [0, 100]", "alg_temp", then_serves=True),
    *both("maskgit-alg_temp-100", '"decoding": "reference", "alg": "maskgit_plus", "alg_temp": 100',
          200, "the largest alg_temp: nearly uniform position sampling, finite", then_serves=True),
    *both("entropy-repetition_penalty-1e-300",
          '"decoding": "reference", "alg": "entropy", "temperature": 1, "repetition_penalty": 1e-300',
          200, "repetition_penalty range is (0, inf): must not divide logits by float32 0", then_serves=True),
    *both("entropy-repetition_penalty-1e308",
          '"decoding": "reference", "alg": "entropy", "temperature": 1, "repetition_penalty": 1e308',
          200, "repetition_penalty range is (0, inf) (every prompt token banned: may answer nothing)",
          text=False, then_serves=True),
    *both("kv-dual-factor-1e-300", '"kv_cache": "dual", "factor": 1e-300', 200, "factor range is (0, inf)"),
    # Seeds: vLLM's bounds are torch.long's.
    *both("seed=2**64", f'"seed": {2**64}', 400, "above 2**63-1", "seed"),
    *both("seed=-2**63-1", f'"seed": {-(2**63) - 1}', 400, "below -2**63", "seed"),
    *both("seed=2**64-1,n=2", f'"seed": {2**64 - 1}, "n": 2', 400, "above 2**63-1", "seed"),
    *both("seed=2**63-1,n=2", f'"seed": {2**63 - 1}, "n": 2', 200,
          "the largest valid seed; the seed of choice i must not overflow"),
    # Huge integers: refused by bounds, or clamped where vdiff.knobs says they mean "the whole context".
    *both("max_tokens=10**12", f'"max_tokens": {10**12}', 400, "over the 256-token context", "max_tokens"),
    *both("steps=10**12", f'"steps": {10**12}', 400, "steps are bounded by the context", "steps"),
    *both("steps=10**8", f'"steps": {10**8}', 400, "steps are bounded by the context", "steps"),
    *both("n=10**6", f'"n": {10**6}', 400, "n is at most 128", "n"),
    *both("n=10000", '"n": 10000', 400, "n is at most 128", "n"),
    *both("top_k=2**64", f'"top_k": {2**64}', 200, "top_k >= vocabulary means no filter"),
    *both("apd_max_lookahead=2**64", f'"apd_max_lookahead": {2**64}', 200, "context-bound knob: clamped"),
    *both("kv_cache_vicinity=10**18", f'"kv_cache_vicinity": {10**18}', 200, "context-bound knob: clamped"),
    *both("kv_dual+vicinity=10**18", f'"kv_cache": "dual", "kv_cache_vicinity": {10**18}', 200,
          "context-bound knob: clamped, on the cache path that reads it"),
    *both("block_length=10**18", f'"block_length": {10**18}', 200, "one block longer than the answer"),
    *both("truncate_prompt_tokens=10**21", f'"truncate_prompt_tokens": {10**21}', 400, "over max_model_len",
          "truncate_prompt_tokens"),
    case("logprobs=10**5", COMPLETIONS, '"logprobs": 100000', 400, "over --max-logprobs", "logprobs"),
    case("top_logprobs=10**5", CHAT, '"logprobs": true, "top_logprobs": 100000', 400, "over --max-logprobs",
         "top_logprobs"),
    # Lone surrogates: invalid Unicode is the client's mistake (a 4xx naming the field), never a 500.
    Case("cmpl-surrogate-prompt", COMPLETIONS, f'{{"prompt": "{BAD}", "max_tokens": 4}}', 400, "invalid text",
         "prompt"),
    Case("cmpl-surrogate-prompt-list", COMPLETIONS, f'{{"prompt": ["ok", "a{BAD}"], "max_tokens": 4}}', 400,
         "invalid text", "prompt"),
    Case("chat-surrogate-content", CHAT, f'{{"messages": [{{"role": "user", "content": "{BAD}"}}]}}', 400,
         "invalid text", "messages"),
    Case("chat-surrogate-content-part", CHAT,
         f'{{"messages": [{{"role": "user", "content": [{{"type": "text", "text": "{BAD}"}}]}}]}}', 400,
         "invalid text", "messages"),
    *both("surrogate-model", f'"model": "{BAD}"', 404, "no such model (the name is escaped in the message)",
          "model"),
    *both("surrogate-stop", f'"stop": "{BAD}"', 400, "a stop string that is not Unicode can never match "
          "decoded text: the client's mistake, refused like prompt", "stop"),
    *both("surrogate-stop-list", f'"stop": ["ok", "{BAD}"]', 400, "as stop", "stop"),
    *both("surrogate-bad_words", f'"bad_words": ["{BAD}"]', 400, "bad_words are tokenized: invalid text",
          "bad_words"),
    *both("surrogate-request_id", f'"request_id": "{BAD}"', 400, "the id is echoed in the response, which "
          "must be UTF-8 JSON", "request_id"),
    *both("surrogate-logit_bias-key", f'"logit_bias": {{"{BAD}": 1}}', 400, "not a token id", "logit_bias"),
    *both("surrogate-user", f'"user": "{BAD}"', 200, "user is accepted and ignored, like vLLM"),
    case("surrogate-chat_template", CHAT, f'"chat_template": "{BAD}"', 400, "invalid text", "chat_template"),
    case("surrogate-chat_template_kwargs", CHAT, f'"chat_template_kwargs": {{"{BAD}": 1}}', 400,
         "invalid text", "chat_template_kwargs"),
    Case("tokenize-surrogate-prompt", "/tokenize", f'{{"prompt": "{BAD}"}}', 400, "invalid text", "prompt"),
    Case("tokenize-surrogate-messages", "/tokenize",
         f'{{"messages": [{{"role": "user", "content": "{BAD}"}}]}}', 400, "invalid text", "messages"),
    Case("tokenize-surrogate-model", "/tokenize", f'{{"model": "{BAD}", "prompt": "hi"}}', 404,
         "no such model", "model"),
    Case("detokenize-surrogate-token", "/detokenize", f'{{"tokens": ["{BAD}"]}}', 400, "not an int",
         "tokens"),
    Case("detokenize-surrogate-model", "/detokenize", f'{{"model": "{BAD}", "tokens": [1]}}', 404,
         "no such model", "model"),
    Case("detokenize-huge-token", "/detokenize", f'{{"tokens": [{2**64}]}}', 400, "outside the vocabulary",
         "tokens"),
    Case("detokenize-token-nan", "/detokenize", '{"tokens": [NaN]}', 400, "not an int", "tokens"),
    # Wrong types.
    Case("cmpl-prompt-object", COMPLETIONS, '{"prompt": {"a": 1}}', 400, "not a prompt type", "prompt"),
    Case("cmpl-prompt-empty-ids", COMPLETIONS, '{"prompt": [[]]}', 400, "no tokens", "prompt"),
    Case("cmpl-prompt-negative-id", COMPLETIONS, '{"prompt": [-1]}', 400, "outside the vocabulary", "prompt"),
    Case("cmpl-prompt-huge-id", COMPLETIONS, f'{{"prompt": [{10**24}]}}', 400, "outside the vocabulary",
         "prompt"),
    Case("chat-messages-string", CHAT, '{"messages": "hi"}', 400, "not a list", "messages"),
    Case("chat-messages-empty", CHAT, '{"messages": []}', 400, "nothing to answer", "messages"),
    *both("max_tokens-string", '"max_tokens": "many"', 400, "not an int", "max_tokens"),
    *both("stop-number", '"stop": 5', 400, "not a string or list of strings", "stop"),
    *both("logit_bias-key-word", '"logit_bias": {"abc": 1}', 400, "not a token id", "logit_bias"),
    *both("logit_bias-value-nan", '"logit_bias": {"5": NaN}', 400, "not finite", "logit_bias"),
    *both("logit_bias-value-1e999", '"logit_bias": {"5": 1e999}', 400, "not finite", "logit_bias"),
    *both("logit_bias-huge-id", f'"logit_bias": {{"{10**24}": 1}}', 400, "outside the vocabulary",
          "logit_bias"),
    *both("stream-string", '"stream": "maybe"', 400, "not a boolean", "stream"),
    *both("stop_token_ids-huge", f'"stop_token_ids": [{10**24}]', 400, "outside the vocabulary",
          "stop_token_ids"),
    *both("allowed_token_ids-empty", '"allowed_token_ids": []', 400, "empty", "allowed_token_ids"),
    Case("cmpl-body-array", COMPLETIONS, "[1, 2, 3]", 400, "the body must be an object"),
    Case("cmpl-body-null", COMPLETIONS, "null", 400, "the body must be an object"),
    Case("cmpl-body-truncated", COMPLETIONS, '{"prompt": "hi", "max_tokens": ', 400, "invalid JSON"),
    Case("chat-body-nested-deep", CHAT, '{"messages": ' + "[" * 10000 + "]" * 10000 + "}", 400,
         "deep nesting: a 400, not a RecursionError 500"),
    # Conflicting knobs.
    *both("apd-without-draft", '"decoding": "apd"', 400, "apd needs a server --draft-model", "decoding"),
    *both("kv-dual+reference", '"kv_cache": "dual", "decoding": "reference"', 200,
          "kv_cache applies to threshold decoding only; other policies ignore it (api-reference.md)"),
    case("continue_final+add_generation_prompt", CHAT,
         '"continue_final_message": true, "add_generation_prompt": true', 400, "vLLM refuses both",
         "continue_final_message"),
    *both("stream_options-without-stream", '"stream_options": {"include_usage": true}', 400,
          "vLLM: stream options need stream=true", "stream_options"),
    *both("use_beam_search", '"use_beam_search": true', 400, "no beams in diffusion decoding",
          "use_beam_search"),
    case("best_of-huge", COMPLETIONS, f'"best_of": {10**21}', 400, "best_of must equal n", "best_of"),
    *both("length_penalty-nan", '"length_penalty": NaN', 400, "beam search only", "length_penalty"),
    *both("priority-inf", '"priority": Infinity', 400, "not an int", "priority"),
    # A bad value with stream=true is a plain JSON 4xx, before any event is sent.
    *both("stream-temperature-nan", '"stream": true, "temperature": NaN', 400, "before the stream starts",
          "temperature"),
    *both("stream-n-1000", '"stream": true, "n": 1000', 400, "before the stream starts", "n"),
    *both("stream-surrogate-stop", f'"stream": true, "stop": "{BAD}"', 400, "before the stream starts",
          "stop"),
    *both("stream-surrogate-request_id", f'"stream": true, "request_id": "{BAD}"', 400,
          "before the stream starts (not an SSE 500 event)", "request_id"),
]  # fmt: skip


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    log = Path(tmp_path_factory.mktemp("nasty-server")) / "server.log"
    process = ServerProcess(MODEL, log)
    try:
        process.wait_until_healthy()
        yield process
    finally:
        process.stop()


@pytest.fixture(scope="module")
def probe(server: ServerProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[HealthProbe]:
    health = HealthProbe(server.url, Path(tmp_path_factory.mktemp("nasty-probe")) / "health.log")
    health.start()
    yield health
    health.stop()


@pytest.fixture(scope="module")
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=REQUEST_TIMEOUT_S) as shared:
        yield shared


def normal_request(server: ServerProcess, path: str = CHAT) -> None:
    response = post_raw(server.url, path, "{" + BASE[path] + "}")
    assert response.status_code == 200, response.text
    assert all(answer_text(path, response.json())), response.text


def check_answer(server: ServerProcess, item: Case, response: httpx.Response) -> None:
    context = f"{item.id}: {response.status_code} {response.text[:600]}"
    assert response.status_code < 500, context + "\n--- server log ---\n" + server.log_errors()
    assert response.status_code == item.status, context
    if item.status == 200:
        assert response.headers["content-type"].startswith("application/json"), context
        payload = response.json()
        texts = answer_text(item.path, payload) if item.path in BASE else []
        if item.path in BASE:
            assert texts, context
            if item.text:
                assert all(texts), context
        return
    error = error_of(response)
    if item.param is not None:
        assert param_matches(error["param"], item.param), context


def send_and_check(server: ServerProcess, client: httpx.Client, item: Case) -> None:
    response = post_raw(server.url, item.path, item.body, client=client)
    check_answer(server, item, response)
    if item.then_serves:
        normal_request(server, item.path)


@pytest.mark.parametrize("group", list(NUMERIC))
def test_extreme_numbers_are_answered_below_500(
    server: ServerProcess, probe: HealthProbe, client: httpx.Client, group: str
) -> None:
    mark = probe.mark()
    problems = []
    for item in NUMERIC[group]:
        try:
            send_and_check(server, client, item)
        except AssertionError as error:
            problems.append(str(error).split("\n--- server log")[0].splitlines()[0])
    assert not problems, "\n".join(problems) + "\n--- server log ---\n" + server.log_errors()
    probe.assert_healthy_since(mark)


@pytest.mark.parametrize("item", HANDWRITTEN, ids=[item.id for item in HANDWRITTEN])
def test_hostile_request_is_answered_below_500(
    server: ServerProcess, probe: HealthProbe, client: httpx.Client, item: Case
) -> None:
    mark = probe.mark()
    send_and_check(server, client, item)
    probe.assert_healthy_since(mark)


HUGE_ID_LIST = json.dumps({"prompt": [5] * 100_000, "max_tokens": 4})
MANY_PROMPTS = json.dumps({"prompt": ["a"] * 100_000, "max_tokens": 4})
TWENTY_MB = json.dumps({"prompt": "a" * (20 * 2**20)})
TWO_MB_TEXT = "the cat sat. " * (160 * 1024)
"""About 2 MiB: under the 8 MiB body cap, far over the 256-token context."""


@pytest.mark.parametrize(
    ("path", "body", "status", "param", "seconds"),
    [
        pytest.param(COMPLETIONS, HUGE_ID_LIST, 400, "prompt", 5, id="100k-token-id-prompt"),
        pytest.param(COMPLETIONS, MANY_PROMPTS, 400, "prompt", 5, id="100k-prompts"),
        pytest.param(COMPLETIONS, TWENTY_MB, 413, None, 5, id="20MB-body"),
        pytest.param(CHAT, TWENTY_MB.replace('"prompt"', '"messages"'), 413, None, 5, id="20MB-chat-body"),
        pytest.param(COMPLETIONS, json.dumps({"prompt": TWO_MB_TEXT}), 400, "prompt", 5,
                     id="2MB-text-prompt"),
        pytest.param(CHAT, json.dumps({"messages": [{"role": "user", "content": TWO_MB_TEXT}]}), 400,
                     "messages", 5, id="2MB-chat-message"),
    ],
)  # fmt: skip
def test_huge_request_is_refused_quickly(
    server: ServerProcess,
    probe: HealthProbe,
    path: str,
    body: str,
    status: int,
    param: str | None,
    seconds: float,
) -> None:
    mark = probe.mark()
    started = time.monotonic()
    try:
        response = post_raw(server.url, path, body, timeout=2 * seconds)
    except httpx.TimeoutException:
        pytest.fail(f"not answered within {2 * seconds} s (the limit is {seconds} s)")
    elapsed = time.monotonic() - started
    assert response.status_code == status, response.text[:600]
    if status != 200:
        error = error_of(response)
        if param is not None:
            assert param_matches(error["param"], param), error
        if status == 400:
            assert "context length" in error["message"] or "at most" in error["message"], error
    assert elapsed < seconds, f"took {elapsed:.1f} s"
    probe.assert_healthy_since(mark)


def test_stream_abandoned_after_the_first_chunk_leaves_the_server_serving(
    server: ServerProcess, probe: HealthProbe
) -> None:
    mark = probe.mark()
    body = {
        "prompt": "Copy 90817.",
        "max_tokens": 200,
        "ignore_eos": True,
        "min_tokens": 200,
        "decoding": "reference",
        "block_length": 8,
        "stream": True,
        "n": 4,
    }
    with (
        httpx.Client(timeout=REQUEST_TIMEOUT_S) as client,
        client.stream("POST", server.url + COMPLETIONS, json=body) as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        first = next(line for line in response.iter_lines() if line.startswith("data: "))
        assert "choices" in json.loads(first.removeprefix("data: "))
    # leaving the block closed the connection mid-stream
    started = time.monotonic()
    for path in (COMPLETIONS, CHAT):
        normal_request(server, path)
    assert time.monotonic() - started < 10, "the abandoned stream's work was not aborted"
    probe.assert_healthy_since(mark)


def test_server_still_serves_after_the_table(server: ServerProcess, probe: HealthProbe) -> None:
    normal_request(server, CHAT)
    normal_request(server, COMPLETIONS)
    assert server.alive(), server.log_tail()
    assert len(probe.latencies) >= 10, "the /health probe barely ran"
    assert not probe.failures, probe.failures[:10]


SCHEMA_PATHS = r"^/(v1/completions|v1/chat/completions|v1/models|tokenize|detokenize)$"


def test_schemathesis_finds_no_server_error(server: ServerProcess, probe: HealthProbe) -> None:
    schemathesis = pytest.importorskip("schemathesis")
    from datetime import timedelta

    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import strategies as st
    from schemathesis.checks import not_a_server_error
    from schemathesis.generation import GenerationMode

    mark = probe.mark()
    schema = schemathesis.openapi.from_url(server.url + "/openapi.json").include(path_regex=SCHEMA_PATHS)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {operation.path for operation in operations} >= {COMPLETIONS, CHAT, "/tokenize", "/detokenize"}
    started = time.monotonic()
    failures: list[str] = []
    statuses: Counter[str] = Counter()
    for operation in operations:
        strategy = st.one_of(
            operation.as_strategy(GenerationMode.POSITIVE), operation.as_strategy(GenerationMode.NEGATIVE)
        )

        @settings(
            max_examples=25,
            deadline=timedelta(seconds=REQUEST_TIMEOUT_S),
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
            database=None,
            derandomize=True,
        )
        @given(case=strategy)
        def fuzz(case: schemathesis.Case) -> None:
            response = case.call_and_validate(checks=[not_a_server_error], timeout=REQUEST_TIMEOUT_S)
            statuses[f"{case.operation.label} {response.status_code}"] += 1

        try:
            fuzz()
        except Exception as error:  # keep fuzzing the other operations; report all at the end
            failures.append(f"{operation.label}: {error}"[:3000])
    elapsed = time.monotonic() - started
    assert not failures, "\n\n".join(failures) + "\n--- server log ---\n" + server.log_errors(30)
    assert elapsed < 60, f"schemathesis took {elapsed:.0f} s"
    assert sum(statuses.values()) >= 10 * len(operations), statuses
    print("schemathesis answers:", dict(sorted(statuses.items())))
    assert server.alive()
    probe.assert_healthy_since(mark)


def test_request_chat_template_cannot_pin_a_cpu(server: ServerProcess, probe: HealthProbe) -> None:
    """Last on purpose: if this fails, the template keeps a server thread busy for the rest of the module.

    Jinja's sandbox bounds one range() to 100000 but not nested loops: 10**10 iterations."""
    mark = probe.mark()
    template = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}x"
    body = json.dumps({"messages": [{"role": "user", "content": "hi"}], "chat_template": template})
    started = time.monotonic()
    try:
        response = post_raw(server.url, CHAT, body, timeout=10)
    except httpx.TimeoutException:
        pytest.fail(
            "a request chat_template with nested loops ran for > 10 s (and keeps running server-side)"
        )
    assert time.monotonic() - started < 10
    assert 400 <= response.status_code < 500, response.text[:600]
    error_of(response)
    normal_request(server, CHAT)
    probe.assert_healthy_since(mark)
