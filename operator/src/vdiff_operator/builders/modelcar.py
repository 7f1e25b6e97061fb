"""An oci:// draft model as a second KServe modelcar: the image's /models, via a shared process namespace.

Mirrors KServe's pkg/utils/utils.go (CreateModelcarContainer, CreateModelcarInitContainer,
ConfigureModelcarToContainer): a sidecar linking `/proc/$$/root/models` into an emptyDir shared with the
server, an init container that pre-fetches the image and checks /models is not empty,
10m/15Mi (CpuModelcarDefault,
MemoryModelcarDefault) as both request and limit, and shareProcessNamespace on the pod. Names differ from
KServe's `modelcar`/`modelcar-init` so both coexist when the main model is oci:// too.
"""

from __future__ import annotations

from typing import Any

DRAFT_MODELCAR_NAME = "draft-modelcar"
DRAFT_MODELCAR_INIT_NAME = "draft-modelcar-init"
MODELCAR_RESOURCES = {"cpu": "10m", "memory": "15Mi"}
OCI_PREFIX = "oci://"


def draft_image(uri: str) -> str:
    """KServe: `strings.TrimPrefix(modelUri, constants.OciURIPrefix)`."""
    return uri.removeprefix(OCI_PREFIX)


def _resources() -> dict[str, Any]:
    return {"requests": dict(MODELCAR_RESOURCES), "limits": dict(MODELCAR_RESOURCES)}


def draft_modelcar(uri: str, volume: str, mount_dir: str, link: str) -> dict[str, Any]:
    """`$$$$` is Kubernetes' escape for `$$`, the shell's PID (KServe writes the same string)."""
    return {
        "name": DRAFT_MODELCAR_NAME,
        "image": draft_image(uri),
        "args": ["sh", "-c", f"ln -sf /proc/$$$$/root/models {link} && sleep infinity"],
        "resources": _resources(),
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "volumeMounts": [{"name": volume, "mountPath": mount_dir, "readOnly": False}],
    }


def draft_modelcar_init(uri: str) -> dict[str, Any]:
    image = draft_image(uri)
    check = (
        f"echo 'Pre-fetching modelcar {image}: ' && [ -d /models ] && [ \"$$(ls -A /models)\" ] && "
        "echo 'OK ... Prefetched and valid (/models exists)' || "
        "(echo 'NOK ... Prefetched but modelcar is invalid (/models does not exist or is empty)' && exit 1)"
    )
    return {
        "name": DRAFT_MODELCAR_INIT_NAME,
        "image": image,
        "args": ["sh", "-c", check],
        "resources": _resources(),
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
