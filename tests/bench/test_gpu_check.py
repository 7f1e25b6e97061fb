"""The GPU check runs end to end on the CPU at tiny shapes (no timings asserted), and its real-shape
checkpoints have exactly the layout the engine's models load."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bench import gpu_check

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_gpu_check_writes_every_section_at_tiny_shapes(tmp_path: Path) -> None:
    """In its own process, as on the GPU machine: the check asserts that no server module (fastapi,
    uvicorn) was imported, which other tests of this session would have done already."""
    out = tmp_path / "results"
    command = [
        sys.executable, str(REPO / "bench" / "gpu_check.py"),
        *("--small", "--quick", "--device", "cpu", "--out", str(out)),
        *("--work-dir", str(tmp_path / "checkpoints"), "--threads", "1"),
    ]  # fmt: skip
    status = subprocess.run(command, cwd=REPO, timeout=600, check=False).returncode
    results = json.loads((out / "gpu-small.json").read_text())
    table = (out / "gpu-small.md").read_text()
    assert status == 0, results["failures"]
    assert results["failures"] == [] and results["server_modules_imported"] == []
    assert results["environment"]["torch"] == torch.__version__ and results["environment"]["date"]
    assert not (tmp_path / "checkpoints" / "llada-small").exists()  # deleted after use
    for model in ("llada-small", "dream-small"):
        entry = results["models"][model]
        assert entry["checkpoint"]["shards"] >= 1 and entry["sdpa"]["backends"]["MATH"]["ok"]
        assert set(entry["modes"]) == {"True", "False"}  # enforce_eager on and off
        for eager, mode in entry["modes"].items():
            assert mode["compiled"] is False  # the engine compiles on CUDA only
            assert [(c["batch"], c["canvas"]) for c in mode["forward"]] == [
                (b, c) for c in (64, 128) for b in (1, 8, 32, 64)
            ]
            for canvas in (64, 128):
                assert f"| {model} | {eager} | 64 | {canvas} |" in table
            for policy in gpu_check.POLICIES:
                cells = mode["engine"][policy]
                for concurrency in ("1", "16", "64"):
                    assert cells[concurrency]["generated_tokens"] == 16 * cells[concurrency]["requests"]
                    assert f"| {model} | {eager} | {policy} | {concurrency} |" in table
            assert mode["engine"]["reference"]["64"]["forwards_per_request"] == 8  # the fixed steps
            # the rules row runs the reference schedule: the same forwards, so ms / forward compares
            rules = mode["engine"]["reference+rules+logprobs"]
            assert rules["overrides"]["logprobs"] == 5 and rules["64"]["forwards_per_request"] == 8
            assert f"- {model}, enforce_eager={eager}, concurrency 64: rules + logprobs " in table
    for heading in ("## Start-up", "## SDPA", "## One forward", "## Engine tokens/s"):
        assert heading in table


def test_gpu_check_help_documents_the_flags(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        gpu_check.main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for flag in ("--small", "--quick", "--out", "--budget-s", "--sections", "--concurrency", "--batches"):
        assert flag in text


@pytest.mark.parametrize("family", ["llada", "dream"])
def test_real_shape_checkpoints_match_the_engine_models(family: str) -> None:
    """Names and shapes of every tensor the check writes = the engine model's (built on meta), so the
    8B / 7B run on the GPU machine cannot fail on a layout mismatch."""
    from vdiff.models.registry import get_family

    shape = gpu_check.FULL_SHAPES[family]
    config, _ = gpu_check.model_config(shape)
    with torch.device("meta"):
        model = get_family(config["model_type"], False).build(config)
    expected = {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()}
    assert {name: size for name, size, _ in gpu_check.tensor_specs(shape)} == expected
    assert sum(p.numel() for p in model.parameters()) == shape.num_params
    assert 7.5e9 < shape.num_params < 8.1e9


def test_engine_path_imports_no_server_module() -> None:
    """The GPU machine has no fastapi/uvicorn: the engine and config must not import them."""
    import os
    import subprocess

    code = (
        "import sys, vdiff.config, vdiff.engine.llm_engine, vdiff.models.loader; "
        "print([m for m in ('fastapi', 'uvicorn', 'starlette') if m in sys.modules])"
    )
    src = Path(__file__).resolve().parents[2] / "server" / "src"
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": str(src)},
    )
    assert result.stdout.strip() == "[]"
