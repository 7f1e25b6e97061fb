"""Wire types of POST /v1/chat/completions (OpenAI / vLLM field names)."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field

from vdiff.entrypoints.openai import field_rules
from vdiff.entrypoints.openai.common import (
    FinishReason,
    OpenAIBaseModel,
    PromptLogprob,
    SamplingRequest,
    UsageInfo,
    unix_time,
)
from vdiff.errors import VdiffValidationError


class ChatContentPart(OpenAIBaseModel):
    type: str
    text: str | None = None


class ChatMessage(OpenAIBaseModel):
    role: str
    content: str | list[ChatContentPart] | None = None
    name: str | None = None

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


TOOL_CHOICES_WITHOUT_CALLS = (None, "none")


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
    tools: list[dict[str, Any]] | None = None
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
        if self.tools == []:
            raise VdiffValidationError(
                "`tools` must not be an empty array. Either provide at least one tool or omit the field "
                "entirely.",
                "tools",
            )
        tool_choice = self.tool_choice
        if tool_choice is None and self.tools:
            tool_choice = "auto"  # vLLM's default when tools are given
        if not (tool_choice in TOOL_CHOICES_WITHOUT_CALLS or (tool_choice == "auto" and not self.tools)):
            raise VdiffValidationError(
                f"tool_choice={tool_choice!r} is not supported: {field_rules.TOOLS}; send tool_choice "
                '"none" (tools are then only rendered by the chat template)',
                "tool_choice",
            )
        if not self.messages:
            raise VdiffValidationError("messages must not be empty", "messages")

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

    def conversation(self) -> list[dict[str, str]]:
        return [{"role": message.role, "content": message.text()} for message in self.messages]


class ChatCompletionLogProb(OpenAIBaseModel):
    token: str
    logprob: float = -9999.0
    bytes: list[int] | None = None


class ChatCompletionLogProbsContent(ChatCompletionLogProb):
    top_logprobs: list[ChatCompletionLogProb] = Field(default_factory=list)


class ChatCompletionLogProbs(OpenAIBaseModel):
    content: list[ChatCompletionLogProbsContent] | None = None


class ChatMessageOut(OpenAIBaseModel):
    role: str = "assistant"
    content: str


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
