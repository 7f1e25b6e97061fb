"""The throughput benchmark: every request generates exactly output-len tokens, batched = one by one."""

from __future__ import annotations

import json
from pathlib import Path

from bench import throughput


def test_batched_and_one_by_one_runs_generate_the_same_fixed_length_answers(tmp_path: Path) -> None:
    throughput.main(
        [
            *("--models", "llada-demo", "dream-demo", "--num-requests", "3", "--concurrency", "3"),
            *("--input-len", "12", "--output-len", "8", "--name", "t", "--out-dir", str(tmp_path)),
        ]
    )
    results = json.loads((tmp_path / "t.json").read_text())
    for model in ("llada-demo", "dream-demo"):
        cells = results["models"][model]
        assert set(cells) == set(throughput.CONFIGURATIONS)
        for cell in cells.values():
            assert cell["generated_tokens"] == 3 * 8
            assert cell["every_request_generated_output_len"]
            assert cell["same_tokens_at_every_concurrency"]
            assert cell["speedup"] > 0 and cell["concurrency"]["3"]["batched_forwards"] > 0
    assert "| dream-demo | threshold-0.9-dual-cache |" in (tmp_path / "t.md").read_text()


def test_prompts_have_the_requested_length_and_differ() -> None:
    from vdiff.config import EngineConfig
    from vdiff.engine.llm_engine import LLMEngine

    from bench.run import checkpoint_dir

    engine = LLMEngine(EngineConfig(model=str(checkpoint_dir("llada-demo")), device="cpu"))
    prompts = throughput.fixed_length_prompts(engine, 4, 20)
    assert [len(prompt) for prompt in prompts] == [20] * 4
    assert len({tuple(prompt) for prompt in prompts}) == 4
