"""`vdiff-operator render` prints exactly what the builders produce, without owner references."""

from __future__ import annotations

import subprocess
import sys

import pytest
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


def test_render_shows_dashboard_linkage_and_explicit_runtimes(capsys) -> None:
    """odh-dashboard findTemplateByName (frontend/src/api/k8s/servingRuntimes.ts, packages/kserve/src/
    deployServer.ts) matches template-name against the Template's or objects[0]'s name: both are the same;
    runtime-version is compared with the Template's (packages/model-serving/src/concepts/versions.ts)."""
    assert main(["render", "-f", str(SAMPLE), "--rhoai"]) == 0
    runtime, isvc, _route, template = yaml.safe_load_all(capsys.readouterr().out)
    annotations = runtime["metadata"]["annotations"]
    assert annotations["opendatahub.io/template-name"] == template["metadata"]["name"]
    assert template["objects"][0]["metadata"]["name"] == template["metadata"]["name"]
    version = template["objects"][0]["metadata"]["annotations"]["opendatahub.io/runtime-version"]
    assert annotations["opendatahub.io/runtime-version"] == version
    assert runtime["spec"]["supportedModelFormats"] == [{"name": "vdiff", "autoSelect": False}]
    assert isvc["spec"]["predictor"]["model"]["runtime"] == runtime["metadata"]["name"]
    assert "parameters" not in template


def test_render_two_models_gives_two_admissible_runtimes(tmp_path, capsys) -> None:
    """kserve pkg/webhook/admission/servingruntime/servingruntime_webhook.go admits both (api_server.py)."""
    from api_server import servingruntime_denial

    one = yaml.safe_load(SAMPLE.read_text())
    two = {**one, "metadata": {**one["metadata"], "name": "second"}}
    path = tmp_path / "two.yaml"
    path.write_text(yaml.safe_dump_all([one, two]))
    assert main(["render", "-f", str(path), "-n", "models"]) == 0
    runtimes = [d for d in yaml.safe_load_all(capsys.readouterr().out) if d["kind"] == "ServingRuntime"]
    assert len(runtimes) == 2
    assert servingruntime_denial(runtimes[1], runtimes[:1]) is None


def one_error_line(capsys) -> str:
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), captured.err
    assert "Traceback" not in captured.err and captured.out == ""
    return lines[0]


def test_every_cli_error_is_one_line_and_a_non_zero_exit(tmp_path, capsys, monkeypatch) -> None:
    assert main(["render", "-f", str(tmp_path / "missing.yaml")]) == 2
    assert "missing.yaml: no such file" in one_error_line(capsys)
    assert main(["render", "-f", str(tmp_path)]) == 2
    assert "is a directory" in one_error_line(capsys)
    broken = tmp_path / "broken.yaml"
    broken.write_text("kind: DiffusionModel\nspec: {model: [\n")
    assert main(["render", "-f", str(broken)]) == 2
    assert "invalid YAML at line" in one_error_line(capsys)
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"\xff\xfe\x00kind")
    assert main(["render", "-f", str(binary)]) == 2
    assert "not UTF-8" in one_error_line(capsys)
    other = tmp_path / "other.yaml"
    other.write_text("kind: ConfigMap\n")
    assert main(["render", "-f", str(other)]) == 2
    assert "no DiffusionModel found" in one_error_line(capsys)
    no_spec = tmp_path / "no-spec.yaml"
    no_spec.write_text("apiVersion: vdiff.io/v1alpha1\nkind: DiffusionModel\nmetadata: {name: m}\nspec: 3\n")
    assert main(["render", "-f", str(no_spec)]) == 2
    assert "invalid DiffusionModel" in one_error_line(capsys)
    for argv in ([], ["render"], ["render", "-f", str(SAMPLE), "--bogus"]):
        with pytest.raises(SystemExit) as exited:
            main(argv)
        assert exited.value.code == 2
        assert "--help" in one_error_line(capsys)


def test_console_script_error_is_one_line(tmp_path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "vdiff_operator.cli", "render", "-f", str(tmp_path / "missing.yaml")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"error: {tmp_path / 'missing.yaml'}: no such file"]


def test_render_shows_the_autoscaling_path(tmp_path, capsys) -> None:
    body = yaml.safe_load(SAMPLE.read_text())
    body["spec"].pop("replicas", None)
    body["spec"]["autoscaling"] = {"maxReplicas": 4, "metric": "queueDepth"}
    path = tmp_path / "dm.yaml"
    path.write_text(yaml.safe_dump(body))

    def isvc(*flags: str) -> dict:
        assert main(["render", "-f", str(path), *flags]) == 0
        docs = list(yaml.safe_load_all(capsys.readouterr().out))
        return next(d for d in docs if d["kind"] == "InferenceService")

    keda = isvc("--rhoai", "--keda")
    assert keda["metadata"]["annotations"]["serving.kserve.io/autoscalerClass"] == "keda"
    assert (
        "vllm:num_requests_waiting"
        in keda["spec"]["predictor"]["autoScaling"]["metrics"][0]["external"]["metric"]["query"]
    )
    hpa = isvc("--rhoai")
    assert hpa["metadata"]["annotations"]["serving.kserve.io/autoscalerClass"] == "hpa"
    assert hpa["spec"]["predictor"]["scaleMetric"] == "cpu"
    plain = isvc("--keda", "--prometheus-url", "http://prom.monitoring.svc:9090")
    metric = plain["spec"]["predictor"]["autoScaling"]["metrics"][0]["external"]["metric"]
    assert metric["serverAddress"] == "http://prom.monitoring.svc:9090"
