"""POST /tokenize, /detokenize and GET /tokenizer_info with the served model's tokenizer and chat template."""

from __future__ import annotations

import asyncio
import functools
from typing import Any

from vdiff.entrypoints.openai.serving_base import OpenAIServing
from vdiff.entrypoints.openai.text_input import check_text, encode_text
from vdiff.entrypoints.openai.tokenize.protocol import (
    DetokenizeRequest,
    DetokenizeResponse,
    TokenizeRequest,
    TokenizeResponse,
    TokenizerInfoResponse,
)
from vdiff.errors import VdiffValidationError


class OpenAIServingTokenization(OpenAIServing):
    async def tokenize(self, request: TokenizeRequest) -> TokenizeResponse:
        """Tokenize in a worker thread, so a huge prompt does not stall the event loop."""
        self.resolve_model_name(request.model)
        if (request.prompt is None) == (request.messages is None):
            raise VdiffValidationError("send exactly one of prompt or messages", "prompt")
        tokens = await asyncio.to_thread(self._tokenize, request)
        token_strs = None
        if request.return_token_strs:
            token_strs = [
                str(token) for token in self.engine.tokenizer_info.tokenizer.convert_ids_to_tokens(tokens)
            ]
        return TokenizeResponse(
            count=len(tokens), max_model_len=self.max_model_len, tokens=tokens, token_strs=token_strs
        )

    def _tokenize(self, request: TokenizeRequest) -> list[int]:
        if request.messages is not None:
            conversation = [{"role": m.role, "content": m.text()} for m in request.messages]
            check_text(conversation, "messages")
            return self.render_chat(
                conversation, add_generation_prompt=request.add_generation_prompt, kwargs=None
            )
        encode = functools.partial(self.encode, add_special_tokens=request.add_special_tokens)
        return encode_text(encode, request.prompt or "", "prompt")

    async def detokenize(self, request: DetokenizeRequest) -> DetokenizeResponse:
        self.resolve_model_name(request.model)
        return DetokenizeResponse(prompt=await asyncio.to_thread(self._detokenize, request.tokens))

    def _detokenize(self, tokens: list[int]) -> str:
        self.check_token_ids(tokens, "tokens")
        return self.decode(tokens)

    def tokenizer_info(self) -> TokenizerInfoResponse:
        """vLLM's /tokenizer_info: the tokenizer's init kwargs without file paths, its class name, and the
        server's --chat-template when one is set (lm-eval's local-completions reads it)."""
        info = self.engine.tokenizer_info
        tokenizer = info.tokenizer
        config = dict(getattr(tokenizer, "init_kwargs", None) or {})
        for path_field in ("vocab_file", "merges_file"):
            config.pop(path_field, None)
        config = {key: _json_safe(value) for key, value in config.items()}
        config["tokenizer_class"] = type(tokenizer).__name__
        if info.chat_template:
            config["chat_template"] = info.chat_template
        return TokenizerInfoResponse(**config)


def _json_safe(value: Any) -> Any:
    """AddedToken-like objects become their text; containers recurse; anything else not JSON becomes str."""
    if hasattr(value, "content"):
        return value.content
    if isinstance(value, dict):
        return {str(key): _json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(item) for item in value]
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)
