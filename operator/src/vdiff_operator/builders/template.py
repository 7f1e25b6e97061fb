"""The OpenShift AI dashboard Template offering the vdiff runtime in "Add serving runtime" lists."""

from __future__ import annotations

from typing import Any

from vdiff_operator.builders.common import (
    DASHBOARD_LABEL,
    MANAGED_BY,
    TEMPLATE_DISPLAY_NAME,
    TEMPLATE_NAME,
)
from vdiff_operator.builders.servingruntime import API_VERSION as RUNTIME_API_VERSION
from vdiff_operator.builders.servingruntime import BASE_ARGS, dashboard_annotations, runtime_spec

API_VERSION = "template.openshift.io/v1"
GPU_RESOURCE = "nvidia.com/gpu"


def build_template(namespace: str, image: str) -> dict[str, Any]:
    """One per cluster, in the dashboard's applications namespace; shared, so it has no owner."""
    runtime = {
        "apiVersion": RUNTIME_API_VERSION,
        "kind": "ServingRuntime",
        "metadata": {
            "name": TEMPLATE_NAME,  # = the Template's name, which opendatahub.io/template-name carries
            "labels": {DASHBOARD_LABEL: "true"},
            "annotations": {
                "openshift.io/display-name": TEMPLATE_DISPLAY_NAME,
                **dashboard_annotations(GPU_RESOURCE),
            },
        },
        # KServe renders {{.Name}} with the InferenceService name.
        "spec": runtime_spec(
            image,
            args=[*BASE_ARGS, "--served-model-name={{.Name}}"],
            shared_memory="2Gi",
        ),
    }
    return {
        "apiVersion": API_VERSION,
        "kind": "Template",
        "metadata": {
            "name": TEMPLATE_NAME,
            "namespace": namespace,
            "labels": {
                DASHBOARD_LABEL: "true",
                "app.kubernetes.io/name": "vdiff",
                "app.kubernetes.io/managed-by": MANAGED_BY,
            },
            "annotations": {
                "openshift.io/display-name": TEMPLATE_DISPLAY_NAME,
                "openshift.io/provider-display-name": "vdiff",
                "description": "Diffusion language models (LLaDA, Dream) behind vdiff's OpenAI API.",
                "tags": "vdiff,diffusion,llm,servingruntime",
                "opendatahub.io/modelServingSupport": '["single"]',
                "opendatahub.io/apiProtocol": "REST",
                "opendatahub.io/model-type": '["generative"]',
            },
        },
        # No `parameters: []`: Template.parameters is omitempty (openshift/api template/v1/types.go).
        "objects": [runtime],
    }
