"""POST /v1/completions: prompts -> engine -> OpenAI text_completion objects (whole or streamed)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence

from vdiff.engine.outputs import RequestOutput
from vdiff.engine.protocol import EngineClient
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
from vdiff.entrypoints.openai.text_input import encode_text
from vdiff.errors import VdiffValidationError
from vdiff.metrics import ServerMetrics


class OpenAIServingCompletion(OpenAIServing):
    def __init__(
        self,
        engine: EngineClient,
        served_model_names: Sequence[str],
        metrics: ServerMetrics,
        *,
        log_requests: bool = False,
        max_prompts_per_request: int | None = None,
    ) -> None:
        super().__init__(engine, served_model_names, metrics, log_requests=log_requests)
        self.max_prompts_per_request = max_prompts_per_request

    async def prepare(self, request: CompletionRequest) -> tuple[str, list[PromptJob]]:
        """Check the request, tokenize its prompts in a worker thread (the event loop keeps serving)."""
        model_name = self.resolve_model_name(request.model)
        request.check_supported()
        prompts = request.prompts()
        limit = self.max_prompts_per_request
        if limit is not None and len(prompts) > limit:
            raise VdiffValidationError(
                f"prompt holds {len(prompts)} prompts; at most {limit} are allowed in one request",
                "prompt",
            )
        all_prompt_ids = await asyncio.to_thread(self._tokenize, prompts)
        request_id = random_id("cmpl")
        jobs = [
            self.build_job(f"{request_id}-{index}", prompt_ids, request, None)
            for index, prompt_ids in enumerate(all_prompt_ids)
        ]
        return model_name, jobs

    def _tokenize(self, prompts: list[str | list[int]]) -> list[list[int]]:
        all_prompt_ids = []
        for prompt in prompts:
            if isinstance(prompt, str):
                prompt_ids = encode_text(self.encode, prompt, "prompt")
            else:
                prompt_ids = list(prompt)
                self.check_token_ids(prompt_ids, "prompt")
            all_prompt_ids.append(prompt_ids)
        return all_prompt_ids

    async def create_completion(self, request: CompletionRequest) -> CompletionResponse:
        model_name, jobs = await self.prepare(request)
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
        model_name, jobs = await self.prepare(request)
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
