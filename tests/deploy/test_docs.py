"""The YAML in the deployment docs is valid against the same schemas as config/ (docs can't silently rot)."""

from __future__ import annotations

import re

import pytest
import yaml
from deploy.support import REPO_ROOT, validate_manifest

DOCS = [
    REPO_ROOT / "docs/installation.md",
    REPO_ROOT / "docs/deployment/kserve.md",
    REPO_ROOT / "docs/deployment/rhoai.md",
    REPO_ROOT / "docs/deployment/olm.md",
]
# OLM's own catalog objects: no upstream CRD copy in ../shared/crds to validate against.
UNVALIDATED_KINDS = {"CatalogSource", "Subscription"}
YAML_BLOCK = re.compile(r"```yaml\n(.*?)```", re.DOTALL)


def documented_objects() -> list[tuple[str, dict]]:
    objects = []
    for path in DOCS:
        for block in YAML_BLOCK.findall(path.read_text()):
            for doc in yaml.safe_load_all(block):
                if isinstance(doc, dict) and "kind" in doc:
                    objects.append((f"{path.name}:{doc['kind']}/{doc['metadata']['name']}", doc))
    return objects


def test_docs_exist_and_show_yaml() -> None:
    kinds = {doc["kind"] for _, doc in documented_objects()}
    assert {"ServingRuntime", "InferenceService", "DiffusionModel", "ServiceMonitor", "Subscription"} <= kinds


@pytest.mark.parametrize(
    ("name", "manifest"), documented_objects(), ids=lambda value: value if isinstance(value, str) else ""
)
def test_documented_object_is_valid(name: str, manifest: dict) -> None:
    if manifest["kind"] in UNVALIDATED_KINDS:
        assert manifest["apiVersion"] == "operators.coreos.com/v1alpha1"
        return
    validate_manifest(manifest)


def test_links_between_the_deployment_pages_resolve() -> None:
    """Links among these four pages (others' pages are checked by their owners)."""
    ours = {path.resolve() for path in DOCS}
    for path in DOCS:
        for target in re.findall(r"\]\(([^)#]+\.md)(?:#[^)]*)?\)", path.read_text()):
            linked = (path.parent / target).resolve()
            if linked.name in {page.name for page in ours}:
                assert linked in ours, f"{path.name} links to {target}, which does not exist"
