"""Structured outputs: tokens/s of constrained vs free requests, and validity, on the demo tasks.

    .venv/bin/python -m bench.structured [--per-task 6] [--out bench/results/structured]

For each demo dLLM, policy (reference, threshold 0.9, APD with the demo verifier) and concurrency (1, 16),
the demo tasks' eval prompts run free and constrained, interleaved, best of `--repeats` walls:
- regex: the task's answer format (digits of the task's length; choice of the three codes for `pick`);
- json: {"answer": "<digits>"} as a JSON schema, compact (disable_any_whitespace).
Reported per cell: generated tokens/s, the constrained / free ratio (goal >= 0.8), validity (every
constrained output parses and matches: JSON schema via jsonschema, regex fullmatch), accuracy, and the
grammar-mask fill on the worker thread vs inline (constrained tokens/s with each). Speed claims are
ratios within this one run; nothing else should run meanwhile.
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import sys
import time
from collections import deque
from pathlib import Path
from typing import Any

import torch

from bench.engine_driver import chat_prompt_ids
from bench.run import resolve_model
from bench.tasks import TASKS, TaskInstance, eval_set

ANSWER_SCHEMA = {
    "type": "object",
    "properties": {"answer": {"type": "string", "pattern": "^[0-9]{1,8}$"}},
    "required": ["answer"],
    "additionalProperties": False,
}
POLICIES = {
    "reference": {"decoding": "reference"},
    "threshold-0.9": {"decoding": "threshold", "threshold": 0.9},
    "apd": {"decoding": "apd"},
}
MAX_TOKENS = 24


def answer_regex(instance: TaskInstance) -> str:
    if instance.task == "pick":
        return "|".join(instance.answers)
    lengths = sorted({len(answer) for answer in instance.answers})
    return f"[0-9]{{{lengths[0]},{lengths[-1]}}}"


def constraint(kind: str, instance: TaskInstance):
    from vdiff.structured import StructuredOutputsParams

    if kind == "json":
        return StructuredOutputsParams(json=ANSWER_SCHEMA, disable_any_whitespace=True)
    if instance.task == "pick":
        return StructuredOutputsParams(choice=tuple(instance.answers))
    return StructuredOutputsParams(regex=answer_regex(instance))


def is_valid(kind: str, instance: TaskInstance, text: str) -> bool:
    import jsonschema

    if kind == "json":
        try:
            jsonschema.validate(json.loads(text), ANSWER_SCHEMA)
        except (ValueError, jsonschema.ValidationError):
            return False
        return True
    return re.fullmatch(answer_regex(instance), text) is not None


def answer_text(kind: str, text: str) -> str:
    if kind != "json":
        return text
    try:
        return str(json.loads(text)["answer"])
    except (ValueError, KeyError, TypeError):
        return ""


def run_cell(engine, instances, base, kind: str | None, concurrency: int) -> dict[str, Any]:
    """One closed-loop run; per-request params (each constrained request its own constraint)."""
    from vdiff import SamplingParams

    prompts = [chat_prompt_ids(engine, instance.prompt) for instance in instances]
    params_list = [
        SamplingParams(**base, structured_outputs=constraint(kind, instance) if kind else None)
        for instance in instances
    ]
    completions, wall, forwards = _drive(engine, prompts, params_list, concurrency)
    tokens = valid = correct = stops = 0
    for instance, completion in zip(instances, completions, strict=True):
        output = completion.outputs[0]
        tokens += len(output.token_ids)
        stops += output.finish_reason == "stop"
        if kind:
            valid += is_valid(kind, instance, output.text)
        correct += instance.check(answer_text(kind or "", output.text))
    return {
        "wall_s": wall,
        "tokens": tokens,
        "tokens_per_s": tokens / wall,
        "forwards": forwards,
        "validity": valid / len(instances) if kind else None,
        "accuracy": correct / len(instances),
        "finished_stop": stops / len(instances),
    }


def _drive(engine, prompts, params_list, concurrency):
    """bench.engine_driver's closed loop with one SamplingParams per prompt: (completions, wall, forwards)."""
    pending = deque(enumerate(prompts))
    in_flight = 0
    outputs: dict[int, Any] = {}
    forwards_before = engine.runner.num_forwards
    started = time.perf_counter()
    while pending or engine.has_unfinished_requests():
        while pending and in_flight < concurrency:
            index, prompt_ids = pending.popleft()
            engine.add_request(f"s-{index}", prompt_ids, params_list[index])
            in_flight += 1
        for output in engine.step():
            if output.finished:
                outputs[int(output.request_id.removeprefix("s-"))] = output
                in_flight -= 1
    wall = time.perf_counter() - started
    return (
        [outputs[index] for index in range(len(prompts))],
        wall,
        engine.runner.num_forwards - forwards_before,
    )


def best(runs: list[dict[str, Any]]) -> dict[str, Any]:
    fastest = min(runs, key=lambda run: run["wall_s"])
    return {**fastest, "walls_s": [round(run["wall_s"], 4) for run in runs]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["dream-demo", "llada-demo"])
    parser.add_argument("--per-task", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--out", default="bench/results/structured")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    from vdiff.config import EngineConfig
    from vdiff.engine.decoding import constrained as constrained_module
    from vdiff.engine.llm_engine import LLMEngine

    instances = [instance for task in TASKS for instance in eval_set(task, args.per_task)]
    results: dict[str, Any] = {
        "platform": platform.platform(),
        "torch_threads": torch.get_num_threads(),
        "num_prompts": len(instances),
        "max_tokens": MAX_TOKENS,
        "cells": [],
    }
    threaded_default = constrained_module.MIN_THREADED_MASKS
    for model in args.models:
        model_dir, verifier = resolve_model(model, None)
        engine = LLMEngine(
            EngineConfig(model=str(model_dir), device="cpu", draft_model=str(verifier) if verifier else None)
        )
        for policy, overrides in POLICIES.items():
            if policy == "apd" and verifier is None:
                continue
            base = {"max_tokens": MAX_TOKENS, "temperature": 0.0, "seed": 0, **overrides}
            for concurrency in args.concurrency:
                runs: dict[str, list] = {"free": [], "regex": [], "json": [], "regex-inline-masks": []}
                run_cell(engine, instances[:4], base, "regex", concurrency)  # warm-up
                for _ in range(args.repeats):
                    runs["free"].append(run_cell(engine, instances, base, None, concurrency))
                    runs["regex"].append(run_cell(engine, instances, base, "regex", concurrency))
                    runs["json"].append(run_cell(engine, instances, base, "json", concurrency))
                    constrained_module.MIN_THREADED_MASKS = 1 << 30
                    try:
                        runs["regex-inline-masks"].append(
                            run_cell(engine, instances, base, "regex", concurrency)
                        )
                    finally:
                        constrained_module.MIN_THREADED_MASKS = threaded_default
                cell = {"model": model, "policy": policy, "concurrency": concurrency}
                cell.update({kind: best(kind_runs) for kind, kind_runs in runs.items()})
                free_tps = cell["free"]["tokens_per_s"]
                for kind in ("regex", "json"):
                    cell[f"{kind}_over_free_tokens_per_s"] = cell[kind]["tokens_per_s"] / free_tps
                cell["threaded_over_inline_masks"] = (
                    cell["regex"]["tokens_per_s"] / cell["regex-inline-masks"]["tokens_per_s"]
                )
                results["cells"].append(cell)
                print(
                    f"{model:11s} {policy:14s} c={concurrency:<3d} free {free_tps:7.1f} tok/s (acc "
                    f"{cell['free']['accuracy']:.2f})  regex {cell['regex_over_free_tokens_per_s']:.2f}x "
                    f"(valid {cell['regex']['validity']:.2f}, acc {cell['regex']['accuracy']:.2f})  json "
                    f"{cell['json_over_free_tokens_per_s']:.2f}x (valid {cell['json']['validity']:.2f})  "
                    f"thread/inline {cell['threaded_over_inline_masks']:.2f}x",
                    flush=True,
                )
        del engine
    out = Path(args.out)
    out.with_suffix(".json").write_text(json.dumps(results, indent=2) + "\n")
    out.with_suffix(".md").write_text(markdown(results))
    return 0


def markdown(results: dict[str, Any]) -> str:
    lines = [
        f"# Structured outputs: constrained vs free ({results['num_prompts']} demo-task prompts, "
        f"max_tokens {results['max_tokens']}, temperature 0, CPU, {results['torch_threads']} torch thread)",
        "",
        "Ratios are constrained / free generated tokens/s in the same run (best of the repeats). Validity: "
        "share of constrained outputs that parse and match. thread/inline: constrained (regex) tokens/s with "
        "the grammar masks filled on the worker thread over filled inline.",
        "",
        "| model | policy | c | free tok/s | free acc | regex ratio | regex valid | regex acc | json ratio "
        "| json valid | thread/inline |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for cell in results["cells"]:
        lines.append(
            f"| {cell['model']} | {cell['policy']} | {cell['concurrency']} "
            f"| {cell['free']['tokens_per_s']:.1f} "
            f"| {cell['free']['accuracy']:.2f} | {cell['regex_over_free_tokens_per_s']:.2f} "
            f"| {cell['regex']['validity']:.2f} | {cell['regex']['accuracy']:.2f} "
            f"| {cell['json_over_free_tokens_per_s']:.2f} | {cell['json']['validity']:.2f} "
            f"| {cell['threaded_over_inline_masks']:.2f} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
