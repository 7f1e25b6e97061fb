"""KServe InferenceService (RawDeployment) for one DiffusionModel."""

from __future__ import annotations

from typing import Any

from vdiff_operator.builders.args import (
    API_KEYS_FILE_NAME,
    API_KEYS_MOUNT_PATH,
    DRAFT_MODELCAR_LINK,
    DRAFT_MOUNT_PATH,
    model_args,
)
from vdiff_operator.builders.autoscaling import AUTOSCALER_CLASS_ANNOTATION, scaling_plan
from vdiff_operator.builders.common import (
    DASHBOARD_LABEL,
    MODEL_FORMAT,
    TERMINATION_GRACE_PERIOD_SECONDS,
    Platform,
    display_name,
    inference_service_name,
    metadata,
    serving_runtime_name,
)
from vdiff_operator.builders.credentials import CredentialMounts, StorageCredentials, storage_credentials
from vdiff_operator.builders.modelcar import draft_modelcar, draft_modelcar_init
from vdiff_operator.models import DRAFT_DOWNLOAD_SCHEMES, DiffusionModel

API_VERSION = "serving.kserve.io/v1beta1"
DEPLOYMENT_MODE_ANNOTATION = "serving.kserve.io/deploymentMode"
API_KEY_ENV = "VDIFF_API_KEY"


def _resources(dm: DiffusionModel) -> dict[str, Any]:
    spec = dm.spec.resources
    requests: dict[str, Any] = {"cpu": str(spec.cpu), "memory": str(spec.memory)}
    limits: dict[str, Any] = {
        "cpu": str(spec.limits.cpu if spec.limits.cpu is not None else spec.cpu),
        "memory": str(spec.limits.memory if spec.limits.memory is not None else spec.memory),
    }
    if spec.gpus:
        requests[spec.gpu_resource_name] = str(spec.gpus)
        limits[spec.gpu_resource_name] = str(spec.gpus)
    return {"requests": requests, "limits": limits}


def _tolerations(dm: DiffusionModel) -> list[dict[str, Any]]:
    if dm.spec.tolerations is not None:
        return [t.model_dump(by_alias=True, exclude_none=True) for t in dm.spec.tolerations]
    if dm.spec.resources.gpus:
        return [{"key": dm.spec.resources.gpu_resource_name, "operator": "Exists", "effect": "NoSchedule"}]
    return []


def _env(dm: DiffusionModel) -> list[dict[str, Any]]:
    env: list[dict[str, Any]] = []
    ref = dm.spec.api_key_secret_ref
    if ref is not None:
        env.append({"name": API_KEY_ENV, "valueFrom": {"secretKeyRef": {"name": ref.name, "key": ref.key}}})
    env += [var.model_dump(by_alias=True, exclude_none=True) for var in dm.spec.env]
    return env


DRAFT_VOLUME = "draft-model"
DRAFT_INITIALIZER_NAME = "draft-model-initializer"
"""Never `storage-initializer`: KServe's pod webhook skips its own injection when an init container of that
name exists (pkg/webhook/admission/pod/storage_initializer_injector.go), and the main model would not load."""
DRAFT_INITIALIZER_RESOURCES = {
    "requests": {"cpu": "100m", "memory": "100Mi"},
    "limits": {"cpu": "1", "memory": "1Gi"},
}
"""KServe's storageInitializer defaults (config/configmap/inferenceservice.yaml)."""


def _draft_volume(dm: DiffusionModel) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """KServe fetches only spec.predictor.model.storageUri. A pvc:// draft gets its own read-only claim
    volume; an s3/gs/http(s) draft an emptyDir that _draft_initializer fills. Both at DRAFT_MOUNT_PATH,
    read-only in the server container. hf:// drafts need none (the server downloads them)."""
    draft = dm.spec.draft_model
    if draft is None:
        return None
    scheme, _, rest = draft.uri.partition("://")
    if scheme == "hf":
        return None
    mount = {"name": DRAFT_VOLUME, "mountPath": DRAFT_MOUNT_PATH, "readOnly": True}
    if scheme == "pvc":
        claim = rest.split("/", 1)[0]
        return {"name": DRAFT_VOLUME, "persistentVolumeClaim": {"claimName": claim, "readOnly": True}}, mount
    return {"name": DRAFT_VOLUME, "emptyDir": {}}, mount


def downloads_draft(dm: DiffusionModel) -> bool:
    """Whether the draft is fetched by an init container (and so needs the account's credentials)."""
    draft = dm.spec.draft_model
    return draft is not None and draft.uri.partition("://")[0] in DRAFT_DOWNLOAD_SCHEMES


def _draft_initializer(
    dm: DiffusionModel, platform: Platform, mounts: CredentialMounts
) -> dict[str, Any] | None:
    """The draft's download, done as KServe does the main model's: its storage-initializer image with the
    args `<uri> <dest dir>` (python/storage-initializer/scripts/initializer-entrypoint), writing into the
    draft's emptyDir, with the credentials KServe's webhook would give its own storage-initializer
    (builders/credentials.py: the predictor service account's Secrets and annotations)."""
    if not downloads_draft(dm):
        return None
    assert dm.spec.draft_model is not None
    container: dict[str, Any] = {
        "name": DRAFT_INITIALIZER_NAME,
        "image": platform.storage_initializer_image,
        "args": [dm.spec.draft_model.uri, DRAFT_MOUNT_PATH],
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "resources": {kind: dict(values) for kind, values in DRAFT_INITIALIZER_RESOURCES.items()},
        "volumeMounts": [{"name": DRAFT_VOLUME, "mountPath": DRAFT_MOUNT_PATH}, *mounts.volume_mounts],
    }
    if mounts.env:
        container["env"] = mounts.env
    return container


def _api_keys_volume(dm: DiffusionModel) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """The API-keys Secret as a volume (never subPath: the kubelet then updates it in place when the Secret
    changes, and the server re-reads it). The operator only names the Secret: it needs no Secret rights."""
    ref = dm.spec.auth.api_keys_secret_ref
    if ref is None:
        return None
    secret: dict[str, Any] = {"secretName": ref.name}
    if ref.key is not None:
        secret["items"] = [{"key": ref.key, "path": API_KEYS_FILE_NAME}]
    volume = {"name": "api-keys", "secret": secret}
    mount = {"name": "api-keys", "mountPath": API_KEYS_MOUNT_PATH, "readOnly": True}
    return volume, mount


def build_inference_service(
    dm: DiffusionModel, platform: Platform | None = None, credentials: StorageCredentials | None = None
) -> dict[str, Any]:
    """`credentials`: the predictor service account and its Secrets as read from the cluster; None (or
    nothing read) renders the draft's fetch without credentials."""
    platform = platform or Platform()
    mounts = CredentialMounts()
    if downloads_draft(dm) and credentials is not None:
        mounts = storage_credentials(credentials, platform.credential_config)
    model: dict[str, Any] = {
        "modelFormat": {"name": MODEL_FORMAT},
        "runtime": serving_runtime_name(dm),
        "storageUri": dm.spec.model.uri,
        "args": model_args(dm),
        "resources": _resources(dm),
    }
    env = _env(dm)
    if env:
        model["env"] = env
    predictor: dict[str, Any] = {
        "minReplicas": dm.spec.min_replicas,
        "maxReplicas": dm.spec.max_replicas,
        # Longer than the server's drain + flush (builders/common.py), or the kubelet kills it mid-drain.
        "terminationGracePeriodSeconds": TERMINATION_GRACE_PERIOD_SECONDS,
        "model": model,
    }
    if dm.spec.resources.gpus:
        # A rolling update would need a second set of GPUs while the old pod still holds them.
        predictor["deploymentStrategy"] = {"type": "Recreate"}
    tolerations = _tolerations(dm)
    if tolerations:
        predictor["tolerations"] = tolerations
    if dm.spec.node_selector:
        predictor["nodeSelector"] = dict(dm.spec.node_selector)
    if dm.spec.image_pull_secrets:
        predictor["imagePullSecrets"] = [{"name": ref.name} for ref in dm.spec.image_pull_secrets]
    if dm.spec.service_account_name:
        predictor["serviceAccountName"] = dm.spec.service_account_name
    mounted = [pair for pair in (_draft_volume(dm), _api_keys_volume(dm)) if pair is not None]
    if mounted:
        predictor["volumes"] = [volume for volume, _ in mounted] + mounts.volumes
        model["volumeMounts"] = [mount for _, mount in mounted]
    initializer = _draft_initializer(dm, platform, mounts)
    if initializer is not None:
        predictor["initContainers"] = [initializer]
    draft = dm.spec.draft_model
    if draft is not None and draft.uri.startswith("oci://"):
        # The draft's emptyDir holds only the link; KServe's own modelcar (main model) keeps its names.
        predictor["initContainers"] = [draft_modelcar_init(draft.uri)]
        predictor["containers"] = [
            draft_modelcar(draft.uri, DRAFT_VOLUME, DRAFT_MOUNT_PATH, DRAFT_MODELCAR_LINK)
        ]
        predictor["shareProcessNamespace"] = True
    annotations = {DEPLOYMENT_MODE_ANNOTATION: "RawDeployment", "openshift.io/display-name": display_name(dm)}
    plan = scaling_plan(dm, platform)
    if plan is not None:
        annotations[AUTOSCALER_CLASS_ANNOTATION] = plan.autoscaler_class
        predictor.update(plan.predictor)
    return {
        "apiVersion": API_VERSION,
        "kind": "InferenceService",
        "metadata": metadata(
            dm, inference_service_name(dm), extra_labels={DASHBOARD_LABEL: "true"}, annotations=annotations
        ),
        "spec": {"predictor": predictor},
    }
