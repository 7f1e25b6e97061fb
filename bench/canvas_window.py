"""How many masks after the current block the threshold policy must show the model (--canvas-window).

    python -m bench.canvas_window                   # both demo dLLMs, every task, windows 0..32 and whole
    python -m bench.canvas_window --examples 8      # a quick sample

For each demo dLLM and window: accuracy per task at max_tokens 64 against the whole canvas (window -1),
model forwards and query positions per generated token, and whether the answers are identical at every
max_tokens in --max-tokens-sweep (the bounded canvas makes max_tokens an upper bound only). Writes
bench/results/canvas_window.{json,md}.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import torch
from vdiff.config import EngineConfig
from vdiff.engine.llm_engine import LLMEngine
from vdiff.sampling_params import SamplingParams

from bench.engine_driver import chat_prompt_ids, drive_closed_loop
from bench.report import DIFFUSION_DEMO_MODELS, RESULTS_DIR, save_results
from bench.run import checkpoint_dir
from bench.tasks import MULTI_ANSWER_TASKS, TASKS, eval_set

WINDOWS = (0, 4, 8, 16, 32, -1)


def run_window(engine: LLMEngine, instances: list, window: int, max_tokens: int) -> dict[str, Any]:
    params = SamplingParams(max_tokens=max_tokens, canvas_window=window, decoding="threshold")
    prompts = [chat_prompt_ids(engine, instance.prompt) for instance in instances]
    positions_before = engine.stats.num_committed_tokens
    started = time.perf_counter()
    completions, wall, forwards = drive_closed_loop(engine, prompts, params, concurrency=16)
    texts = [completion.output.outputs[0].text for completion in completions]
    tokens = sum(len(completion.output.outputs[0].token_ids) for completion in completions)
    per_task: dict[str, list[bool]] = {}
    for instance, text in zip(instances, texts, strict=True):
        per_task.setdefault(instance.task, []).append(instance.check(text))
    return {
        "accuracy": {task: sum(hits) / len(hits) for task, hits in per_task.items()},
        "texts": texts,
        "tokens": tokens,
        "forwards": forwards,
        "committed": engine.stats.num_committed_tokens - positions_before,
        "wall_s": wall or time.perf_counter() - started,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", nargs="+", default=list(DIFFUSION_DEMO_MODELS))
    parser.add_argument("--examples", type=int, default=32, help="eval prompts per task")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument(
        "--trained-max-tokens", type=int, default=16, help="the canvas the demo models were trained on"
    )
    parser.add_argument("--max-tokens-sweep", type=int, nargs="+", default=[48, 96, 256])
    parser.add_argument("--windows", type=int, nargs="+", default=list(WINDOWS))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--name", default="canvas_window")
    parser.add_argument("--out-dir", default=str(RESULTS_DIR))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    instances = [instance for task in TASKS for instance in eval_set(task, args.examples)]
    results: dict[str, Any] = {
        "examples_per_task": args.examples,
        "max_tokens": args.max_tokens,
        "trained_max_tokens": args.trained_max_tokens,
        "models": {},
    }
    lines = [
        f"Threshold policy, temperature 0, max_tokens {args.max_tokens}, {args.examples} prompts per task.",
        "",
        f"| model | window | accuracy single / multi "
        f"| min task Δ vs whole canvas at {args.trained_max_tokens} "
        "| s per token × whole "
        "| same answers for max_tokens " + ", ".join(map(str, args.max_tokens_sweep)) + " |",
        "|---|---|---|---|---|---|",
    ]
    for model in args.models:
        engine = LLMEngine(EngineConfig(model=str(checkpoint_dir(model)), max_num_seqs=16))
        rows = {window: run_window(engine, instances, window, args.max_tokens) for window in args.windows}
        whole = rows.get(-1)
        trained = run_window(engine, instances, -1, args.trained_max_tokens)
        model_results: dict[str, Any] = {}
        for window, row in rows.items():
            stable = all(
                run_window(engine, instances, window, sweep)["texts"] == row["texts"]
                for sweep in args.max_tokens_sweep
            )
            accuracy = row["accuracy"]
            single = [value for task, value in accuracy.items() if task not in MULTI_ANSWER_TASKS]
            multi = [value for task, value in accuracy.items() if task in MULTI_ANSWER_TASKS]
            delta = min(accuracy[task] - trained["accuracy"][task] for task in accuracy)
            cost = (row["wall_s"] / max(row["tokens"], 1)) / (whole["wall_s"] / max(whole["tokens"], 1))
            model_results[str(window)] = {
                "accuracy": accuracy,
                "min_delta_vs_whole": delta,
                "time_per_token_vs_whole": cost,
                "answers_independent_of_max_tokens": stable,
                "forwards": row["forwards"],
                "tokens": row["tokens"],
            }
            lines.append(
                f"| {model} | {'whole' if window < 0 else window} | {sum(single) / len(single):.2f} / "
                f"{sum(multi) / len(multi):.2f} | {delta:+.2f} | {cost:.2f} | {'yes' if stable else 'no'} |"
            )
        results["models"][model] = model_results
        results["models"][model]["trained"] = {"accuracy": trained["accuracy"]}
    save_results(results, "\n".join(lines), Path(args.out_dir), args.name)


if __name__ == "__main__":
    main()
