"""Runs task instances through vdiff's LLMEngine with a fixed number of requests in flight.

Closed loop: `concurrency` requests are in the engine at any time; when one finishes the next one is
added, so latency is measured per request at a steady load, as a serving client would see it.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass

from bench.tasks import TaskInstance


@dataclass(slots=True)
class RequestRecord:
    task: str
    correct: bool
    num_tokens: int
    num_forwards: int
    latency_s: float
    text: str


@dataclass(slots=True)
class RunRecord:
    requests: list[RequestRecord]
    wall_s: float
    batched_forwards: int


def chat_prompt_ids(engine, prompt: str) -> list[int]:
    return engine.tokenizer_info.apply_chat_template(
        [{"role": "user", "content": prompt}], add_generation_prompt=True
    )


@dataclass(slots=True)
class Completion:
    output: object
    """The engine's final RequestOutput."""
    latency_s: float


def drive_closed_loop(
    engine, prompts: list[list[int]], params, concurrency: int
) -> tuple[list[Completion], float, int]:
    """Every prompt (token ids) once, `concurrency` in flight; (completions in prompt order, wall seconds,
    batched forwards)."""
    pending = deque(enumerate(prompts))
    started_at: dict[str, float] = {}
    completions: dict[int, Completion] = {}
    forwards_before = engine.runner.num_forwards
    run_started = time.perf_counter()
    while pending or engine.has_unfinished_requests():
        while pending and len(started_at) < concurrency:
            index, prompt_ids = pending.popleft()
            request_id = f"bench-{index}"
            engine.add_request(request_id, prompt_ids, params)
            started_at[request_id] = time.perf_counter()
        for output in engine.step():
            if output.finished:
                latency = time.perf_counter() - started_at.pop(output.request_id)
                completions[int(output.request_id.removeprefix("bench-"))] = Completion(output, latency)
    wall = time.perf_counter() - run_started
    ordered = [completions[index] for index in range(len(prompts))]
    return ordered, wall, engine.runner.num_forwards - forwards_before


def run_closed_loop(engine, instances: list[TaskInstance], params, concurrency: int) -> RunRecord:
    """Every instance once, `concurrency` at a time; params is a resolved-or-not SamplingParams."""
    prompts = [chat_prompt_ids(engine, instance.prompt) for instance in instances]
    completions, wall, forwards = drive_closed_loop(engine, prompts, params, concurrency)
    records = []
    for instance, completion in zip(instances, completions, strict=True):
        output = completion.output.outputs[0]
        records.append(
            RequestRecord(
                task=instance.task,
                correct=instance.check(output.text),
                num_tokens=len(output.token_ids),
                num_forwards=completion.output.stats.num_forwards,
                latency_s=completion.latency_s,
                text=output.text,
            )
        )
    return RunRecord(requests=records, wall_s=wall, batched_forwards=forwards)
