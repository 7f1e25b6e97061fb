"""Batching gain at serving shapes: N requests 16 at a time vs the same N one by one (vLLM's
`benchmark_throughput` with a fixed-length dataset).

    python -m bench.throughput                         # both demo dLLMs, 64-token prompts, 128 tokens out
    python -m bench.throughput --models DIR --input-len 64 --output-len 128 --num-requests 16

The task suite (bench.run) decodes ~3-token answers after ~20-token prompts; this runs prompts of
`--input-len` tokens (eval prompts of the suite joined and cut) and makes every request generate exactly
`--output-len` tokens (`ignore_eos`), so every configuration does the same work at every concurrency.
At temperature 0 a batched run must give the same tokens as the one-by-one run; the result records
whether it did. Times are ratios within one run, never assertions.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.engine_driver import drive_closed_loop
from bench.report import DIFFUSION_DEMO_MODELS, RESULTS_DIR, save_results
from bench.tasks import TASKS, eval_set

CONFIGURATIONS: dict[str, dict[str, Any]] = {
    "reference": {"decoding": "reference"},
    "threshold-0.9": {"decoding": "threshold", "threshold": 0.9},
    "threshold-0.9-dual-cache": {"decoding": "threshold", "threshold": 0.9, "kv_cache": "dual"},
}
"""Name -> SamplingParams overrides: the published decoder, the server default, the default with the
block cache (vicinity and block length at their defaults)."""


def fixed_length_prompts(engine, num_requests: int, input_len: int) -> list[list[int]]:
    """`num_requests` distinct prompts of exactly `input_len` token ids: suite prompts joined and cut."""
    texts = [instance.prompt for task in TASKS for instance in eval_set(task, 64)]
    encode = engine.tokenizer_info.encode
    prompts = []
    for index in range(num_requests):
        ids: list[int] = []
        offset = index * 7
        while len(ids) < input_len:
            ids += encode(" " + texts[offset % len(texts)], add_special_tokens=False)
            offset += 1
        prompts.append(ids[:input_len])
    return prompts


def measure(
    model_dir: Path,
    configurations: list[str],
    num_requests: int,
    input_len: int,
    output_len: int,
    concurrency: int,
    device: str = "cpu",
) -> dict[str, Any]:
    from vdiff import SamplingParams
    from vdiff.config import EngineConfig
    from vdiff.engine.llm_engine import LLMEngine

    engine = LLMEngine(EngineConfig(model=str(model_dir), device=device, max_num_seqs=concurrency))
    prompts = fixed_length_prompts(engine, num_requests, input_len)
    cells: dict[str, Any] = {}
    for name in configurations:
        params = SamplingParams(
            max_tokens=output_len, temperature=0.0, ignore_eos=True, **CONFIGURATIONS[name]
        )
        drive_closed_loop(engine, prompts[:1], params, 1)  # warm-up, not measured
        runs = {c: drive_closed_loop(engine, prompts, params, c) for c in (1, concurrency)}
        tokens = {c: [list(done.output.outputs[0].token_ids) for done in runs[c][0]] for c in runs}
        generated = sum(len(ids) for ids in tokens[1])
        per_concurrency = {
            str(c): {
                "wall_s": wall,
                "tokens_per_s": generated / wall,
                "batched_forwards": forwards,
                "latency_mean_s": sum(done.latency_s for done in completions) / len(completions),
            }
            for c, (completions, wall, forwards) in runs.items()
        }
        cells[name] = {
            "overrides": CONFIGURATIONS[name],
            "generated_tokens": generated,
            "every_request_generated_output_len": all(len(ids) == output_len for ids in tokens[1]),
            "same_tokens_at_every_concurrency": tokens[1] == tokens[concurrency],
            "concurrency": per_concurrency,
            "speedup": per_concurrency[str(concurrency)]["tokens_per_s"]
            / per_concurrency["1"]["tokens_per_s"],
        }
    return cells


def markdown(results: dict[str, Any]) -> str:
    settings = results["settings"]
    top = settings["concurrency"]
    lines = [
        f"| model | configuration | tok/s one by one | tok/s {top} at a time | × | same tokens |",
        "|---|---|---|---|---|---|",
    ]
    for model, cells in results["models"].items():
        for name, cell in cells.items():
            one, many = cell["concurrency"]["1"], cell["concurrency"][str(top)]
            lines.append(
                f"| {model} | {name} | {one['tokens_per_s']:.0f} | {many['tokens_per_s']:.0f} "
                f"| {cell['speedup']:.2f}× | {'yes' if cell['same_tokens_at_every_concurrency'] else 'NO'} |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", nargs="+", default=list(DIFFUSION_DEMO_MODELS), help="demo names or dirs")
    parser.add_argument(
        "--configurations", nargs="+", default=list(CONFIGURATIONS), choices=list(CONFIGURATIONS)
    )
    parser.add_argument("--num-requests", type=int, default=16)
    parser.add_argument("--input-len", type=int, default=64)
    parser.add_argument("--output-len", type=int, default=128)
    parser.add_argument("--concurrency", type=int, default=16, help="compared with 1 (one by one)")
    parser.add_argument("--device", default="cpu", help="engine device (cpu, cuda, ...)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--name", default="throughput")
    parser.add_argument("--out-dir", type=Path, default=RESULTS_DIR)
    args = parser.parse_args(argv)

    import torch

    from bench.run import checkpoint_dir

    torch.set_num_threads(args.threads)
    results: dict[str, Any] = {
        "settings": {k: v for k, v in vars(args).items() if k not in ("out_dir", "models", "name")},
        "models": {},
    }
    for name in args.models:
        model_dir = checkpoint_dir(name)
        results["models"][model_dir.name] = measure(
            model_dir,
            args.configurations,
            args.num_requests,
            args.input_len,
            args.output_len,
            args.concurrency,
            args.device,
        )
    save_results(results, markdown(results), args.out_dir, args.name)


if __name__ == "__main__":
    main()
