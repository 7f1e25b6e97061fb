"""The shipped demo checkpoints load like any model and still reach the accuracy recorded next to them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from vdiff.demo import DEFAULT_DEMO_MODEL, DEMO_MODEL_NAMES, demo_model_path, is_demo_model_available

from bench.evaluate_demo import ACCURACY_FILE, causal_answers, diffusion_answers
from bench.tasks import MULTI_ANSWER_TASKS, SINGLE_ANSWER_TASKS, TASKS, eval_set

SAMPLE_PER_TASK = 10
"""A prefix of the same deterministic eval prompts accuracy.json was measured on."""
TOLERANCE = {"single": 0.10, "multi": 0.15}


def test_default_demo_model_is_the_llada_one() -> None:
    assert DEFAULT_DEMO_MODEL == "llada-demo"
    assert demo_model_path().name == "llada-demo"
    with pytest.raises(ValueError, match="unknown demo model"):
        demo_model_path("gpt-5")


LARGER_DEMO_MODELS = ("dream-demo", "qwen2-ar-demo")
"""The slowest to evaluate; the default llada-demo and the small ones stay in the default run."""


@pytest.mark.parametrize(
    "name",
    [
        pytest.param(name, marks=pytest.mark.slow) if name in LARGER_DEMO_MODELS else name
        for name in DEMO_MODEL_NAMES
    ],
)
def test_shipped_demo_model_reaches_its_recorded_accuracy(name: str) -> None:
    path = demo_model_path(name)
    assert is_demo_model_available(name), f"{path} has no checkpoint (run `make train-demo`)"
    recorded = json.loads((path / ACCURACY_FILE).read_text())
    instances = [instance for task in TASKS for instance in eval_set(task, SAMPLE_PER_TASK)]
    model_type = json.loads((path / "config.json").read_text())["model_type"]
    answers = causal_answers(path, instances) if model_type == "qwen2" else diffusion_answers(path, instances)
    hits: dict[str, list[bool]] = {task: [] for task in TASKS}
    for instance, answer in zip(instances, answers, strict=True):
        hits[instance.task].append(instance.check(answer))

    def mean(tasks: tuple[str, ...]) -> float:
        return sum(sum(hits[t]) for t in tasks) / sum(len(hits[t]) for t in tasks)

    single, multi = mean(SINGLE_ANSWER_TASKS), mean(MULTI_ANSWER_TASKS)
    assert single >= recorded["single_answer_mean"] - TOLERANCE["single"], (name, hits)
    assert multi >= recorded["multi_answer_mean"] - TOLERANCE["multi"], (name, hits)


def test_demo_names_resolve_like_model_ids_unless_a_directory_has_that_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`vdiff serve dream-demo --draft-model qwen2-ar-mini-demo` serves the shipped pair, with APD."""
    from vdiff import LLM, SamplingParams
    from vdiff.models.loader import resolve_model_path

    assert resolve_model_path("dream-demo") == demo_model_path("dream-demo")
    llm = LLM("dream-demo", draft_model="qwen2-ar-mini-demo", device="cpu")
    params = SamplingParams(max_tokens=8, temperature=0, decoding="apd")
    output = llm.chat([{"role": "user", "content": "Copy 90817."}], params)[0]
    assert output.outputs[0].text == "90817"

    (tmp_path / "dream-demo").mkdir()
    monkeypatch.chdir(tmp_path)
    assert resolve_model_path("dream-demo") == (tmp_path / "dream-demo").resolve()
