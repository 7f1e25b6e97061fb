"""Wire types of POST /v1/completions (OpenAI / vLLM field names)."""

from __future__ import annotations

from typing import ClassVar, Literal

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

DEFAULT_COMPLETION_MAX_TOKENS = 16
"""OpenAI's and vLLM's default for /v1/completions."""

Prompt = str | list[str] | list[int] | list[list[int]]


class CompletionRequest(SamplingRequest):
    prompt: Prompt
    max_tokens: int | None = DEFAULT_COMPLETION_MAX_TOKENS
    echo: bool | None = False
    suffix: str | None = None
    add_special_tokens: bool = True
    prompt_embeds: bytes | list[bytes] | None = None

    logprobs: int | None = None

    refused_fields: ClassVar[tuple[field_rules.Refused, ...]] = field_rules.COMPLETION

    def requested_max_tokens(self) -> int | None:
        return self.max_tokens

    def requested_logprobs(self) -> int | None:
        return self.logprobs

    def requested_prompt_logprobs(self) -> int | None:
        """echo with logprobs scores the prompt too (vLLM: the prompt's logprobs lead the choice's)."""
        if self.echo and self.logprobs is not None:
            return max(self.logprobs, self.prompt_logprobs or 0)
        return self.prompt_logprobs

    def check_supported(self) -> None:
        super().check_supported()
        if self.logprobs is not None and self.logprobs < 0:
            raise VdiffValidationError(
                f"logprobs must be >= 0, got {self.logprobs} (-1, the whole vocabulary, is over the "
                "server's --max-logprobs)",
                "logprobs",
            )

    def prompts(self) -> list[str | list[int]]:
        """The prompt as a list of single prompts (text or token ids)."""
        prompt = self.prompt
        if isinstance(prompt, str):
            return [prompt]
        if not prompt:
            raise VdiffValidationError("prompt must not be empty", "prompt")
        if all(isinstance(item, int) for item in prompt):
            return [list(prompt)]  # type: ignore[arg-type]
        return list(prompt)  # type: ignore[arg-type]


class CompletionLogProbs(OpenAIBaseModel):
    """OpenAI's legacy completions format: per token its text, logprob, top alternatives and offset."""

    text_offset: list[int] = Field(default_factory=list)
    token_logprobs: list[float | None] = Field(default_factory=list)
    tokens: list[str] = Field(default_factory=list)
    top_logprobs: list[dict[str, float] | None] = Field(default_factory=list)


class CompletionResponseChoice(OpenAIBaseModel):
    index: int
    text: str
    logprobs: CompletionLogProbs | None = None
    finish_reason: FinishReason = None
    stop_reason: int | str | None = None
    prompt_token_ids: list[int] | None = None
    token_ids: list[int] | None = None
    prompt_logprobs: list[dict[int, PromptLogprob] | None] | None = None


class CompletionResponse(OpenAIBaseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int = Field(default_factory=unix_time)
    model: str
    choices: list[CompletionResponseChoice]
    usage: UsageInfo


class CompletionStreamChoice(OpenAIBaseModel):
    index: int
    text: str
    logprobs: CompletionLogProbs | None = None
    finish_reason: FinishReason = None
    stop_reason: int | str | None = None
    prompt_token_ids: list[int] | None = None
    token_ids: list[int] | None = None


class CompletionStreamResponse(OpenAIBaseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int = Field(default_factory=unix_time)
    model: str
    choices: list[CompletionStreamChoice]
    usage: UsageInfo | None = None
