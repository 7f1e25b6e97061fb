"""The OLM bundle: up to date with config/, schema-valid, and what `operator-sdk bundle validate` checks."""

from __future__ import annotations

import base64
import filecmp
import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from deploy.support import (
    REPO_ROOT,
    crd_schema,
    load_yaml_documents,
    only,
    require_kustomize,
    validate_builtin,
    validate_custom,
)

BUNDLE = REPO_ROOT / "bundle"
MANIFESTS = BUNDLE / "manifests"
CSV_PATH = MANIFESTS / "vdiff-operator.clusterserviceversion.yaml"
# docker/distribution reference grammar, simplified: [host[:port]/]path[:tag][@digest]
IMAGE_REFERENCE = re.compile(
    r"^(?:[a-z0-9.-]+(?::[0-9]+)?/)?[a-z0-9]+(?:[._-][a-z0-9]+)*(?:/[a-z0-9]+(?:[._-][a-z0-9]+)*)*"
    r"(?::[\w][\w.-]{0,127})?(?:@sha256:[a-f0-9]{64})?$"
)
SEMVER = re.compile(r"^\d+\.\d+\.\d+(?:-[0-9A-Za-z.-]+)?(?:\+[0-9A-Za-z.-]+)?$")
KSERVE_GROUP = "serving.kserve.io"


def makefile_bundle_command() -> list[str]:
    """The generator command exactly as `make bundle` runs it (Makefile defaults), from `make -n`."""
    result = subprocess.run(
        ["make", "-n", "--no-print-directory", "bundle", "BUNDLE_GEN=builtin", f"HOST_PY={sys.executable}"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    joined = result.stdout.replace("\\\n", " ")
    line = next(line for line in joined.splitlines() if "generate_bundle.py" in line)
    return shlex.split(line)


def test_committed_bundle_is_up_to_date(tmp_path: Path) -> None:
    require_kustomize()
    command = makefile_bundle_command()
    subprocess.run([*command, "--output", str(tmp_path)], cwd=REPO_ROOT, check=True, capture_output=True)
    comparison = filecmp.dircmp(BUNDLE, tmp_path / "bundle")
    stale: list[str] = []

    def collect(node: filecmp.dircmp, prefix: str) -> None:
        stale.extend(f"{prefix}{name}" for name in node.left_only + node.right_only + node.diff_files)
        for name, child in node.subdirs.items():
            collect(child, f"{prefix}{name}/")

    collect(comparison, "bundle/")
    generated_dockerfile = (tmp_path / "bundle.Dockerfile").read_text()
    if (REPO_ROOT / "bundle.Dockerfile").read_text() != generated_dockerfile:
        stale.append("bundle.Dockerfile")
    assert not stale, f"bundle is stale, run `make bundle`: {stale}"


@pytest.fixture(scope="module")
def csv() -> dict:
    return yaml.safe_load(CSV_PATH.read_text())


@pytest.fixture(scope="module")
def bundled() -> list[dict]:
    return [doc for path in sorted(MANIFESTS.glob("*.yaml")) for doc in load_yaml_documents(path)]


def test_csv_matches_the_olm_schema(csv: dict) -> None:
    validate_custom(csv)


def test_csv_required_metadata(csv: dict) -> None:
    spec = csv["spec"]
    assert re.fullmatch(r"vdiff-operator\.v" + SEMVER.pattern.strip("^$"), csv["metadata"]["name"])
    assert SEMVER.match(spec["version"]) and csv["metadata"]["name"].endswith("v" + spec["version"])
    if "replaces" in spec:
        assert re.fullmatch(r"vdiff-operator\.v\S+", spec["replaces"])
    assert spec["displayName"] and spec["provider"]["name"] and spec["maturity"] == "alpha"
    assert spec["keywords"] and spec["maintainers"] and spec["links"]
    assert SEMVER.match(spec["minKubeVersion"])
    annotations = csv["metadata"]["annotations"]
    assert annotations["capabilities"] in ("Basic Install", "Seamless Upgrades", "Full Lifecycle")
    for needle in ("KServe", "OpenShift AI", "Prerequisites"):
        assert needle in spec["description"]


def test_icon_is_the_svg_in_config(csv: dict) -> None:
    (icon,) = csv["spec"]["icon"]
    assert icon["mediatype"] == "image/svg+xml"
    assert base64.b64decode(icon["base64data"]) == (REPO_ROOT / "config/manifests/icon.svg").read_bytes()


def test_install_modes(csv: dict) -> None:
    modes = [mode["type"] for mode in csv["spec"]["installModes"]]
    assert (
        sorted(modes)
        == sorted(set(modes))
        == ["AllNamespaces", "MultiNamespace", "OwnNamespace", "SingleNamespace"]
    )
    supported = {mode["type"] for mode in csv["spec"]["installModes"] if mode["supported"]}
    # The operator runs `kopf run --all-namespaces`; fewer modes would be a lie to OLM.
    assert supported == {"AllNamespaces"}


def test_alm_examples_are_valid_owned_objects(csv: dict) -> None:
    examples = json.loads(csv["metadata"]["annotations"]["alm-examples"])
    owned = {(crd["kind"], crd["version"]) for crd in csv["spec"]["customresourcedefinitions"]["owned"]}
    assert examples
    samples = [
        doc
        for path in sorted((REPO_ROOT / "config/samples").glob("vdiff_*.yaml"))
        for doc in load_yaml_documents(path)
    ]
    assert sorted(e["metadata"]["name"] for e in examples) == sorted(s["metadata"]["name"] for s in samples)
    for example in examples:
        assert (example["kind"], example["apiVersion"].split("/")[1]) in owned
        validate_custom(example)


def test_owned_crds_present_and_matching(csv: dict, bundled: list[dict]) -> None:
    bundled_crds = {
        doc["metadata"]["name"]: doc for doc in bundled if doc["kind"] == "CustomResourceDefinition"
    }
    owned = csv["spec"]["customresourcedefinitions"]["owned"]
    assert {crd["name"] for crd in owned} == set(bundled_crds)
    canonical = only(
        load_yaml_documents(REPO_ROOT / "crds/vdiff.io_diffusionmodels.yaml"), "CustomResourceDefinition"
    )
    for crd in owned:
        bundled_crd = bundled_crds[crd["name"]]
        assert bundled_crd["spec"] == canonical["spec"], "bundled CRD differs from crds/"
        served = {version["name"] for version in bundled_crd["spec"]["versions"] if version["served"]}
        assert crd["version"] in served and crd["kind"] == bundled_crd["spec"]["names"]["kind"]
        validate_builtin(bundled_crd)


def _schema_has_path(schema: dict, path: str) -> bool:
    node = schema
    for part in path.split("."):
        node = node.get("properties", {}).get(part)
        if node is None:
            return False
    return True


def test_descriptors_point_at_real_fields(csv: dict) -> None:
    (owned,) = csv["spec"]["customresourcedefinitions"]["owned"]
    schema = crd_schema("vdiff.io/" + owned["version"], owned["kind"])
    for kind in ("specDescriptors", "statusDescriptors"):
        root = schema["properties"]["spec" if kind == "specDescriptors" else "status"]
        assert owned[kind]
        for descriptor in owned[kind]:
            assert _schema_has_path(root, descriptor["path"]), f"{kind}: {descriptor['path']}"
            assert all(x.startswith("urn:alm:descriptor:") for x in descriptor["x-descriptors"])


def test_kserve_is_not_required(csv: dict) -> None:
    required = csv["spec"]["customresourcedefinitions"].get("required", [])
    assert not [crd for crd in required if KSERVE_GROUP in crd["name"]]
    assert not required


def test_related_images_parse_and_match_the_deployment(csv: dict) -> None:
    related = {image["name"]: image["image"] for image in csv["spec"]["relatedImages"]}
    assert set(related) == {"vdiff-operator", "vdiff-server", "storage-initializer"}
    for image in related.values():
        assert IMAGE_REFERENCE.match(image), image
    (deployment,) = csv["spec"]["install"]["spec"]["deployments"]
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == related["vdiff-operator"] == csv["metadata"]["annotations"]["containerImage"]
    env = {item["name"]: item.get("value") for item in container["env"]}
    assert env["RELATED_IMAGE_VDIFF_SERVER"] == related["vdiff-server"]
    assert env["RELATED_IMAGE_STORAGE_INITIALIZER"] == related["storage-initializer"]  # draft model fetches


def test_install_strategy_is_the_deployable_operator(csv: dict) -> None:
    install = csv["spec"]["install"]
    assert install["strategy"] == "deployment"
    (deployment,) = install["spec"]["deployments"]
    validate_builtin(
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": deployment["name"]},
            "spec": deployment["spec"],
        }
    )
    assert deployment["spec"]["replicas"] == 1 and deployment["spec"]["strategy"]["type"] == "Recreate"
    service_account = deployment["spec"]["template"]["spec"]["serviceAccountName"]
    (permission,) = install["spec"]["clusterPermissions"]
    assert permission["serviceAccountName"] == service_account
    role = yaml.safe_load((REPO_ROOT / "config/rbac/role.yaml").read_text())
    assert permission["rules"] == role["rules"], "clusterPermissions must be config/rbac/role.yaml"


def test_no_service_account_manifest_beside_the_csv(bundled: list[dict]) -> None:
    """OLM creates the CSV's ServiceAccount; a second manifest of it fails `bundle validate`."""
    assert not [doc for doc in bundled if doc["kind"] == "ServiceAccount"]
    allowed = {"ClusterServiceVersion", "CustomResourceDefinition", "ClusterRole"}
    assert {doc["kind"] for doc in bundled} <= allowed
    for doc in bundled:
        if doc["kind"] == "ClusterRole":
            validate_builtin(doc)


def test_annotations_match_the_dockerfile_labels() -> None:
    annotations = yaml.safe_load((BUNDLE / "metadata/annotations.yaml").read_text())["annotations"]
    labels = dict(
        line.removeprefix("LABEL ").split("=", 1)
        for line in (REPO_ROOT / "bundle.Dockerfile").read_text().splitlines()
        if line.startswith("LABEL ")
    )
    assert labels == annotations
    assert annotations["operators.operatorframework.io.bundle.mediatype.v1"] == "registry+v1"
    assert annotations["operators.operatorframework.io.bundle.manifests.v1"] == "manifests/"
    assert annotations["operators.operatorframework.io.bundle.metadata.v1"] == "metadata/"
    assert annotations["operators.operatorframework.io.bundle.package.v1"] == "vdiff-operator"
    channels = annotations["operators.operatorframework.io.bundle.channels.v1"].split(",")
    assert annotations["operators.operatorframework.io.bundle.channel.default.v1"] in channels
    assert re.fullmatch(r"v4\.\d+(-v4\.\d+)?", annotations["com.redhat.openshift.versions"])
    dockerfile = (REPO_ROOT / "bundle.Dockerfile").read_text()
    assert "FROM scratch" in dockerfile
    assert (
        "COPY bundle/manifests /manifests/" in dockerfile and "COPY bundle/metadata /metadata/" in dockerfile
    )


def test_channels_created_at_descriptors_and_examples(csv: dict) -> None:
    """Defect 6: operator-sdk channel conventions, createdAt, no console descriptor for a single
    Toleration on an array, and no alm-example referencing a Secret nothing creates."""
    annotations = yaml.safe_load((BUNDLE / "metadata/annotations.yaml").read_text())["annotations"]
    channels = annotations["operators.operatorframework.io.bundle.channels.v1"].split(",")
    assert set(channels) == {"alpha", "candidate"}
    assert annotations["operators.operatorframework.io.bundle.channel.default.v1"] == "alpha"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", csv["metadata"]["annotations"]["createdAt"])
    (owned,) = csv["spec"]["customresourcedefinitions"]["owned"]
    tolerations = next(d for d in owned["specDescriptors"] if d["path"] == "tolerations")
    assert not [x for x in tolerations["x-descriptors"] if "Toleration" in x]
    for example in json.loads(csv["metadata"]["annotations"]["alm-examples"]):
        assert "apiKeySecretRef" not in example["spec"] and "secretKeyRef" not in json.dumps(example)
