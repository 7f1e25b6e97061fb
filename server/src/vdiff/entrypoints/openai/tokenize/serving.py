"""POST /tokenize and /detokenize with the served model's tokenizer and chat template."""

from __future__ import annotations

import asyncio
import functools

from vdiff.entrypoints.openai.serving_base import OpenAIServing
from vdiff.entrypoints.openai.text_input import check_text, encode_text
from vdiff.entrypoints.openai.tokenize.protocol import (
    DetokenizeRequest,
    DetokenizeResponse,
    TokenizeRequest,
    TokenizeResponse,
)
from vdiff.errors import VdiffValidationError


class OpenAIServingTokenization(OpenAIServing):
    async def tokenize(self, request: TokenizeRequest) -> TokenizeResponse:
        """Tokenize in a worker thread, so a huge prompt does not stall the event loop."""
        self.resolve_model_name(request.model)
        if (request.prompt is None) == (request.messages is None):
            raise VdiffValidationError("send exactly one of prompt or messages", "prompt")
        tokens = await asyncio.to_thread(self._tokenize, request)
        return TokenizeResponse(count=len(tokens), max_model_len=self.max_model_len, tokens=tokens)

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
