"""POST /v1/completions: prompts -> engine -> OpenAI text_completion objects (whole or streamed)."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field

from vdiff.engine.outputs import RequestOutput
from vdiff.engine.protocol import EngineClient
from vdiff.entrypoints.openai import canvas_stream
from vdiff.entrypoints.openai.common import UsageInfo, random_id, unix_time, usage_counts
from vdiff.entrypoints.openai.completion.protocol import (
    CompletionRequest,
    CompletionResponse,
    CompletionResponseChoice,
    CompletionStreamChoice,
    CompletionStreamResponse,
)
from vdiff.entrypoints.openai.logprobs import (
    TokenNamer,
    completion_logprobs,
    echo_logprobs,
    next_text_offset,
    prompt_logprobs,
)
from vdiff.entrypoints.openai.serving_base import (
    SSE_DONE,
    OpenAIServing,
    PromptJob,
    gather_or_cancel,
    merge_streams,
    sse_error,
)
from vdiff.entrypoints.openai.streaming import FirstOutputs, sse_data
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

    async def prepare(self, request: CompletionRequest) -> tuple[str, CompletionJobs]:
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
        tokenized = await asyncio.to_thread(self._tokenize, request, prompts)
        engine_id = random_id("cmpl")
        jobs = [
            self.build_job(f"{engine_id}-{index}", prompt_ids, request, None)
            for index, (prompt_ids, _) in enumerate(tokenized)
        ]
        echoes = [text if request.echo else "" for _, text in tokenized]
        return model_name, CompletionJobs(request.response_id("cmpl"), jobs, echoes)

    def _tokenize(
        self, request: CompletionRequest, prompts: list[str | list[int]]
    ) -> list[tuple[list[int], str]]:
        """Each prompt's ids (truncated as asked) and the text echo prepends (the prompt as sent, or the
        decoded ids when they were given as ids or truncated)."""
        encode = functools.partial(self.encode, add_special_tokens=request.add_special_tokens)
        tokenized = []
        for prompt in prompts:
            if isinstance(prompt, str):
                if request.truncate_prompt_tokens is None:
                    self.check_text_fits(prompt, "prompt")
                prompt_ids = encode_text(encode, prompt, "prompt")
            else:
                prompt_ids = list(prompt)
                self.check_token_ids(prompt_ids, "prompt")
            truncated = self.truncate(prompt_ids, request)
            if not request.echo:
                text = ""
            elif isinstance(prompt, str) and len(truncated) == len(prompt_ids):
                text = prompt
            else:
                text = self.decode(truncated, skip_special_tokens=False)
            tokenized.append((truncated, text))
        return tokenized

    async def create_completion(self, request: CompletionRequest) -> CompletionResponse:
        model_name, batch = await self.prepare(request)
        finals = await gather_or_cancel([self.last_output(job) for job in batch.jobs])
        scored = request.requested_prompt_logprobs() is not None
        namer = self.token_namer(request) if request.logprobs is not None or scored else None
        choices = []
        for prompt_index, (job, output) in enumerate(zip(batch.jobs, finals, strict=True)):
            echo = batch.echoes[prompt_index]
            for choice in output.outputs:
                logprobs = None
                if namer is not None and request.logprobs is not None:
                    logprobs = (
                        echo_logprobs(
                            job.prompt_token_ids,
                            output.prompt_logprobs or [],
                            choice.logprobs or [],
                            choice.stop_logprob,
                            namer,
                        )
                        if request.echo
                        else completion_logprobs(choice.logprobs or [], namer)
                    )
                choices.append(
                    CompletionResponseChoice(
                        index=prompt_index * request.n + choice.index,
                        text=echo + choice.text,
                        logprobs=logprobs,
                        prompt_logprobs=prompt_logprobs(output.prompt_logprobs, namer)
                        if request.prompt_logprobs is not None and namer is not None
                        else None,
                        finish_reason=choice.finish_reason,
                        stop_reason=choice.stop_reason,
                        prompt_token_ids=list(job.prompt_token_ids) if request.return_token_ids else None,
                        token_ids=list(choice.token_ids) if request.return_token_ids else None,
                    )
                )
        return CompletionResponse(
            id=batch.response_id, model=model_name, choices=choices, usage=usage_of(batch.jobs, finals)
        )

    async def start_stream(self, request: CompletionRequest) -> AsyncIterator[str]:
        """Admit every prompt (errors found within ADMISSION_WAIT_S raise here, before headers), then
        return the SSE body iterator: the headers go out at once, the first chunk with the first text."""
        model_name, batch = await self.prepare(request)
        firsts = FirstOutputs([self.generate(job) for job in batch.jobs])
        await firsts.admit()
        return self._stream(request, model_name, batch, firsts)

    async def _stream(
        self, request: CompletionRequest, model_name: str, batch: CompletionJobs, firsts: FirstOutputs
    ) -> AsyncIterator[str]:
        """vLLM's chunks: one per choice and frontier advance, with every choice field (null included)
        and usage only when asked; the usage chunk without its null fields."""
        state = _StreamState(self.token_namer(request) if request.logprobs is not None else None)
        chunk = functools.partial(
            CompletionStreamResponse,
            id=batch.response_id,
            object="text_completion",
            created=unix_time(),
            model=model_name,
        )
        try:
            finals: list[RequestOutput | None] = await firsts.results()
            for index, first in enumerate(finals):
                if first is not None:
                    for data in self._chunks(request, chunk, batch, index, first, state):
                        yield data
            async for index, output in merge_streams(firsts.streams):
                finals[index] = output
                for data in self._chunks(request, chunk, batch, index, output, state):
                    yield data
            if request.include_usage_in_stream:
                usage = usage_of(batch.jobs, [final for final in finals if final is not None])
                yield sse_data(chunk(choices=[], usage=usage), exclude_none=True)
        except Exception as error:  # the stream already started: report in-band, like vLLM
            yield sse_error(error)
        finally:
            firsts.cancel()
        yield SSE_DONE

    def _chunks(
        self,
        request: CompletionRequest,
        chunk: Callable[..., CompletionStreamResponse],
        batch: CompletionJobs,
        prompt_index: int,
        output: RequestOutput,
        state: _StreamState,
    ) -> list[str]:
        chunks = canvas_stream.frame_chunks(chunk, output, prompt_index * request.n)
        job = batch.jobs[prompt_index]
        carries_tokens = state.namer is not None or bool(request.return_token_ids)
        for choice in output.outputs:
            index = prompt_index * request.n + choice.index
            first = index not in state.started
            text = (batch.echoes[prompt_index] if first else "") + choice.new_text
            new_ids = choice.new_token_ids
            if not text and not (new_ids and carries_tokens) and choice.finish_reason is None:
                continue
            state.started.add(index)
            logprobs = None
            if state.namer is not None:
                offset = state.offsets.get(index, 0)
                logprobs = completion_logprobs(choice.new_logprobs or [], state.namer, offset)
                state.offsets[index] = next_text_offset(logprobs, offset)
            data = chunk(
                choices=[
                    CompletionStreamChoice(
                        index=index,
                        text=text,
                        logprobs=logprobs,
                        finish_reason=choice.finish_reason,
                        stop_reason=choice.stop_reason,
                        prompt_token_ids=list(job.prompt_token_ids)
                        if request.return_token_ids and first
                        else None,
                        token_ids=list(new_ids) if request.return_token_ids else None,
                    )
                ]
            )
            if request.include_continuous_usage:
                data.usage = usage_counts(len(job.prompt_token_ids), len(choice.token_ids))
            chunks.append(sse_data(data))
        return chunks


@dataclass(slots=True)
class CompletionJobs:
    response_id: str
    jobs: list[PromptJob]
    echoes: list[str]
    """Per prompt: the text prepended to each choice (echo), else ""."""


@dataclass(slots=True)
class _StreamState:
    namer: TokenNamer | None
    started: set[int] = field(default_factory=set)
    """Choices that sent their first chunk (echo text and prompt_token_ids go on it)."""
    offsets: dict[int, int] = field(default_factory=dict)
    """Per choice, the text offset the next chunk's logprobs start at."""


def usage_of(jobs: list[PromptJob], finals: list[RequestOutput]) -> UsageInfo:
    prompt_tokens = sum(len(job.prompt_token_ids) for job in jobs)
    completion_tokens = sum(len(choice.token_ids) for output in finals for choice in output.outputs)
    return UsageInfo(
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        total_tokens=prompt_tokens + completion_tokens,
    )
