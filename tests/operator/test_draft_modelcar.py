"""An oci:// draft model is a second KServe modelcar (issue 15 defect 9).

Upstream rules matched (kserve/kserve pkg/utils/utils.go, used by
pkg/webhook/admission/pod/storage_initializer_injector.go `InjectModelcar`; constants in pkg/constants):
- the image is the URI without `oci://` (`strings.TrimPrefix(modelUri, constants.OciURIPrefix)`);
- a sidecar of that image runs `sh -c "ln -sf /proc/$$$$/root/models <path> && sleep infinity"`
  (`$$$$` is Kubernetes' escape for the shell's `$$`), with an emptyDir mounted at the link's parent
  (`CreateModelcarContainer`), and the serving container mounts the same emptyDir
  (`ConfigureModelcarToContainer`);
- an init container of the same image pre-fetches it and fails unless /models is a non-empty directory
  (`CreateModelcarInitContainer`);
- both get `cpuModelcar`/`memoryModelcar` (defaults CpuModelcarDefault 10m, MemoryModelcarDefault 15Mi) as
  request and limit, and `terminationMessagePolicy: FallbackToLogsOnError`;
- the pod gets `shareProcessNamespace: true`.
KServe names its pair `modelcar`/`modelcar-init` (ModelcarContainerName, ModelcarInitContainerName), links
`/mnt/models` on the volume `kserve-provision-location` at `/mnt`, and adds its modelcar only when no
container of that name exists: the draft's pair has other names, volume and link, so both coexist when the
main model is oci:// too.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from crd_schemas import validate_upstream
from test_draft_uris import body, server_config
from vdiff_operator.builders import Platform, build_children, build_inference_service
from vdiff_operator.builders.args import DRAFT_MOUNT_PATH
from vdiff_operator.builders.servingruntime import BASE_ARGS
from vdiff_operator.models import DiffusionModel

DRAFT = "oci://quay.io/org/qwen2.5-0.5b:1"
LINK = f"{DRAFT_MOUNT_PATH}/models"
KSERVE_NAMES = {"modelcar", "modelcar-init", "storage-initializer"}
KSERVE_VOLUME, KSERVE_MOUNT, KSERVE_LINK = "kserve-provision-location", "/mnt", "/mnt/models"
MODELCAR_RESOURCES = {
    "requests": {"cpu": "10m", "memory": "15Mi"},
    "limits": {"cpu": "10m", "memory": "15Mi"},
}


def predictor_for(main: str, platform: Platform | None = None) -> dict[str, Any]:
    obj = body(DRAFT, decoding={"profile": "fast"})
    obj["spec"]["model"]["uri"] = main
    isvc = build_inference_service(DiffusionModel.from_body(obj), platform)
    validate_upstream(isvc)
    return isvc["spec"]["predictor"]


@pytest.mark.parametrize("platform", [Platform(), Platform.openshift(), Platform.openshift(rhoai=True)])
def test_an_oci_draft_renders_kserves_modelcar_pair_for_the_draft(platform: Platform) -> None:
    predictor = predictor_for("s3://models/dream-7b", platform)
    for child in build_children(DiffusionModel.from_body(body(DRAFT)), platform):
        validate_upstream(child)
    (sidecar,) = predictor["containers"]
    (init,) = predictor["initContainers"]
    assert sidecar["image"] == init["image"] == "quay.io/org/qwen2.5-0.5b:1"
    assert sidecar["args"] == ["sh", "-c", f"ln -sf /proc/$$$$/root/models {LINK} && sleep infinity"]
    assert sidecar["volumeMounts"] == [
        {"name": "draft-model", "mountPath": DRAFT_MOUNT_PATH, "readOnly": False}
    ]
    assert init["args"][:2] == ["sh", "-c"]
    assert '[ -d /models ] && [ "$$(ls -A /models)" ]' in init["args"][2] and "exit 1" in init["args"][2]
    assert "volumeMounts" not in init
    for container in (sidecar, init):
        assert container["resources"] == MODELCAR_RESOURCES
        assert container["terminationMessagePolicy"] == "FallbackToLogsOnError"
        assert container["name"] not in KSERVE_NAMES
    assert predictor["shareProcessNamespace"] is True
    assert {"name": "draft-model", "emptyDir": {}} in predictor["volumes"]
    assert {"name": "draft-model", "mountPath": DRAFT_MOUNT_PATH, "readOnly": True} in predictor["model"][
        "volumeMounts"
    ]
    # The main model stays KServe's to fetch.
    assert predictor["model"]["storageUri"] == "s3://models/dream-7b"
    config = server_config(DiffusionModel.from_body(body(DRAFT, decoding={"profile": "fast"})))
    assert (config.decoding, config.draft_model) == ("apd", LINK)


def test_an_oci_draft_beside_an_oci_main_model_coexists_with_kserves_modelcar() -> None:
    predictor = predictor_for("oci://quay.io/org/dream:7b")
    assert predictor["model"]["storageUri"] == "oci://quay.io/org/dream:7b"
    names = [c["name"] for c in predictor["containers"] + predictor["initContainers"]]
    assert len(names) == len(set(names)) and not KSERVE_NAMES & set(names)
    assert KSERVE_VOLUME not in {v["name"] for v in predictor["volumes"]}
    # KServe mounts its volume at /mnt and links /mnt/models; the draft's mount and link are elsewhere.
    assert DRAFT_MOUNT_PATH != KSERVE_LINK and not LINK.startswith(KSERVE_LINK + "/")
    assert all(m["mountPath"] != KSERVE_MOUNT for m in predictor["model"]["volumeMounts"])
    assert f"--draft-model={LINK}" in predictor["model"]["args"]
    assert "--model=/mnt/models" in BASE_ARGS  # the runtime's, read through KServe's link


def test_the_cli_renders_the_draft_modelcar(tmp_path: Path) -> None:
    path = tmp_path / "dm.yaml"
    obj = body(DRAFT, decoding={"profile": "fast"})
    obj["spec"]["model"]["uri"] = "oci://quay.io/org/dream:7b"
    path.write_text(yaml.safe_dump(obj))
    result = subprocess.run(
        [sys.executable, "-m", "vdiff_operator.cli", "render", "-f", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    (isvc,) = [d for d in yaml.safe_load_all(result.stdout) if d and d["kind"] == "InferenceService"]
    validate_upstream(isvc)
    predictor = isvc["spec"]["predictor"]
    assert [c["name"] for c in predictor["containers"]] == ["draft-modelcar"]
    assert [c["name"] for c in predictor["initContainers"]] == ["draft-modelcar-init"]
    assert predictor["shareProcessNamespace"] is True
