"""`resources.gpus: N` runs the model tensor-parallel on the pod's N GPUs (issue 17 item 4).

Rules matched:
- vLLM's flag: `--tensor-parallel-size` (`-tp`), one rank per GPU of the pod; the server declares it in
  server/src/vdiff/entrypoints/frontend_args.py / cli_args.py and every arg is parsed here by its real parser.
- KServe's LLMInferenceService vLLM templates pass `--tensor-parallel-size` only when parallelism is set and
  give the pod an in-memory `dshm` emptyDir (1Gi single-pod, 8Gi multi-GPU workers;
  kserve charts/kserve-runtime-configs/files/llmisvcconfigs/resources.yaml). NCCL's docs ask containers for at
  least 1g of /dev/shm. Ours: `sharedMemory`, else 1Gi per GPU, at least 2Gi (models.Resources).
- Extended resources (nvidia.com/gpu) must have requests == limits (Kubernetes API validation).
Every rendered object is checked against the upstream KServe CRDs.
"""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from cel_rules import cel_errors
from crd_schemas import OUR_CRD, crd_schema, load_crd, our_errors, validate_upstream
from pydantic import ValidationError
from vdiff.config import EngineConfig
from vdiff.entrypoints import cli as server_cli
from vdiff.entrypoints.cli_args import make_arg_parser, resolve_serve_args
from vdiff.entrypoints.frontend_args import VllmCompatArgs
from vdiff_operator.builders.servingruntime import BASE_ARGS
from vdiff_operator.cli import main
from vdiff_operator.models import TENSOR_PARALLEL_ARG_REFUSAL, DiffusionModel

SCHEMA = crd_schema(load_crd(str(OUR_CRD)), "v1alpha1")


def body(**resources: Any) -> dict[str, Any]:
    return {
        "apiVersion": "vdiff.io/v1alpha1",
        "kind": "DiffusionModel",
        "metadata": {"name": "llada2-flash", "namespace": "models"},
        "spec": {"model": {"uri": "hf://inclusionAI/LLaDA2.0-flash-preview"}, "resources": resources},
    }


def render(tmp_path, capsys, obj: dict[str, Any], *flags: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The real `vdiff-operator render` CLI on a file; returns (ServingRuntime, InferenceService)."""
    path = tmp_path / "dm.yaml"
    path.write_text(yaml.safe_dump(obj))
    assert main(["render", "-f", str(path), *flags]) == 0
    docs = list(yaml.safe_load_all(capsys.readouterr().out))
    for doc in docs:
        validate_upstream(doc)
    runtime, isvc = docs[0], docs[1]
    assert (runtime["kind"], isvc["kind"]) == ("ServingRuntime", "InferenceService")
    return runtime, isvc


def server_argv(runtime: dict[str, Any], isvc: dict[str, Any]) -> list[str]:
    """What the container runs: the runtime's args, then the InferenceService's (KServe appends them)."""
    return [*runtime["spec"]["containers"][0]["args"], *isvc["spec"]["predictor"]["model"]["args"]]


def shm(runtime: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    (container,) = runtime["spec"]["containers"]
    (volume,) = [v for v in runtime["spec"]["volumes"] if v["name"] == "shm"]
    return volume, [m for m in container["volumeMounts"] if m["name"] == "shm"]


@pytest.mark.parametrize("gpus,size", [(2, "2Gi"), (4, "4Gi"), (8, "8Gi")])
def test_gpus_above_one_render_tensor_parallel_args_shm_and_gpu_resources(
    tmp_path, capsys, gpus: int, size: str
) -> None:
    runtime, isvc = render(tmp_path, capsys, body(gpus=gpus), "--rhoai")
    argv = server_argv(runtime, isvc)
    assert f"--tensor-parallel-size={gpus}" in argv
    values = resolve_serve_args(make_arg_parser(), argv, environ={}).values
    assert values["tensor_parallel_size"] == gpus
    volume, mounts = shm(runtime)
    assert volume == {"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": size}}
    assert mounts == [{"name": "shm", "mountPath": "/dev/shm"}]
    resources = isvc["spec"]["predictor"]["model"]["resources"]
    assert resources["requests"]["nvidia.com/gpu"] == resources["limits"]["nvidia.com/gpu"] == str(gpus)
    assert isvc["spec"]["predictor"]["deploymentStrategy"] == {"type": "Recreate"}


def test_the_server_accepts_the_rendered_tensor_parallel_size(tmp_path, capsys) -> None:
    """The server's own checks on the flags the operator renders accept -tp 2."""
    runtime, isvc = render(tmp_path, capsys, body(gpus=2))
    values = resolve_serve_args(make_arg_parser(), server_argv(runtime, isvc), environ={}).values
    compat_names = set(VllmCompatArgs.__dataclass_fields__)
    compat = VllmCompatArgs(**{k: v for k, v in values.items() if k in compat_names})
    server_cli.check_vllm_compat(compat)
    args = resolve_serve_args(make_arg_parser(), server_argv(runtime, isvc), environ={})
    if "tensor_parallel_size" in EngineConfig.field_names():
        assert EngineConfig(**args.engine_kwargs()).tensor_parallel_size == 2


@pytest.mark.parametrize("gpus", [0, 1])
def test_one_gpu_or_cpu_only_runs_one_rank_with_todays_output(tmp_path, capsys, gpus: int) -> None:
    """gpus 1 keeps the output of before (no -tp flag: the server's default is 1); gpus 0 never passes -tp."""
    runtime, isvc = render(tmp_path, capsys, body(gpus=gpus))
    argv = server_argv(runtime, isvc)
    assert not [arg for arg in argv if "tensor-parallel" in arg or arg.startswith("-tp")]
    assert resolve_serve_args(make_arg_parser(), argv, environ={}).values["tensor_parallel_size"] in (None, 1)
    volume, _ = shm(runtime)
    assert volume["emptyDir"]["sizeLimit"] == "2Gi"
    resources = isvc["spec"]["predictor"]["model"]["resources"]
    assert ("nvidia.com/gpu" in resources["limits"]) == bool(gpus)


def test_an_explicit_shared_memory_wins(tmp_path, capsys) -> None:
    runtime, _ = render(tmp_path, capsys, body(gpus=4, sharedMemory="16Gi"))
    assert shm(runtime)[0]["emptyDir"]["sizeLimit"] == "16Gi"


@pytest.mark.parametrize(
    "args", [["--tensor-parallel-size=2"], ["--tensor-parallel-size", "2"], ["-tp", "4"], ["-tp=2"]]
)
def test_spec_args_cannot_set_tensor_parallel_size(args: list[str]) -> None:
    obj = body(gpus=2)
    obj["spec"]["args"] = args
    assert our_errors(obj) == []
    assert cel_errors(SCHEMA, obj) == [f".spec.args: {TENSOR_PARALLEL_ARG_REFUSAL}"]
    with pytest.raises(ValidationError, match=r"derives it from resources\.gpus"):
        DiffusionModel.from_body(obj)


def test_other_args_that_start_alike_pass() -> None:
    obj = body(gpus=2)
    obj["spec"]["args"] = ["--tensor-parallel-sizes-are-fine-here-only-as-values", "-tpx"]
    assert cel_errors(SCHEMA, obj) == []
    DiffusionModel.from_body(obj)


def test_the_template_runtime_is_unchanged_by_gpus(tmp_path, capsys) -> None:
    """The dashboard Template serves InferenceServices the dashboard makes (one GPU by default): its runtime
    keeps 2Gi and no -tp; a dashboard user sets `--tensor-parallel-size` in the model's args themselves."""
    path = tmp_path / "dm.yaml"
    path.write_text(yaml.safe_dump(body(gpus=4)))
    assert main(["render", "-f", str(path), "--rhoai"]) == 0
    template = list(yaml.safe_load_all(capsys.readouterr().out))[-1]
    assert template["kind"] == "Template"
    runtime = template["objects"][0]
    assert shm(runtime)[0]["emptyDir"]["sizeLimit"] == "2Gi"
    args = runtime["spec"]["containers"][0]["args"]
    assert [a for a in args if "served-model-name" not in a] == BASE_ARGS
