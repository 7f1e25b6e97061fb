"""The operator's ClusterRole and applications-namespace Role grant exactly operator/RBAC.md's two tables, and
that covers what the code calls (tests/operator/test_e2e_kmock.py checks the tables against the requests)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from deploy.support import (
    REPO_ROOT,
    kustomize_build,
    load_yaml_documents,
    only,
    operator_builders,
    validate_builtin,
)

RBAC_TABLE = REPO_ROOT / "operator" / "RBAC.md"
ROLE = REPO_ROOT / "config" / "rbac" / "role.yaml"
APPLICATIONS_ROLE = REPO_ROOT / "config" / "applications-rbac" / "role.yaml"
APPLICATIONS_HEADING = "## Applications namespace only"
Permission = tuple[str, str, str]  # (apiGroup, resource, verb)


def rbac_table_permissions(path: Path, *, applications: bool = False) -> set[Permission]:
    """Rows `| group | resources | verbs | why |` of one of the operator's tables (the cluster-wide one, or
    the applications-namespace one); `""` is the core group."""
    permissions: set[Permission] = set()
    cluster_text, _, applications_text = path.read_text().partition(APPLICATIONS_HEADING)
    for line in (applications_text if applications else cluster_text).splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) < 3 or not cells[0].startswith("`"):
            continue
        group = re.match(r"`([^`]*)`", cells[0]).group(1).strip('"')
        for resource in re.findall(r"`([^`]+)`", cells[1]):
            for verb in (verb.strip() for verb in cells[2].split(",")):
                permissions.add((group, resource, verb))
    return permissions


def role_permissions(role: dict) -> set[Permission]:
    return {
        (group, resource, verb)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


@pytest.fixture(scope="module")
def table() -> set[Permission]:
    if not RBAC_TABLE.exists():
        pytest.skip("operator/RBAC.md not written yet")
    permissions = rbac_table_permissions(RBAC_TABLE)
    assert len(permissions) > 15, "RBAC.md table not recognised"
    return permissions


def test_applications_role_is_exactly_the_second_table() -> None:
    role = yaml.safe_load(APPLICATIONS_ROLE.read_text())
    validate_builtin(role)
    assert role["kind"] == "Role"
    assert (
        role_permissions(role)
        == rbac_table_permissions(RBAC_TABLE, applications=True)
        == {("template.openshift.io", "templates", verb) for verb in ("get", "create", "patch")}
    )


@pytest.fixture(scope="module")
def granted() -> set[Permission]:
    return role_permissions(yaml.safe_load(ROLE.read_text()))


def test_role_is_a_valid_cluster_role() -> None:
    validate_builtin(yaml.safe_load(ROLE.read_text()))


def test_role_grants_exactly_the_operators_table(table: set[Permission], granted: set[Permission]) -> None:
    assert granted - table == set(), "granted but never used (least privilege)"
    assert table - granted == set(), "used by the operator but not granted"


def test_no_wildcards_and_no_secrets(granted: set[Permission]) -> None:
    assert not any("*" in part for permission in granted for part in permission)
    assert not any(resource in ("secrets", "configmaps", "pods") for _, resource, _ in granted)


def test_every_child_the_operator_builds_can_be_applied(granted: set[Permission]) -> None:
    """Read the operator's own builders: every child kind (all APIs present) needs get + create + patch."""
    builders = operator_builders()
    from vdiff_operator.kube import PLURALS
    from vdiff_operator.models import DiffusionModel

    sample = yaml.safe_load(
        (REPO_ROOT / "config/samples/vdiff_v1alpha1_diffusionmodel_llada.yaml").read_text()
    )
    sample["metadata"].update(namespace="demo", uid="00000000-0000-0000-0000-000000000001")
    sample["spec"]["monitoring"] = {"serviceMonitor": "Enabled"}
    sample["spec"]["route"] = {"enabled": True, "host": "llada.apps.example.com"}
    dm = DiffusionModel.from_body(sample)
    platform = builders.Platform.openshift(rhoai=True)
    children = builders.build_children(dm, platform)
    assert {child["kind"] for child in children} >= {
        "ServingRuntime",
        "InferenceService",
        "Route",
        "Template",
    }
    templates = role_permissions(yaml.safe_load(APPLICATIONS_ROLE.read_text()))
    for child in children:
        group = child["apiVersion"].split("/")[0]
        plural = PLURALS[child["kind"]]
        for verb in ("get", "create", "patch"):
            where = templates if child["kind"] == "Template" else granted
            assert (group, plural, verb) in where, f"{verb} {group}/{plural}"
        if child["kind"] == "Template":
            assert not [p for p in granted if p[1] == "templates"], "Templates are not granted cluster-wide"
    if any(child["kind"] == "Route" and child["spec"].get("host") for child in children):
        assert ("route.openshift.io", "routes/custom-host", "create") in granted


def test_operator_watches_its_crd_and_writes_status(granted: set[Permission]) -> None:
    for verb in ("list", "watch", "patch"):
        assert ("vdiff.io", "diffusionmodels", verb) in granted
    assert ("vdiff.io", "diffusionmodels/status", "patch") in granted
    for verb in ("list", "watch"):
        assert ("apiextensions.k8s.io", "customresourcedefinitions", verb) in granted
    assert not [p for p in granted if p[1] == "namespaces" or p[0] == "events.k8s.io"]
    assert not [p for p in granted if p[2] in ("delete", "update") and not p[1].endswith("/finalizers")]
    assert ("", "events", "create") in granted
    assert ("dscinitialization.opendatahub.io", "dscinitializations", "list") in granted


def test_binding_ties_the_role_to_the_deployments_service_account() -> None:
    rbac = {doc["kind"] + "/" + doc["metadata"]["name"]: doc for doc in _rbac_documents()}
    binding = rbac["ClusterRoleBinding/operator-rolebinding"]
    assert binding["roleRef"]["name"] == yaml.safe_load(ROLE.read_text())["metadata"]["name"]
    deployment = next(
        doc
        for doc in load_yaml_documents(REPO_ROOT / "config/manager/manager.yaml")
        if doc["kind"] == "Deployment"
    )
    service_account = deployment["spec"]["template"]["spec"]["serviceAccountName"]
    assert [subject["name"] for subject in binding["subjects"]] == [service_account]
    assert f"ServiceAccount/{service_account}" in rbac


def test_user_facing_roles_aggregate_into_admin_edit_view() -> None:
    roles = {doc["metadata"]["name"]: doc for doc in _rbac_documents() if doc["kind"] == "ClusterRole"}
    for suffix, aggregate in (("admin", "admin"), ("editor", "edit"), ("viewer", "view")):
        role = roles[f"diffusionmodel-{suffix}-role"]
        assert role["metadata"]["labels"][f"rbac.authorization.k8s.io/aggregate-to-{aggregate}"] == "true"
        validate_builtin(role)
    viewer = role_permissions(roles["diffusionmodel-viewer-role"])
    assert {verb for _, _, verb in viewer} == {"get", "list", "watch"}


def test_applications_binding_names_the_operators_service_account() -> None:
    documents = kustomize_build(REPO_ROOT / "config/applications-rbac")
    binding = only(documents, "RoleBinding")
    role = only(documents, "Role")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": role["metadata"]["name"],
    }
    assert role["metadata"]["namespace"] == binding["metadata"]["namespace"] == "redhat-ods-applications"
    deployed = {doc["metadata"]["name"]: doc for doc in kustomize_build(REPO_ROOT / "config/default")}
    service_account = deployed["vdiff-operator"]["metadata"]
    subjects = {(s["name"], s["namespace"]) for s in binding["subjects"]}
    assert (service_account["name"], service_account["namespace"]) in subjects  # make deploy
    assert ("vdiff-operator", "openshift-operators") in subjects  # OLM, AllNamespaces


def _rbac_documents() -> list[dict]:
    kustomization = yaml.safe_load((REPO_ROOT / "config/rbac/kustomization.yaml").read_text())
    documents = []
    for resource in kustomization["resources"]:
        documents += load_yaml_documents(REPO_ROOT / "config/rbac" / resource)
    return documents
