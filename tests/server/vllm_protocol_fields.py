"""Inventory of vLLM's OpenAI request fields and SamplingParams validation rules.

Pure reference data (no runtime imports of vLLM).  Read from the vLLM 0.33.0
wheel (the newest release on PyPI at the time of writing); see ``VLLM_SOURCE``.
Every ``source`` path is relative to the ``vllm/`` package root of that wheel.
Rules quote vLLM's error text verbatim where one exists.  Unless noted, an error
is a ``VLLMValidationError`` (a ``VLLMClientError``) or a pydantic validation
error, both answered with HTTP 400 ``{"error": {"type": "Bad Request",
"code": 400, "param": ..., "message": ...}}`` by
``entrypoints/serve/exception_handling/handlers/validation.py``.
"""

from __future__ import annotations

from dataclasses import dataclass

VLLM_SOURCE = (
    "vLLM 0.33.0 (PyPI wheel vllm-0.33.0-cp38-abi3-manylinux_2_28_x86_64.whl, "
    "vllm/_version.py __commit_id__='g4ba787ec9'). Files read: "
    "vllm/entrypoints/openai/completion/protocol.py (CompletionRequest), "
    "vllm/entrypoints/openai/chat_completion/protocol.py (ChatCompletionRequest), "
    "vllm/entrypoints/generate/base/protocol.py (StreamOptions, StopParam, TopLogprobsParam, "
    "validate_cache_salt, validate_request_mm_kwargs, structured-output helpers), "
    "vllm/entrypoints/serve/engine/protocol.py (OpenAIBaseModel.__log_extra_fields__), "
    "vllm/entrypoints/serve/utils/api_utils.py (get_max_tokens, should_include_usage), "
    "vllm/entrypoints/openai/completion/serving.py, vllm/entrypoints/openai/chat_completion/serving.py, "
    "vllm/renderers/online_renderer.py (suffix, tool_choice checks), vllm/renderers/params.py "
    "(TokenizeParams), vllm/renderers/base.py (_process_embeds), vllm/sampling_params.py "
    "(_MAX_TEMP, from_optional, __post_init__, _verify_args, verify, _validate_*), "
    "vllm/v1/engine/input_processor.py (_validate_params, _validate_prompt_len), "
    "vllm/utils/diffusion.py, vllm/envs.py, vllm/config/model.py (max_logprobs). "
    "Cross-checked against the GitHub snapshot vllm-project/vllm@d5dba2d7b0ab9b98096560c69db7126b54b14d79 "
    "(completion/chat protocol.py) and @d7e52523a55cfd60207c99d9f3b7ed527d2115b7 "
    "(entrypoints/openai/engine/protocol.py), an older layout: there StreamOptions.include_usage "
    "defaulted to True, logits_processors and max/min_repetition_pattern_size/repetition_min_count "
    "were request fields, and unknown fields were logged at WARNING."
)


@dataclass(frozen=True)
class VllmField:
    name: str
    type: str
    default: str
    rule: str
    source: str


_CP = "entrypoints/openai/completion/protocol.py"
_CHP = "entrypoints/openai/chat_completion/protocol.py"
_BP = "entrypoints/generate/base/protocol.py"
_SP = "sampling_params.py"
_API = "entrypoints/serve/utils/api_utils.py"
_REN = "renderers/online_renderer.py"
_TOK = "renderers/params.py:TokenizeParams.__post_init__"
_CSV = "entrypoints/openai/completion/serving.py"
_CHSV = "entrypoints/openai/chat_completion/serving.py"
_IP = "v1/engine/input_processor.py"

# Fields shared verbatim (same type, default and rule) by both request models.
_SHARED: dict[str, VllmField] = {
    f.name: f
    for f in (
        VllmField(
            "model",
            "str | None",
            "None",
            "served model name or LoRA name; checked by _check_model before rendering",
            "entrypoints/openai/*/serving.py:_check_model",
        ),
        VllmField(
            "frequency_penalty",
            "float | None",
            "None",
            "None -> server generation-config default -> 0.0; must be in [-2, 2]: "
            "'frequency_penalty must be in [-2, 2], got {v}.'",
            f"{_SP}:_verify_args; to_sampling_params",
        ),
        VllmField(
            "presence_penalty",
            "float | None",
            "None",
            "None -> server default -> 0.0; must be in [-2, 2]: "
            "'presence_penalty must be in [-2, 2], got {v}.'",
            f"{_SP}:_verify_args; to_sampling_params",
        ),
        VllmField(
            "logit_bias",
            "dict[str, float] | None",
            "None",
            "keys int()-converted (failure -> 400 'logit_bias contains key(s) that cannot be converted "
            "to integer token IDs: [...]'); values clamped to [-100, 100]; ids must be in [0, vocab_size)",
            f"{_SP}:from_optional, _validate_logit_bias",
        ),
        VllmField(
            "seed",
            "int | None",
            "None",
            "pydantic ge -2**63, le 2**63-1; seed == -1 is turned into None (unseeded)",
            f"{_CP} Field(ge=_INT64_MIN, le=_INT64_MAX); {_SP}:__post_init__",
        ),
        VllmField(
            "stop",
            "str | list[str] (max_length=VLLM_MAX_STOP_STRINGS=4) | None",
            "[]",
            "str -> [str]; list longer than 4 -> pydantic 400; no empty string: "
            "'stop cannot contain an empty string.'",
            f"{_BP}:StopParam; {_SP}:_verify_args",
        ),
        VllmField(
            "stream",
            "bool | None",
            "False",
            "True -> SSE 'data: {json}\\n\\n' chunks then 'data: [DONE]'; output_kind DELTA else FINAL_ONLY",
            f"{_CSV}, {_CHSV}",
        ),
        VllmField(
            "stream_options",
            "StreamOptions | None (include_usage: bool|None=False, continuous_usage_stats: bool|None=False)",
            "None",
            "truthy stream_options with stream falsy -> 400 "
            "'Stream options can only be defined when `stream=True`.' (see STREAM_OPTIONS_RULES)",
            f"{_CP}/{_CHP}:validate_stream_options; {_API}:should_include_usage",
        ),
        VllmField(
            "temperature",
            "float | None",
            "None",
            "None -> server default -> 1.0; finite, in [0, 2]; 0 < t < 1e-2 raised to 1e-2 with a warning; "
            "t < 1e-5 is greedy (top_p=1, top_k=0, min_p=0; n must be 1)",
            f"{_SP}:__post_init__, _verify_args",
        ),
        VllmField(
            "top_p",
            "float | None",
            "None",
            "None -> server default -> 1.0; must be in (0, 1]: 'top_p must be in (0, 1], got {v}.'",
            f"{_SP}:_verify_args",
        ),
        VllmField(
            "user",
            "str | None",
            "None",
            "accepted and ignored ('NOTE this will be ignored by vLLM')",
            f"{_CP}, {_CHP}",
        ),
        VllmField(
            "use_beam_search",
            "bool",
            "False",
            "n becomes beam_width (BeamSearchParams); completions: stream + beam -> 400 "
            "'Streaming is not currently supported with beam search'; not with logprob_token_ids",
            f"{_CSV}:_create_completion; to_beam_search_params",
        ),
        VllmField(
            "top_k",
            "int | None",
            "None",
            "None -> server default -> 0; 0 or -1 disables; < -1 -> "
            "'top_k must be 0 (disable), or at least 1, got {v}.'; non-int -> 'top_k must be an integer, got "
            "{t}'",
            f"{_SP}:_verify_args",
        ),
        VllmField(
            "min_p",
            "float | None",
            "None",
            "None -> server default -> 0.0; must be in [0, 1]: 'min_p must be in [0, 1], got {v}.'; "
            "> 1e-5 rejected with speculative decoding and for diffusion models",
            f"{_SP}:_verify_args, _validate_spec_decode, _validate_diffusion",
        ),
        VllmField(
            "repetition_penalty",
            "float | None",
            "None",
            "None -> server default -> 1.0; finite and > 0 (no upper bound in 0.33; older vLLM: (0, 2]): "
            "'repetition_penalty must be greater than zero, got {v}.'",
            f"{_SP}:_verify_args",
        ),
        VllmField(
            "watermarking",
            "bool | None",
            "None",
            "apply the engine's configured watermark to this request; None means enabled",
            f"{_SP}:SamplingParams.watermarking; {_IP}:resolve_watermarking",
        ),
        VllmField(
            "length_penalty",
            "float",
            "1.0",
            "beam search only (BeamSearchParams.length_penalty); no range check",
            "to_beam_search_params",
        ),
        VllmField(
            "stop_token_ids",
            "list[int] | None",
            "[]",
            "merged (dedup) with server-default stop ids; ints only "
            "('stop_token_ids must contain only integers, got [...]'); each in [0, vocab_size) "
            "('token_id(s) [...] in stop_token_ids contain out-of-vocab token ids. Vocabulary size: N')",
            f"{_SP}:_verify_args, _validate_stop_token_ids",
        ),
        VllmField(
            "include_stop_str_in_output",
            "bool",
            "False",
            "if False, max(len(stop))-1 chars are held back while streaming",
            f"{_SP}:__post_init__",
        ),
        VllmField("ignore_eos", "bool", "False", "keep generating past EOS", _SP),
        VllmField(
            "min_tokens",
            "int",
            "0",
            "'min_tokens must be greater than or equal to 0, got {v}.'; "
            "'min_tokens must be less than or equal to max_tokens={m}, got {v}.'; rejected (> 0) for "
            "diffusion",
            f"{_SP}:_verify_args, _validate_diffusion",
        ),
        VllmField(
            "skip_special_tokens",
            "bool | None",
            "None",
            "None -> server default_sampling_params['skip_special_tokens'] -> True",
            "to_sampling_params",
        ),
        VllmField("spaces_between_special_tokens", "bool", "True", "detokenizer option", _SP),
        VllmField(
            "truncate_prompt_tokens",
            "Annotated[int, Field(ge=-1, le=2**63-1)] | None",
            "None",
            "keep N prompt tokens; -1 -> max_model_len; > max_model_len -> "
            "'truncate_prompt_tokens={n} cannot be greater than max_model_len = {m}. Please request a "
            "smaller truncation size.'; completions: not with suffix",
            f"{_TOK}; {_API}:get_max_tokens",
        ),
        VllmField(
            "truncation_side",
            "Literal['left', 'right'] | None",
            "None",
            "'right' keeps first N, 'left' keeps last N, None = tokenizer default",
            _TOK,
        ),
        VllmField(
            "allowed_token_ids",
            "list[int] | None",
            "None",
            "[] -> 'allowed_token_ids is not None and empty!'; out of [0, vocab_size) -> "
            "'allowed_token_ids contains out-of-vocab token id!'; rejected for diffusion",
            f"{_SP}:_validate_allowed_token_ids",
        ),
        VllmField(
            "prompt_logprobs",
            "int | None",
            "None",
            "non-number -> '`prompt_logprobs` must be an integer.'; < 0 and != -1 -> "
            "'`prompt_logprobs` must be a positive value or -1.'; with stream and (> 0 or -1) -> "
            "'`prompt_logprobs` are not available when `stream=True`.'; > max_logprobs (20) -> 400",
            "check_logprobs; " + f"{_SP}:_validate_logprobs",
        ),
        VllmField(
            "logprob_token_ids",
            "list[int] | None",
            "None",
            "requires logprobs; not with beam search; len <= 128 (MAX_LOGPROB_TOKEN_IDS); ids in vocab; "
            "if logprobs also set it must equal len(logprob_token_ids)",
            "check_logprobs; " + f"{_SP}:_validate_logprobs",
        ),
        VllmField(
            "bad_words",
            "list[str]",
            "[] (default_factory=list)",
            "no empty string ('bad_words cannot contain an empty string. Got bad_words=[...]'); dedup; each "
            "must tokenize to >= 1 token; <= VLLM_MAX_NUM_BAD_WORDS (128) token sequences; rejected for "
            "diffusion",
            f"{_SP}:_verify_args, update_from_tokenizer",
        ),
        VllmField(
            "structured_outputs",
            "StructuredOutputsParams | None (json, regex, choice, grammar, json_object, structural_tag, "
            "disable_any_whitespace, disable_additional_properties, whitespace_pattern, ...)",
            "None",
            "protocol: at most one of json/regex/choice ('You can only use one kind of constraints for "
            "structured outputs ('json', 'regex' or 'choice').'); dataclass: exactly one constraint; "
            "JSON nesting <= 64; diffusion models -> 400 'Structured outputs are not yet supported for "
            "diffusion language models. ...'",
            f"check_structured_outputs_count; {_SP}:StructuredOutputsParams.__post_init__, "
            "_validate_structured_outputs",
        ),
        VllmField(
            "priority",
            "int (ge -2**63, le 2**63-1)",
            "0",
            "lower = earlier; header X-Vllm-Priority (int) overrides; description says non-zero errors "
            "without priority scheduling (no such check found in 0.33 code)",
            "entrypoints/generate/base/serving.py:_get_priority",
        ),
        VllmField(
            "request_id",
            "str",
            "random_uuid() (default_factory)",
            "header X-Request-Id overrides; response id is 'cmpl-{id}' / chat 'chatcmpl-...'",
            "entrypoints/serve/engine/serving.py:_base_request_id",
        ),
        VllmField(
            "session_id",
            "str | None",
            "None",
            "stable id shared by related requests (routing/affinity); no validation",
            f"{_CP}, {_CHP}",
        ),
        VllmField(
            "return_tokens_as_token_ids",
            "bool | None",
            "None",
            "with logprobs, tokens rendered as 'token_id:{id}'; None -> server --return-tokens-as-token-ids",
            f"{_CP}, {_CHP}",
        ),
        VllmField(
            "return_token_ids",
            "bool | None",
            "None",
            "adds token_ids (and prompt_token_ids, first chunk only when streaming) to choices",
            f"{_CSV}, {_CHSV}",
        ),
        VllmField(
            "return_weight_versions",
            "bool",
            "False",
            "adds weight_versions spans per choice (last chunk when streaming; not for beam search)",
            f"{_CP}, {_CHP}",
        ),
        VllmField(
            "routed_experts_prompt_start",
            "int (ge 0)",
            "0",
            "skip the first N prompt tokens of returned routed-expert data",
            f"{_SP}:routed_experts_prompt_start",
        ),
        VllmField(
            "return_token_offsets",
            "bool | None",
            "False",
            "char offsets per token; only honoured by the /render endpoints, ignored on generation",
            f"{_CP}, {_CHP}",
        ),
        VllmField(
            "mm_payload",
            "Literal['tensors', 'none']",
            "'tensors'",
            "render endpoints only; ignored on generation endpoints",
            f"{_BP}:MMPayload",
        ),
        VllmField(
            "return_mm_kwargs",
            "bool | None (deprecated)",
            "None",
            "False maps to mm_payload='none' when mm_payload not given",
            f"{_BP}:resolve_return_mm_kwargs_alias",
        ),
        VllmField(
            "cache_salt",
            "str | None (min_length=1, max_length=1024)",
            "None",
            "non-str/empty -> \"Parameter 'cache_salt' must be a non-empty string if provided.\"; > 128 "
            "chars "
            "or containing '@', '/', '\\\\', NUL -> \"Parameter 'cache_salt' must be at most 128 characters "
            "and must not contain '@', '/', '\\\\', or NUL.\"",
            f"{_BP}:validate_cache_salt",
        ),
        VllmField(
            "kv_transfer_params",
            "dict[str, Any] | None",
            "None",
            "passed as SamplingParams.extra_args['kv_transfer_params'] (disaggregated prefill)",
            "to_sampling_params",
        ),
        VllmField(
            "ec_transfer_params",
            "dict[str, Any] | None",
            "None",
            "passed as SamplingParams.extra_args['ec_transfer_params'] (encoder-cache disaggregation)",
            "to_sampling_params",
        ),
        VllmField(
            "vllm_xargs",
            "dict[str, str | int | float | list[str | int | float]] | None",
            "None",
            "becomes SamplingParams.extra_args; ints must be in [-2**63, 2**64-1] ('extra_args integers must "
            "be between -2**63 and 2**64 - 1.'); diffusion keys diffusion_* validated (SAMPLING_RULES)",
            f"{_SP}:_verify_extra_args; utils/diffusion.py",
        ),
        VllmField(
            "repetition_detection",
            "RepetitionDetectionParams | None (max_pattern_size=0, min_pattern_size=0, min_count=0)",
            "None",
            "sizes >= 0 and min <= max ('max_pattern_size, min_pattern_size must be >=0, with "
            "min_pattern_size <= max_pattern_size. ...'); max > 0 needs min_count >= 2",
            f"{_SP}:RepetitionDetectionParams.__post_init__",
        ),
        VllmField(
            "thinking_token_budget",
            "ThinkingTokenBudget (int | None)",
            "None",
            "int >= 0 or -1 (= unlimited -> None), bool/float rejected ('`thinking_token_budget` must be a "
            "non-negative integer or -1 for unlimited.'); needs --reasoning-parser/--reasoning-config",
            f"{_SP}:validate_thinking_token_budget; {_IP}:_validate_params",
        ),
        VllmField(
            "stream_interval",
            "Annotated[int, Field(ge=1)] | None",
            "None",
            "tokens batched per streamed chunk, clamped up to server --stream-interval; ignored if not "
            "stream",
            f"{_SP}:_verify_args",
        ),
        VllmField(
            "response_format",
            "ResponseFormat(type text|json_object|json_schema) | StructuralTagResponseFormat | "
            "LegacyStructuralTagResponseFormat | None",
            "None",
            "json_schema without json_schema -> \"When response_format type is 'json_schema', the "
            "'json_schema' field must be provided.\"; bad structural tag -> 'Invalid response_format "
            "structural_tag specification.'; mapped onto structured_outputs",
            f"validate_response_format; {_BP}:structured_outputs_from_response_format",
        ),
    )
}


def _s(name: str) -> VllmField:
    return _SHARED[name]


COMPLETION_FIELDS: tuple[VllmField, ...] = (
    _s("model"),
    VllmField(
        "prompt",
        "list[int ge 0] | list[list[int ge 0]] | str | list[str] | None",
        "None",
        "prompt or prompt_embeds required ('Either prompt or prompt_embeds must be provided and "
        "non-empty.'); "
        "a list of prompts longer than VLLM_MAX_COMPLETION_PROMPTS (1024) -> 400; empty decoder prompt -> "
        "'The decoder prompt cannot be empty'; prompt_len >= max_model_len -> 400",
        f"{_CP}:validate_prompt_and_prompt_embeds, validate_prompt_list_length; {_IP}:_validate_prompt_len",
    ),
    VllmField(
        "echo",
        "bool | None",
        "False",
        "prepend prompt to output; prompt_logprobs defaults to logprobs; echo and max_tokens == 0 -> "
        "prompt only (engine runs max_tokens=1); with suffix -> 'Echo is unsupported with suffix.'; "
        "beam search + echo + logprobs -> 400",
        f"{_CP}:to_sampling_params, check_logprobs; {_REN}:render_completion",
    ),
    _s("frequency_penalty"),
    _s("logit_bias"),
    VllmField(
        "logprobs",
        "int | None",
        "None",
        "non-number -> '`logprobs` must be an integer.'; < 0 and != -1 -> "
        "'`logprobs` must be a positive value or -1.'; -1 = full vocab; > max_logprobs (default 20) -> "
        "'Requested sample logprobs of {n}, which is greater than max allowed: {m}'",
        f"{_CP}:check_logprobs; {_SP}:_validate_logprobs",
    ),
    VllmField(
        "max_tokens",
        "int | None",
        "16",
        "null -> 16 (normalize_null_max_tokens); > max_model_len -> 'max_tokens={n} cannot be greater than "
        "max_model_len={m}. Please request fewer output tokens.'; clamped to max_model_len - prompt_len; "
        "0 without echo -> 'max_tokens must be at least 1, got 0.'",
        f"{_CP}:normalize_null_max_tokens; {_TOK}; {_API}:get_max_tokens; {_SP}:_verify_args",
    ),
    VllmField(
        "n",
        "int",
        "1",
        "1 <= n <= VLLM_MAX_N_SEQUENCES (16384): 'n must be at least 1, got {n}.' / 'n must be at most "
        "{max}, got {n}. ...'; greedy (temperature 0) -> 'n must be 1 when using greedy sampling, got {n}.'",
        f"{_SP}:_verify_num_sequences, _verify_greedy_sampling",
    ),
    _s("presence_penalty"),
    _s("seed"),
    _s("stop"),
    _s("stream"),
    _s("stream_options"),
    VllmField(
        "suffix",
        "str | None",
        "None",
        "FIM models only ('suffix is only supported for models with FIM completion rendering'); not with "
        "echo, prompt_embeds ('suffix is not supported with prompt_embeds') or truncate_prompt_tokens",
        f"{_REN}:render_completion",
    ),
    _s("temperature"),
    _s("top_p"),
    _s("user"),
    _s("use_beam_search"),
    _s("top_k"),
    _s("min_p"),
    _s("repetition_penalty"),
    _s("watermarking"),
    _s("length_penalty"),
    _s("stop_token_ids"),
    _s("include_stop_str_in_output"),
    _s("ignore_eos"),
    _s("min_tokens"),
    _s("skip_special_tokens"),
    _s("spaces_between_special_tokens"),
    _s("truncate_prompt_tokens"),
    _s("truncation_side"),
    _s("allowed_token_ids"),
    _s("prompt_logprobs"),
    VllmField(
        "logprob_token_ids",
        "list[int] | None",
        "None",
        "'when using `logprob_token_ids`, `logprobs` must be set.'; beam -> '`logprob_token_ids` is not "
        "supported with beam search.'; echo + max_tokens 0 -> 400; len <= 128; logprobs must equal len",
        f"{_CP}:check_logprobs; {_SP}:_validate_logprobs",
    ),
    _s("bad_words"),
    VllmField(
        "prompt_embeds",
        "bytes | list[bytes] | None",
        "None",
        "base64 torch tensor(s); needs server --enable-prompt-embeds ('You must set `--enable-prompt-embeds` "
        "to input `prompt_embeds`.'); list <= VLLM_MAX_COMPLETION_PROMPTS",
        f"renderers/base.py:_process_embeds; {_CP}:validate_prompt_list_length",
    ),
    VllmField(
        "add_special_tokens",
        "bool",
        "True",
        "add BOS etc. when tokenizing the prompt",
        f"{_CP}:build_tok_params",
    ),
    _s("response_format"),
    _s("structured_outputs"),
    _s("priority"),
    _s("request_id"),
    _s("session_id"),
    _s("return_tokens_as_token_ids"),
    _s("return_token_ids"),
    _s("return_weight_versions"),
    _s("routed_experts_prompt_start"),
    _s("return_token_offsets"),
    _s("mm_payload"),
    _s("return_mm_kwargs"),
    _s("cache_salt"),
    _s("kv_transfer_params"),
    _s("ec_transfer_params"),
    _s("vllm_xargs"),
    _s("repetition_detection"),
    _s("thinking_token_budget"),
    _s("stream_interval"),
)

CHAT_FIELDS: tuple[VllmField, ...] = (
    VllmField(
        "messages",
        "list[ChatCompletionMessageParam]",
        "required",
        "deprecated message key reasoning_content renamed to reasoning; non-text system content only "
        "warned ('System messages should only contain text content ...'); rendered with the chat template",
        f"{_CHP}:_normalize_messages_before, check_system_message_content_type",
    ),
    _s("model"),
    _s("frequency_penalty"),
    _s("logit_bias"),
    VllmField(
        "logprobs",
        "bool | None",
        "False",
        "True -> SamplingParams.logprobs = top_logprobs (unless logprob_token_ids is set)",
        f"{_CHP}:to_sampling_params",
    ),
    VllmField(
        "top_logprobs",
        "TopLogprobsParam (int; null -> 0)",
        "0",
        "non-number -> '`top_logprobs` must be an integer.'; < 0 and != -1 -> '`top_logprobs` must be a "
        "positive value or -1.'; > 0 or -1 without logprobs -> 'when using `top_logprobs`, `logprobs` must "
        "be set to true.'; > max_logprobs (20) -> 400",
        f"{_CHP}:check_logprobs; {_SP}:_validate_logprobs",
    ),
    VllmField(
        "max_tokens",
        "int | None (deprecated)",
        "None",
        "used only when max_completion_tokens is None; None -> max_model_len - prompt_len (or server "
        "default)",
        f"{_CHSV}; {_API}:get_max_tokens",
    ),
    VllmField(
        "max_completion_tokens",
        "int | None",
        "None",
        "takes precedence over max_tokens; > max_model_len -> 'max_completion_tokens={n} cannot be greater "
        "than max_model_len={m}. Please request fewer output tokens.'; 0 -> 'max_tokens must be at least 1'",
        f"{_CHP}:build_tok_params; {_TOK}; {_SP}:_verify_args",
    ),
    VllmField(
        "n",
        "int | None",
        "1",
        "None -> 1; same range as completions (1..16384, 1 when greedy)",
        f"{_SP}:_verify_num_sequences, _verify_greedy_sampling",
    ),
    _s("presence_penalty"),
    _s("response_format"),
    _s("seed"),
    _s("stop"),
    _s("stream"),
    _s("stream_options"),
    _s("temperature"),
    _s("top_p"),
    VllmField(
        "tools",
        "list[ChatCompletionToolsParam] | None",
        "None",
        "[] -> '`tools` must not be an empty array. Either provide at least one tool or omit the field "
        "entirely.'; tools without tool_choice -> tool_choice 'auto'",
        f"{_CHP}:check_tool_usage",
    ),
    VllmField(
        "tool_choice",
        "'none' | 'auto' | 'required' | ChatCompletionNamedToolChoiceParam | None",
        "'none'",
        "needs tools ('When using `tool_choice`, `tools` must be set.'); named tool must exist; 'auto' needs "
        "--enable-auto-tool-choice and --tool-call-parser; 'required'/named need --tool-call-parser",
        f"{_CHP}:check_tool_usage; {_REN}",
    ),
    VllmField(
        "reasoning_effort",
        "Literal['none', 'minimal', 'low', 'medium', 'high', 'xhigh', 'max'] | None",
        "None",
        "passed to the chat template; also sets enable_thinking (!= 'none') unless given in "
        "chat_template_kwargs",
        f"{_CHP}:build_chat_params; renderers/params.py:ReasoningEffort",
    ),
    _s("thinking_token_budget"),
    VllmField(
        "include_reasoning",
        "bool",
        "True",
        "False drops reasoning from the response; structured output constrains from the first token",
        f"{_CHP}:resolve_reasoning_ended",
    ),
    VllmField(
        "parallel_tool_calls",
        "bool | None",
        "True",
        "no validation (tool parser behaviour)",
        _CHP,
    ),
    _s("user"),
    VllmField(
        "use_beam_search",
        "bool",
        "False",
        "n becomes beam_width; not with logprob_token_ids ('`logprob_token_ids` is not supported with "
        "beam search.')",
        f"{_CHP}:to_beam_search_params, check_logprobs",
    ),
    _s("top_k"),
    _s("min_p"),
    _s("repetition_penalty"),
    _s("watermarking"),
    _s("length_penalty"),
    _s("stop_token_ids"),
    _s("include_stop_str_in_output"),
    _s("ignore_eos"),
    _s("min_tokens"),
    _s("skip_special_tokens"),
    _s("spaces_between_special_tokens"),
    _s("truncate_prompt_tokens"),
    _s("truncation_side"),
    _s("prompt_logprobs"),
    VllmField(
        "logprob_token_ids",
        "list[int] | None",
        "None",
        "'when using `logprob_token_ids`, `logprobs` must be set to true.'; not with beam search; "
        "len <= 128; ids in vocab",
        f"{_CHP}:check_logprobs; {_SP}:_validate_logprobs",
    ),
    _s("allowed_token_ids"),
    _s("bad_words"),
    VllmField(
        "echo",
        "bool",
        "False",
        "prepend the last message to the output if it has the same role (assistant prefill); "
        "prompt_logprobs defaults to top_logprobs",
        f"{_CHSV}; {_CHP}:to_sampling_params",
    ),
    VllmField(
        "add_generation_prompt",
        "bool",
        "True",
        "template flag; explicit true together with continue_final_message true -> 400 'Cannot set both "
        "`continue_final_message` and `add_generation_prompt` to True.' (checked on raw data, so only when "
        "sent)",
        f"{_CHP}:check_generation_prompt",
    ),
    VllmField(
        "continue_final_message",
        "bool",
        "False",
        "final message left open (prefill); 400 with add_generation_prompt=true (see above)",
        f"{_CHP}:check_generation_prompt",
    ),
    VllmField(
        "add_special_tokens",
        "bool",
        "False",
        "add BOS etc. on top of the chat template (default False)",
        f"{_CHP}:build_tok_params",
    ),
    VllmField(
        "documents",
        "list[dict[str, str]] | None",
        "None",
        "RAG documents passed to the chat template",
        f"{_CHP}:build_chat_params",
    ),
    VllmField(
        "chat_template",
        "str | None",
        "None",
        "Jinja template overriding the server default",
        f"{_CHP}:build_chat_params",
    ),
    VllmField(
        "chat_template_kwargs",
        "dict[str, Any] | None",
        "None",
        "merged with add_generation_prompt/continue_final_message/documents/reasoning_effort",
        f"{_CHP}:build_chat_params",
    ),
    VllmField(
        "media_io_kwargs",
        "dict[str, dict[str, Any]] | None",
        "None",
        "rejected unless server --trust-request-mm-kwargs ('Per-request media_io_kwargs are disabled by "
        "default ...')",
        f"{_BP}:validate_request_mm_kwargs",
    ),
    VllmField(
        "mm_processor_kwargs",
        "dict[str, Any] | None",
        "None",
        "rejected unless server --trust-request-mm-kwargs ('Per-request mm_processor_kwargs are disabled by "
        "default ...')",
        f"{_BP}:validate_request_mm_kwargs",
    ),
    VllmField(
        "structured_outputs",
        _s("structured_outputs").type,
        "None",
        _s("structured_outputs").rule + "; with a named tool_choice -> 'You can only either use constraints "
        "for structured outputs or tools, not both.'",
        _s("structured_outputs").source,
    ),
    _s("priority"),
    _s("request_id"),
    _s("session_id"),
    _s("return_tokens_as_token_ids"),
    _s("return_token_ids"),
    _s("return_weight_versions"),
    _s("routed_experts_prompt_start"),
    _s("return_token_offsets"),
    VllmField(
        "return_prompt_text",
        "bool | None",
        "None",
        "adds prompt_text (the templated prompt); first chunk only when streaming",
        _CHP,
    ),
    _s("mm_payload"),
    _s("return_mm_kwargs"),
    _s("cache_salt"),
    _s("kv_transfer_params"),
    _s("ec_transfer_params"),
    _s("vllm_xargs"),
    _s("repetition_detection"),
    _s("stream_interval"),
)

# Fields seen in older vLLM releases / the brief that vLLM 0.33.0 no longer declares.  Sending them
# now just makes them "extra" fields (see UNKNOWN_FIELDS_RULE); nothing validates them.
REMOVED_FIELDS: tuple[VllmField, ...] = (
    VllmField(
        "best_of",
        "int | None",
        "None",
        "gone from CompletionRequest (only BatchChatCompletionRequest still declares it); ignored",
        _CP,
    ),
    VllmField(
        "guided_json, guided_regex, guided_choice, guided_grammar, guided_decoding_backend, "
        "guided_whitespace_pattern",
        "-",
        "-",
        "removed; logged once at WARNING ('Request contains the removed guided-decoding field(s) %s, which "
        "are ignored; output will NOT be constrained. Use `structured_outputs` (or `response_format`) "
        "instead; ...'), request still succeeds unconstrained",
        "entrypoints/serve/engine/protocol.py:_REMOVED_GUIDED_FIELDS",
    ),
    VllmField(
        "logits_processors",
        "list[str | LogitsProcessorConstructor] | None",
        "None",
        "present at vllm-project/vllm@d5dba2d7 (get_logits_processors: allowed only if --logits-processor-"
        "pattern matches, else ValueError 'The `logits_processors` argument is not supported by this "
        "server. ...'); absent from 0.33.0 request models",
        "entrypoints/openai/engine/protocol.py:get_logits_processors (older layout)",
    ),
    VllmField(
        "max_repetition_pattern_size, min_repetition_pattern_size, repetition_min_count",
        "int",
        "0",
        "flat fields at vllm-project/vllm@d5dba2d7; replaced by the repetition_detection object in 0.33.0",
        "entrypoints/openai/completion/protocol.py (older snapshot)",
    ),
)

UNKNOWN_FIELDS_RULE = (
    "OpenAIBaseModel has model_config extra='allow': unknown keys are accepted and ignored (HTTP 200). "
    "The wrap validator __log_extra_fields__ logs them at DEBUG: 'The following fields were present in the "
    "request but ignored: %s' (older vLLM, e.g. vllm-project/vllm@d7e52523, logged this at WARNING). Removed "
    "guided_* keys additionally trigger a one-time WARNING. Field aliases (e.g. 'schema') count as known."
)

SAMPLING_RULES: dict[str, str] = {
    "n": (
        "must be int ('n must be an int, but is of type {type}'); 'n must be at least 1, got {n}.'; "
        "'n must be at most {max_n}, got {n}. To increase this limit, set the VLLM_MAX_N_SEQUENCES "
        "environment variable.' (default 16384); greedy: 'n must be 1 when using greedy sampling, got {n}.'"
    ),
    "presence_penalty": "-2.0 <= v <= 2.0 else 'presence_penalty must be in [-2, 2], got {v}.'",
    "frequency_penalty": "-2.0 <= v <= 2.0 else 'frequency_penalty must be in [-2, 2], got {v}.'",
    "repetition_penalty": (
        "'repetition_penalty must be a finite number, got {v}.'; v <= 0 -> 'repetition_penalty must be "
        "greater than zero, got {v}.' (older vLLM: 'repetition_penalty must be in (0, 2], got {v}.')"
    ),
    "temperature": (
        "'temperature must be a finite number, got {v}.'; 'temperature must be non-negative, got {v}.'; "
        "v > 2.0 -> 'temperature must be in [0, 2], got {v}.'. __post_init__ first: if 0 < v < _MAX_TEMP "
        "(1e-2) it logs WARNING 'temperature %s is less than %s, which may cause numerical errors nan or inf "
        "in tensors. We have maxed it out to %s.' and sets v = 1e-2. v < _SAMPLING_EPS (1e-5) = greedy: "
        "top_p=1.0, top_k=0, min_p=0.0 forced and n must be 1"
    ),
    "top_p": "0.0 < v <= 1.0 else 'top_p must be in (0, 1], got {v}.'",
    "top_k": (
        "0 (preferred) or -1 disables; v < -1 -> 'top_k must be 0 (disable), or at least 1, got {v}.'; "
        "non-int -> 'top_k must be an integer, got {typename}'"
    ),
    "min_p": "0.0 <= v <= 1.0 else 'min_p must be in [0, 1], got {v}.'",
    "seed": (
        "API: pydantic ge -2**63, le 2**63-1; SamplingParams: -1 -> None; seeded -> SamplingType.RANDOM_SEED"
    ),
    "max_tokens": (
        "None allowed (no cap); else >= 1: 'max_tokens must be at least 1, got {v}.'. The server first "
        "computes "
        "min(max_model_len - prompt_len, request max_tokens or server default, override, platform cap); "
        "prompt_len > max_model_len -> ValueError 'Input length ({n}) exceeds model's maximum context length "
        "({m}).'; requested > max_model_len -> TokenizeParams 400"
    ),
    "min_tokens": (
        "'min_tokens must be greater than or equal to 0, got {v}.'; "
        "'min_tokens must be less than or equal to max_tokens={m}, got {v}.'"
    ),
    "logprobs": (
        "SamplingParams: None, -1 or >= 0 ('logprobs must be non-negative or -1, got {v}.'); True -> 1; "
        "verify: "
        "-1 means vocab_size; > max_logprobs (ModelConfig.max_logprobs default 20, -1 = vocab) -> 'Requested "
        "sample logprobs of {n}, which is greater than max allowed: {m}'"
    ),
    "prompt_logprobs": (
        "'prompt_logprobs must be non-negative or -1, got {v}.'; > max_logprobs -> 'Requested prompt "
        "logprobs "
        "of {n}, which is greater than max allowed: {m}'; setting it disables prefix-cache reads"
    ),
    "logprob_token_ids": (
        "len <= 128: 'Requested logprob_token_ids of length {n}, which is greater than max allowed: 128'; "
        "out of vocab -> 'token_id(s) [...] in logprob_token_ids contain out-of-vocab token ids. Vocabulary "
        "size: {V}'; with logprobs: 'When both logprobs and logprob_token_ids are set, logprobs must equal "
        "len(logprob_token_ids). ...'"
    ),
    "stop": (
        "None -> [], str -> [str]; 'stop cannot contain an empty string.'; needs detokenize ('stop strings "
        "are "
        "only supported when detokenize is True. Set detokenize=True to use stop.'); API caps the list at "
        "VLLM_MAX_STOP_STRINGS (4)"
    ),
    "stop_token_ids": (
        "deduplicated; 'stop_token_ids must contain only integers, got [...]'; each in [0, vocab_size): "
        "'token_id(s) [...] in stop_token_ids contain out-of-vocab token ids. Vocabulary size: {V}'"
    ),
    "bad_words": (
        "deduplicated; 'bad_words cannot contain an empty string. Got bad_words=[...]'; each must tokenize: "
        "'bad_words entries must tokenize to at least one token.'; 'Too many bad words after tokenization: "
        "{n}. "
        "The max number is {max}.' (VLLM_MAX_NUM_BAD_WORDS=128); ids must be <= tokenizer.max_token_id"
    ),
    "logit_bias": (
        "from_optional: keys int(); non-int keys -> 'logit_bias contains key(s) that cannot be converted to "
        "integer token IDs: [...]'; every bias clamped to [-100.0, 100.0] (no error); verify: 'token_id(s) "
        "[...] in logit_bias contain out-of-vocab token ids. Vocabulary size: {V}'; with speculative "
        "decoding "
        "-> 'The min_p and logit_bias sampling parameters are not yet supported with speculative decoding.'"
    ),
    "allowed_token_ids": (
        "[] -> 'allowed_token_ids is not None and empty!'; id < 0 or >= vocab_size -> "
        "'allowed_token_ids contains out-of-vocab token id!'"
    ),
    "truncate_prompt_tokens": (
        "not a SamplingParams field in 0.33 (it is TokenizeParams): API ge -1, le 2**63-1; -1 -> "
        "max_model_len; "
        "> max_model_len -> 'truncate_prompt_tokens={n} cannot be greater than max_model_len = {m}. Please "
        "request a smaller truncation size.'; truncation keeps at most max_model_len - 1 tokens for "
        "generation"
    ),
    "stream_interval": "None or >= 1: 'stream_interval must be at least 1, got {v}.'",
    "thinking_token_budget": (
        "None, -1 (-> None) or int >= 0; bool/float rejected: '`thinking_token_budget` must be a "
        "non-negative "
        "integer or -1 for unlimited.'; without reasoning config: 'thinking_token_budget is set but "
        "reasoning_config is not configured. ...'"
    ),
    "extra_args": "ints (also nested) within [-2**63, 2**64-1]: 'extra_args integers must be between -2**63 "
    "and 2**64 - 1.'",
    "structured_outputs": (
        "exactly one of json/regex/choice/grammar/json_object/structural_tag ('You can only use one kind of "
        "structured outputs constraint but multiple are specified: {...}' / 'You must use one kind of "
        "structured outputs constraint but none are specified: {...}'); JSON nesting <= 64 ('The JSON schema "
        "is nested too deeply: objects and arrays may nest at most 64 levels')"
    ),
    "diffusion": (
        "vLLM 0.33 has diffusion-model support. _validate_diffusion (model_config.is_diffusion): temperature "
        "!= 1.0, min_p > 1e-5, seed, min_tokens > 0, logit_bias, bad_words or allowed_token_ids -> 'The "
        "temperature, min_p, seed, min_tokens, logit_bias, bad_words, and allowed_token_ids sampling "
        "parameters are not yet supported with diffusion models.' (penalties are ignored with a warning); "
        "structured outputs -> 'Structured outputs are not yet supported for diffusion language models. "
        "...'. "
        "utils/diffusion.py validates extra_args (vllm_xargs) keys diffusion_canvas_length (positive int <= "
        "served canvas), diffusion_seed_canvas (token ids in [0, vocab), exactly canvas length), "
        "diffusion_pinned (positions in canvas, needs seed canvas), diffusion_max_steps (positive int), "
        "diffusion_read_only (bool or 0/1; caps max_tokens at the canvas and sets ignore_eos), "
        "diffusion_constrained (bool or 0/1; needs logprob_token_ids)"
    ),
}

STREAM_OPTIONS_RULES = (
    "StreamOptions(OpenAIBaseModel): include_usage: bool | None = False; continuous_usage_stats: bool | None "
    "= False (generate/base/protocol.py; older vLLM defaulted include_usage to True). Both CompletionRequest "
    "and ChatCompletionRequest run a mode='before' validator validate_stream_options: if "
    "data.get('stream_options') is truthy and data.get('stream') is falsy the request fails with HTTP 400, "
    "message 'Stream options can only be defined when `stream=True`.', param 'stream_options'. A null or "
    "empty {} stream_options is falsy, so it is accepted with stream false. While streaming, "
    "should_include_usage(stream_options, enable_force_include_usage) decides: with server flag "
    "--enable-force-include-usage -> (True, True); else include_usage = bool(include_usage) and "
    "include_continuous_usage = include_usage and bool(continuous_usage_stats); no stream_options -> "
    "(False, False). include_usage adds one last chunk before 'data: [DONE]' with choices [] and usage "
    "{prompt_tokens, completion_tokens, total_tokens} (plus prompt_tokens_details.cached_tokens when "
    "--enable-prompt-tokens-details), and system_fingerprint goes on that usage chunk instead of the "
    "finish chunk. continuous usage (only with include_usage) puts a usage object on every content "
    "chunk (prompt_tokens and the cumulative completion_tokens of that choice). Non-streaming responses "
    "always carry usage."
)
