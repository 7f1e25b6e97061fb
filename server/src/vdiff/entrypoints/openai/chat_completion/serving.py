"""POST /v1/chat/completions: messages -> chat template -> engine -> chat.completion objects or chunks."""

from __future__ import annotations

import asyncio
import functools
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from vdiff.engine.outputs import CompletionOutput, RequestOutput
from vdiff.entrypoints.openai import canvas_stream
from vdiff.entrypoints.openai.chat_completion.protocol import (
    ChatCompletionChoice,
    ChatCompletionRequest,
    ChatCompletionResponse,
    ChatCompletionStreamChoice,
    ChatCompletionStreamResponse,
    ChatMessageOut,
    DeltaMessage,
)
from vdiff.entrypoints.openai.chat_completion.tool_output import ToolStream, final_message, new_tool_parser
from vdiff.entrypoints.openai.chat_completion.tools import AUTO_NEEDS_FLAGS, ToolChoice
from vdiff.entrypoints.openai.common import UsageInfo, random_id, unix_time, usage_counts
from vdiff.entrypoints.openai.logprobs import TokenNamer, chat_logprobs, prompt_logprobs
from vdiff.entrypoints.openai.serving_base import SSE_DONE, OpenAIServing, PromptJob, sse_error
from vdiff.entrypoints.openai.streaming import FirstOutputs, sse_data
from vdiff.entrypoints.openai.text_input import check_text
from vdiff.errors import VdiffValidationError

CHAT_PARAM_NAMES = {"prompt": "messages", "logprobs": "top_logprobs"}
"""The engine's field names in chat's terms."""
DEFAULT_CHAT_MAX_TOKENS = 256
"""Chat default when the client sends no max_tokens (bounded by the context left; vllm-compatibility.md)."""

TEMPLATE_VARIABLES = ("documents", "tools", "reasoning_effort")
"""Request fields passed to the chat template only when the template reads them; otherwise a 400 (a
template that ignores them would silently drop the client's tools or documents)."""


@dataclass(slots=True)
class ChatJob:
    response_id: str
    job: PromptJob
    prompt_text: str
    role: str
    """The role of the reply: "assistant", or with add_generation_prompt false the last message's (vLLM)."""
    echo: str
    """The last message's content when echo is set and its role is the reply's, else ""."""
    tools: ToolChoice
    """How the answer becomes tool calls (mode "none": it is plain content)."""


class OpenAIServingChat(OpenAIServing):
    def __init__(
        self,
        *args: Any,
        trust_request_chat_template: bool = False,
        enable_auto_tool_choice: bool = False,
        exclude_tools_when_tool_choice_none: bool = False,
        tool_call_parser: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.trust_request_chat_template = trust_request_chat_template
        self.enable_auto_tool_choice = enable_auto_tool_choice
        self.exclude_tools_when_tool_choice_none = exclude_tools_when_tool_choice_none
        self.tool_call_parser = tool_call_parser

    async def prepare(self, request: ChatCompletionRequest) -> tuple[str, ChatJob]:
        """Check the request, then render and tokenize the chat in a worker thread (off the event loop)."""
        model_name = self.resolve_model_name(request.model)
        request.check_supported()
        if request.chat_template is not None and not self.trust_request_chat_template:
            raise VdiffValidationError(
                "chat_template in a request is refused unless the server runs with "
                "--trust-request-chat-template (as vLLM): a template is code the server runs",
                "chat_template",
            )
        tools = request.resolved_tool_choice(auto_enabled=self.enable_auto_tool_choice)
        if tools.mode == "auto":
            if not (self.enable_auto_tool_choice and self.tool_call_parser):
                raise VdiffValidationError(AUTO_NEEDS_FLAGS, "tool_choice")
            request.skip_special_tokens = False  # vLLM's hermes: call tags may be special tokens
        prompt_text, prompt_ids = await asyncio.to_thread(self._tokenize, request)
        job = self.build_job(
            random_id("chatcmpl"), prompt_ids, request, DEFAULT_CHAT_MAX_TOKENS, CHAT_PARAM_NAMES
        )
        conversation = request.conversation()
        role = request.response_role
        echo = ""
        if request.echo and conversation and conversation[-1]["role"] == role:
            echo = conversation[-1]["content"] or ""
        return model_name, ChatJob(request.response_id("chatcmpl"), job, prompt_text, role, echo, tools)

    def _template_kwargs(self, request: ChatCompletionRequest) -> dict[str, Any]:
        kwargs = dict(request.chat_template_kwargs or {})
        if request.continue_final_message:
            kwargs["continue_final_message"] = True
        template = None
        for name in TEMPLATE_VARIABLES:
            value = getattr(request, name)
            if value is None:
                continue
            if name == "tools" and request.tool_choice == "none" and self.exclude_tools_when_tool_choice_none:
                continue  # vLLM's serving_chat: tool_dicts = None
            if template is None:
                template = self.chat_template_text(request.chat_template)
            if not re.search(rf"\b{name}\b", template):
                raise VdiffValidationError(
                    f"{name} is not supported by this model's chat template (it never reads `{name}`); "
                    "pass a chat_template that renders it",
                    name,
                )
            kwargs[name] = [tool.template_dict() for tool in value] if name == "tools" else value
        return kwargs

    def _tokenize(self, request: ChatCompletionRequest) -> tuple[str, list[int]]:
        conversation = request.conversation()
        check_text(conversation, "messages")
        check_text(request.chat_template_kwargs, "chat_template_kwargs")
        check_text(request.chat_template, "chat_template")
        text, prompt_ids = self.render_chat_prompt(
            conversation,
            add_generation_prompt=request.use_generation_prompt,
            kwargs=self._template_kwargs(request),
            chat_template=request.chat_template,
            add_special_tokens=request.add_special_tokens,
            truncating=request.truncate_prompt_tokens is not None,
        )
        truncated = self.truncate(prompt_ids, request)
        if len(truncated) != len(prompt_ids):
            text = self.decode(truncated, skip_special_tokens=False)
        return text, truncated

    def _logprobs(self, namer: TokenNamer | None, choice: CompletionOutput, *, new: bool) -> Any:
        if namer is None:
            return None
        return chat_logprobs((choice.new_logprobs if new else choice.logprobs) or [], namer)

    async def create_chat_completion(self, request: ChatCompletionRequest) -> ChatCompletionResponse:
        model_name, chat = await self.prepare(request)
        final = await self.last_output(chat.job)
        namer = self.token_namer(request) if request.logprobs else None
        choices = []
        for choice in final.outputs:
            message = ChatMessageOut(role=chat.role, content=chat.echo + choice.text)
            finish_reason = choice.finish_reason
            parser = new_tool_parser(chat.tools, self.tool_call_parser)
            if parser is not None:
                message, finish_reason = final_message(
                    chat.role, chat.echo, choice.text, chat.tools, parser, finish_reason,
                    parallel=request.parallel_tool_calls is not False,
                )  # fmt: skip
            choices.append(
                ChatCompletionChoice(
                    index=choice.index,
                    message=message,
                    logprobs=self._logprobs(namer, choice, new=False),
                    finish_reason=finish_reason,
                    stop_reason=choice.stop_reason,
                    token_ids=list(choice.token_ids) if request.return_token_ids else None,
                )
            )
        return ChatCompletionResponse(
            id=chat.response_id,
            model=model_name,
            choices=choices,
            usage=usage_of(chat.job, final),
            prompt_token_ids=list(chat.job.prompt_token_ids) if request.return_token_ids else None,
            prompt_text=chat.prompt_text if request.return_prompt_text else None,
            prompt_logprobs=prompt_logprobs(final.prompt_logprobs, self.token_namer(request))
            if request.prompt_logprobs is not None
            else None,
        )

    async def start_stream(self, request: ChatCompletionRequest) -> AsyncIterator[str]:
        """Admit the request (errors found within ADMISSION_WAIT_S raise here, before headers), then
        return the SSE body iterator, which sends the role chunk at once."""
        model_name, chat = await self.prepare(request)
        firsts = FirstOutputs([self.generate(chat.job)])
        await firsts.admit()
        return self._stream(request, model_name, chat, firsts)

    async def _stream(
        self, request: ChatCompletionRequest, model_name: str, chat: ChatJob, firsts: FirstOutputs
    ) -> AsyncIterator[str]:
        """vLLM's chunks: per choice a role chunk, the echo, then one chunk per frontier advance; each
        carries only the fields vLLM sets (streaming.sse_data)."""
        (stream,) = firsts.streams
        num_prompt = len(chat.job.prompt_token_ids)
        tool_streams = {}
        for index in range(request.n):
            parser = new_tool_parser(chat.tools, self.tool_call_parser)
            if parser is not None:
                parallel = request.parallel_tool_calls is not False
                tool_streams[index] = ToolStream(chat.tools, parser, parallel=parallel)
        namer = self.token_namer(request) if request.logprobs else None
        chunk = functools.partial(
            ChatCompletionStreamResponse,
            id=chat.response_id,
            object="chat.completion.chunk",
            created=unix_time(),
            model=model_name,
        )
        try:
            for index in range(request.n):
                role_chunk = chunk(
                    choices=[
                        ChatCompletionStreamChoice(
                            index=index,
                            delta=DeltaMessage(role=chat.role, content=""),
                            logprobs=None,
                            finish_reason=None,
                        )
                    ],
                    prompt_token_ids=list(chat.job.prompt_token_ids) if request.return_token_ids else None,
                    prompt_text=chat.prompt_text if request.return_prompt_text else None,
                )
                if request.include_continuous_usage:
                    role_chunk.usage = usage_counts(num_prompt, 0)
                yield sse_data(role_chunk)
            if chat.echo:
                for index in range(request.n):
                    echo_chunk = chunk(
                        choices=[
                            ChatCompletionStreamChoice(
                                index=index,
                                delta=DeltaMessage(content=chat.echo),
                                logprobs=None,
                                finish_reason=None,
                            )
                        ]
                    )
                    if request.include_continuous_usage:
                        echo_chunk.usage = usage_counts(num_prompt, 0)
                    yield sse_data(echo_chunk)
            (final,) = await firsts.results()
            if final is not None:
                for data in self._chunks(request, chat, chunk, final, namer, tool_streams):
                    yield data
            async for output in stream:
                final = output
                for data in self._chunks(request, chat, chunk, output, namer, tool_streams):
                    yield data
            if request.include_usage_in_stream and final is not None:
                yield sse_data(chunk(choices=[], usage=usage_of(chat.job, final)), exclude_none=True)
        except Exception as error:  # the stream already started: report in-band, like vLLM
            yield sse_error(error)
        finally:
            firsts.cancel()
        yield SSE_DONE

    def _chunks(
        self,
        request: ChatCompletionRequest,
        chat: ChatJob,
        chunk: Callable[..., ChatCompletionStreamResponse],
        output: RequestOutput,
        namer: TokenNamer | None,
        tool_streams: dict[int, ToolStream],
    ) -> list[str]:
        chunks = canvas_stream.frame_chunks(chunk, output)
        carries_tokens = namer is not None or bool(request.return_token_ids)
        for choice in output.outputs:
            new_ids = choice.new_token_ids
            if not choice.new_text and not (new_ids and carries_tokens) and choice.finish_reason is None:
                continue
            # vLLM: an empty delta only when the choice finished without producing a single token.
            delta = DeltaMessage(content=choice.new_text) if choice.token_ids else DeltaMessage()
            finish_reason = choice.finish_reason
            tool_stream = tool_streams.get(choice.index)
            if tool_stream is not None:
                parsed = tool_stream.delta(choice.text, finished=choice.finish_reason is not None)
                finish_reason = tool_stream.finish_reason(choice.finish_reason)
                if parsed is None and finish_reason is None and not (new_ids and carries_tokens):
                    continue  # a call tag or name still incomplete: nothing to send yet
                delta = parsed or DeltaMessage()
            fields: dict[str, Any] = {
                "index": choice.index,
                "delta": delta,
                "logprobs": self._logprobs(namer, choice, new=True),
                "finish_reason": finish_reason,
                "token_ids": list(new_ids) if request.return_token_ids else None,
            }
            if choice.finish_reason is not None:
                fields["stop_reason"] = choice.stop_reason
            data = chunk(choices=[ChatCompletionStreamChoice(**fields)])
            if request.include_continuous_usage:
                data.usage = usage_counts(len(chat.job.prompt_token_ids), len(choice.token_ids))
            chunks.append(sse_data(data))
        return chunks


def usage_of(job: PromptJob, final: RequestOutput) -> UsageInfo:
    return usage_counts(len(job.prompt_token_ids), sum(len(choice.token_ids) for choice in final.outputs))
