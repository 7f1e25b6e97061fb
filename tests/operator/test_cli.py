"""`vdiff-operator render` prints exactly what the builders produce, without owner references."""

from __future__ import annotations

import subprocess
import sys

import yaml
from crd_schemas import REPO_ROOT
from vdiff_operator.cli import main

SAMPLE = REPO_ROOT / "config/samples/vdiff_v1alpha1_diffusionmodel_llada.yaml"


def test_render_openshift(capsys) -> None:
    assert main(["render", "-f", str(SAMPLE), "--openshift", "-n", "models"]) == 0
    docs = list(yaml.safe_load_all(capsys.readouterr().out))
    assert [d["kind"] for d in docs] == ["ServingRuntime", "InferenceService", "Route", "ServiceMonitor"]
    assert all(d["metadata"]["namespace"] == "models" for d in docs)
    assert all("ownerReferences" not in d["metadata"] for d in docs)


def test_render_rhoai_adds_the_template(capsys) -> None:
    assert main(["render", "-f", str(SAMPLE), "--rhoai", "--image", "quay.io/x/vdiff:1"]) == 0
    docs = list(yaml.safe_load_all(capsys.readouterr().out))
    assert [d["kind"] for d in docs] == ["ServingRuntime", "InferenceService", "Route", "Template"]
    assert docs[0]["spec"]["containers"][0]["image"] == "quay.io/x/vdiff:1"


def test_render_rejects_invalid_input(tmp_path, capsys) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "apiVersion: vdiff.io/v1alpha1\nkind: DiffusionModel\nmetadata: {name: m}\nspec: {model: {uri: ftp://x}}\n"
    )
    assert main(["render", "-f", str(bad)]) == 2
    assert "invalid DiffusionModel" in capsys.readouterr().err


def test_console_script_runs() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "vdiff_operator.cli", "render", "-f", str(SAMPLE)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert [d["kind"] for d in yaml.safe_load_all(result.stdout)] == ["ServingRuntime", "InferenceService"]
