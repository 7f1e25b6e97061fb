"""Offline batch inference: `LLM(model=...).generate(prompts, params)` and `.chat(messages, params)`."""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Sequence
from typing import Any

from vdiff.config import EngineConfig
from vdiff.engine.llm_engine import LLMEngine
from vdiff.engine.outputs import RequestOutput
from vdiff.errors import QueueFullError, VdiffValidationError
from vdiff.sampling_params import SamplingParams

PromptType = str | list[int]
Conversation = list[dict[str, Any]]


class LLM:
    """All prompts of a call go through one engine, so they are batched step by step.

    Keyword arguments are EngineConfig fields (dtype, device, max_num_seqs, block_length, ...).
    """

    def __init__(self, model: str, **engine_args: Any) -> None:
        unknown = set(engine_args) - EngineConfig.field_names()
        if unknown:
            raise TypeError(f"Unknown engine arguments: {', '.join(sorted(unknown))}")
        self.llm_engine = LLMEngine(EngineConfig(model=model, **engine_args))
        self.tokenizer_info = self.llm_engine.tokenizer_info
        self._request_ids = itertools.count()

    def get_tokenizer(self) -> Any:
        return self.tokenizer_info.tokenizer

    def generate(
        self,
        prompts: PromptType | Sequence[PromptType],
        sampling_params: SamplingParams | Sequence[SamplingParams] | None = None,
    ) -> list[RequestOutput]:
        """Generate for every prompt (text or token ids); outputs come back in prompt order."""
        prompt_ids = [self._encode(prompt) for prompt in _as_prompt_list(prompts)]
        params = _broadcast_params(sampling_params, len(prompt_ids))
        return self._run(prompt_ids, params)

    def chat(
        self,
        messages: Conversation | Sequence[Conversation],
        sampling_params: SamplingParams | Sequence[SamplingParams] | None = None,
        chat_template: str | None = None,
        add_generation_prompt: bool = True,
    ) -> list[RequestOutput]:
        """Apply the tokenizer's chat template to one conversation or a list of them, then generate."""
        conversations = [messages] if messages and isinstance(messages[0], dict) else list(messages)
        prompt_ids = [
            self.tokenizer_info.apply_chat_template(
                list(conversation), add_generation_prompt=add_generation_prompt, chat_template=chat_template
            )
            for conversation in conversations
        ]
        params = _broadcast_params(sampling_params, len(prompt_ids))
        return self._run(prompt_ids, params)

    def _encode(self, prompt: PromptType) -> list[int]:
        if isinstance(prompt, str):
            return self.tokenizer_info.encode(prompt, add_special_tokens=True)
        return list(prompt)

    def _run(self, prompt_ids: list[list[int]], params: list[SamplingParams]) -> list[RequestOutput]:
        engine = self.llm_engine
        pending = deque(  # every request is admitted before anything runs
            engine.process_request(ids, request_params, f"offline-{next(self._request_ids)}")
            for ids, request_params in zip(prompt_ids, params, strict=True)
        )
        order = [request.request_id for request in pending]
        finished: dict[str, RequestOutput] = {}
        while pending or engine.has_unfinished_requests():
            while pending:
                try:
                    engine.add_processed(pending[0])
                except QueueFullError:
                    if not engine.has_unfinished_requests():
                        raise  # it can never fit (n > max_num_seqs with no waiting room)
                    break
                pending.popleft()
            for output in engine.step():
                if output.finished:
                    finished[output.request_id] = output
            for _, error in engine.pop_failures():
                for request_id in order:
                    engine.abort_request(request_id)
                raise error
        return [finished[request_id] for request_id in order]


def _as_prompt_list(prompts: PromptType | Sequence[PromptType]) -> list[PromptType]:
    if isinstance(prompts, str):
        return [prompts]
    prompts = list(prompts)
    if prompts and all(isinstance(token, int) for token in prompts):
        return [prompts]  # one prompt given as token ids
    if not prompts:
        raise VdiffValidationError("No prompts given", "prompt")
    return prompts


def _broadcast_params(
    params: SamplingParams | Sequence[SamplingParams] | None, num_prompts: int
) -> list[SamplingParams]:
    if params is None:
        return [SamplingParams()] * num_prompts
    if isinstance(params, SamplingParams):
        return [params] * num_prompts
    params = list(params)
    if len(params) != num_prompts:
        raise VdiffValidationError(
            f"Got {len(params)} SamplingParams for {num_prompts} prompts", "sampling_params"
        )
    return params
