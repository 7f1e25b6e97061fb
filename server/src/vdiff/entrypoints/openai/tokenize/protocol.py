"""Wire types of POST /tokenize and POST /detokenize (vLLM's shapes)."""

from __future__ import annotations

from vdiff.entrypoints.openai.chat_completion.protocol import ChatMessage
from vdiff.entrypoints.openai.common import OpenAIBaseModel


class TokenizeRequest(OpenAIBaseModel):
    """Either prompt (raw text) or messages (rendered with the chat template)."""

    model: str | None = None
    prompt: str | None = None
    messages: list[ChatMessage] | None = None
    add_special_tokens: bool = True
    add_generation_prompt: bool = True


class TokenizeResponse(OpenAIBaseModel):
    count: int
    max_model_len: int | None
    tokens: list[int]


class DetokenizeRequest(OpenAIBaseModel):
    model: str | None = None
    tokens: list[int]


class DetokenizeResponse(OpenAIBaseModel):
    prompt: str
