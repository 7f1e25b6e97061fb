"""Engine TokenLogprobs -> the two OpenAI wire formats (completions' legacy lists, chat's content list).

Token strings follow vLLM: each id decoded alone with special tokens kept (`tokenizer.decode([id])`), or
"token_id:N" with return_tokens_as_token_ids; logprobs are clamped at -9999.0 like vLLM (-inf is not JSON).
The completions format lists the sampled token and the top `logprobs` alternatives (OpenAI's k + 1); chat's
top_logprobs are the `top_logprobs` most likely tokens, most likely first."""

from __future__ import annotations

import math
from collections.abc import Sequence

from vdiff.engine.outputs import TokenLogprob
from vdiff.entrypoints.openai.chat_completion.protocol import (
    ChatCompletionLogProb,
    ChatCompletionLogProbs,
    ChatCompletionLogProbsContent,
)
from vdiff.entrypoints.openai.common import PromptLogprob
from vdiff.entrypoints.openai.completion.protocol import CompletionLogProbs
from vdiff.tokenizer import TokenizerInfo

MIN_LOGPROB = -9999.0


def clamp(logprob: float) -> float:
    return MIN_LOGPROB if math.isnan(logprob) else max(float(logprob), MIN_LOGPROB)


class TokenNamer:
    """The string of one token id, cached per request (a stream names the same ids over and over)."""

    def __init__(self, tokenizer_info: TokenizerInfo, as_token_ids: bool) -> None:
        self.tokenizer_info = tokenizer_info
        self.as_token_ids = as_token_ids
        self._cache: dict[int, str] = {}

    def __call__(self, token_id: int) -> str:
        name = self._cache.get(token_id)
        if name is None:
            if self.as_token_ids:
                name = f"token_id:{token_id}"
            else:
                name = self.tokenizer_info.decode([token_id], skip_special_tokens=False)
            self._cache[token_id] = name
        return name


def most_likely_first(entry: TokenLogprob) -> list[tuple[int, float]]:
    return sorted(entry.top, key=lambda item: -item[1])


def utf8(text: str) -> list[int]:
    return list(text.encode("utf-8", errors="replace"))


def completion_logprobs(
    entries: Sequence[TokenLogprob], name: TokenNamer, initial_text_offset: int = 0
) -> CompletionLogProbs:
    result = CompletionLogProbs()
    offset = initial_text_offset
    for entry in entries:
        token = name(entry.token_id)
        top = {token: clamp(entry.logprob)}
        for token_id, logprob in most_likely_first(entry):
            top.setdefault(name(token_id), clamp(logprob))
        result.tokens.append(token)
        result.token_logprobs.append(clamp(entry.logprob))
        result.top_logprobs.append(top)
        result.text_offset.append(offset)
        offset += len(token)
    return result


def next_text_offset(logprobs: CompletionLogProbs, current: int) -> int:
    """Where the next streamed chunk's offsets start (advanced by the tokens just reported, like vLLM)."""
    if not logprobs.tokens:
        return current
    return logprobs.text_offset[-1] + len(logprobs.tokens[-1])


def chat_logprobs(entries: Sequence[TokenLogprob], name: TokenNamer) -> ChatCompletionLogProbs:
    content = []
    for entry in entries:
        token = name(entry.token_id)
        top = []
        for token_id, logprob in most_likely_first(entry):
            alternative = name(token_id)
            top.append(
                ChatCompletionLogProb(token=alternative, logprob=clamp(logprob), bytes=utf8(alternative))
            )
        content.append(
            ChatCompletionLogProbsContent(
                token=token, logprob=clamp(entry.logprob), bytes=utf8(token), top_logprobs=top
            )
        )
    return ChatCompletionLogProbs(content=content)


def prompt_logprobs(entries: Sequence[TokenLogprob | None] | None, name: TokenNamer) -> list | None:
    """vLLM's prompt_logprobs: per prompt position None (the first) or {token id: logprob, rank, text},
    the prompt token first, then the most likely alternatives."""
    if entries is None:
        return None
    result: list[dict[int, PromptLogprob] | None] = []
    for entry in entries:
        if entry is None:
            result.append(None)
            continue
        ranked = {entry.token_id: PromptLogprob(logprob=clamp(entry.logprob), rank=entry.rank,
                                                decoded_token=name(entry.token_id))}  # fmt: skip
        for rank, (token_id, logprob) in enumerate(most_likely_first(entry), start=1):
            ranked.setdefault(
                token_id, PromptLogprob(logprob=clamp(logprob), rank=rank, decoded_token=name(token_id))
            )
        result.append(ranked)
    return result


def echo_logprobs(
    prompt_ids: Sequence[int],
    prompt_entries: Sequence[TokenLogprob | None],
    entries: Sequence[TokenLogprob],
    stop_entry: TokenLogprob | None,
    name: TokenNamer,
) -> CompletionLogProbs:
    """echo + logprobs: the prompt's tokens (the first without a logprob, as vLLM), the completion's, and
    the end token that finished it (vLLM lists it: lm-eval takes [ctxlen:-1] of this list)."""
    first = name(prompt_ids[0])
    scored = [entry for entry in prompt_entries[1:] if entry is not None]
    tail = [stop_entry] if stop_entry is not None else []
    result = completion_logprobs([*scored, *entries, *tail], name, initial_text_offset=len(first))
    result.tokens.insert(0, first)
    result.token_logprobs.insert(0, None)
    result.top_logprobs.insert(0, None)
    result.text_offset.insert(0, 0)
    return result
