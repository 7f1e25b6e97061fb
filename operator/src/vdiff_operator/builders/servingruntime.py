"""KServe ServingRuntime running the vdiff server, following ODH's vLLM runtime conventions."""

from __future__ import annotations

from typing import Any

from vdiff_operator.builders.common import (
    DASHBOARD_LABEL,
    DRAIN_SECONDS,
    MODEL_FORMAT,
    PORT_NAME,
    RUNTIME_VERSION,
    SERVER_PORT,
    TEMPLATE_DISPLAY_NAME,
    TEMPLATE_NAME,
    display_name,
    metadata,
    serving_runtime_name,
)
from vdiff_operator.models import DiffusionModel

API_VERSION = "serving.kserve.io/v1alpha1"
BASE_ARGS = [f"--port={SERVER_PORT}", "--model=/mnt/models", f"--shutdown-grace-period={DRAIN_SECONDS}"]


def runtime_spec(image: str, *, args: list[str], shared_memory: str) -> dict[str, Any]:
    """The runtime body shared by per-model runtimes and the dashboard Template."""
    return {
        "annotations": {
            "prometheus.io/port": str(SERVER_PORT),
            "prometheus.io/path": "/metrics",
            # The dashboard's metrics page reads vllm:* series for this runtime kind; vdiff exports them.
            "opendatahub.io/kserve-runtime": "vllm",
        },
        "multiModel": False,
        "protocolVersions": ["v1"],
        # One runtime per model in a namespace: KServe's ServingRuntime webhook denies two that both
        # auto-select the same format with the same priority and protocol
        # (kserve pkg/webhook/admission/servingruntime/servingruntime_webhook.go). Without autoSelect and
        # priority there is no conflict; every InferenceService names its runtime in model.runtime.
        "supportedModelFormats": [{"name": MODEL_FORMAT, "autoSelect": False}],
        "containers": [
            {
                "name": "kserve-container",
                "image": image,
                "args": args,
                "env": [{"name": "HF_HOME", "value": "/tmp/hf_home"}],
                "ports": [{"name": PORT_NAME, "containerPort": SERVER_PORT, "protocol": "TCP"}],
                "volumeMounts": [{"name": "shm", "mountPath": "/dev/shm"}],
            }
        ],
        "volumes": [{"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": shared_memory}}],
    }


def dashboard_annotations(gpu_resource_name: str) -> dict[str, str]:
    return {
        "opendatahub.io/template-name": TEMPLATE_NAME,
        "opendatahub.io/template-display-name": TEMPLATE_DISPLAY_NAME,
        "opendatahub.io/runtime-version": RUNTIME_VERSION,
        "opendatahub.io/recommended-accelerators": f'["{gpu_resource_name}"]',
        "opendatahub.io/apiProtocol": "REST",
    }


def build_serving_runtime(dm: DiffusionModel, image: str) -> dict[str, Any]:
    resources = dm.spec.resources
    spec = runtime_spec(image, args=list(BASE_ARGS), shared_memory=resources.effective_shared_memory)
    if dm.spec.image_pull_secrets:
        spec["imagePullSecrets"] = [{"name": ref.name} for ref in dm.spec.image_pull_secrets]
    annotations = {
        "openshift.io/display-name": display_name(dm),
        **dashboard_annotations(resources.gpu_resource_name),
    }
    return {
        "apiVersion": API_VERSION,
        "kind": "ServingRuntime",
        "metadata": metadata(
            dm, serving_runtime_name(dm), extra_labels={DASHBOARD_LABEL: "true"}, annotations=annotations
        ),
        "spec": spec,
    }
