"""Wire types of POST /v1/completions (OpenAI / vLLM field names)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from vdiff.entrypoints.openai.common import (
    FinishReason,
    OpenAIBaseModel,
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
    echo: bool = False
    suffix: str | None = None
    best_of: int | None = None

    logprobs: int | None = None

    def requested_max_tokens(self) -> int | None:
        return self.max_tokens

    def requested_logprobs(self) -> int | None:
        return self.logprobs

    def check_supported(self) -> None:
        super().check_supported()
        if self.logprobs is not None:
            raise VdiffValidationError("logprobs are not supported by vdiff yet", "logprobs")
        if self.echo:
            raise VdiffValidationError("echo is not supported by vdiff", "echo")
        if self.suffix:
            raise VdiffValidationError("suffix (insertion) is not supported by vdiff", "suffix")
        if self.best_of is not None and self.best_of != self.n:
            raise VdiffValidationError("best_of must equal n (no candidate ranking)", "best_of")

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


class CompletionResponseChoice(OpenAIBaseModel):
    index: int
    text: str
    logprobs: None = None
    finish_reason: FinishReason = None
    stop_reason: int | str | None = None


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
    logprobs: None = None
    finish_reason: FinishReason = None
    stop_reason: int | str | None = None


class CompletionStreamResponse(OpenAIBaseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int = Field(default_factory=unix_time)
    model: str
    choices: list[CompletionStreamChoice]
    usage: UsageInfo | None = None
