"""Quality/speed benchmark: the task suite through vdiff for every decoding policy.

    python -m bench.run                 # full run: engine + HTTP server, the demo dLLMs and sdar-demo
    python -m bench.run --quick         # a small sample (a couple of minutes on a laptop)

For each model, policy, task and concurrency (1, 4, 16): accuracy, generated tokens/s, model forwards
per generated token and latency p50/p95; then the same through `vdiff serve` with the openai client.
Speed is reported as ratios to the model's reference row measured in the same run (bench/policies.py:
the family's one-token-per-step rule; for sdar-demo the block policy at one token per step). Writes
bench/results/<name>.json, <name>.png (accuracy vs tokens/s) and <name>.md (the summary table).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # `python bench/run.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.engine_driver import RunRecord, chat_prompt_ids, run_closed_loop
from bench.policies import Policy, curves, select_policies
from bench.report import (
    DIFFUSION_DEMO_MODELS,
    RESULTS_DIR,
    accuracy_groups,
    add_ratios,
    summarize_runs,
    write_report,
)
from bench.tasks import TASKS, TaskInstance, eval_set

logger = logging.getLogger("bench.run")

BENCH_RUN_MODELS = (*DIFFUSION_DEMO_MODELS, "sdar-demo")
"""This benchmark's default models: the demo dLLMs and the block-diffusion demo (SDAR layout, block 4)."""

VERIFIER_DEMO_MODELS = {"dream-demo": "qwen2-ar-mini-demo", "llada-demo": "qwen2-ar-mini-llada-demo"}
"""The small APD verifier (same tokenizer) of each demo dLLM."""


def checkpoint_dir(name: str) -> Path:
    """A shipped demo model's directory for its name, else the name as a directory."""
    from vdiff.demo import DEMO_MODEL_NAMES, demo_model_path

    return demo_model_path(name) if name in DEMO_MODEL_NAMES else Path(name)


def resolve_model(name: str, draft_model: str | None) -> tuple[Path, Path | None]:
    """(checkpoint dir, APD verifier dir or None) for a demo model name or a directory."""
    from vdiff.demo import is_demo_model_available

    if draft_model:
        return checkpoint_dir(name), Path(draft_model)
    verifier_name = VERIFIER_DEMO_MODELS.get(name)
    verifier = None
    if verifier_name is not None and is_demo_model_available(verifier_name):
        verifier = checkpoint_dir(verifier_name)
    return checkpoint_dir(name), verifier


def is_block_diffusion(model_dir: Path) -> bool:
    """Whether the checkpoint's family has block-causal attention (SDAR, LLaDA2, Fast-dLLM v2)."""
    from vdiff.models.registry import get_family

    config = json.loads((model_dir / "config.json").read_text())
    return get_family(config.get("model_type"), trust_remote_code=True).block_causal


def _policy_params(policy: Policy, max_tokens: int, block_diffusion: bool):
    from vdiff import SamplingParams

    overrides = policy.overrides_for(block_diffusion)
    return SamplingParams(max_tokens=max_tokens, temperature=0.0, seed=0, **overrides)


def _cells(runs_by_task: dict[str, dict[int, RunRecord]], concurrencies: list[int]) -> dict[str, Any]:
    per_task = {
        task: {str(c): summarize_runs([runs[c]]) for c in concurrencies}
        for task, runs in runs_by_task.items()
    }
    overall = {str(c): summarize_runs([runs[c] for runs in runs_by_task.values()]) for c in concurrencies}
    top = str(max(concurrencies))
    task_accuracy = {task: cells[top] for task, cells in per_task.items()}
    consistent = all(
        len({round(cells[str(c)]["accuracy"], 6) for c in concurrencies}) == 1 for cells in per_task.values()
    )
    return {
        "accuracy": accuracy_groups(task_accuracy),
        "accuracy_per_task": {task: cell["accuracy"] for task, cell in task_accuracy.items()},
        "accuracy_same_at_every_concurrency": consistent,
        "overall": overall,
        "per_task": per_task,
    }


def bench_engine(
    model_dir: Path,
    verifier: Path | None,
    policies: list[Policy],
    instances: dict[str, list[TaskInstance]],
    concurrencies: list[int],
    max_tokens: int,
    skipped: dict[str, str],
    device: str = "cpu",
) -> dict[str, Any]:
    from vdiff.config import EngineConfig
    from vdiff.engine.llm_engine import LLMEngine
    from vdiff.errors import VdiffValidationError

    def make_engine(draft: Path | None) -> LLMEngine:
        return LLMEngine(
            EngineConfig(
                model=str(model_dir),
                device=device,
                max_num_seqs=max(concurrencies),
                draft_model=str(draft) if draft else None,
            )
        )

    try:
        default_engine = make_engine(verifier)
    except VdiffValidationError as error:
        if verifier is None:
            raise
        skipped["--draft-model"] = str(error)  # e.g. a verifier with another tokenizer: no APD here
        default_engine = make_engine(None)
    probe = next(iter(instances.values()))[0]
    results: dict[str, Any] = {}
    for policy in policies:
        params = _policy_params(policy, max_tokens, is_block_diffusion(model_dir))
        try:
            engine = default_engine
            if policy.verifier is not None:
                if verifier is None:
                    raise VdiffValidationError(f"{model_dir.name} has no APD verifier", "--draft-model")
                engine = make_engine(checkpoint_dir(policy.verifier))
            engine.process_request(chat_prompt_ids(engine, probe.prompt), params)
        except VdiffValidationError as error:
            skipped[policy.name] = str(error)
            logger.info("skip %s on %s: %s", policy.name, model_dir.name, error)
            continue
        run_closed_loop(engine, [probe], params, 1)  # warm-up, not measured
        runs_by_task: dict[str, dict[int, RunRecord]] = {}
        for task, task_instances in instances.items():
            runs_by_task[task] = {
                c: run_closed_loop(engine, task_instances, params, c) for c in concurrencies
            }
        results[policy.name] = _cells(runs_by_task, concurrencies)
        logger.info(
            "%s engine %s: %s",
            model_dir.name,
            policy.name,
            {k: round(v, 3) for k, v in results[policy.name]["accuracy_per_task"].items()},
        )
    add_ratios(results)
    return results


def bench_http(
    model_name: str,
    model_dir: Path,
    verifier: Path | None,
    policies: list[Policy],
    instances: dict[str, list[TaskInstance]],
    concurrencies: list[int],
    max_tokens: int,
    log_dir: Path,
    skipped: dict[str, str],
    device: str = "cpu",
) -> dict[str, Any]:
    from bench.http_driver import probe_policy, run_http_closed_loop, served_model

    # The server accepts a verifier only with APD as its default; every policy row names its decoding.
    extra_args = ["--device", device]
    if verifier:
        extra_args += ["--decoding", "apd", "--draft-model", str(verifier)]
    results: dict[str, Any] = {}
    with served_model(model_dir, model_name, extra_args, log_dir / f"serve-{model_name}.log") as base_url:
        for policy in policies:
            if policy.verifier is not None:
                skipped[policy.name] = "engine-only row: the server runs one verifier (--draft-model)"
                continue
            body = dict(policy.overrides_for(is_block_diffusion(model_dir)))
            error = probe_policy(base_url, model_name, body, max_tokens)
            if error is not None:
                skipped[policy.name] = error
                continue
            runs_by_task = {
                task: {
                    c: run_http_closed_loop(base_url, model_name, task_instances, body, max_tokens, c)
                    for c in concurrencies
                }
                for task, task_instances in instances.items()
            }
            results[policy.name] = _cells(runs_by_task, concurrencies)
            logger.info("%s http %s: %s", model_name, policy.name, results[policy.name]["accuracy"])
    add_ratios(results)
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", nargs="+", default=list(BENCH_RUN_MODELS), help="demo names or dirs")
    parser.add_argument("--policies", nargs="*", help="policy names from bench/policies.py (default: all)")
    parser.add_argument("--quick", action="store_true", help="small sample: 6 prompts per task, 2 over HTTP")
    parser.add_argument("--examples", type=int, default=32, help="eval prompts per task (engine)")
    parser.add_argument("--http-examples", type=int, default=8, help="eval prompts per task (HTTP)")
    parser.add_argument("--concurrency", nargs="+", type=int, default=[1, 4, 16])
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument(
        "--draft-model", help="APD verifier for the models (default: VERIFIER_DEMO_MODELS, per demo dLLM)"
    )
    parser.add_argument("--no-http", action="store_true", help="skip the HTTP server runs")
    parser.add_argument("--name", default=None, help="results file stem (default: quick or full)")
    parser.add_argument("--out-dir", type=Path, default=RESULTS_DIR)
    parser.add_argument("--device", default="cpu", help="engine and server device (cpu, cuda, ...)")
    parser.add_argument(
        "--threads",
        type=int,
        default=int(os.environ.get("BENCH_THREADS", "2")),
        help="torch threads of the engine runs (the published results: 2, the machine's cores)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)

    import torch

    torch.set_num_threads(args.threads)
    if args.quick:
        args.examples, args.http_examples = min(args.examples, 6), min(args.http_examples, 2)
    name = args.name or ("quick" if args.quick else "full")
    args.out_dir.mkdir(parents=True, exist_ok=True)
    policies = select_policies(args.policies)
    engine_instances = {task: eval_set(task, args.examples) for task in TASKS}
    http_instances = {task: items[: args.http_examples] for task, items in engine_instances.items()}

    results: dict[str, Any] = {
        "name": name,
        "created_unix": int(time.time()),
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "torch_threads": args.threads,
            "device": args.device,
        },
        "settings": {
            "examples_per_task": args.examples,
            "http_examples_per_task": 0 if args.no_http else args.http_examples,
            "concurrency": args.concurrency,
            "max_tokens": args.max_tokens,
            "temperature": 0.0,
            "policies": {policy.name: policy.overrides for policy in policies},
            "policies_on_block_diffusion_models": {
                policy.name: policy.block_overrides for policy in policies if policy.block_overrides
            },
            "curves": curves(policies),
        },
        "models": {},
        "skipped": {},
        "notes": [],
    }
    for model_name in args.models:
        model_dir, verifier = resolve_model(model_name, args.draft_model)
        label = model_dir.name
        transports: dict[str, Any] = {}
        skipped: dict[str, dict[str, str]] = {"engine": {}, "http": {}}
        transports["engine"] = bench_engine(
            model_dir,
            verifier,
            policies,
            engine_instances,
            args.concurrency,
            args.max_tokens,
            skipped["engine"],
            args.device,
        )
        if "--draft-model" in skipped["engine"]:
            verifier = None
        if not args.no_http:
            try:
                transports["http"] = bench_http(
                    label,
                    model_dir,
                    verifier,
                    policies,
                    http_instances,
                    args.concurrency,
                    args.max_tokens,
                    Path(tempfile.gettempdir()),
                    skipped["http"],
                    args.device,
                )
            except (FileNotFoundError, RuntimeError) as error:
                results["notes"].append(f"HTTP benchmark of {label} skipped: {error}")
        results["models"][label] = transports
        if is_block_diffusion(model_dir):
            results.setdefault("block_diffusion_models", []).append(label)
        results["skipped"][label] = skipped
    json_path = args.out_dir / f"{name}.json"
    json_path.write_text(json.dumps(results, indent=2) + "\n")
    print(write_report(results, json_path))
    for note in results["notes"]:
        print(f"note: {note}")


if __name__ == "__main__":
    main()
