"""The benchmark harness end to end on the shipped demo models (tiny samples, no timing checks)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import run
from bench.policies import POLICIES, REFERENCE_POLICY
from bench.tasks import TASKS


def test_engine_benchmark_writes_results_ratios_and_plot(tmp_path: Path) -> None:
    run.main(
        [
            "--models",
            "llada-demo",
            "--policies",
            "threshold-0.9",
            "apd-0.7",
            "apd-0.7-large-verifier",
            "block-threshold-0.9",
            "--examples",
            "1",
            "--concurrency",
            "1",
            "2",
            "--no-http",
            "--name",
            "t",
            "--out-dir",
            str(tmp_path),
        ]
    )
    results = json.loads((tmp_path / "t.json").read_text())
    assert (tmp_path / "t.png").stat().st_size > 0
    assert results["settings"]["curves"] == {
        "threshold": ["threshold-0.9"],
        "block-threshold": ["block-threshold-0.9"],
        "apd": ["apd-0.7"],
    }
    table = (tmp_path / "t.md").read_text()
    assert "tok/s c=2 ÷ c=1" in table and "| llada-demo | engine | threshold-0.9 |" in table
    multi_rows = table.split("Multi-answer tasks alone")[1]
    assert "| llada-demo | threshold-0.9 |" in multi_rows and "tok/s on them (c=2)" in multi_rows
    engine = results["models"]["llada-demo"]["engine"]
    assert set(engine) == {REFERENCE_POLICY, "threshold-0.9", "apd-0.7"}  # with qwen2-ar-mini-llada-demo
    # the large verifier has dream-demo's tokenizer: the row is skipped with the engine's reason
    skipped = results["skipped"]["llada-demo"]["engine"]
    assert "does not share the tokenizer" in skipped["apd-0.7-large-verifier"]
    assert "needs a block-diffusion model" in skipped["block-threshold-0.9"]
    assert "block_diffusion_models" not in results
    reference = engine[REFERENCE_POLICY]
    assert set(reference["accuracy_per_task"]) == set(TASKS)
    assert reference["vs_reference"]["speed"]["2"]["tokens_per_s"] == pytest.approx(1.0)
    cell = reference["overall"]["1"]
    assert cell["num_requests"] == len(TASKS)
    assert cell["latency_p95_s"] >= cell["latency_p50_s"] > 0
    # The reference policy commits one token per step over a 16-token canvas.
    assert cell["forwards_per_token"] >= 1.0
    assert reference["accuracy_same_at_every_concurrency"]


@pytest.mark.slow  # test_block_sdar_demo decodes sdar-demo; the llada-demo run above covers the harness
def test_block_diffusion_model_gets_block_rows_and_its_own_reference(tmp_path: Path) -> None:
    run.main(
        [
            "--models",
            "sdar-demo",
            "--policies",
            "block-4-per-step",
            "block-threshold-0.9",
            "threshold-0.9-dual-cache",
            "--examples",
            "1",
            "--concurrency",
            "1",
            "2",
            "--no-http",
            "--name",
            "s",
            "--out-dir",
            str(tmp_path),
        ]
    )
    results = json.loads((tmp_path / "s.json").read_text())
    assert results["block_diffusion_models"] == ["sdar-demo"]
    assert results["settings"]["policies_on_block_diffusion_models"] == {
        REFERENCE_POLICY: {"decoding": "block", "threshold": 1.0}
    }
    engine = results["models"]["sdar-demo"]["engine"]
    assert set(engine) == {REFERENCE_POLICY, "block-4-per-step", "block-threshold-0.9"}
    skipped = results["skipped"]["sdar-demo"]["engine"]
    assert "block-causal model never attends" in skipped["threshold-0.9-dual-cache"]
    reference, one_step = engine[REFERENCE_POLICY]["overall"]["1"], engine["block-4-per-step"]["overall"]["1"]
    # one token per step against the whole block per step (4 tokens per forward at most)
    assert reference["forwards_per_token"] >= 1.0 > one_step["forwards_per_token"] >= 0.25
    assert engine[REFERENCE_POLICY]["vs_reference"]["speed"]["2"]["tokens_per_s"] == pytest.approx(1.0)
    assert engine["block-threshold-0.9"]["vs_reference"]["speed"]["2"]["tokens_per_s"] > 0
    table = (tmp_path / "s.md").read_text()
    assert "sdar-demo (block diffusion) the block policy at one token per step" in table
    assert "| sdar-demo | engine | block-threshold-0.9 |" in table
    assert (tmp_path / "s.png").stat().st_size > 0


def test_default_models_include_the_block_diffusion_demo() -> None:
    assert run.BENCH_RUN_MODELS == ("llada-demo", "dream-demo", "sdar-demo")
    assert run.is_block_diffusion(run.checkpoint_dir("sdar-demo"))
    assert not run.is_block_diffusion(run.checkpoint_dir("llada-demo"))


def test_every_policy_row_is_valid_sampling_params() -> None:
    from vdiff import SamplingParams

    for policy in POLICIES:
        SamplingParams(max_tokens=16, **policy.overrides)
        SamplingParams(max_tokens=16, **policy.overrides_for(block_diffusion=True))


@pytest.mark.slow
def test_http_benchmark_through_vdiff_serve(tmp_path: Path) -> None:
    run.main(
        [
            "--models",
            "llada-demo",
            "--policies",
            "reference",
            "--examples",
            "1",
            "--http-examples",
            "1",
            "--concurrency",
            "1",
            "--name",
            "h",
            "--out-dir",
            str(tmp_path),
        ]
    )
    results = json.loads((tmp_path / "h.json").read_text())
    http = results["models"]["llada-demo"]["http"][REFERENCE_POLICY]
    engine = results["models"]["llada-demo"]["engine"][REFERENCE_POLICY]
    assert http["accuracy_per_task"] == engine["accuracy_per_task"]  # temperature 0: same answers


def test_canvas_cost_benchmark_writes_its_table(tmp_path: Path) -> None:
    from bench import canvas_cost

    canvas_cost.main(
        ["--rounds", "1", "--steps", "1", "--d-model", "32", "--layers", "1", "--out-dir", str(tmp_path)]
    )
    results = json.loads((tmp_path / "canvas_cost.json").read_text())
    assert set(results["cases"]) == {"256", "-1"}  # ratios only, never asserted on timing
