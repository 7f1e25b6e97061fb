"""Wire types of POST /v1/chat/completions (OpenAI / vLLM field names)."""

from __future__ import annotations

import json
from typing import Any, ClassVar, Literal

from pydantic import Field, model_serializer

from vdiff.entrypoints.openai import field_rules, structured_fields
from vdiff.entrypoints.openai.chat_completion.tools import (
    ChatTool,
    ToolChoice,
    resolve_tool_choice,
    tool_constraint,
)
from vdiff.entrypoints.openai.common import (
    FinishReason,
    OpenAIBaseModel,
    PromptLogprob,
    SamplingRequest,
    UsageInfo,
    unix_time,
)
from vdiff.entrypoints.openai.structured_fields import MAX_JSON_NESTING, json_nesting_depth
from vdiff.errors import VdiffValidationError
from vdiff.structured.params import StructuredOutputsParams


class ChatContentPart(OpenAIBaseModel):
    type: str
    text: str | None = None


class ChatMessage(OpenAIBaseModel):
    role: str
    content: str | list[ChatContentPart] | None = None
    name: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    """An assistant message's calls (OpenAI format); the template gets the arguments as objects."""
    tool_call_id: str | None = None
    """A tool message's answer to that call."""

    def template_message(self) -> dict[str, Any]:
        """The message as the chat template reads it (vLLM's _postprocess_messages: arguments parsed)."""
        message: dict[str, Any] = {"role": self.role, "content": self.text()}
        if self.tool_call_id is not None:
            message["tool_call_id"] = self.tool_call_id
        if self.tool_calls is not None:
            calls = []
            for call in self.tool_calls:
                call = dict(call)
                function = dict(call.get("function") or {})
                arguments = function.get("arguments")
                if not arguments:
                    function["arguments"] = {}
                elif isinstance(arguments, str):
                    try:
                        function["arguments"] = json.loads(arguments)
                    except ValueError as error:
                        raise VdiffValidationError(
                            f"messages: tool call arguments are not valid JSON: {error}", "messages"
                        ) from None
                call["function"] = function
                calls.append(call)
            message["tool_calls"] = calls
        return message

    def text(self) -> str:
        """The message as plain text; only text parts are supported (the models are text-only)."""
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        texts = []
        for part in self.content:
            if part.type != "text" or part.text is None:
                raise VdiffValidationError(f"content part type {part.type!r} is not supported", "messages")
            texts.append(part.text)
        return "\n".join(texts)


class ChatCompletionRequest(SamplingRequest):
    messages: list[ChatMessage]
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    add_generation_prompt: bool = True
    continue_final_message: bool = False
    add_special_tokens: bool = False
    echo: bool = False
    chat_template: str | None = None
    chat_template_kwargs: dict[str, Any] | None = None
    documents: list[dict[str, Any]] | None = None
    tools: list[ChatTool] | None = None
    tool_choice: Any = None
    reasoning_effort: str | None = None
    return_prompt_text: bool | None = None
    include_reasoning: bool | None = True
    parallel_tool_calls: bool | None = True
    media_io_kwargs: dict[str, Any] | None = None
    mm_processor_kwargs: dict[str, Any] | None = None

    logprobs: bool | None = False
    top_logprobs: int | None = None

    refused_fields: ClassVar[tuple[field_rules.Refused, ...]] = field_rules.CHAT

    def requested_max_tokens(self) -> int | None:
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens

    def requested_logprobs(self) -> int | None:
        return (self.top_logprobs or 0) if self.logprobs else None

    def check_supported(self) -> None:
        super().check_supported()
        if self.top_logprobs is not None and self.top_logprobs < -1:
            raise VdiffValidationError("`top_logprobs` must be a positive value or -1.", "top_logprobs")
        if self.top_logprobs and not self.logprobs:
            raise VdiffValidationError(
                "when using `top_logprobs`, `logprobs` must be set to true.", "top_logprobs"
            )
        if self.logprobs and self.top_logprobs == -1:
            raise VdiffValidationError(
                "top_logprobs=-1 (the whole vocabulary) is over the server's --max-logprobs", "top_logprobs"
            )
        sent = self.model_fields_set
        if self.continue_final_message and "add_generation_prompt" in sent and self.add_generation_prompt:
            raise VdiffValidationError(
                "Cannot set both `continue_final_message` and `add_generation_prompt` to True.",
                "continue_final_message",
            )
        self.resolved_tool_choice(auto_enabled=False)
        if self.tools and json_nesting_depth([tool.model_dump() for tool in self.tools]) > MAX_JSON_NESTING:
            raise VdiffValidationError(
                f"tools nest objects and arrays deeper than {MAX_JSON_NESTING} levels", "tools"
            )
        if not self.messages:
            raise VdiffValidationError("messages must not be empty", "messages")

    def resolved_tool_choice(self, *, auto_enabled: bool) -> ToolChoice:
        return resolve_tool_choice(
            self.tools, self.tool_choice, "tool_choice" in self.model_fields_set, auto_enabled=auto_enabled
        )

    def find_constraint(self) -> StructuredOutputsParams | None:
        """A forced tool call is a constraint too: with another one it is a 400 (vLLM: "You can only either
        use constraints for structured outputs or tools, not both.")."""
        forced = tool_constraint(
            self.tools,
            self.resolved_tool_choice(auto_enabled=False),
            parallel=self.parallel_tool_calls is not False,
        )
        return structured_fields.one_constraint(super().find_constraint(), forced)

    @property
    def use_generation_prompt(self) -> bool:
        """continue_final_message leaves the last message open: no generation prompt unless sent."""
        if self.continue_final_message and "add_generation_prompt" not in self.model_fields_set:
            return False
        return self.add_generation_prompt

    @property
    def response_role(self) -> str:
        """vLLM's get_chat_request_role: "assistant" unless add_generation_prompt is false, where the
        reply continues the last message and takes its role."""
        return "assistant" if self.add_generation_prompt else self.messages[-1].role

    def conversation(self) -> list[dict[str, Any]]:
        return [message.template_message() for message in self.messages]


class ChatCompletionLogProb(OpenAIBaseModel):
    token: str
    logprob: float = -9999.0
    bytes: list[int] | None = None


class ChatCompletionLogProbsContent(ChatCompletionLogProb):
    top_logprobs: list[ChatCompletionLogProb] = Field(default_factory=list)


class ChatCompletionLogProbs(OpenAIBaseModel):
    content: list[ChatCompletionLogProbsContent] | None = None


class FunctionCall(OpenAIBaseModel):
    name: str
    arguments: str
    """The arguments as JSON text (OpenAI's format)."""


class ToolCall(OpenAIBaseModel):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class DeltaFunctionCall(OpenAIBaseModel):
    name: str | None = None
    arguments: str | None = None


class DeltaToolCall(OpenAIBaseModel):
    """Streamed with only the fields set: id, type and name on a call's first delta, then arguments."""

    index: int
    id: str | None = None
    type: Literal["function"] | None = None
    function: DeltaFunctionCall | None = None


class ChatMessageOut(OpenAIBaseModel):
    role: str = "assistant"
    content: str | None
    tool_calls: list[ToolCall] = Field(default_factory=list)

    @model_serializer(mode="wrap")
    def _omit_no_calls(self, handler: Any) -> dict[str, Any]:
        """vLLM's ChatMessage: no "tool_calls" key unless there are calls."""
        data = handler(self)
        if not data.get("tool_calls"):
            data.pop("tool_calls", None)
        return data


class ChatCompletionChoice(OpenAIBaseModel):
    index: int
    message: ChatMessageOut
    logprobs: ChatCompletionLogProbs | None = None
    finish_reason: FinishReason = None
    stop_reason: int | str | None = None
    token_ids: list[int] | None = None


class ChatCompletionResponse(OpenAIBaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int = Field(default_factory=unix_time)
    model: str
    choices: list[ChatCompletionChoice]
    usage: UsageInfo
    prompt_token_ids: list[int] | None = None
    prompt_text: str | None = None
    prompt_logprobs: list[dict[int, PromptLogprob] | None] | None = None


class DeltaMessage(OpenAIBaseModel):
    """Streamed with only the fields set (streaming.sse_data): {"role": ..., "content": ""} first, then
    {"content": ...}; never "role": null."""

    role: str | None = None
    content: str | None = None
    tool_calls: list[DeltaToolCall] | None = None


class ChatCompletionStreamChoice(OpenAIBaseModel):
    index: int
    delta: DeltaMessage
    logprobs: ChatCompletionLogProbs | None = None
    finish_reason: FinishReason = None
    stop_reason: int | str | None = None
    token_ids: list[int] | None = None


class ChatCompletionStreamResponse(OpenAIBaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int = Field(default_factory=unix_time)
    model: str
    choices: list[ChatCompletionStreamChoice]
    usage: UsageInfo | None = None
    prompt_token_ids: list[int] | None = None
    prompt_text: str | None = None
