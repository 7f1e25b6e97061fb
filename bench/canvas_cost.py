"""A step's forward cost against max_tokens, with the bounded canvas and with the whole canvas.

    python -m bench.canvas_cost            # random-weight LLaDA layout, context 4096, 2 threads

The first block of a request is decoded at max_tokens 256 and 2048, with the default --canvas-window
(256) and with -1 (the whole canvas), interleaved over rounds; the table is the median time per engine
step as a ratio to max_tokens 256 in the same run (the claim: within 1.2x with the bounded canvas).
Writes bench/results/canvas_cost.{json,md}.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from vdiff.config import EngineConfig
from vdiff.engine.llm_engine import LLMEngine
from vdiff.sampling_params import SamplingParams

from bench.report import RESULTS_DIR, save_results

sys.path.append(str(Path(__file__).resolve().parent.parent / "tests"))
from checkpoint_factory import make_llada_checkpoint

CASES = [(256, 256), (2048, 256), (256, -1), (2048, -1)]
"""(max_tokens, canvas_window)"""


def time_first_block(engine: LLMEngine, prompt: list[int], max_tokens: int, window: int, steps: int) -> float:
    params = SamplingParams(max_tokens=max_tokens, canvas_window=window, threshold=1.0, ignore_eos=True)
    engine.add_request("cost", prompt, params)
    started = time.perf_counter()
    for _ in range(steps):
        engine.step()
    elapsed = (time.perf_counter() - started) / steps
    engine.abort_request("cost")
    return elapsed


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=4, help="steps timed per case and round (first block)")
    parser.add_argument("--d-model", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--name", default="canvas_cost")
    parser.add_argument("--out-dir", default=str(RESULTS_DIR))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as folder:
        checkpoint = make_llada_checkpoint(
            Path(folder), n_layers=args.layers, d_model=args.d_model, n_heads=4, n_kv_heads=4,
            mlp_hidden_size=4 * args.d_model, max_sequence_length=4096,
        )  # fmt: skip
        engine = LLMEngine(EngineConfig(model=str(checkpoint), block_length=32, kv_cache_memory_bytes=0))
        prompt = engine.tokenizer_info.encode("the quick brown fox jumps over the lazy dog " * 6)[:64]
        times: dict[tuple[int, int], list[float]] = {case: [] for case in CASES}
        for _ in range(args.rounds):
            for case in CASES:
                times[case].append(time_first_block(engine, prompt, *case, args.steps))
    medians = {case: statistics.median(values) for case, values in times.items()}
    lines = [
        f"Random-weight LLaDA layout (d_model {args.d_model}, {args.layers} layers), prompt 64 tokens, "
        f"block 32, {args.steps} steps of the first block, median of {args.rounds} interleaved rounds.",
        "",
        "| canvas_window | max_tokens 256 | max_tokens 2048 | 2048 / 256 |",
        "|---|---|---|---|",
    ]
    results: dict[str, Any] = {"rounds": args.rounds, "steps": args.steps, "cases": {}}
    for window in (256, -1):
        short, long = medians[(256, window)], medians[(2048, window)]
        label = "256 (default)" if window == 256 else "-1 (whole canvas)"
        lines.append(f"| {label} | 1.00× | {long / short:.2f}× | {long / short:.2f} |")
        results["cases"][str(window)] = {"ratio_2048_over_256": long / short}
    save_results(results, "\n".join(lines), Path(args.out_dir), args.name)


if __name__ == "__main__":
    main()
