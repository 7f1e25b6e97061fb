"""Wire types of POST /tokenize, POST /detokenize and GET /tokenizer_info (vLLM's shapes)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from vdiff.entrypoints.openai.chat_completion.protocol import ChatMessage
from vdiff.entrypoints.openai.common import OpenAIBaseModel


class TokenizeRequest(OpenAIBaseModel):
    """Either prompt (raw text) or messages (rendered with the chat template)."""

    model: str | None = None
    prompt: str | None = None
    messages: list[ChatMessage] | None = None
    add_special_tokens: bool = True
    add_generation_prompt: bool = True
    return_token_strs: bool | None = False
    """Also return each id's token string (the tokenizer's convert_ids_to_tokens), as vLLM."""


class TokenizeResponse(OpenAIBaseModel):
    count: int
    max_model_len: int | None
    tokens: list[int]
    token_strs: list[str] | None = None


class DetokenizeRequest(OpenAIBaseModel):
    model: str | None = None
    tokens: list[int]


class DetokenizeResponse(OpenAIBaseModel):
    prompt: str


class TokenizerInfoResponse(BaseModel):
    """The tokenizer's configuration (tokenizer_config.json's fields) plus its class, as vLLM; a plain
    BaseModel, since every extra field is the point (OpenAIBaseModel would log each as ignored)."""

    model_config = ConfigDict(extra="allow")
    tokenizer_class: str
