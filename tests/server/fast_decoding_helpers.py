"""Drive an LLMEngine to completion for the fast-decoding tests (no engine internals touched)."""

from __future__ import annotations

from dataclasses import dataclass

from vdiff.config import EngineConfig
from vdiff.engine.llm_engine import LLMEngine
from vdiff.sampling_params import SamplingParams

PROMPTS = [[5, 6, 7, 8], [40, 41], [100, 3, 9, 27, 31, 77, 12], [200, 201, 202]]


@dataclass(slots=True)
class Finished:
    token_ids: list[int]
    finish_reason: str | None
    num_forwards: int


def make_engine(model_dir, **config) -> LLMEngine:
    return LLMEngine(EngineConfig(model=str(model_dir), device="cpu", **config))


def run(
    engine: LLMEngine, jobs: list[tuple[list[int], SamplingParams]], stagger_steps: int = 0
) -> list[Finished]:
    """Run the jobs in one engine; job i joins after i * stagger_steps steps. Results in job order."""
    results: dict[str, Finished] = {}
    pending = [(f"job-{i}", prompt, params) for i, (prompt, params) in enumerate(jobs)]
    step = 0
    while pending or engine.has_unfinished_requests():
        while pending and (stagger_steps == 0 or step >= stagger_steps * int(pending[0][0].split("-")[1])):
            request_id, prompt, params = pending.pop(0)
            engine.add_request(request_id, prompt, params)
        for output in engine.step():
            if output.finished:
                completion = output.outputs[0]
                results[output.request_id] = Finished(
                    list(completion.token_ids), completion.finish_reason, output.stats.num_forwards
                )
        step += 1
    return [results[f"job-{i}"] for i in range(len(jobs))]


def run_one_by_one(engine: LLMEngine, jobs: list[tuple[list[int], SamplingParams]]) -> list[Finished]:
    return [run(engine, [job])[0] for job in jobs]
