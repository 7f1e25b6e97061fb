"""Our CRD: structure, samples, and invalid objects rejected by the schema or its CEL rules."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from cel_rules import all_rules, cel_errors
from crd_schemas import OUR_CRD, REPO_ROOT, crd_schema, load_crd, our_errors
from pydantic import ValidationError
from vdiff_operator.models import DiffusionModel

SAMPLES = sorted((REPO_ROOT / "config" / "samples").glob("vdiff_*.yaml"))
CRD = load_crd(str(OUR_CRD))
SCHEMA = crd_schema(CRD, "v1alpha1")


def rejections(obj: dict[str, Any]) -> list[str]:
    return our_errors(obj) + cel_errors(SCHEMA, obj)


def minimal(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "vdiff.io/v1alpha1",
        "kind": "DiffusionModel",
        "metadata": {"name": "m", "namespace": "ns"},
        "spec": {"model": {"uri": "hf://GSAI-ML/LLaDA-8B-Instruct"}, **spec},
    }


def test_crd_shape() -> None:
    spec = CRD["spec"]
    assert CRD["metadata"]["name"] == "diffusionmodels.vdiff.io"
    assert (spec["group"], spec["scope"], spec["names"]["kind"]) == (
        "vdiff.io",
        "Namespaced",
        "DiffusionModel",
    )
    assert spec["names"]["shortNames"] == ["dm"]
    (version,) = spec["versions"]
    assert version["name"] == "v1alpha1" and version["served"] and version["storage"]
    assert version["subresources"] == {"status": {}}
    columns = [c["name"] for c in version["additionalPrinterColumns"] if c.get("priority", 0) == 0]
    assert columns == ["Ready", "Model", "URL", "Age"]


def test_every_spec_field_is_documented() -> None:
    skipped_keys = ("min", "max", "name", "key")
    skipped_paths = (".spec.tolerations", ".spec.env", ".spec.imagePullSecrets")

    def undocumented(schema: dict[str, Any], path: str) -> list[str]:
        missing = []
        for key, sub in (schema.get("properties") or {}).items():
            documented = "description" in sub or key in skipped_keys or path.startswith(skipped_paths)
            if path.startswith(".spec") and not documented:
                missing.append(f"{path}.{key}")
            missing += undocumented(sub, f"{path}.{key}")
        return missing + (undocumented(schema["items"], f"{path}[]") if "items" in schema else [])

    assert undocumented(SCHEMA, "") == []


@pytest.mark.parametrize("path", SAMPLES, ids=lambda p: p.name)
def test_samples_pass_schema_cel_and_model(path: Path) -> None:
    sample = yaml.safe_load(path.read_text())
    assert rejections(sample) == []
    DiffusionModel.from_body({**sample, "metadata": {**sample["metadata"], "namespace": "ns"}})


def test_samples_kustomization_lists_every_sample() -> None:
    kustomization = yaml.safe_load((REPO_ROOT / "config" / "samples" / "kustomization.yaml").read_text())
    assert sorted(kustomization["resources"]) == sorted(p.name for p in SAMPLES)


INVALID = {
    "unknown scheme": lambda o: o["spec"]["model"].update(uri="ftp://host/model"),
    "no scheme": lambda o: o["spec"]["model"].update(uri="GSAI-ML/LLaDA-8B-Instruct"),
    "bad profile": lambda o: o["spec"].update(decoding={"profile": "turbo"}),
    "threshold zero": lambda o: o["spec"].update(decoding={"threshold": 0}),
    "threshold above one": lambda o: o["spec"].update(decoding={"threshold": 1.5}),
    "bad kv cache": lambda o: o["spec"].update(decoding={"kvCache": "full"}),
    "negative gpus": lambda o: o["spec"].update(resources={"gpus": -1}),
    "bad memory": lambda o: o["spec"].update(resources={"memory": "lots"}),
    "min above max": lambda o: o["spec"].update(replicas={"min": 3, "max": 2}),
    "apd without draft": lambda o: o["spec"].update(decoding={"decoding": "apd"}),
    "apd settings without draft": lambda o: o["spec"].update(decoding={"apd": {"kvWindow": 8}}),
    "oci+native draft model": lambda o: o["spec"].update(
        draftModel={"uri": "oci+native://quay.io/org/qwen:1"}
    ),
    "ftp draft model": lambda o: o["spec"].update(draftModel={"uri": "ftp://host/qwen"}),
    "bad monitoring mode": lambda o: o["spec"].update(monitoring={"serviceMonitor": "Always"}),
    "bad route timeout": lambda o: o["spec"].update(route={"timeout": "ten minutes"}),
    "unknown field": lambda o: o["spec"].update(modelUri="hf://x/y"),
    "missing model": lambda o: o["spec"].pop("model"),
    "name too long": lambda o: o["metadata"].update(name="m" * 54),
    "name not a DNS label": lambda o: o["metadata"].update(name="LLaDA_8B"),
    "bad quantization": lambda o: o["spec"].update(quantization="awq"),
    "tensor parallel in args": lambda o: o["spec"].update(args=["-tp", "2"]),
    # spec.autoscaling: CEL rules mirrored by vdiff_operator.models.Autoscaling
    "queue depth from zero": lambda o: o["spec"].update(autoscaling={"minReplicas": 0, "maxReplicas": 4}),
    "concurrency from zero": lambda o: o["spec"].update(
        autoscaling={"minReplicas": 0, "maxReplicas": 4, "metric": "concurrency"}
    ),
    "cpu from zero": lambda o: o["spec"].update(
        autoscaling={"minReplicas": 0, "maxReplicas": 4, "metric": "cpu"}
    ),
    "autoscaling max below min": lambda o: o["spec"].update(autoscaling={"minReplicas": 3, "maxReplicas": 2}),
    "cpu target above 100": lambda o: o["spec"].update(
        autoscaling={"maxReplicas": 2, "metric": "cpu", "target": 150}
    ),
    "autoscaling without max": lambda o: o["spec"].update(autoscaling={"minReplicas": 1}),
    "bad autoscaling metric": lambda o: o["spec"].update(autoscaling={"maxReplicas": 2, "metric": "rps"}),
    "autoscaling target zero": lambda o: o["spec"].update(autoscaling={"maxReplicas": 2, "target": 0}),
    "replicas and autoscaling": lambda o: o["spec"].update(
        replicas={"min": 1, "max": 2}, autoscaling={"maxReplicas": 2}
    ),
}


@pytest.mark.parametrize("mutate", INVALID.values(), ids=INVALID.keys())
def test_invalid_objects_are_rejected(mutate: Any) -> None:
    obj = minimal()
    mutate(obj)
    assert rejections(obj), "the API server would accept this object"


@pytest.mark.parametrize("mutate", INVALID.values(), ids=INVALID.keys())
def test_operator_model_rejects_what_the_crd_rejects(mutate: Any) -> None:
    obj = minimal()
    mutate(obj)
    with pytest.raises((ValidationError, ValueError)):
        DiffusionModel.from_body(obj)


def test_boundaries_are_accepted() -> None:
    obj = minimal(
        decoding={"profile": "fast", "threshold": 1, "kvCache": "dual", "steps": 1},
        replicas={"min": 0, "max": 1},
        resources={"gpus": 0, "cpu": 2, "memory": "500Mi", "limits": {"cpu": "2500m"}},
    )
    obj["metadata"]["name"] = "m" * 53
    assert rejections(obj) == []
    for scheme in ("pvc://claim/llada", "s3://b/p", "gs://b/p", "oci://quay.io/x/y:1", "https://h/m.tgz"):
        variant = copy.deepcopy(obj)
        variant["spec"]["model"]["uri"] = scheme
        assert rejections(variant) == [], scheme


def test_queue_depth_from_zero_says_why() -> None:
    """KEDA's prometheus scaler reads the server's own series; with no pod it is absent and the ScaledObject
    never activates (openshift-ai.md, Autoscaling in raw mode), so the API server refuses minReplicas 0."""
    obj = minimal(autoscaling={"minReplicas": 0, "maxReplicas": 4})
    (message,) = cel_errors(SCHEMA, obj)
    assert "series disappears" in message and "cannot wake a model from zero" in message
    with pytest.raises(ValidationError, match="cannot wake the model from zero"):
        DiffusionModel.from_body(obj)


def test_autoscaling_defaults() -> None:
    spec = DiffusionModel.from_body(minimal(autoscaling={"maxReplicas": 4})).spec
    assert spec.autoscaling is not None
    assert (spec.autoscaling.min_replicas, spec.autoscaling.metric, spec.autoscaling.effective_target) == (
        1,
        "queueDepth",
        4,
    )
    assert (spec.min_replicas, spec.max_replicas) == (1, 4)
    assert rejections(minimal(autoscaling={"maxReplicas": 1, "metric": "cpu", "target": 100})) == []
    assert (
        rejections(minimal(autoscaling={"minReplicas": 2, "maxReplicas": 2, "metric": "concurrency"})) == []
    )


def test_every_cel_rule_is_exercised() -> None:
    """Each CEL rule in the CRD compiles and fails at least one INVALID case."""
    rules = all_rules(SCHEMA)
    assert len(rules) >= 5
    failed: set[str] = set()
    for mutate in INVALID.values():
        obj = minimal()
        mutate(obj)
        failed |= {message for message in cel_errors(SCHEMA, obj)}
    assert len(failed) == len(rules), failed


def test_crd_is_a_valid_apiextensions_object() -> None:
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    kubernetes_validate.validate(CRD, "1.32", strict=True)  # strict: unknown fields are errors
    bad = copy.deepcopy(CRD)
    bad["spec"]["scope"] = 7
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, "1.32", strict=True)


def test_crd_schema_is_structural() -> None:
    """Every node has a type (or int-or-string / preserve-unknown), as the API server requires for v1 CRDs."""

    def untyped(schema: dict[str, Any], path: str) -> list[str]:
        ok = (
            "type" in schema
            or schema.get("x-kubernetes-int-or-string")
            or schema.get("x-kubernetes-preserve-unknown-fields")
        )
        found = [] if ok else [path]
        for key, sub in (schema.get("properties") or {}).items():
            found += untyped(sub, f"{path}.{key}")
        if isinstance(schema.get("items"), dict):
            found += untyped(schema["items"], f"{path}[]")
        if isinstance(schema.get("additionalProperties"), dict):
            found += untyped(schema["additionalProperties"], f"{path}{{}}")
        return found

    assert untyped(SCHEMA, "") == []
