"""The task suite: deterministic, machine-checkable, train/eval disjoint, multi-answer tasks really multi."""

from __future__ import annotations

import itertools
import random

import pytest

from bench.tasks import (
    MULTI_ANSWER_TASKS,
    SINGLE_ANSWER_TASKS,
    TASKS,
    eval_set,
    is_eval_prompt,
    sample_instance,
    training_stream,
)


def test_eval_sets_are_deterministic_and_distinct() -> None:
    for task in TASKS:
        first, again = eval_set(task, 20), eval_set(task, 20)
        assert [i.prompt for i in first] == [i.prompt for i in again]
        assert len({i.prompt for i in first}) == 20


def test_train_and_eval_prompts_are_disjoint() -> None:
    eval_prompts = {i.prompt for task in TASKS for i in eval_set(task, 50)}
    next_example = training_stream(seed=3)
    train_prompts = {next_example()[0] for _ in range(3000)}
    assert not train_prompts & eval_prompts
    assert all(is_eval_prompt(i.task, i.prompt) for task in TASKS for i in eval_set(task, 5))


def _independent_answer(task: str, prompt: str) -> str:
    words = prompt.removesuffix(".").split()
    if task == "add":
        return str(int(words[1]) + int(words[3]))
    if task == "sort":
        return "".join(sorted(words[1]))
    if task == "reverse":
        return words[1][::-1]
    if task == "copy":
        return words[1]
    if task == "count":
        return str(words[3].count(words[1]))
    if task == "max":
        return max(words[2])
    raise AssertionError(task)


@pytest.mark.parametrize("task", SINGLE_ANSWER_TASKS)
def test_single_answer_tasks_are_right_and_checked(task: str) -> None:
    rng = random.Random(0)
    for _ in range(300):
        instance = TASKS[task].sample(rng)
        expected = _independent_answer(task, instance.prompt)
        assert instance.answers == (expected,)
        assert instance.check(expected)
        assert instance.check(f" {expected}\n")
        assert not instance.check(expected + "1")
        assert not instance.check("")


def test_multi_answer_tasks_accept_every_valid_answer_and_reject_mixtures() -> None:
    rng = random.Random(1)
    for _ in range(100):
        permute = sample_instance("permute", rng, "eval")
        digits = permute.prompt.removeprefix("Any order of ").removesuffix(".")
        assert set(permute.answers) == {"".join(p) for p in itertools.permutations(digits)}
        assert not permute.check(digits[0] * len(digits))  # a position-wise mixture repeats a digit

        pick = sample_instance("pick", rng, "eval")
        codes = pick.prompt.removeprefix("Pick one of ").removesuffix(".").split()
        assert all(pick.check(code) for code in codes)
        mixture = codes[0][0] + codes[1][1] + codes[2][2]
        assert not pick.check(mixture)


def test_task_groups_cover_the_suite() -> None:
    assert set(SINGLE_ANSWER_TASKS) | set(MULTI_ANSWER_TASKS) == set(TASKS)
    assert len(MULTI_ANSWER_TASKS) >= 2


def test_add_never_carries_and_count_scans_three_digits() -> None:
    rng = random.Random(2)
    for _ in range(300):
        add_words = TASKS["add"].sample(rng).prompt.removesuffix(".").split()
        a, b = int(add_words[1]), int(add_words[3])
        assert 10 <= a <= 99 and 0 <= b <= 9 and a % 10 + b <= 9
        count_words = TASKS["count"].sample(rng).prompt.removesuffix(".").split()
        assert len(count_words[3]) == 3 and count_words[3].isdigit()


def test_training_weights_oversample_a_task_and_stay_in_the_train_split() -> None:
    next_example = training_stream(seed=5, weights={"add": 8.0})
    prompts = [next_example()[0] for _ in range(600)]
    share_of_add = sum(p.startswith("Add ") for p in prompts) / len(prompts)
    assert share_of_add > 0.4  # uniform would be 1/8
    assert not any(is_eval_prompt(p.split()[0].lower(), p) for p in prompts if p.startswith("Add "))
