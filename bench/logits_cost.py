"""What per-request logits rules (penalties, logit_bias, min_p, min_tokens) and logprobs cost per step.

    python -m bench.logits_cost                          # dream-demo and llada-demo, then vocab 126464
    python -m bench.logits_cost --models DIR --rounds 9 --max-tokens 64 --vocab 126464

Two parts, both timed as ratios within one run (never assertions):

1. Engine: a batch of 16 concurrent requests through LLMEngine (offline, `max_num_seqs=16`), temperature 0,
   for the default threshold policy and for `decoding: reference` with fixed steps, in three
   configurations: plain, rules on, rules + logprobs. The configurations are interleaved round by round
   (the order rotates every round) and each cell is the median over rounds of wall time / `engine.step()`
   calls. Every request generates exactly max_tokens (`ignore_eos`), so all configurations do the same
   amount of decoding; min_tokens then bans the `stop_token_ids` (the tokenizer's BOS, which an answer
   never holds), so that rule does its real work on the first rows.
2. Logits at a real vocabulary, without a checkpoint: the engine's own functions (`process_results`,
   `raw_logits`, `record_committed`) on random logits of 16 sequences x 32 decided rows at vocab 126464
   (LLaDA-8B's), against what a step does with those logits anyway (argmax, softmax, gather of the
   confidence: the threshold policy's commit). The demo models' vocabularies (~310) cannot show this.
   Each case places the decided rows in the answer (first block: min_tokens bans end tokens there; last
   block: a longer history for the penalties) and commits some of them (logprobs cover committed rows).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.engine_driver import chat_prompt_ids
from bench.report import DIFFUSION_DEMO_MODELS, RESULTS_DIR, save_results
from bench.tasks import TASKS, eval_set

PLAIN = "plain"
RULES: dict[str, Any] = {
    "repetition_penalty": 1.1,
    "presence_penalty": 0.3,
    "frequency_penalty": 0.2,
    "logit_bias": {11: 0.5, 22: -0.5, 33: 1.0},
    "min_p": 0.05,  # no effect at temperature 0 (vLLM's rule); measured to show it costs nothing extra
    "min_tokens": 4,
}
FAINT_RULES: dict[str, Any] = {
    **RULES,
    "repetition_penalty": 1.000001,
    "presence_penalty": 1e-6,
    "frequency_penalty": 1e-6,
    "logit_bias": {11: 1e-6, 22: -1e-6, 33: 1e-6},
}
"""The same rules doing the same work with values too small to change an answer: the decoding, and so
the forwards, stay those of plain (the bench checks the tokens), so the ratio is the rules' cost alone."""
CONFIGURATIONS: dict[str, dict[str, Any]] = {
    PLAIN: {},
    "rules": RULES,
    "rules+logprobs": {**RULES, "logprobs": 5},
    "faint rules+logprobs": {**FAINT_RULES, "logprobs": 5},
}
"""Name -> SamplingParams overrides; the first one is the baseline of every ratio."""
LOGPROBS_ONLY = "logprobs"
"""Extra configuration of the vocabulary part: logprobs without rules (where the two costs split)."""
TARGET_RATIO = 1.10
"""The issue's requirement: penalties + logprobs cost at most 10 % more per step than without."""


def batch_prompts(engine, num_requests: int) -> list[list[int]]:
    """`num_requests` fixed chat prompts, taken round robin from the eval split of every task."""
    per_task = [eval_set(task, num_requests) for task in TASKS]
    instances = [per_task[i % len(TASKS)][i // len(TASKS)] for i in range(num_requests)]
    return [chat_prompt_ids(engine, instance.prompt) for instance in instances]


class StepProbe:
    """Times the engine's own rule and logprob functions inside `engine.step()` and counts the forwards'
    padded positions, so a cell can split its step time into the rules' work and everything else.

    The rules change the answers, so with the threshold policy the batch's sequences drift apart and
    the forwards differ (other lengths, other padding): that is not the rules' own cost, and these
    counters tell the two apart within one run."""

    TIMED = ("raw_logits", "process_results", "record_committed")

    def __init__(self, engine) -> None:
        import vdiff.engine.llm_engine as llm_engine

        self.rules_s = 0.0
        self.forwards = 0
        self.query_positions = 0
        self.key_positions = 0
        for name in self.TIMED:
            setattr(llm_engine, name, self._timed(getattr(llm_engine, name)))
        forward = engine.runner.forward

        def counted(input_ids, position_ids, *args, attention_mask=None, **kwargs):
            self.forwards += 1
            self.query_positions += input_ids.numel()
            if attention_mask is not None:
                self.key_positions += attention_mask.numel()
            return forward(input_ids, position_ids, *args, attention_mask=attention_mask, **kwargs)

        engine.runner.forward = counted

    def _timed(self, function):
        def timed(*args, **kwargs):
            started = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                self.rules_s += time.perf_counter() - started

        return timed

    def snapshot(self) -> tuple[float, int, int, int]:
        return self.rules_s, self.forwards, self.query_positions, self.key_positions


def run_batch(engine, prompts: list[list[int]], params, probe: StepProbe | None = None) -> dict[str, Any]:
    """All prompts added at once, then `engine.step()` until every request finished."""
    for index, prompt_ids in enumerate(prompts):
        engine.add_request(f"logits-cost-{index}", prompt_ids, params)
    steps = 0
    outputs = {}
    before = probe.snapshot() if probe else (0.0, 0, 0, 0)
    started = time.perf_counter()
    while engine.has_unfinished_requests():
        for output in engine.step():
            if output.finished:
                outputs[output.request_id] = output
        steps += 1
    wall = time.perf_counter() - started
    after = probe.snapshot() if probe else (0.0, 0, 0, 0)
    rules_s, forwards, queries, keys = (b - a for a, b in zip(before, after, strict=True))
    tokens = [list(outputs[f"logits-cost-{i}"].outputs[0].token_ids) for i in range(len(prompts))]
    logprobs = [outputs[f"logits-cost-{i}"].outputs[0].logprobs for i in range(len(prompts))]
    return {
        "wall_s": wall,
        "steps": steps,
        "tokens": tokens,
        "has_logprobs": all(lp for lp in logprobs),
        "rules_s": rules_s,
        "forwards": forwards,
        "query_positions": queries,
        "key_positions": keys,
    }


def measure_engine(
    model_dir: Path,
    decodings: dict[str, dict[str, Any]],
    num_requests: int,
    max_tokens: int,
    rounds: int,
    device: str,
) -> dict[str, Any]:
    from vdiff import SamplingParams
    from vdiff.config import EngineConfig
    from vdiff.engine.llm_engine import LLMEngine

    engine = LLMEngine(EngineConfig(model=str(model_dir), device=device, max_num_seqs=num_requests))
    info = engine.tokenizer_info
    never = info.bos_token_id if info.bos_token_id is not None else info.pad_token_id
    prompts = batch_prompts(engine, num_requests)
    probe = StepProbe(engine)
    cells: dict[str, Any] = {}
    for decoding, overrides in decodings.items():
        params = {
            name: SamplingParams(
                max_tokens=max_tokens,
                temperature=0.0,
                seed=0,
                ignore_eos=True,
                stop_token_ids=(never,),
                **overrides,
                **extra,
            )
            for name, extra in CONFIGURATIONS.items()
        }
        for name in CONFIGURATIONS:
            run_batch(engine, prompts, params[name])  # warm-up, not measured
        samples: dict[str, list[dict[str, Any]]] = {name: [] for name in CONFIGURATIONS}
        names = list(CONFIGURATIONS)
        for round_index in range(rounds):
            shift = round_index % len(names)
            for name in names[shift:] + names[:shift]:  # ABC, BCA, CAB, ...
                samples[name].append(run_batch(engine, prompts, params[name], probe))
        per_config = {}
        for name, runs in samples.items():
            ms_per_step = [1000 * run["wall_s"] / run["steps"] for run in runs]
            generated = sum(len(ids) for ids in runs[0]["tokens"])
            rules_share = [run["rules_s"] / (run["wall_s"] - run["rules_s"]) for run in runs]
            per_config[name] = {
                "overrides": {**overrides, **CONFIGURATIONS[name]},
                "ms_per_step": statistics.median(ms_per_step),
                "rules_ms_per_step": statistics.median(1000 * run["rules_s"] / run["steps"] for run in runs),
                "rules_vs_rest_of_step": statistics.median(rules_share),
                "forwards_per_step": runs[0]["forwards"] / runs[0]["steps"],
                "query_positions_per_step": runs[0]["query_positions"] / runs[0]["steps"],
                "key_positions_per_step": runs[0]["key_positions"] / runs[0]["steps"],
                "ms_per_step_samples": ms_per_step,
                "steps": runs[0]["steps"],
                "generated_tokens": generated,
                "tokens_per_step": generated / runs[0]["steps"],
                "every_request_generated_max_tokens": all(
                    len(ids) == max_tokens for ids in runs[0]["tokens"]
                ),
                "same_tokens_every_round": all(run["tokens"] == runs[0]["tokens"] for run in runs),
                "same_tokens_as_plain": runs[0]["tokens"] == samples[PLAIN][0]["tokens"],
                "logprobs_returned": all(run["has_logprobs"] for run in runs),
            }
        base = per_config[PLAIN]
        for cell in per_config.values():
            cell["vs_plain"] = cell["ms_per_step"] / base["ms_per_step"]
            paired = [
                mine / plain
                for mine, plain in zip(cell["ms_per_step_samples"], base["ms_per_step_samples"], strict=True)
            ]
            cell["vs_plain_paired_median"] = statistics.median(paired)
        cells[decoding] = per_config
    return cells


def parse_case(text: str) -> tuple[int, int]:
    """'OFFSET:COMMITTED' -> (answer index of the first decided row, rows committed per sequence)."""
    offset, _, committed = text.partition(":")
    return int(offset), int(committed)


def vocab_inputs(num_seqs: int, rows: int, vocab: int, prompt: int, answer: int, offset: int):
    """Fake sequences as the engine holds them: random prompt ids, an answer whose first `offset` tokens
    are committed (random ids) and the rest masked; `rows` decided positions from answer index `offset`."""
    import torch

    mask = vocab - 1  # any id: it is excluded from the histories
    generator = torch.Generator().manual_seed(0)
    seqs, requests = [], []
    for _ in range(num_seqs):
        canvas = torch.full((prompt + answer,), mask, dtype=torch.int64)
        canvas[:prompt] = torch.randint(0, vocab - 1, (prompt,), generator=generator)
        canvas[prompt : prompt + offset] = torch.randint(0, vocab - 1, (offset,), generator=generator)
        decided = torch.arange(prompt + offset, prompt + offset + rows)
        seqs.append(SimpleNamespace(canvas=canvas, prompt_len=prompt, is_finished=False, token_logprobs={}))
        requests.append(SimpleNamespace(decided=decided))
    logits = 4 * torch.randn(num_seqs, rows, vocab, generator=generator)
    return seqs, requests, logits, mask


class VocabCase:
    """One step's logits of fake sequences, run through what the engine does with them."""

    def __init__(self, seqs, requests, logits, mask: int, committed: int) -> None:
        self.seqs, self.requests, self.logits, self.mask = seqs, requests, logits, mask
        self.masked_canvases = [seq.canvas for seq in seqs]
        self.committed = committed
        vocab = logits.shape[-1]
        self.end_tokens = [vocab - 2, vocab - 3]

    def step(self, params):
        """raw_logits, process_results (if any rule is on), the policy's commit at temperature 0
        (argmax and the softmax confidence of the pick), record_committed (if logprobs are on)."""
        import torch
        from vdiff.engine.decoding.logits_processors import needs_processing, process_results
        from vdiff.engine.logprobs import raw_logits, record_committed

        seqs, requests = self.seqs, self.requests
        for seq, canvas in zip(seqs, self.masked_canvases, strict=True):
            if (
                getattr(seq, "params", None) is not params
            ):  # another request: rules compiled on its first step
                seq.logits_rules = None
            seq.params, seq.canvas = params, canvas
            seq.needs_logits_processing = needs_processing(params)
            seq.token_logprobs = None if params.logprobs is None else {}
        results = [SimpleNamespace(logits=self.logits[i : i + 1]) for i in range(len(seqs))]
        raw = raw_logits(seqs, results)
        if any(seq.needs_logits_processing for seq in seqs):
            process_results(seqs, requests, results, self.mask, self.end_tokens)
        picks = []
        for result in results:
            row_logits = result.logits[0]
            picked = row_logits.argmax(dim=-1)
            confidence = torch.softmax(row_logits, dim=-1).gather(-1, picked[:, None]).squeeze(-1)
            picks.append((picked, confidence))
        if raw:
            for seq, request, (picked, _) in zip(seqs, requests, picks, strict=True):
                seq.canvas = seq.canvas.clone()
                seq.canvas[request.decided[: self.committed]] = picked[: self.committed]
            record_committed(seqs, requests, raw, self.mask)
        return picks


def measure_vocab(
    num_seqs: int,
    rows: int,
    vocab: int,
    prompt: int,
    answer: int,
    cases: list[tuple[int, int]],
    rounds: int,
) -> list[dict[str, Any]]:
    from vdiff import SamplingParams

    configurations = {**CONFIGURATIONS, LOGPROBS_ONLY: {"logprobs": 5}}
    params = {
        name: SamplingParams(max_tokens=answer, temperature=0.0, seed=0, **extra)
        for name, extra in configurations.items()
    }
    cells = []
    for offset, committed in cases:
        committed = min(committed, rows)
        case = VocabCase(*vocab_inputs(num_seqs, rows, vocab, prompt, answer, offset), committed)

        names = list(configurations)
        for name in names:
            case.step(params[name])  # warm-up
        samples: dict[str, list[float]] = {name: [] for name in names}
        for round_index in range(rounds):
            shift = round_index % len(names)
            for name in names[shift:] + names[:shift]:
                started = time.perf_counter()
                case.step(params[name])
                samples[name].append(1000 * (time.perf_counter() - started))
        cell: dict[str, Any] = {
            "sequences": num_seqs,
            "rows_per_sequence": rows,
            "vocab": vocab,
            "prompt": prompt,
            "answer": answer,
            "decided_from_answer_index": offset,
            "min_tokens_active": offset < RULES["min_tokens"],
            "committed_rows_per_sequence": committed,
            "configurations": {},
        }
        base = statistics.median(samples[PLAIN])
        for name in names:
            paired = [mine / plain for mine, plain in zip(samples[name], samples[PLAIN], strict=True)]
            cell["configurations"][name] = {
                "ms": statistics.median(samples[name]),
                "ms_samples": samples[name],
                "vs_plain": statistics.median(samples[name]) / base,
                "vs_plain_paired_median": statistics.median(paired),
            }
        cells.append(cell)
    return cells


def markdown(results: dict[str, Any]) -> str:
    settings = results["settings"]
    lines = [
        f"Engine, {settings['num_requests']} concurrent requests x {settings['max_tokens']} tokens, "
        f"median of {settings['rounds']} interleaved rounds:",
        "",
        "| model | decoding | configuration | steps | tokens/step | ms/step | × plain (paired) "
        "| same tokens as plain | rules+logprobs code, ms/step | its × rest of step | forwards/step "
        "| attention keys/step |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for model, decodings in results["engine"].items():
        for decoding, configs in decodings.items():
            for name, cell in configs.items():
                lines.append(
                    f"| {model} | {decoding} | {name} | {cell['steps']} | {cell['tokens_per_step']:.2f} "
                    f"| {cell['ms_per_step']:.1f} | {cell['vs_plain']:.3f}× "
                    f"({cell['vs_plain_paired_median']:.3f}×) "
                    f"| {'yes' if cell['same_tokens_as_plain'] else 'no'} "
                    f"| {cell['rules_ms_per_step']:.2f} "
                    f"| {1 + cell['rules_vs_rest_of_step']:.3f}× | {cell['forwards_per_step']:.2f} "
                    f"| {cell['key_positions_per_step']:.0f} |"
                )
    if results.get("vocab"):
        first = results["vocab"][0]
        lines += [
            "",
            f"Logits of one step at vocab {first['vocab']}: {first['sequences']} sequences x "
            f"{first['rows_per_sequence']} rows, prompt {first['prompt']}, median of {settings['rounds']} "
            "interleaved rounds; plain = argmax + softmax confidence (the policy's commit):",
            "",
            "| decided rows at answer index | min_tokens bans | rows committed (logprobs) per sequence "
            "| configuration | ms | × plain (paired) |",
            "|---|---|---|---|---|---|",
        ]
        for cell in results["vocab"]:
            start = cell["decided_from_answer_index"]
            for name, config in cell["configurations"].items():
                lines.append(
                    f"| {start}–{start + cell['rows_per_sequence'] - 1} "
                    f"| {'yes' if cell['min_tokens_active'] else 'no'} "
                    f"| {cell['committed_rows_per_sequence']} "
                    f"| {name} | {config['ms']:.1f} "
                    f"| {config['vs_plain']:.3f}× ({config['vs_plain_paired_median']:.3f}×) |"
                )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", nargs="*", default=list(DIFFUSION_DEMO_MODELS), help="demo names or dirs")
    parser.add_argument("--num-requests", type=int, default=16, help="requests in the batch (max_num_seqs)")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--reference-steps", type=int, default=32, help="steps of the reference rows")
    parser.add_argument("--rounds", type=int, default=7, help="interleaved rounds of every configuration")
    parser.add_argument("--vocab", type=int, default=126464, help="vocabulary of the logits part; 0 = skip")
    parser.add_argument("--vocab-rows", type=int, default=32, help="decided rows per sequence there")
    parser.add_argument("--vocab-prompt", type=int, default=512)
    parser.add_argument("--vocab-answer", type=int, default=256)
    parser.add_argument(
        "--vocab-cases",
        type=parse_case,
        nargs="+",
        default=[(0, 32), (224, 2)],
        help="OFFSET:COMMITTED: answer index of the first decided row (0 = first block, where min_tokens "
        "bans) and rows committed per sequence (logprobs are computed for those); default 0:32 224:2",
    )
    parser.add_argument("--device", default="cpu", help="engine device (cpu, cuda, ...)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--name", default="logits_cost")
    parser.add_argument("--out-dir", type=Path, default=RESULTS_DIR)
    args = parser.parse_args(argv)

    import torch

    from bench.run import checkpoint_dir

    torch.set_num_threads(args.threads)
    decodings = {
        "threshold (default)": {},
        f"reference, {args.reference_steps} steps": {"decoding": "reference", "steps": args.reference_steps},
    }
    results: dict[str, Any] = {
        "settings": {
            **{k: v for k, v in vars(args).items() if k not in ("out_dir", "models", "name")},
            "configurations": CONFIGURATIONS,
            "target_ratio": TARGET_RATIO,
        },
        "engine": {},
        "vocab": [],
    }
    for name in args.models:
        model_dir = checkpoint_dir(name)
        results["engine"][model_dir.name] = measure_engine(
            model_dir, decodings, args.num_requests, args.max_tokens, args.rounds, args.device
        )
    if args.vocab:
        results["vocab"] = measure_vocab(
            args.num_requests,
            args.vocab_rows,
            args.vocab,
            args.vocab_prompt,
            args.vocab_answer,
            args.vocab_cases,
            args.rounds,
        )
    save_results(results, markdown(results), args.out_dir, args.name)


if __name__ == "__main__":
    main()
