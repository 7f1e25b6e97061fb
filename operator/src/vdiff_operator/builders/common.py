"""Names, labels, annotations and owner references shared by every child object."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from vdiff_operator.builders.credentials import CredentialConfig, credential_config
from vdiff_operator.models import API_VERSION, KIND, DiffusionModel

MANAGED_BY = "vdiff-operator"
LABEL_PREFIX = "vdiff.io"
OWNER_LABEL = f"{LABEL_PREFIX}/diffusionmodel"
DASHBOARD_LABEL = "opendatahub.io/dashboard"
SERVER_PORT = 8080
DRAIN_SECONDS = 30
"""How long in-flight requests may finish after SIGTERM: the server's --shutdown-grace-period (declared here
once; the runtime args and the predictor's terminationGracePeriodSeconds both derive from it)."""
SERVER_EXTRA_SHUTDOWN_SECONDS = 5
"""After draining, the server lets uvicorn flush responses for this long (server/src/vdiff/entrypoints/
api_server.py EXTRA_SHUTDOWN_S; tests/operator/test_builders.py checks the two agree)."""
TERMINATION_MARGIN_SECONDS = 5
TERMINATION_GRACE_PERIOD_SECONDS = DRAIN_SECONDS + SERVER_EXTRA_SHUTDOWN_SECONDS + TERMINATION_MARGIN_SECONDS
"""The kubelet sends SIGKILL this long after SIGTERM: drain + flush + a margin for process exit."""
PORT_NAME = "http"
MODEL_FORMAT = "vdiff"
TEMPLATE_NAME = "vdiff-runtime"
"""The Template *and* its objects[0] ServingRuntime: odh-dashboard's `findTemplateByName` matches
`opendatahub.io/template-name` against objects[0].metadata.name (every version) or metadata.name (since
8b074a5e), so one name serves both (odh-dashboard frontend/src/api/k8s/servingRuntimes.ts,
packages/kserve/src/deployServer.ts).
"""
TEMPLATE_DISPLAY_NAME = "vdiff ServingRuntime for KServe (diffusion LLMs)"
DEFAULT_IMAGE = "quay.io/vdiff/vdiff-server:0.1.0"
RUNTIME_VERSION = "v" + DEFAULT_IMAGE.rsplit(":", 1)[1]
"""`opendatahub.io/runtime-version`, the same on the Template's runtime and every per-model runtime: the
dashboard shows "Latest" when they match, "Outdated" otherwise
(odh-dashboard packages/model-serving/src/concepts/versions.ts).
"""
IMAGE_ENV = "RELATED_IMAGE_VDIFF_SERVER"
DEFAULT_STORAGE_INITIALIZER_IMAGE = "kserve/storage-initializer:v0.17.1"
"""KServe's own default is `kserve/storage-initializer:<release>` (pkg/constants
StorageInitializerContainerImage); a cluster's real one is `storageInitializer.image` in the
inferenceservice-config ConfigMap. Set RELATED_IMAGE_STORAGE_INITIALIZER to that image (OpenShift AI
ships its own)."""
STORAGE_INITIALIZER_IMAGE_ENV = "RELATED_IMAGE_STORAGE_INITIALIZER"


def storage_initializer_image() -> str:
    return os.environ.get(STORAGE_INITIALIZER_IMAGE_ENV) or DEFAULT_STORAGE_INITIALIZER_IMAGE


@dataclass(frozen=True)
class Platform:
    """What the cluster offers; decides which children exist."""

    has_route_api: bool = False
    has_service_monitor_api: bool = False
    has_dsc_initialization: bool = False
    applications_namespace: str | None = None
    default_image: str = DEFAULT_IMAGE
    has_keda: bool = False
    """keda.sh/v1alpha1 serves scaledobjects (KEDA, or the Custom Metrics Autoscaler on OpenShift)."""
    prometheus_url: str | None = None
    """A Prometheus KEDA may query without credentials (VDIFF_PROMETHEUS_URL); on OpenShift AI the
    operator uses thanos-querier with odh-model-controller's TriggerAuthentication instead."""
    storage_initializer_image: str = field(default_factory=storage_initializer_image)
    """Image of the init container fetching an s3/gs/http(s) draft model (builders/inferenceservice)."""
    kserve_credentials: CredentialConfig | None = None
    """KServe's `credentials` config; None: VDIFF_KSERVE_CREDENTIALS, else the value KServe/ODH ships."""

    @property
    def credential_config(self) -> CredentialConfig:
        return self.kserve_credentials or credential_config(rhoai=self.has_dsc_initialization)

    @classmethod
    def openshift(
        cls, *, rhoai: bool = False, keda: bool = False, default_image: str = DEFAULT_IMAGE
    ) -> Platform:
        return cls(
            has_route_api=True,
            has_service_monitor_api=True,
            has_dsc_initialization=rhoai,
            applications_namespace="redhat-ods-applications" if rhoai else None,
            default_image=default_image,
            has_keda=keda,
        )


def inference_service_name(dm: DiffusionModel) -> str:
    return dm.name


def serving_runtime_name(dm: DiffusionModel) -> str:
    return dm.name


def predictor_service_name(dm: DiffusionModel) -> str:
    """The Service KServe (raw mode) creates for the predictor."""
    return f"{dm.name}-predictor"


def route_name(dm: DiffusionModel) -> str:
    """Never `<isvc>`: odh-model-controller owns a Route of that name when the isvc is exposed."""
    return f"{dm.name}-api"


def service_monitor_name(dm: DiffusionModel) -> str:
    """Never `<isvc>-metrics`: odh-model-controller's name."""
    return f"{dm.name}-engine"


def labels(dm: DiffusionModel) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "vdiff",
        "app.kubernetes.io/instance": dm.name,
        "app.kubernetes.io/managed-by": MANAGED_BY,
        OWNER_LABEL: dm.name,
    }


def display_name(dm: DiffusionModel) -> str:
    return dm.spec.display_name or dm.name


def owner_reference(dm: DiffusionModel) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "name": dm.name,
        "uid": dm.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def metadata(
    dm: DiffusionModel,
    name: str,
    *,
    extra_labels: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "name": name,
        "namespace": dm.namespace,
        "labels": {**labels(dm), **(extra_labels or {})},
        "ownerReferences": [owner_reference(dm)],
    }
    if annotations:
        meta["annotations"] = annotations
    return meta
