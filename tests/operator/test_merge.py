"""The three-way merge that patches only what the operator owns."""

from __future__ import annotations

import json

from vdiff_operator.merge import LAST_APPLIED_ANNOTATION, apply_patch, is_subset, with_last_applied

DESIRED = {
    "apiVersion": "serving.kserve.io/v1beta1",
    "kind": "InferenceService",
    "metadata": {
        "name": "m",
        "namespace": "ns",
        "labels": {"a": "1"},
        "annotations": {"x": "1"},
        "ownerReferences": [{"uid": "u", "kind": "DiffusionModel", "name": "m"}],
    },
    "spec": {"predictor": {"minReplicas": 1, "nodeSelector": {"gpu": "h100"}, "model": {"args": ["--a"]}}},
}


def created() -> dict:
    observed = json.loads(json.dumps(with_last_applied(DESIRED)))
    # What other controllers and the API server add:
    observed["metadata"]["finalizers"] = ["odh.inferenceservice.finalizers"]
    observed["metadata"]["annotations"]["odh"] = "added"
    observed["spec"]["predictor"]["model"]["protocolVersion"] = "v1"
    observed["status"] = {"url": "http://m"}
    return observed


def test_no_patch_when_nothing_we_own_drifted() -> None:
    assert apply_patch(DESIRED, created()) is None


def test_drifted_field_is_restored_without_touching_foreign_fields() -> None:
    observed = created()
    observed["spec"]["predictor"]["minReplicas"] = 5
    patch = apply_patch(DESIRED, observed)
    assert patch is not None
    assert patch["spec"]["predictor"]["minReplicas"] == 1
    assert "finalizers" not in patch["metadata"]
    assert "odh" not in patch["metadata"]["annotations"]
    assert "status" not in patch


def test_field_we_stopped_setting_is_removed() -> None:
    desired = json.loads(json.dumps(DESIRED))
    del desired["spec"]["predictor"]["nodeSelector"]
    patch = apply_patch(desired, created())
    assert patch is not None
    assert patch["spec"]["predictor"]["nodeSelector"] is None
    recorded = json.loads(patch["metadata"]["annotations"][LAST_APPLIED_ANNOTATION])
    assert "nodeSelector" not in recorded["spec"]["predictor"]


def test_missing_owner_reference_is_added_next_to_others() -> None:
    observed = created()
    observed["metadata"]["ownerReferences"] = [{"uid": "other"}]
    patch = apply_patch(DESIRED, observed)
    assert [ref["uid"] for ref in patch["metadata"]["ownerReferences"]] == ["other", "u"]


def test_subset_semantics() -> None:
    assert is_subset({"a": [{"b": 1}]}, {"a": [{"b": 1, "c": 2}], "d": 3})
    assert not is_subset({"a": [1, 2]}, {"a": [1]})
    assert not is_subset({"a": 1}, {"a": True})
