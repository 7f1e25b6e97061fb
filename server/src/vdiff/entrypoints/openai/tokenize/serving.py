"""POST /tokenize and /detokenize with the served model's tokenizer and chat template."""

from __future__ import annotations

from vdiff.entrypoints.openai.serving_base import OpenAIServing
from vdiff.entrypoints.openai.tokenize.protocol import (
    DetokenizeRequest,
    DetokenizeResponse,
    TokenizeRequest,
    TokenizeResponse,
)
from vdiff.errors import VdiffValidationError


class OpenAIServingTokenization(OpenAIServing):
    def tokenize(self, request: TokenizeRequest) -> TokenizeResponse:
        self.resolve_model_name(request.model)
        if (request.prompt is None) == (request.messages is None):
            raise VdiffValidationError("send exactly one of prompt or messages", "prompt")
        if request.messages is not None:
            conversation = [{"role": m.role, "content": m.text()} for m in request.messages]
            tokens = self.render_chat(
                conversation, add_generation_prompt=request.add_generation_prompt, kwargs=None
            )
        else:
            tokens = self.encode(request.prompt or "", add_special_tokens=request.add_special_tokens)
        return TokenizeResponse(count=len(tokens), max_model_len=self.max_model_len, tokens=tokens)

    def detokenize(self, request: DetokenizeRequest) -> DetokenizeResponse:
        self.resolve_model_name(request.model)
        self.check_token_ids(request.tokens, "tokens")
        return DetokenizeResponse(prompt=self.decode(request.tokens))
