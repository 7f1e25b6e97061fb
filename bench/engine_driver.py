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


def run_closed_loop(engine, instances: list[TaskInstance], params, concurrency: int) -> RunRecord:
    """Every instance once, `concurrency` at a time; params is a resolved-or-not SamplingParams."""
    pending = deque(enumerate(instances))
    started_at: dict[str, float] = {}
    records: dict[int, RequestRecord] = {}
    forwards_before = engine.runner.num_forwards
    run_started = time.perf_counter()
    while pending or engine.has_unfinished_requests():
        while pending and len(started_at) < concurrency:
            index, instance = pending.popleft()
            request_id = f"bench-{index}"
            engine.add_request(request_id, chat_prompt_ids(engine, instance.prompt), params)
            started_at[request_id] = time.perf_counter()
        for output in engine.step():
            if not output.finished:
                continue
            latency = time.perf_counter() - started_at.pop(output.request_id)
            index = int(output.request_id.removeprefix("bench-"))
            completion = output.outputs[0]
            records[index] = RequestRecord(
                task=instances[index].task,
                correct=instances[index].check(completion.text),
                num_tokens=len(completion.token_ids),
                num_forwards=output.stats.num_forwards,
                latency_s=latency,
                text=completion.text,
            )
    wall = time.perf_counter() - run_started
    return RunRecord(
        requests=[records[i] for i in range(len(instances))],
        wall_s=wall,
        batched_forwards=engine.runner.num_forwards - forwards_before,
    )
