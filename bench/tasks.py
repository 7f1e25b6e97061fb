"""Small instruction tasks with machine-checkable answers, generated deterministically from a seed.

Single-answer tasks have exactly one right answer. Multi-answer tasks accept many answers whose
tokens depend on each other (any permutation, any one of several codes): decoding several tokens
in parallel from independent per-position marginals produces invalid mixtures there, which is what
separates good parallel decoders from bad ones.

Payloads are digits on purpose: the Qwen2 pre-tokenizer isolates every digit, so each digit is one
token whatever merges the BPE learned. Each task has a fixed payload length, so the offset between an
answer digit and the prompt digit it depends on is constant: tiny models learn that in minutes.
Train and eval prompts are disjoint: a stable hash of the prompt puts every prompt in exactly one split.
"""

from __future__ import annotations

import hashlib
import itertools
import random
from collections.abc import Callable
from dataclasses import dataclass

EVAL_FRACTION_PER_MILLE = 100
"""Share of all prompts (in 1/1000) that belong to the eval split."""


@dataclass(frozen=True, slots=True)
class TaskInstance:
    task: str
    prompt: str
    answers: tuple[str, ...]
    """Every accepted answer (one for single-answer tasks)."""

    def check(self, answer_text: str) -> bool:
        return normalize_answer(answer_text) in self.answers

    def training_target(self, rng: random.Random) -> str:
        """A right answer to train on; multi-answer tasks draw one uniformly."""
        return self.answers[rng.randrange(len(self.answers))]


@dataclass(frozen=True, slots=True)
class Task:
    name: str
    is_multi_answer: bool
    make: Callable[[random.Random], tuple[str, tuple[str, ...]]]
    description: str

    def sample(self, rng: random.Random) -> TaskInstance:
        prompt, answers = self.make(rng)
        return TaskInstance(self.name, prompt, answers)


def normalize_answer(text: str) -> str:
    return "".join(text.split()).rstrip(".")


COUNT_DIGITS = 3
"""Counting over 5 digits stayed at the majority-class rate for every demo model, the AR one included."""


def _digits(rng: random.Random, count: int) -> str:
    return "".join(str(rng.randrange(10)) for _ in range(count))


def _add(rng: random.Random) -> tuple[str, tuple[str, ...]]:
    # No carry: a 4-layer masked-diffusion model does not learn the carry in an hour of CPU training.
    a = rng.randrange(10, 100)
    b = rng.randrange(10 - a % 10)
    return f"Add {a} and {b}.", (str(a + b),)


def _sort(rng: random.Random) -> tuple[str, tuple[str, ...]]:
    digits = _digits(rng, 4)
    return f"Sort {digits}.", ("".join(sorted(digits)),)


def _reverse(rng: random.Random) -> tuple[str, tuple[str, ...]]:
    digits = _digits(rng, 4)
    return f"Reverse {digits}.", (digits[::-1],)


def _copy(rng: random.Random) -> tuple[str, tuple[str, ...]]:
    digits = _digits(rng, 5)
    return f"Copy {digits}.", (digits,)


def _count(rng: random.Random) -> tuple[str, tuple[str, ...]]:
    target = str(rng.randrange(10))
    digits = "".join(target if rng.random() < 0.4 else str(rng.randrange(10)) for _ in range(COUNT_DIGITS))
    return f"Count {target} in {digits}.", (str(digits.count(target)),)


def _max(rng: random.Random) -> tuple[str, tuple[str, ...]]:
    digits = _digits(rng, 4)
    return f"Max of {digits}.", (max(digits),)


def _permute(rng: random.Random) -> tuple[str, tuple[str, ...]]:
    digits = "".join(rng.sample("0123456789", 3))
    answers = tuple(sorted({"".join(p) for p in itertools.permutations(digits)}))
    return f"Any order of {digits}.", answers


def _pick(rng: random.Random) -> tuple[str, tuple[str, ...]]:
    codes: list[str] = []
    while len(codes) < 3:
        code = _digits(rng, 3)
        # Codes differ in every position, so a position-wise mixture of two codes is never a code.
        if all(all(x != y for x, y in zip(code, other, strict=True)) for other in codes):
            codes.append(code)
    return f"Pick one of {' '.join(codes)}.", tuple(sorted(codes))


TASKS: dict[str, Task] = {
    task.name: task
    for task in (
        Task("add", False, _add, "a 2-digit plus a 1-digit number, no carry"),
        Task("sort", False, _sort, "sort 4 digits ascending"),
        Task("reverse", False, _reverse, "reverse 4 digits"),
        Task("copy", False, _copy, "copy 5 digits"),
        Task("count", False, _count, "count one digit in 3 digits"),
        Task("max", False, _max, "largest of 4 digits"),
        Task("permute", True, _permute, "any ordering of 3 distinct digits"),
        Task("pick", True, _pick, "any one of three 3-digit codes"),
    )
}
SINGLE_ANSWER_TASKS = tuple(name for name, task in TASKS.items() if not task.is_multi_answer)
MULTI_ANSWER_TASKS = tuple(name for name, task in TASKS.items() if task.is_multi_answer)
MAX_ANSWER_CHARS = 5


def is_eval_prompt(task: str, prompt: str) -> bool:
    digest = hashlib.sha256(f"{task}\x00{prompt}".encode()).digest()
    return int.from_bytes(digest[:4], "big") % 1000 < EVAL_FRACTION_PER_MILLE


def sample_instance(task: str, rng: random.Random, split: str) -> TaskInstance:
    """Draw an instance of `task` whose prompt belongs to `split` ('train' or 'eval')."""
    if split not in ("train", "eval"):
        raise ValueError(f"split must be 'train' or 'eval', not {split!r}")
    want_eval = split == "eval"
    while True:
        instance = TASKS[task].sample(rng)
        if is_eval_prompt(task, instance.prompt) == want_eval:
            return instance


def eval_set(task: str, num_examples: int, seed: int = 1234) -> list[TaskInstance]:
    """A deterministic list of distinct eval prompts for one task."""
    rng = random.Random(f"eval-{task}-{seed}")
    seen: set[str] = set()
    instances: list[TaskInstance] = []
    attempts = 0
    while len(instances) < num_examples and attempts < num_examples * 50:
        attempts += 1
        instance = sample_instance(task, rng, "eval")
        if instance.prompt not in seen:
            seen.add(instance.prompt)
            instances.append(instance)
    return instances


def training_stream(
    seed: int, tasks: tuple[str, ...] = tuple(TASKS), weights: dict[str, float] | None = None
) -> Callable[[], tuple[str, str]]:
    """An endless deterministic source of (prompt, target answer) pairs from the train split;
    `weights` (task -> relative frequency, default 1) oversamples the tasks that learn slowest."""
    rng = random.Random(f"train-{seed}")
    task_weights = [(weights or {}).get(task, 1.0) for task in tasks]

    def next_example() -> tuple[str, str]:
        instance = sample_instance(rng.choices(tasks, task_weights)[0], rng, "train")
        return instance.prompt, instance.training_target(rng)

    return next_example


def tokenizer_corpus() -> list[str]:
    """Text the demo BPE is trained on: the instruction words of every task (payloads are digits)."""
    rng = random.Random("corpus")
    return [TASKS[name].sample(rng).prompt for name in TASKS for _ in range(200)]
