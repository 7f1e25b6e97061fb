"""Every kustomization renders with a real kustomize, and every object it yields passes its schema."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from deploy import support
from deploy.support import (
    REPO_ROOT,
    kustomization_dirs,
    kustomize_build,
    load_hack_module,
    only,
    operator_builders,
    validate_manifest,
)

EXPECTED_DIRS = {
    "crds",
    "config/crd",
    "config/rbac",
    "config/manager",
    "config/default",
    "config/samples",
    "config/manifests",
    "config/rhoai",
}


def test_expected_kustomizations_exist() -> None:
    found = {str(path.relative_to(REPO_ROOT)) for path in kustomization_dirs()}
    assert found >= EXPECTED_DIRS


@pytest.mark.parametrize("directory", kustomization_dirs(), ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_renders_and_validates(directory: Path) -> None:
    documents = kustomize_build(directory)
    assert documents, f"{directory} rendered nothing"
    for document in documents:
        validate_manifest(document)
        if document["kind"] == "Template":
            for item in document["objects"]:
                validate_manifest(item)


def test_validation_rejects_a_broken_object() -> None:
    """validate_manifest is not a no-op: a wrong type in a built-in and in a CRD-backed object both fail."""
    deployment = only(kustomize_build(REPO_ROOT / "config/manager"), "Deployment")
    deployment["spec"]["replicas"] = "one"
    with pytest.raises(Exception, match=r"replicas|one"):
        validate_manifest(deployment)
    sample = kustomize_build(REPO_ROOT / "config/samples")[0]
    sample["spec"]["model"]["uri"] = "ftp://nowhere"
    with pytest.raises(Exception, match="does not match"):
        validate_manifest(sample)


@pytest.fixture(scope="module")
def default_install() -> list[dict]:
    return kustomize_build(REPO_ROOT / "config/default")


def test_default_puts_everything_in_vdiff_system(default_install: list[dict]) -> None:
    namespace = only(default_install, "Namespace")
    assert namespace["metadata"]["name"] == "vdiff-system"
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    for document in default_install:
        if document["kind"] in ("Deployment", "ServiceAccount"):
            assert document["metadata"]["namespace"] == "vdiff-system"
            assert document["metadata"]["name"].startswith("vdiff-")
    binding = only(default_install, "ClusterRoleBinding")
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "vdiff-operator", "namespace": "vdiff-system"}
    ]
    assert only(default_install, "CustomResourceDefinition")["metadata"]["name"] == "diffusionmodels.vdiff.io"


def test_manager_fits_the_restricted_scc(default_install: list[dict]) -> None:
    deployment = only(default_install, "Deployment")
    assert deployment["spec"]["replicas"] == 1, "kopf has no leader election"
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert "runAsUser" not in pod["securityContext"], "OpenShift assigns the UID"
    (container,) = pod["containers"]
    security = container["securityContext"]
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert security["readOnlyRootFilesystem"] is True
    tmp_mounts = [mount for mount in container["volumeMounts"] if mount["mountPath"] == "/tmp"]
    assert tmp_mounts and any(
        volume["name"] == tmp_mounts[0]["name"] and "emptyDir" in volume for volume in pod["volumes"]
    )
    assert container["resources"]["requests"] and container["resources"]["limits"]


def test_manager_image_placeholder_and_server_image() -> None:
    manager = only(yaml.safe_load_all((REPO_ROOT / "config/manager/manager.yaml").read_text()), "Deployment")
    container = manager["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "controller:latest"
    env = {item["name"]: item.get("value") for item in container["env"]}
    builders = operator_builders()
    from vdiff_operator.builders.common import DEFAULT_IMAGE, IMAGE_ENV

    assert builders is not None
    assert env[IMAGE_ENV] == DEFAULT_IMAGE


def test_overlay_sets_both_images() -> None:
    render = load_hack_module("render_overlay").render
    documents = render(
        REPO_ROOT / "config/default", "registry.example.com:5000/me/op:9.9.9", "quay.io/me/srv@sha256:ab12"
    )
    container = only(documents, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "registry.example.com:5000/me/op:9.9.9"
    env = {item["name"]: item.get("value") for item in container["env"]}
    assert env["RELATED_IMAGE_VDIFF_SERVER"] == "quay.io/me/srv@sha256:ab12"


def test_rhoai_template_is_the_operators_own() -> None:
    """config/rhoai is generated from vdiff_operator.builders.build_template: regenerate and compare."""
    operator_builders()
    generator = load_hack_module("generate_rhoai_template")
    from vdiff_operator.builders.common import DEFAULT_IMAGE

    committed = yaml.safe_load((REPO_ROOT / "config/rhoai" / generator.TEMPLATE_FILE).read_text())
    assert committed == generator.template_manifest(DEFAULT_IMAGE), "run `make rhoai-template`"
    rendered = only(kustomize_build(REPO_ROOT / "config/rhoai"), "Template")
    assert rendered["metadata"]["namespace"] == "redhat-ods-applications"
    runtime = rendered["objects"][0]
    assert runtime["kind"] == "ServingRuntime"
    assert rendered["metadata"]["labels"]["opendatahub.io/dashboard"] == "true"
    assert "--served-model-name={{.Name}}" in runtime["spec"]["containers"][0]["args"]


@pytest.mark.parametrize(
    ("ci", "outcome"), [("true", pytest.fail.Exception), ("false", pytest.skip.Exception)]
)
def test_missing_shared_crds_fail_in_ci(monkeypatch, tmp_path, ci, outcome) -> None:
    """`.ci/run` sets CI=true and has ../shared: an absent schema there is a failure, not a silent skip."""
    monkeypatch.setattr(support, "SHARED_CRDS", tmp_path / "absent")
    monkeypatch.setenv("CI", ci)
    with pytest.raises(outcome, match="is absent"):
        support.crd_schema("serving.kserve.io/v1alpha1", "ServingRuntime")
