"""Forward cost per step of the block-diffusion demo (sdar-demo) against the generated length.

    python -m bench.demo_block_cost                  # sdar-demo, max_tokens 32 .. 224, 1 thread

The `block` policy forwards only the current block (4 positions) over an exact cache of the finished
ones, so a step costs about the same whether the answer is 32 or 224 tokens long (attention over the
cache grows, but a tiny part of the step). Each length decodes one token per step (threshold 1,
ignore_eos) so steps = max_tokens; the table is the median time per step as a ratio to max_tokens 32,
interleaved over rounds in one run. Writes bench/results/demo_block_cost.{json,md}.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from vdiff.config import EngineConfig
from vdiff.demo import demo_model_path
from vdiff.engine.llm_engine import LLMEngine
from vdiff.sampling_params import SamplingParams

from bench.report import RESULTS_DIR, save_results

LENGTHS = (32, 96, 224)


def seconds_per_step(engine: LLMEngine, prompt: list[int], max_tokens: int) -> float:
    params = SamplingParams(max_tokens=max_tokens, temperature=0.0, threshold=1.0, ignore_eos=True)
    engine.add_request(f"len-{max_tokens}-{time.monotonic_ns()}", prompt, params)
    forwards_before, started = engine.runner.num_forwards, time.perf_counter()
    while engine.has_unfinished_requests():
        engine.step()
    return (time.perf_counter() - started) / max(1, engine.runner.num_forwards - forwards_before)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    engine = LLMEngine(EngineConfig(model=str(demo_model_path("sdar-demo")), device="cpu"))
    prompt = engine.tokenizer_info.tokenizer.encode("Reverse 1234.")
    times: dict[int, list[float]] = {length: [] for length in LENGTHS}
    for _ in range(args.rounds):
        for length in LENGTHS:
            times[length].append(seconds_per_step(engine, prompt, length))
    base = statistics.median(times[LENGTHS[0]])
    rows = [
        {"max_tokens": length, "ms_per_step": round(1e3 * statistics.median(times[length]), 3),
         "ratio_to_32": round(statistics.median(times[length]) / base, 2)}
        for length in LENGTHS
    ]  # fmt: skip
    lines = ["| max_tokens | time per step vs max_tokens 32 |", "|---|---|"]
    lines += [f"| {row['max_tokens']} | {row['ratio_to_32']:.2f}x |" for row in rows]
    save_results({"model": "sdar-demo", "rows": rows}, "\n".join(lines), RESULTS_DIR, "demo_block_cost")


if __name__ == "__main__":
    main()
