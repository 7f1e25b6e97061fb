"""What one denoising forward costs with and without the Fast-dLLM block cache, at realistic shapes.

    python -m bench.forward_cost                                   # dream-demo and llada-demo
    python -m bench.forward_cost --models DIR --prompt 512 --generate 256 --block 32

The task-suite benchmark (bench.run) decodes 16-token answers after ~20-token prompts: there, a cached
forward saves almost nothing. Serving workloads have long prompts and answers decoded in blocks of
32, so this measures one step the way the engine runs it (ModelRunner, BlockCache windows, batched
rows) for each cache mode, at the first block of the answer (the most queries for the prefix mode).
Times are ratios within one run, never assertions.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.report import DIFFUSION_DEMO_MODELS, RESULTS_DIR, save_results

MODES = ("none", "prefix", "dual")
VICINITY_MODE = "dual-vicinity"


def step_requests(
    runner: Any,
    mode: str,
    prompt: int,
    generate: int,
    block: int,
    rows: int,
    logit_shift: bool,
    vicinity: int = 0,
):
    """The ForwardRequests of one step inside the first answer block, for `rows` sequences."""
    import torch
    from vdiff.engine.decoding.base import ForwardRequest
    from vdiff.engine.kv_cache import BlockCache, SequenceKV

    canvas = prompt + generate
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 100, (1, canvas), generator=generator)
    start, end = prompt, prompt + block
    block_logits = torch.arange(start, end) - (1 if logit_shift else 0)
    full = ForwardRequest(ids, torch.arange(canvas), block_logits, use_cache=mode != "none")
    if mode == "none":
        return [full] * rows
    refresh = runner.execute([full])[0]
    cache = BlockCache(mode, logit_shift, vicinity)
    cache.refresh(SequenceKV.from_batch(refresh.past_key_values, 0, 0, canvas), start, end)
    window = cache.window(start, end, canvas)
    request = ForwardRequest(
        ids[:, window.start : window.end],
        torch.arange(window.start, window.end),
        block_logits - window.start,
        past=[window.past],
    )
    return [request] * rows


def measure(
    model_dir: Path, shapes: list[tuple[int, int]], block: int, rows: list[int], repeats: int, vicinity: int
):
    from vdiff.config import EngineConfig
    from vdiff.engine.model_runner import ModelRunner
    from vdiff.models.loader import load_model

    loaded = load_model(EngineConfig(model=str(model_dir), device="cpu"))
    runner = ModelRunner(loaded.model, loaded.device)
    logit_shift = bool(getattr(loaded.model, "logit_shift", False))
    cells = []
    for prompt, generate in shapes:
        for num_rows in rows:
            timings = {}
            for label, mode, window in [*((m, m, 0) for m in MODES), (VICINITY_MODE, "dual", vicinity)]:
                requests = step_requests(runner, mode, prompt, generate, block, num_rows, logit_shift, window)
                runner.execute(requests)  # warm-up
                samples = []
                for _ in range(repeats):
                    started = time.perf_counter()
                    runner.execute(requests)
                    samples.append(time.perf_counter() - started)
                timings[label] = {
                    "ms_per_forward": 1000 * statistics.median(samples),
                    "query_positions": requests[0].num_queries,
                    "cached_positions": 0 if requests[0].past is None else requests[0].past[0].length,
                }
            base = timings["none"]["ms_per_forward"]
            for timing in timings.values():
                timing["vs_no_cache"] = timing["ms_per_forward"] / base
            cells.append({"prompt": prompt, "generate": generate, "rows": num_rows, "modes": timings})
    return cells


def markdown(results: dict[str, Any]) -> str:
    lines = [
        "| model | prompt + answer | rows | no cache ms | prefix ms (× no cache) | dual ms (× no cache) "
        f"| dual + vicinity {results['settings']['vicinity']} ms (× no cache) "
        "| queries none / prefix / dual / +vicinity |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for model, cells in results["models"].items():
        for cell in cells:
            modes = cell["modes"]
            vicinity = modes[VICINITY_MODE]
            lines.append(
                f"| {model} | {cell['prompt']} + {cell['generate']} | {cell['rows']} "
                f"| {modes['none']['ms_per_forward']:.1f} "
                f"| {modes['prefix']['ms_per_forward']:.1f} ({modes['prefix']['vs_no_cache']:.2f}×) "
                f"| {modes['dual']['ms_per_forward']:.1f} ({modes['dual']['vs_no_cache']:.2f}×) "
                f"| {vicinity['ms_per_forward']:.1f} ({vicinity['vs_no_cache']:.2f}×) "
                f"| {' / '.join(str(mode['query_positions']) for mode in modes.values())} |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", nargs="+", default=list(DIFFUSION_DEMO_MODELS), help="demo names or dirs")
    parser.add_argument("--prompt", type=int, nargs="+", default=[64, 512], help="prompt lengths")
    parser.add_argument("--generate", type=int, default=256, help="answer (canvas) length after the prompt")
    parser.add_argument("--block", type=int, default=32)
    parser.add_argument("--rows", type=int, nargs="+", default=[1, 16], help="sequences in the batch")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--vicinity", type=int, default=16, help="kv_cache_vicinity of the extra dual row")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--name", default="forward_cost")
    parser.add_argument("--out-dir", type=Path, default=RESULTS_DIR)
    args = parser.parse_args(argv)

    import torch

    from bench.run import checkpoint_dir

    torch.set_num_threads(args.threads)
    shapes = [(prompt, args.generate) for prompt in args.prompt]
    results: dict[str, Any] = {
        "settings": {**{k: v for k, v in vars(args).items() if k not in ("out_dir", "models")}},
        "models": {},
    }
    for name in args.models:
        model_dir = checkpoint_dir(name)
        results["models"][model_dir.name] = measure(
            model_dir, shapes, args.block, args.rows, args.repeats, args.vicinity
        )
    save_results(results, markdown(results), args.out_dir, args.name)


if __name__ == "__main__":
    main()
