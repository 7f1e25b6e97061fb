"""Train the shipped demo models on the task suite (CPU, deterministic seed).

    python -m bench.train_demo --out server/src/vdiff/demo_models    # full run, ~50 min wall clock
    python -m bench.train_demo --smoke --out /tmp/demo               # a few steps, for CI

Trains, one after the other: llada-demo (LLaDA layout, masked-diffusion SFT from scratch), qwen2-ar-demo
(Qwen2 causal LM, next-token loss), qwen2-ar-mini-demo (a much smaller Qwen2 with tied embeddings: the APD
verifier, the role Qwen2.5-0.5B plays for Dream-7B) and dream-demo (Dream layout, the same SFT through
the logit shift, initialised from qwen2-ar-demo as Dream-7B was from Qwen2.5-7B; same tokenizer) and
sdar-demo (SDAR layout, block-diffusion SFT over [x_t | x_0] with B = 4, bench/demo_block_training.py).
The modules are vdiff's own (vdiff.models), so the checkpoints
load through vdiff.models.loader exactly like LLaDA-8B / Dream-7B / Qwen2.5.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from tokenizers import Tokenizer

from bench.demo_block_training import block_diffusion_loss
from bench.demo_layouts import (
    ModelSize,
    generation_config,
    llada_config,
    llada_initial_tensors,
    qwen2_family_config,
    qwen2_initial_tensors,
    save_weights,
    sdar_config,
    sdar_initial_tensors,
    write_json,
)
from bench.demo_tokenizer import (
    LLADA_STYLE,
    QWEN_STYLE,
    TokenizerStyle,
    assert_tokenizers_agree,
    save_tokenizer,
    train_tokenizer,
)
from bench.demo_training import (
    PROMPT_PLACEHOLDER,
    ChatEncoder,
    SpecialIds,
    make_batch,
    masked_diffusion_loss,
    monitor_accuracy,
    next_token_loss,
)
from bench.tasks import TASKS, eval_set, training_stream

logger = logging.getLogger("bench.train_demo")

MIN_CANVAS, MAX_CANVAS = 8, 16
"""Training canvases (answer + end token + EOS padding) vary in length so any max_tokens in range works."""
EVAL_CANVAS = 16
TRAINING_MIX = {"add": 3.0, "count": 3.0, "pick": 2.0}
"""Relative task frequencies in training (others 1): the slowest-learning tasks are oversampled."""
VERIFIER_MIX = {"add": 2.0, "count": 2.0, "pick": 8.0, "permute": 5.0}
"""The APD verifier's mix: its job is the dependent tokens the dLLM's marginals get wrong."""


@dataclass(frozen=True, slots=True)
class DemoSpec:
    name: str
    style: TokenizerStyle
    model_type: str
    size: ModelSize
    steps: int
    batch_size: int
    learning_rate: float
    minutes: float
    """Wall-clock budget: the LR schedule runs on max(step / steps, elapsed / budget), so a loaded
    machine trains fewer steps but still finishes its schedule on time."""
    objective: str
    """'diffusion' (masked-diffusion SFT), 'block_diffusion' (SDAR's block SFT) or 'next_token'."""
    logit_shift: bool = False
    is_causal: bool = False
    tie_word_embeddings: bool = False
    init_from: str | None = None
    """Start from another demo model's trained weights (Dream is adapted from an AR model, as Dream-7B
    was from Qwen2.5-7B); None = random init."""
    task_weights: dict[str, float] | None = None
    """Training mix (task -> relative frequency); None = TRAINING_MIX."""
    block_size: int | None = None
    """The attention block of a block-diffusion model (config.json's block_size)."""

    @property
    def training_mix(self) -> dict[str, float]:
        return self.task_weights if self.task_weights is not None else TRAINING_MIX


DEMO_SPECS = (
    DemoSpec(
        "llada-demo",
        LLADA_STYLE,
        "llada",
        ModelSize(d_model=128, n_layers=4, n_heads=4, n_kv_heads=4, mlp_hidden=384),
        steps=12000,
        batch_size=32,
        learning_rate=2e-3,
        minutes=24,
        objective="diffusion",
    ),
    DemoSpec(
        "qwen2-ar-demo",
        QWEN_STYLE,
        "qwen2",
        ModelSize(d_model=128, n_layers=4, n_heads=4, n_kv_heads=2, mlp_hidden=384),
        steps=2000,
        batch_size=32,
        learning_rate=2e-3,
        minutes=4,
        objective="next_token",
        is_causal=True,
    ),
    DemoSpec(
        "qwen2-ar-mini-demo",
        QWEN_STYLE,
        "qwen2",
        ModelSize(d_model=64, n_layers=2, n_heads=2, n_kv_heads=1, mlp_hidden=192),
        steps=14000,
        batch_size=32,
        learning_rate=3e-3,
        minutes=14,
        objective="next_token",
        is_causal=True,
        tie_word_embeddings=True,
        task_weights=VERIFIER_MIX,
    ),
    DemoSpec(
        "qwen2-ar-mini-llada-demo",
        LLADA_STYLE,
        "qwen2",
        ModelSize(d_model=64, n_layers=2, n_heads=2, n_kv_heads=1, mlp_hidden=192),
        steps=30000,
        batch_size=32,
        learning_rate=3e-3,
        minutes=20,
        objective="next_token",
        is_causal=True,
        tie_word_embeddings=True,
        task_weights=VERIFIER_MIX,
    ),
    DemoSpec(
        "dream-demo",
        QWEN_STYLE,
        "Dream",
        ModelSize(d_model=128, n_layers=4, n_heads=4, n_kv_heads=2, mlp_hidden=384),
        steps=12000,
        batch_size=32,
        learning_rate=2e-3,
        minutes=17,
        objective="diffusion",
        logit_shift=True,
        init_from="qwen2-ar-demo",
    ),
    DemoSpec(
        "sdar-demo",
        QWEN_STYLE,
        "sdar",
        ModelSize(d_model=128, n_layers=4, n_heads=4, n_kv_heads=2, mlp_hidden=384),
        steps=12000,
        batch_size=32,
        learning_rate=2e-3,
        minutes=30,
        objective="block_diffusion",
        block_size=4,
    ),
)


def _special_ids(tokenizer: Tokenizer, style: TokenizerStyle) -> dict[str, int]:
    return {token: tokenizer.token_to_id(token) for token in style.special_tokens}


def write_checkpoint_files(spec: DemoSpec, tokenizer: Tokenizer, path: Path, seed: int) -> dict:
    """Tokenizer files, config.json, generation_config.json and initial weights; returns config.json."""
    path.mkdir(parents=True, exist_ok=True)
    save_tokenizer(tokenizer, spec.style, path, spec.size.max_positions)
    vocab_size = tokenizer.get_vocab_size()
    ids = _special_ids(tokenizer, spec.style)
    pad = ids[spec.style.roles["pad_token"]]
    end_ids = [ids[spec.style.end_of_answer], pad]
    if spec.model_type == "llada":
        config = llada_config(spec.size, vocab_size, ids)
        tensors = llada_initial_tensors(spec.size, vocab_size, seed)
        bos = ids["<|startoftext|>"]
    elif spec.model_type == "sdar":
        config = sdar_config(spec.size, vocab_size, ids, spec.block_size or 4)
        tensors = sdar_initial_tensors(spec.size, vocab_size, seed)
        bos = pad
    else:
        config = qwen2_family_config(
            spec.size,
            vocab_size,
            ids,
            is_dream=spec.model_type == "Dream",
            end_of_answer=spec.style.end_of_answer,
        )
        config["tie_word_embeddings"] = spec.tie_word_embeddings
        tensors = qwen2_initial_tensors(spec.size, vocab_size, seed)
        if spec.tie_word_embeddings:
            del tensors["lm_head.weight"]
        bos = pad
    if spec.init_from:
        from safetensors.torch import load_file

        source = load_file(str(path.parent / spec.init_from / "model.safetensors"))
        if set(source) != set(tensors) or any(source[n].shape != tensors[n].shape for n in tensors):
            raise ValueError(f"{spec.init_from} does not have {spec.name}'s tensor layout")
        tensors = {name: tensor.float() for name, tensor in source.items()}
    write_json(path / "config.json", config)
    write_json(path / "generation_config.json", generation_config(bos, end_ids, pad, EVAL_CANVAS))
    save_weights(path, tensors, torch.float32)
    return config


def build_model(config: dict, path: Path) -> torch.nn.Module:
    """vdiff's own module for this model_type, with the initial weights from `path`."""
    from safetensors.torch import load_file
    from vdiff.models.registry import get_family

    model = get_family(config["model_type"]).build(config)
    state = load_file(str(path / "model.safetensors"))
    model.load_state_dict(state, strict=True)
    return model


def chat_encoder(path: Path, tokenizer: Tokenizer) -> ChatEncoder:
    from transformers import AutoTokenizer

    auto = AutoTokenizer.from_pretrained(str(path))
    rendered = auto.apply_chat_template(
        [{"role": "user", "content": PROMPT_PLACEHOLDER}], add_generation_prompt=True, tokenize=False
    )
    encoder = ChatEncoder(tokenizer, rendered)
    probe = next(iter(eval_set("add", 1)))
    expected = auto.apply_chat_template(
        [{"role": "user", "content": probe.prompt}], add_generation_prompt=True, tokenize=True
    )
    expected_ids = list(expected["input_ids"] if hasattr(expected, "keys") else expected)
    if encoder.prompt_ids(probe.prompt) != expected_ids:
        raise AssertionError(f"{path}: training prompt ids differ from the chat template's")
    return encoder


def train_one(spec: DemoSpec, tokenizer: Tokenizer, out_dir: Path, seed: int, monitor_examples: int) -> dict:
    path = out_dir / spec.name
    previous_runs = []
    if spec.init_from == spec.name:  # --resume: keep the history of the runs this one continues
        previous = json.loads((path / "training.json").read_text())
        previous_runs = [*previous.pop("previous_runs", []), previous]
    config = write_checkpoint_files(spec, tokenizer, path, seed)
    corpus = [instance.prompt for task in TASKS for instance in eval_set(task, 5)]
    assert_tokenizers_agree(path, [*corpus, "hello world\n\n  x", "<|im_start|>user\nhi<|im_end|>\n"])
    encoder = chat_encoder(path, tokenizer)
    ids = _special_ids(tokenizer, spec.style)
    mask_token = spec.style.roles["mask_token"]
    special = SpecialIds(
        mask=ids[mask_token],
        pad=ids[spec.style.roles["pad_token"]],
        end_of_answer=ids[spec.style.end_of_answer],
    )
    end_ids = {special.end_of_answer, special.pad}
    torch.manual_seed(seed)
    model = build_model(config, path)
    model.train()
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=spec.learning_rate, betas=(0.9, 0.98), weight_decay=0.01
    )
    warmup = max(1, min(100, spec.steps // 20))
    next_example = training_stream(seed, weights=spec.training_mix)
    rng = random.Random(seed)
    generator = torch.Generator().manual_seed(seed)
    monitor = {task: eval_set(task, monitor_examples) for task in TASKS}
    started, smoothed = time.monotonic(), None
    history: list[dict] = []
    step, progress = 0, 0.0
    while progress < 1.0:
        step += 1
        progress = max(step / spec.steps, (time.monotonic() - started) / (60 * spec.minutes))
        for group in optimizer.param_groups:
            group["lr"] = spec.learning_rate * min(1.0, step / warmup) * max(0.02, 1.0 - progress)
        canvas = rng.randint(MIN_CANVAS, MAX_CANVAS)
        batch = make_batch([next_example() for _ in range(spec.batch_size)], encoder, special, canvas)
        if spec.objective == "block_diffusion":
            loss = block_diffusion_loss(model, batch, special, generator)
        elif spec.objective == "diffusion":
            loss = masked_diffusion_loss(model, batch, special, generator, spec.logit_shift)
        else:
            loss = next_token_loss(model, batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        smoothed = loss.item() if smoothed is None else 0.98 * smoothed + 0.02 * loss.item()
        if step % 600 == 0 or progress >= 1.0:
            accuracy = monitor_accuracy(
                model,
                monitor,
                encoder,
                special,
                end_ids,
                EVAL_CANVAS,
                logit_shift=spec.logit_shift,
                is_causal=spec.is_causal,
                block_size=spec.block_size,
            )
            elapsed = time.monotonic() - started
            history.append({"step": step, "loss": round(smoothed, 4), "seconds": round(elapsed), **accuracy})
            logger.info(
                "%s step %d (max %d) loss %.4f %.0fs %s",
                spec.name,
                step,
                spec.steps,
                smoothed,
                elapsed,
                " ".join(f"{task}={value:.2f}" for task, value in accuracy.items()),
            )
            save_weights(path, dict(model.state_dict()), torch.bfloat16)
    write_json(
        path / "training.json",
        {
            "objective": spec.objective,
            **({"block_size": spec.block_size} if spec.block_size else {}),
            "steps": step,
            "batch_size": spec.batch_size,
            "learning_rate": spec.learning_rate,
            "seed": seed,
            "canvas_lengths": [MIN_CANVAS, MAX_CANVAS],
            "task_weights": spec.training_mix,
            "seconds": round(time.monotonic() - started),
            "monitor_history": history,
            "initialised_from": spec.init_from,
            "previous_runs": previous_runs,
        },
    )
    return history[-1] if history else {}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, required=True, help="directory receiving one folder per model")
    parser.add_argument("--smoke", action="store_true", help="a few steps with tiny models (CI)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--models", nargs="*", default=[spec.name for spec in DEMO_SPECS])
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads (1 is fastest on a shared, loaded machine)"
    )
    parser.add_argument("--time-scale", type=float, default=1.0, help="multiply every wall-clock budget")
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue from the models' weights in --out (a new schedule at half the peak LR)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)
    specs = [spec for spec in DEMO_SPECS if spec.name in args.models]
    if args.smoke:
        tiny = ModelSize(d_model=32, n_layers=1, n_heads=2, n_kv_heads=2, mlp_hidden=64)
        specs = [replace(spec, size=tiny, steps=3, batch_size=4) for spec in specs]
    specs = [replace(spec, minutes=spec.minutes * args.time_scale) for spec in specs]
    if args.resume:
        specs = [replace(spec, init_from=spec.name, learning_rate=spec.learning_rate / 2) for spec in specs]
    tokenizers = {style.name: train_tokenizer(style) for style in (LLADA_STYLE, QWEN_STYLE)}
    summary = {}
    for spec in specs:
        summary[spec.name] = train_one(
            spec, tokenizers[spec.style.name], args.out, args.seed, monitor_examples=2 if args.smoke else 32
        )
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
