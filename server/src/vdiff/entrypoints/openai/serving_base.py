"""What every generation endpoint shares: model names, prompt checks, engine calls with metrics and abort."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pydantic import BaseModel

from vdiff.engine.outputs import RequestOutput
from vdiff.engine.protocol import EngineClient
from vdiff.entrypoints.openai.common import ErrorInfo, ErrorResponse, SamplingRequest
from vdiff.entrypoints.openai.errors import ModelNotFoundError, error_info_for
from vdiff.entrypoints.openai.logprobs import TokenNamer
from vdiff.errors import EngineDeadError, EngineDrainingError, QueueFullError, VdiffValidationError
from vdiff.metrics import FinishedRequest, ServerMetrics
from vdiff.sampling_params import SamplingParams

logger = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(slots=True)
class PromptJob:
    """One prompt of a request, tokenized and paired with the sampling params it runs with."""

    request_id: str
    prompt_token_ids: list[int]
    params: SamplingParams
    param_names: dict[str, str] = field(default_factory=dict)
    """The engine's name of a field -> this endpoint's (chat: prompt -> messages), for error messages."""


@dataclass(slots=True)
class RequestTracker:
    """Times one engine request from the HTTP layer's view and observes TTFT / inter-token latency live.

    First token = the first output that advances a commit frontier; each later advance of k tokens, t
    seconds after the previous one, is k inter-token observations of t / k (docs/metrics.md)."""

    metrics: ServerMetrics | None = None
    arrival_time: float = field(default_factory=time.monotonic)
    first_token_time: float | None = None
    last_advance_time: float | None = None
    last_advance_wall_time: float | None = None
    token_latencies: list[float] = field(default_factory=list)

    def observe(self, output: RequestOutput) -> None:
        num_new = sum(len(choice.new_token_ids) for choice in output.outputs)
        if num_new == 0:
            return
        now = time.monotonic()
        self.last_advance_wall_time = time.time()
        if self.first_token_time is None:
            self.first_token_time = now
            if self.metrics is not None:
                self.metrics.record_first_token(now - self.arrival_time)
        elif self.last_advance_time is not None:
            per_token = (now - self.last_advance_time) / num_new
            self.token_latencies.extend([per_token] * num_new)
            if self.metrics is not None:
                self.metrics.record_inter_token(per_token, num_new)
        self.last_advance_time = now


ADMISSION_ERRORS: tuple[type[BaseException], ...] = (
    VdiffValidationError, QueueFullError, EngineDrainingError, EngineDeadError,
)  # fmt: skip
"""Refused before the engine took the request (or no engine left): not counted as a finished request."""


def engine_max_model_len(engine: EngineClient) -> int | None:
    """The configured limit, else the one the engine derived from the checkpoint (if it exposes it)."""
    for holder in (engine.config, engine, getattr(engine, "engine", None)):
        value = getattr(holder, "max_model_len", None)
        if isinstance(value, int):
            return value
    return None


class OpenAIServing:
    """Base of the completion and chat servings."""

    def __init__(
        self,
        engine: EngineClient,
        served_model_names: Sequence[str],
        metrics: ServerMetrics,
        *,
        log_requests: bool = False,
    ) -> None:
        self.engine = engine
        self.served_model_names = list(served_model_names)
        self.metrics = metrics
        self.log_requests = log_requests
        self._background_tasks: set[asyncio.Task[None]] = set()

    # Model names and limits.
    def resolve_model_name(self, requested: str | None) -> str:
        """The name to echo back; a missing name means the first served model, like vLLM."""
        if requested is None or requested == "":
            return self.served_model_names[0]
        if requested not in self.served_model_names:
            raise ModelNotFoundError(requested, self.served_model_names)
        return requested

    @property
    def max_model_len(self) -> int | None:
        return engine_max_model_len(self.engine)

    # Tokenizer access (one place, so the TokenizerInfo contract is used consistently).
    def encode(self, text: str, *, add_special_tokens: bool = True) -> list[int]:
        return list(self.engine.tokenizer_info.encode(text, add_special_tokens=add_special_tokens))

    def render_chat(
        self,
        conversation: list[dict[str, Any]],
        *,
        add_generation_prompt: bool,
        kwargs: dict[str, Any] | None,
    ) -> list[int]:
        return self.render_chat_prompt(
            conversation, add_generation_prompt=add_generation_prompt, kwargs=kwargs
        )[1]

    def check_text_fits(self, text: str, param: str) -> None:
        """Refuse, before tokenizing it, a text too long for the context whatever its tokenization."""
        max_model_len, max_token_bytes = self.max_model_len, self.engine.tokenizer_info.max_token_bytes
        if max_model_len is None or not max_token_bytes:
            return
        min_tokens = len(text.encode("utf-8", "surrogatepass")) // max_token_bytes
        if min_tokens >= max_model_len:
            raise VdiffValidationError(
                f"This model's maximum context length is {max_model_len} tokens; the prompt has at least "
                f"{min_tokens} tokens. Please shorten the prompt.",
                param,
            )

    def render_chat_prompt(
        self,
        conversation: list[dict[str, Any]],
        *,
        add_generation_prompt: bool,
        kwargs: dict[str, Any] | None,
        chat_template: str | None = None,
        add_special_tokens: bool = False,
        truncating: bool = False,
    ) -> tuple[str, list[int]]:
        """The rendered prompt text and its ids (special tokens come from the template unless asked)."""
        template_kwargs = {
            key: value
            for key, value in (kwargs or {}).items()
            if key not in ("add_generation_prompt", "chat_template", "tokenize", "return_dict")
        }
        try:
            text = self.engine.tokenizer_info.render_chat(
                conversation, add_generation_prompt, chat_template, **template_kwargs
            )
        except (ValueError, TypeError, KeyError) as error:
            if isinstance(error, VdiffValidationError):
                raise
            raise VdiffValidationError(f"could not apply the chat template: {error}", "messages") from error
        if not truncating:
            self.check_text_fits(text, "messages")
        return text, self.encode(text, add_special_tokens=add_special_tokens)

    def chat_template_text(self, override: str | None) -> str:
        """The template a chat request renders with (request > --chat-template > tokenizer's)."""
        info = self.engine.tokenizer_info
        template = override or info.chat_template or getattr(info.tokenizer, "chat_template", None) or ""
        if isinstance(template, dict):
            return "\n".join(str(value) for value in template.values())
        return str(template)

    def truncate(self, prompt_ids: list[int], request: SamplingRequest) -> list[int]:
        """truncate_prompt_tokens as vLLM: keep k tokens (the last k, or the first k with truncation_side
        "right"); -1 means as many as the context allows, above max_model_len is a 400."""
        keep = request.truncate_prompt_tokens
        if keep is None:
            return prompt_ids
        max_model_len = self.max_model_len
        if keep == -1:
            if max_model_len is None:
                return prompt_ids
            keep = max_model_len - 1
        elif max_model_len is not None and keep > max_model_len:
            raise VdiffValidationError(
                f"truncate_prompt_tokens={keep} cannot be greater than max_model_len = {max_model_len}. "
                "Please request a smaller truncation size.",
                "truncate_prompt_tokens",
            )
        if len(prompt_ids) <= keep:
            return prompt_ids
        if request.truncation_side == "right":
            return prompt_ids[:keep]
        return prompt_ids[len(prompt_ids) - keep :]

    def token_namer(self, request: SamplingRequest) -> TokenNamer:
        return TokenNamer(self.engine.tokenizer_info, request.tokens_as_ids)

    def decode(self, token_ids: list[int], *, skip_special_tokens: bool = True) -> str:
        return self.engine.tokenizer_info.decode(token_ids, skip_special_tokens=skip_special_tokens)

    @property
    def vocab_size(self) -> int:
        return int(self.engine.tokenizer_info.vocab_size)

    def check_token_ids(self, token_ids: list[int], param: str) -> None:
        """For /detokenize, which has no engine admission; generation prompts are the engine's to check."""
        vocab_size = self.vocab_size
        for token_id in token_ids:
            if not 0 <= token_id < vocab_size:
                raise VdiffValidationError(
                    f"token id {token_id} is outside the vocabulary [0, {vocab_size})", param
                )

    def build_job(
        self,
        request_id: str,
        prompt_ids: list[int],
        request: SamplingRequest,
        default_max_tokens: int | None,
        param_names: dict[str, str] | None = None,
    ) -> PromptJob:
        """Bridge the request to SamplingParams; every check is the engine's input processor's.

        An unset max_tokens is the endpoint's default, bounded by the context the prompt leaves."""
        max_tokens = request.requested_max_tokens()
        if max_tokens is None:
            max_tokens = default_max_tokens if default_max_tokens is not None else 16
            if self.max_model_len is not None:
                max_tokens = max(1, min(max_tokens, self.max_model_len - len(prompt_ids)))
        request.check_supported()
        return PromptJob(request_id, prompt_ids, request.to_sampling_params(max_tokens), param_names or {})

    # Engine calls.
    async def generate(self, job: PromptJob) -> AsyncIterator[RequestOutput]:
        """Stream the engine's outputs, record metrics at the end, and abort if the consumer goes away."""
        tracker = RequestTracker(self.metrics)
        final: RequestOutput | None = None
        failure: BaseException | None = None
        if self.log_requests:
            logger.info(
                "request %s: %d prompt tokens, params %s",
                job.request_id,
                len(job.prompt_token_ids),
                job.params,
            )
        try:
            async for output in self.engine.generate(job.prompt_token_ids, job.params, job.request_id):
                tracker.observe(output)
                final = output
                yield output
        except VdiffValidationError as error:
            failure = error
            if error.param not in job.param_names:
                raise
            raise VdiffValidationError(error.message, job.param_names[error.param]) from error
        except Exception as error:
            failure = error
            raise
        finally:
            # No await in here: under anyio (Starlette streaming) a cancelled scope re-cancels every await.
            if final is None or not final.finished:
                self._abort_in_background(job.request_id)
            if final is not None or not isinstance(failure, ADMISSION_ERRORS):
                # no output yet: cancelled (client gone) = abort, an engine failure = error
                self.metrics.record_finished(
                    FinishedRequest(
                        arrival_time=tracker.arrival_time,
                        finished_time=time.monotonic(),
                        num_prompt_tokens=len(job.prompt_token_ids),
                        max_tokens=job.params.max_tokens,
                        n=job.params.n,
                        first_token_time=tracker.first_token_time,
                        final_output=final,
                        finished_reason="abort" if failure is None else "error",
                        last_advance_wall_time=tracker.last_advance_wall_time,
                    )
                )

    async def last_output(self, job: PromptJob) -> RequestOutput:
        final = None
        async for output in self.generate(job):
            final = output
        if final is None or not final.finished:
            raise RuntimeError(f"the engine ended request {job.request_id} without a final output")
        return final

    def _abort_in_background(self, request_id: str) -> None:
        task = asyncio.get_running_loop().create_task(self._abort_quietly(request_id))
        self._background_tasks.add(task)
        task.add_done_callback(self._background_tasks.discard)

    async def _abort_quietly(self, request_id: str) -> None:
        try:
            await self.engine.abort(request_id)
        except Exception:  # the request may already be gone; aborting must never mask the real outcome
            logger.debug("abort of %s failed", request_id, exc_info=True)


async def first_outputs(streams: list[AsyncIterator[RequestOutput]]) -> list[RequestOutput | None]:
    """Pull every stream's first output concurrently; on any admission error close them all and re-raise."""

    async def first(stream: AsyncIterator[RequestOutput]) -> RequestOutput | None:
        try:
            return await anext(stream)
        except StopAsyncIteration:
            return None

    try:
        return await gather_or_cancel([first(stream) for stream in streams])
    except BaseException:
        for stream in streams:
            await stream.aclose()  # type: ignore[attr-defined]
        raise


async def gather_or_cancel(coroutines: Sequence[Awaitable[T]]) -> list[T]:
    """Like asyncio.gather, but the first failure cancels the siblings (their engine requests get aborted)."""
    tasks = [asyncio.ensure_future(coroutine) for coroutine in coroutines]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


async def merge_streams(
    streams: Sequence[AsyncIterator[RequestOutput]],
) -> AsyncIterator[tuple[int, RequestOutput]]:
    """Interleave several output streams as their items arrive, tagging each with its stream index."""
    if len(streams) == 1:
        async for item in streams[0]:
            yield 0, item
        return
    queue: asyncio.Queue[tuple[int, RequestOutput | BaseException | None]] = asyncio.Queue()

    async def pump(index: int, stream: AsyncIterator[RequestOutput]) -> None:
        try:
            async for item in stream:
                await queue.put((index, item))
        except BaseException as error:
            await queue.put((index, error))
            raise
        else:
            await queue.put((index, None))

    tasks = [asyncio.create_task(pump(index, stream)) for index, stream in enumerate(streams)]
    remaining = len(tasks)
    try:
        while remaining:
            index, item = await queue.get()
            if item is None:
                remaining -= 1
            elif isinstance(item, BaseException):
                raise item
            else:
                yield index, item
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for stream in streams:
            aclose = getattr(stream, "aclose", None)
            if aclose is not None:
                await aclose()


def sse_event(payload: BaseModel | dict[str, Any]) -> str:
    body = (
        payload.model_dump_json(exclude_none=False) if isinstance(payload, BaseModel) else json.dumps(payload)
    )
    return f"data: {body}\n\n"


def sse_error(error: BaseException) -> str:
    """An error that happens after the stream started: sent as an SSE event in OpenAI's error shape."""
    _, info = error_info_for(error)
    return sse_event(ErrorResponse(error=ErrorInfo(**info)))


SSE_DONE = "data: [DONE]\n\n"
