"""Tensor parallelism on CPU (gloo): tokens/s and per-rank memory at -tp 1 and -tp 2, one run.

    python bench/tensor_parallel.py            # writes bench/results/tensor_parallel.{json,md}

A random-weight LLaDA checkpoint in the real layout (tests/checkpoint_factory.py), large enough that the
weights dominate the resident memory, is served by the offline engine at tensor_parallel_size 1 and 2
in turn (the same prompts, temperature 0, reference decoding with fixed steps, and the threshold policy
with the dual cache, whose keys/values stay on their ranks). Per rank it records the weight bytes the
load reports (the slices each rank read) and the resident set size of the process (VmRSS), and it
checks that both sizes produce the same tokens. On a 2-core machine two ranks compete for the cores
and pay a gloo all-reduce per block, so tp 2 is expected to be slower here; the point is correctness
and memory. Numbers are from one run on this machine, never asserted anywhere.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch

from bench.engine_driver import drive_closed_loop
from bench.report import RESULTS_DIR, save_results

SIZES = {"n_layers": 8, "d_model": 512, "n_heads": 8, "n_kv_heads": 8, "mlp_hidden_size": 1536}
PROMPTS = [[5 + i, 6, 7, 8, 9 + i] for i in range(8)]
CONCURRENCY = 4


def rss_bytes(pid: int) -> int:
    for line in (Path("/proc") / str(pid) / "status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def run(checkpoint: Path, tp: int) -> dict:
    from vdiff.config import EngineConfig
    from vdiff.distributed.group import current_group, shutdown_workers
    from vdiff.distributed.messages import parameter_bytes
    from vdiff.engine.llm_engine import LLMEngine
    from vdiff.sampling_params import SamplingParams

    engine = LLMEngine(EngineConfig(model=str(checkpoint), device="cpu", tensor_parallel_size=tp))
    model = engine.loaded.model
    forward = getattr(model, "parallel_forward", None)
    weights = forward.rank_parameter_bytes if forward is not None else [parameter_bytes(model)]
    pids = [os.getpid()] + ([proc.pid for proc in current_group().procs] if tp > 1 else [])
    rss = [rss_bytes(pid) for pid in pids]
    cells = {}
    for name, params in (
        ("reference", SamplingParams(temperature=0.0, max_tokens=32, steps=32, decoding="reference")),
        (
            "threshold+dual",
            SamplingParams(temperature=0.0, max_tokens=32, decoding="threshold", kv_cache="dual"),
        ),
    ):
        drive_closed_loop(engine, PROMPTS[:2], params, CONCURRENCY)  # warm-up
        completions, wall, _ = drive_closed_loop(engine, PROMPTS, params, CONCURRENCY)
        tokens = [list(c.output.outputs[0].token_ids) for c in completions]
        cells[name] = {"wall_s": wall, "tokens_per_s": sum(map(len, tokens)) / wall, "tokens": tokens}
    shutdown_workers()
    return {"tp": tp, "weight_bytes_per_rank": weights, "rss_bytes_per_rank": rss, "cells": cells}


def main() -> None:
    from checkpoint_factory import make_llada_checkpoint

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as work:
        checkpoint = make_llada_checkpoint(Path(work) / "llada", sharded=True, **SIZES)
        started = time.time()
        runs = [run(checkpoint, 1), run(checkpoint, 2)]
    single, parallel = runs
    identical = {
        name: single["cells"][name]["tokens"] == parallel["cells"][name]["tokens"] for name in single["cells"]
    }
    mib = 2**20
    lines = [
        "# Tensor parallelism on CPU (gloo), one run",
        "",
        f"Random-weight LLaDA {SIZES}, float32, {len(PROMPTS)} prompts x 32 tokens, {CONCURRENCY} in flight, "
        f"OMP_NUM_THREADS=1, {os.cpu_count()} cores. Same tokens at tp 1 and tp 2: {identical}.",
        "",
        "| tp | weights MiB per rank | RSS MiB per rank | reference tok/s | threshold+dual tok/s |",
        "|---|---|---|---|---|",
    ]
    for result in runs:
        weights = " / ".join(f"{size / mib:.1f}" for size in result["weight_bytes_per_rank"])
        rss = " / ".join(f"{size / mib:.0f}" for size in result["rss_bytes_per_rank"])
        lines.append(
            f"| {result['tp']} | {weights} | {rss} | {result['cells']['reference']['tokens_per_s']:.1f} | "
            f"{result['cells']['threshold+dual']['tokens_per_s']:.1f} |"
        )
    ratio = parallel["weight_bytes_per_rank"][0] / single["weight_bytes_per_rank"][0]
    lines += [
        "",
        f"Weights per rank at tp 2 / tp 1: {ratio:.2f} (norms are replicated, the rest split). RSS includes "
        "python + torch (about 300 MiB per process); rank 0 is this process, which ran tp 1 first, so its "
        "RSS keeps that run's allocator leftovers; the worker's is a fresh process's.",
    ]
    for result in runs:
        for cell in result["cells"].values():
            cell.pop("tokens")
    results = {
        "sizes": SIZES,
        "identical_tokens": identical,
        "runs": runs,
        "elapsed_s": time.time() - started,
    }
    save_results(json.loads(json.dumps(results)), "\n".join(lines), RESULTS_DIR, "tensor_parallel")


if __name__ == "__main__":
    main()
