"""The emulator's API-server rules (api_server.py) and the operator's normaliser agree with upstream."""

from __future__ import annotations

import pytest
from api_server import (
    canonical_quantity,
    dependents_to_collect,
    isvc_defaults,
    servingruntime_denial,
    template_stored,
)
from vdiff_operator.builders import build_inference_service, build_serving_runtime, build_template
from vdiff_operator.merge import apply_patch, with_last_applied
from vdiff_operator.models import DiffusionModel
from vdiff_operator.normalize import canonical_quantity as product_canonical_quantity

# k8s.io/apimachinery pkg/api/resource/quantity_test.go (TestQuantityCanonicalize and friends).
QUANTITIES = {
    "0.5": "500m",
    "1.5": "1500m",
    "1000m": "1",
    "1000": "1k",
    "4": "4",
    "0": "0",
    "2048Mi": "2Gi",
    "1536Mi": "1536Mi",
    "1.5Gi": "1536Mi",
    "0.5Gi": "512Mi",
    "1024": "1024",
    "1Ki": "1Ki",
    "512Ki": "512Ki",
    "32Gi": "32Gi",
    "100M": "100M",
    "1500M": "1500M",
    "0.0000000001": "1n",
    "1.001": "1001m",
}


@pytest.mark.parametrize(("given", "canonical"), sorted(QUANTITIES.items()))
def test_quantity_canonical_form(given: str, canonical: str) -> None:
    assert canonical_quantity(given) == canonical
    assert product_canonical_quantity(given) == canonical


def test_product_quantity_extras() -> None:
    assert product_canonical_quantity("1e3") == "1e3"
    assert product_canonical_quantity("-0.5") == "-500m"
    assert product_canonical_quantity("not a quantity") == "not a quantity"


def runtime(name: str, formats: list[dict], protocols: list[str] | None = None, **spec: object) -> dict:
    return {
        "metadata": {"name": name, "namespace": "ns"},
        "spec": {"supportedModelFormats": formats, "protocolVersions": protocols or ["v1"], **spec},
    }


AUTO = [{"name": "vdiff", "autoSelect": True, "priority": 1}]


def test_webhook_denies_equal_priority_for_the_same_auto_selected_format() -> None:
    """kserve pkg/webhook/admission/servingruntime/servingruntime_webhook.go (priority rule)."""
    message = servingruntime_denial(runtime("b", AUTO), [runtime("a", AUTO)])
    expected = (
        "same priority assigned for the model format vdiff in the servingruntimes a and b in namespace ns"
    )
    assert message == expected
    assert servingruntime_denial(runtime("b", [{**AUTO[0], "name": "VDIFF"}]), [runtime("a", AUTO)])


@pytest.mark.parametrize(
    "other",
    [
        runtime("a", [{"name": "vdiff", "autoSelect": False}]),  # autoSelect off on one side
        runtime("a", [{"name": "vdiff", "autoSelect": True}]),  # priority unset on one side
        runtime("a", [{**AUTO[0], "priority": 2}]),  # different priority
        runtime("a", AUTO, protocols=["v2"]),  # protocols do not overlap
        runtime("a", AUTO, multiModel=True),  # other kind of runtime
        runtime("a", AUTO, disabled=True),  # disabled
        runtime("b", AUTO),  # itself (update)
        runtime("a", [{**AUTO[0], "version": "1"}]),  # another format version
    ],
)
def test_webhook_admits_when_nothing_conflicts(other: dict) -> None:
    assert servingruntime_denial(runtime("b", AUTO), [other]) is None


def test_webhook_denies_one_runtime_listing_a_format_twice_with_different_priorities() -> None:
    twice = [*AUTO, {**AUTO[0], "priority": 2}]
    assert "different priorities" in servingruntime_denial(runtime("b", twice), [runtime("x", [])])


def dm(name: str) -> DiffusionModel:
    return DiffusionModel.from_body(
        {
            "apiVersion": "vdiff.io/v1alpha1",
            "kind": "DiffusionModel",
            "metadata": {"name": name, "namespace": "ns", "uid": f"uid-{name}"},
            "spec": {"model": {"uri": "hf://x/y"}, "resources": {"cpu": "0.5", "memory": "2048Mi"}},
        }
    )


def test_per_model_runtimes_never_conflict() -> None:
    first, second = (build_serving_runtime(dm(n), "img") for n in ("a", "b"))
    assert servingruntime_denial(second, [first]) is None
    assert servingruntime_denial(first, [second, first]) is None


def test_isvc_and_template_stored_forms() -> None:
    isvc = isvc_defaults(build_inference_service(dm("a")))
    assert isvc["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "Standard"
    assert isvc["spec"]["predictor"]["model"]["resources"]["requests"]["cpu"] == "500m"
    stored = template_stored({"objects": [], "parameters": [{"name": "P", "required": False}], "message": ""})
    assert stored == {"objects": [], "parameters": [{"name": "P"}]}
    assert "parameters" not in template_stored({"objects": [], "parameters": []})


@pytest.mark.parametrize(
    ("child", "stored_form"),
    [
        (lambda: build_inference_service(dm("a")), isvc_defaults),
        (lambda: {**build_template("apps", "img"), "parameters": [], "message": ""}, template_stored),
    ],
)
def test_no_patch_for_what_the_server_rewrote(child, stored_form) -> None:
    desired = child()
    assert apply_patch(desired, stored_form(with_last_applied(desired))) is None


def test_deployment_mode_change_is_still_drift() -> None:
    desired = build_inference_service(dm("a"))
    observed = isvc_defaults(with_last_applied(desired))
    observed["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] = "Serverless"
    patch = apply_patch(desired, observed)
    assert patch["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "RawDeployment"
    observed["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] = "Standard"
    observed["spec"]["predictor"]["model"]["resources"]["requests"]["cpu"] = "600m"
    patch = apply_patch(desired, observed)
    assert patch["spec"]["predictor"]["model"]["resources"]["requests"]["cpu"] == "0.5"


def test_garbage_collection_follows_owner_references() -> None:
    """kubernetes pkg/controller/garbagecollector/garbagecollector.go: dependents go when no owner is left."""

    def obj(uid: str, *owners: str) -> dict:
        return {"metadata": {"uid": uid, "ownerReferences": [{"uid": o} for o in owners]}}

    objects = [obj("a"), obj("b"), obj("a-child", "a"), obj("b-child", "b"), obj("shared", "a", "b")]
    delete, strip = dependents_to_collect(objects, {"a"})
    assert [o["metadata"]["uid"] for o in delete] == ["a-child"]
    assert [o["metadata"]["uid"] for o in strip] == ["shared"]
