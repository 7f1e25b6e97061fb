"""Shared helpers for the deployment tests: repo paths, kustomize rendering, schema validation."""

from __future__ import annotations

import copy
import functools
import importlib.util
import os
import shutil
import sys
from pathlib import Path
from types import ModuleType
from typing import Any, NoReturn

import jsonschema
import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
SHARED_CRDS = REPO_ROOT.parent / "shared" / "crds"
OUR_CRDS = REPO_ROOT / "crds"
# Oldest Kubernetes the CSV declares (minKubeVersion 1.27) and a current one; kubernetes-validate ships both.
KUBERNETES_VERSIONS = ("1.27.0", "1.32.0")
BUILTIN_GROUPS = {
    "",
    "apps",
    "rbac.authorization.k8s.io",
    "apiextensions.k8s.io",
    "policy",
    "networking.k8s.io",
}

Manifest = dict[str, Any]


def load_hack_module(name: str) -> ModuleType:
    """Import hack/<name>.py (a script folder, not a package) the way `python hack/<name>.py` would."""
    hack_dir = str(REPO_ROOT / "hack")
    if hack_dir not in sys.path:
        sys.path.insert(0, hack_dir)
    spec = importlib.util.spec_from_file_location(name, REPO_ROOT / "hack" / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(name, module)
    spec.loader.exec_module(module)
    return module


def require_kustomize() -> None:
    if not (shutil.which("kustomize") or shutil.which("kubectl") or shutil.which("oc")):
        pytest.skip("no kustomize, kubectl or oc on PATH: kustomizations cannot be rendered")


def kustomize_build(directory: Path) -> list[Manifest]:
    require_kustomize()
    return load_hack_module("render_overlay").kustomize_build(directory)


def kustomization_dirs() -> list[Path]:
    roots = [REPO_ROOT / "config", REPO_ROOT / "crds"]
    return sorted(path.parent for root in roots for path in root.rglob("kustomization.yaml"))


def load_yaml_documents(path: Path) -> list[Manifest]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def group_of(manifest: Manifest) -> str:
    api_version = manifest["apiVersion"]
    return api_version.split("/", 1)[0] if "/" in api_version else ""


def is_builtin(manifest: Manifest) -> bool:
    return group_of(manifest) in BUILTIN_GROUPS


def validate_builtin(manifest: Manifest) -> None:
    import kubernetes_validate

    for version in KUBERNETES_VERSIONS:
        kubernetes_validate.validate(manifest, version, strict=True)


def _drop_nulls(value: Any) -> Any:
    """Some upstream CRDs (Route) contain `anyOf: null`-style entries; null keys are not schemas."""
    if isinstance(value, dict):
        return {key: _drop_nulls(item) for key, item in value.items() if item is not None}
    if isinstance(value, list):
        return [_drop_nulls(item) for item in value]
    return value


_YamlLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@functools.cache
def _crd_file_schemas(path: Path) -> dict[tuple[str, str, str], dict[str, Any]]:
    """(group, version, kind) -> openAPIV3Schema of one CRD file (libyaml: upstream CRDs are megabytes)."""
    schemas: dict[tuple[str, str, str], dict[str, Any]] = {}
    for doc in yaml.load_all(path.read_text(), Loader=_YamlLoader):
        if not doc or doc.get("kind") != "CustomResourceDefinition":
            continue
        spec = doc["spec"]
        for version in spec["versions"]:
            schema = version.get("schema", {}).get("openAPIV3Schema")
            if schema:
                key = (spec["group"], version["name"], spec["names"]["kind"])
                schemas[key] = _strict(_drop_nulls(schema))
    return schemas


def _strict(schema: Any) -> Any:
    """Reject unknown fields like `kubectl apply` does (field validation Strict) instead of pruning them."""
    if isinstance(schema, list):
        return [_strict(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    strict = {key: _strict(value) for key, value in schema.items()}
    if (
        "properties" in schema
        and "additionalProperties" not in schema
        and not schema.get("x-kubernetes-preserve-unknown-fields")
    ):
        strict["additionalProperties"] = False
    return strict


def in_ci() -> bool:
    """`.ci/run` exports CI=true; there ../shared is part of the checkout and must be present."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def skip_unless_ci(reason: str) -> NoReturn:
    """Skip with `reason` on a workstation; in CI a missing prerequisite is a failure, never a silent skip."""
    if in_ci():
        pytest.fail(f"{reason} (CI is set: this must not be skipped)", pytrace=False)
    pytest.skip(reason)


def crd_schema(api_version: str, kind: str) -> dict[str, Any]:
    """From our crds/ or ../shared/crds, whose files are named <group>_<plural>.yaml."""
    group, version = api_version.split("/", 1)
    candidates = sorted(OUR_CRDS.glob(f"{group}_*.yaml"))
    if SHARED_CRDS.is_dir():
        candidates += sorted(SHARED_CRDS.glob(f"{group}_*.yaml"))
    for path in candidates:
        schema = _crd_file_schemas(path).get((group, version, kind))
        if schema is not None:
            return schema
    if not SHARED_CRDS.is_dir():
        skip_unless_ci(f"{SHARED_CRDS} is absent: no upstream schema for {kind} to validate against")
    raise AssertionError(f"no CRD schema for {api_version} {kind}")


def validate_custom(manifest: Manifest) -> None:
    """Validate a CRD-backed object against its CRD's structural schema (OpenAPI v3.0 = draft 4 keywords)."""
    schema = crd_schema(manifest["apiVersion"], manifest["kind"])
    jsonschema.Draft4Validator(schema).validate(_drop_nulls(copy.deepcopy(manifest)))


def validate_manifest(manifest: Manifest) -> None:
    if is_builtin(manifest):
        validate_builtin(manifest)
    else:
        validate_custom(manifest)


def only(documents: list[Manifest], kind: str) -> Manifest:
    matches = [doc for doc in documents if doc["kind"] == kind]
    assert len(matches) == 1, f"expected one {kind}, found {len(matches)}"
    return matches[0]


def operator_builders() -> ModuleType:
    """vdiff_operator.builders when importable (the operator package is installed), else skip."""
    try:
        import vdiff_operator.builders as builders
    except ImportError as error:
        pytest.skip(f"vdiff_operator.builders not importable ({error}): operator cross-check skipped")
    return builders
