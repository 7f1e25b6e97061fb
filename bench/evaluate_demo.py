"""Per-task accuracy of the demo models with the reference decoder, written next to each checkpoint.

    python -m bench.evaluate_demo                       # the shipped models, 100 eval prompts per task
    python -m bench.evaluate_demo --models DIR --examples 20

dLLMs go through vdiff's offline API (`vdiff.LLM(...).chat`, decoding 'reference': one token per step
for LLaDA; Dream's own schedule with steps = max_tokens). The causal verifier, which the engine does
not serve on its own, is decoded greedily through the same loaded module.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.tasks import MULTI_ANSWER_TASKS, SINGLE_ANSWER_TASKS, TASKS, TaskInstance, eval_set

MAX_TOKENS = 16
ACCURACY_FILE = "accuracy.json"


DECODING = {"sdar": "block"}
"""Decoding per model_type (block-diffusion models decode with their exact block cache); else 'reference'."""


def diffusion_answers(model_dir: Path, instances: list[TaskInstance]) -> list[str]:
    from vdiff import LLM, SamplingParams

    model_type = json.loads((model_dir / "config.json").read_text())["model_type"]
    decoding = DECODING.get(model_type, "reference")
    llm = LLM(model=str(model_dir), device="cpu", max_num_seqs=64)
    params = SamplingParams(max_tokens=MAX_TOKENS, temperature=0.0, decoding=decoding)
    outputs = llm.chat([[{"role": "user", "content": i.prompt}] for i in instances], params)
    return [output.outputs[0].text for output in outputs]


def causal_answers(model_dir: Path, instances: list[TaskInstance]) -> list[str]:
    import torch
    from tokenizers import Tokenizer
    from transformers import AutoTokenizer
    from vdiff.config import EngineConfig
    from vdiff.models.loader import load_model

    from bench.demo_training import (
        PROMPT_PLACEHOLDER,
        ChatEncoder,
        SpecialIds,
        decode_answer,
        greedy_one_token_per_step,
        make_batch,
    )

    model = load_model(EngineConfig(model=str(model_dir), device="cpu")).model
    tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    rendered = AutoTokenizer.from_pretrained(str(model_dir)).apply_chat_template(
        [{"role": "user", "content": PROMPT_PLACEHOLDER}], add_generation_prompt=True, tokenize=False
    )
    encoder = ChatEncoder(tokenizer, rendered)
    pad = tokenizer.token_to_id("<|endoftext|>")
    end = json.loads((model_dir / "config.json").read_text())["eos_token_id"]  # the chat turn's end
    special = SpecialIds(mask=pad, pad=pad, end_of_answer=end)
    answers = []
    with torch.no_grad():
        for start in range(0, len(instances), 64):
            chunk = instances[start : start + 64]
            batch = make_batch([(i.prompt, i.answers[0]) for i in chunk], encoder, special, MAX_TOKENS)
            rows = greedy_one_token_per_step(model, batch, special, logit_shift=True, is_causal=True)
            answers += [decode_answer(row.tolist(), tokenizer, {pad, end}) for row in rows]
    return answers


def evaluate(model_dir: Path, examples: int) -> dict[str, Any]:
    model_type = json.loads((model_dir / "config.json").read_text())["model_type"]
    instances = [instance for task in TASKS for instance in eval_set(task, examples)]
    started = time.monotonic()
    if model_type == "qwen2":
        answers, decoder = (
            causal_answers(model_dir, instances),
            "greedy autoregressive (one token per forward)",
        )
    elif model_type == "sdar":
        answers = diffusion_answers(model_dir, instances)
        decoder = "vdiff block policy (exact block cache), max_tokens 16, B steps per block, temperature 0"
    else:
        answers = diffusion_answers(model_dir, instances)
        decoder = "vdiff reference policy, max_tokens 16, steps 16 (LLaDA: one token per step), temperature 0"
    per_task: dict[str, list[bool]] = {task: [] for task in TASKS}
    for instance, answer in zip(instances, answers, strict=True):
        per_task[instance.task].append(instance.check(answer))
    accuracy = {task: sum(hits) / len(hits) for task, hits in per_task.items() if hits}
    return {
        "decoder": decoder,
        "examples_per_task": examples,
        "eval_split": "bench.tasks.eval_set(task, n) (prompts disjoint from training)",
        "accuracy": accuracy,
        "single_answer_mean": sum(accuracy[t] for t in SINGLE_ANSWER_TASKS) / len(SINGLE_ANSWER_TASKS),
        "multi_answer_mean": sum(accuracy[t] for t in MULTI_ANSWER_TASKS) / len(MULTI_ANSWER_TASKS),
        "seconds": round(time.monotonic() - started, 1),
    }


def main(argv: list[str] | None = None) -> None:
    from vdiff.demo import DEMO_MODEL_NAMES, demo_model_path

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", nargs="+", default=list(DEMO_MODEL_NAMES), help="demo names or dirs")
    parser.add_argument("--examples", type=int, default=100, help="eval prompts per task")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    for name in args.models:
        model_dir = demo_model_path(name) if name in DEMO_MODEL_NAMES else Path(name)
        result = evaluate(model_dir, args.examples)
        (model_dir / ACCURACY_FILE).write_text(json.dumps(result, indent=2) + "\n")
        print(name, json.dumps(result["accuracy"]), f"single={result['single_answer_mean']:.3f}")


if __name__ == "__main__":
    main()
