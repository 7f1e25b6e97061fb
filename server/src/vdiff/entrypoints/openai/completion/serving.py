"""POST /v1/completions: prompts -> engine -> OpenAI text_completion objects (whole or streamed)."""

from __future__ import annotations

from collections.abc import AsyncIterator

from vdiff.engine.outputs import RequestOutput
from vdiff.entrypoints.openai.common import UsageInfo, random_id
from vdiff.entrypoints.openai.completion.protocol import (
    CompletionRequest,
    CompletionResponse,
    CompletionResponseChoice,
    CompletionStreamChoice,
    CompletionStreamResponse,
)
from vdiff.entrypoints.openai.serving_base import (
    SSE_DONE,
    OpenAIServing,
    PromptJob,
    first_outputs,
    gather_or_cancel,
    merge_streams,
    sse_error,
    sse_event,
)


class OpenAIServingCompletion(OpenAIServing):
    def prepare(self, request: CompletionRequest) -> tuple[str, list[PromptJob]]:
        model_name = self.resolve_model_name(request.model)
        request.check_supported()
        request_id = random_id("cmpl")
        jobs = []
        for index, prompt in enumerate(request.prompts()):
            if isinstance(prompt, str):
                prompt_ids = self.encode(prompt)
            else:
                prompt_ids = list(prompt)
                self.check_token_ids(prompt_ids, "prompt")
            jobs.append(self.build_job(f"{request_id}-{index}", prompt_ids, request, None))
        return model_name, jobs

    async def create_completion(self, request: CompletionRequest) -> CompletionResponse:
        model_name, jobs = self.prepare(request)
        finals = await gather_or_cancel([self.last_output(job) for job in jobs])
        choices = []
        for prompt_index, output in enumerate(finals):
            for choice in output.outputs:
                choices.append(
                    CompletionResponseChoice(
                        index=prompt_index * request.n + choice.index,
                        text=choice.text,
                        finish_reason=choice.finish_reason,
                        stop_reason=choice.stop_reason,
                    )
                )
        return CompletionResponse(
            id=jobs[0].request_id.rsplit("-", 1)[0],
            model=model_name,
            choices=choices,
            usage=usage_of(jobs, finals),
        )

    async def start_stream(self, request: CompletionRequest) -> AsyncIterator[str]:
        """Admit every prompt (errors raise here, before headers), then return the SSE body iterator."""
        model_name, jobs = self.prepare(request)
        streams = [self.generate(job) for job in jobs]
        firsts = await first_outputs(streams)
        return self._stream(request, model_name, jobs, streams, firsts)

    async def _stream(
        self,
        request: CompletionRequest,
        model_name: str,
        jobs: list[PromptJob],
        streams: list[AsyncIterator[RequestOutput]],
        firsts: list[RequestOutput | None],
    ) -> AsyncIterator[str]:
        response_id = jobs[0].request_id.rsplit("-", 1)[0]
        finals: list[RequestOutput | None] = list(firsts)
        try:
            for index, first in enumerate(firsts):
                if first is not None:
                    for chunk in self._chunks(request, response_id, model_name, index, first):
                        yield chunk
            async for index, output in merge_streams(streams):
                finals[index] = output
                for chunk in self._chunks(request, response_id, model_name, index, output):
                    yield chunk
            if request.include_usage_in_stream:
                usage = usage_of(jobs, [final for final in finals if final is not None])
                yield sse_event(
                    CompletionStreamResponse(id=response_id, model=model_name, choices=[], usage=usage)
                )
        except Exception as error:  # the stream already started: report in-band, like vLLM
            yield sse_error(error)
        yield SSE_DONE

    def _chunks(
        self,
        request: CompletionRequest,
        response_id: str,
        model_name: str,
        prompt_index: int,
        output: RequestOutput,
    ) -> list[str]:
        chunks = []
        for choice in output.outputs:
            if not choice.new_text and choice.finish_reason is None:
                continue
            chunk = CompletionStreamResponse(
                id=response_id,
                model=model_name,
                choices=[
                    CompletionStreamChoice(
                        index=prompt_index * request.n + choice.index,
                        text=choice.new_text,
                        finish_reason=choice.finish_reason,
                        stop_reason=choice.stop_reason,
                    )
                ],
            )
            chunks.append(sse_event(chunk))
        return chunks


def usage_of(jobs: list[PromptJob], finals: list[RequestOutput]) -> UsageInfo:
    prompt_tokens = sum(len(job.prompt_token_ids) for job in jobs)
    completion_tokens = sum(len(choice.token_ids) for output in finals for choice in output.outputs)
    return UsageInfo(
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        total_tokens=prompt_tokens + completion_tokens,
    )
