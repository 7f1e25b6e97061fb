"""POST /v1/chat/completions: messages -> chat template -> engine -> chat.completion objects or chunks."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from vdiff.engine.outputs import RequestOutput
from vdiff.entrypoints.openai.chat_completion.protocol import (
    ChatCompletionChoice,
    ChatCompletionRequest,
    ChatCompletionResponse,
    ChatCompletionStreamChoice,
    ChatCompletionStreamResponse,
    ChatMessageOut,
    DeltaMessage,
)
from vdiff.entrypoints.openai.common import UsageInfo, random_id
from vdiff.entrypoints.openai.serving_base import (
    SSE_DONE,
    OpenAIServing,
    PromptJob,
    first_outputs,
    sse_error,
    sse_event,
)
from vdiff.entrypoints.openai.text_input import check_text

DEFAULT_CHAT_MAX_TOKENS = 256
"""Chat default when the client sends no max_tokens (bounded by the context left; vllm-compatibility.md)."""


class OpenAIServingChat(OpenAIServing):
    async def prepare(self, request: ChatCompletionRequest) -> tuple[str, PromptJob]:
        """Check the request, then render and tokenize the chat in a worker thread (off the event loop)."""
        model_name = self.resolve_model_name(request.model)
        request.check_supported()
        prompt_ids = await asyncio.to_thread(self._tokenize, request)
        return model_name, self.build_job(random_id("chatcmpl"), prompt_ids, request, DEFAULT_CHAT_MAX_TOKENS)

    def _tokenize(self, request: ChatCompletionRequest) -> list[int]:
        conversation = request.conversation()
        check_text(conversation, "messages")
        check_text(request.chat_template_kwargs, "chat_template_kwargs")
        return self.render_chat(
            conversation,
            add_generation_prompt=request.add_generation_prompt,
            kwargs=request.chat_template_kwargs,
        )

    async def create_chat_completion(self, request: ChatCompletionRequest) -> ChatCompletionResponse:
        model_name, job = await self.prepare(request)
        final = await self.last_output(job)
        choices = [
            ChatCompletionChoice(
                index=choice.index,
                message=ChatMessageOut(content=choice.text),
                finish_reason=choice.finish_reason,
                stop_reason=choice.stop_reason,
            )
            for choice in final.outputs
        ]
        return ChatCompletionResponse(
            id=job.request_id, model=model_name, choices=choices, usage=usage_of(job, final)
        )

    async def start_stream(self, request: ChatCompletionRequest) -> AsyncIterator[str]:
        """Admit the request (errors raise here, before headers), then return the SSE body iterator."""
        model_name, job = await self.prepare(request)
        stream = self.generate(job)
        (first,) = await first_outputs([stream])
        return self._stream(request, model_name, job, stream, first)

    async def _stream(
        self,
        request: ChatCompletionRequest,
        model_name: str,
        job: PromptJob,
        stream: AsyncIterator[RequestOutput],
        first: RequestOutput | None,
    ) -> AsyncIterator[str]:
        final = first
        try:
            role_chunk = ChatCompletionStreamResponse(
                id=job.request_id,
                model=model_name,
                choices=[
                    ChatCompletionStreamChoice(index=index, delta=DeltaMessage(role="assistant", content=""))
                    for index in range(request.n)
                ],
            )
            yield sse_event(role_chunk)
            if first is not None:
                for chunk in self._chunks(job.request_id, model_name, first):
                    yield chunk
            async for output in stream:
                final = output
                for chunk in self._chunks(job.request_id, model_name, output):
                    yield chunk
            if request.include_usage_in_stream and final is not None:
                usage_chunk = ChatCompletionStreamResponse(
                    id=job.request_id, model=model_name, choices=[], usage=usage_of(job, final)
                )
                yield sse_event(usage_chunk)
        except Exception as error:  # the stream already started: report in-band, like vLLM
            yield sse_error(error)
        yield SSE_DONE

    def _chunks(self, response_id: str, model_name: str, output: RequestOutput) -> list[str]:
        chunks = []
        for choice in output.outputs:
            if not choice.new_text and choice.finish_reason is None:
                continue
            delta = DeltaMessage(content=choice.new_text) if choice.new_text else DeltaMessage()
            chunk = ChatCompletionStreamResponse(
                id=response_id,
                model=model_name,
                choices=[
                    ChatCompletionStreamChoice(
                        index=choice.index,
                        delta=delta,
                        finish_reason=choice.finish_reason,
                        stop_reason=choice.stop_reason,
                    )
                ],
            )
            chunks.append(sse_event(chunk))
        return chunks


def usage_of(job: PromptJob, final: RequestOutput) -> UsageInfo:
    prompt_tokens = len(job.prompt_token_ids)
    completion_tokens = sum(len(choice.token_ids) for choice in final.outputs)
    return UsageInfo(
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        total_tokens=prompt_tokens + completion_tokens,
    )
