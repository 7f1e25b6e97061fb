"""APD draft models from every storage URI KServe fetches for the main model (issue 15 defect 9).

KServe's storage initializer fetches only spec.predictor.model.storageUri, so the operator renders the
draft's fetch itself: s3/gs/http(s) through an extra init container running KServe's storage-initializer
image with `<uri> <dest dir>` into an emptyDir, pvc:// as a claim volume, hf:// by the server, oci:// as
a second modelcar (test_draft_modelcar.py); oci+native/oci+fetch are refused. Every rendered object is
checked against the upstream KServe CRD, and the server flags through the real `vdiff serve` parser.
"""

from __future__ import annotations

from typing import Any

import pytest
from cel_rules import cel_errors
from crd_schemas import OUR_CRD, crd_schema, load_crd, our_errors, validate_upstream
from pydantic import ValidationError
from vdiff.config import EngineConfig
from vdiff.entrypoints.cli_args import make_arg_parser, resolve_serve_args
from vdiff_operator.builders import Platform, build_children, build_inference_service
from vdiff_operator.builders.args import DRAFT_MOUNT_PATH, model_args
from vdiff_operator.builders.common import STORAGE_INITIALIZER_IMAGE_ENV
from vdiff_operator.builders.inferenceservice import DRAFT_INITIALIZER_NAME
from vdiff_operator.builders.servingruntime import BASE_ARGS
from vdiff_operator.models import DRAFT_DOWNLOAD_SCHEMES, OCI_DRAFT_REFUSAL, DiffusionModel

DOWNLOADED = {
    "s3": "s3://drafts/qwen2.5-0.5b",
    "gs": "gs://drafts/qwen2.5-0.5b",
    "https": "https://models.example.com/qwen2.5-0.5b.tar.gz",
    "http": "http://minio.models.svc:9000/qwen2.5-0.5b.zip",
}
OCI = ["oci+native://quay.io/org/qwen:0.5b", "oci+fetch://quay.io/org/q:1"]
PLATFORMS = {
    "kubernetes": Platform(),
    "openshift": Platform.openshift(),
    "rhoai": Platform.openshift(rhoai=True),
}


def body(draft: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "vdiff.io/v1alpha1",
        "kind": "DiffusionModel",
        "metadata": {"name": "dream", "namespace": "ns", "uid": "u"},
        "spec": {"model": {"uri": "s3://models/dream-7b"}, "draftModel": {"uri": draft}, **spec},
    }


def dm(draft: str, **spec: Any) -> DiffusionModel:
    return DiffusionModel.from_body(body(draft, **spec))


def server_config(model: DiffusionModel) -> EngineConfig:
    args = resolve_serve_args(make_arg_parser(), [*BASE_ARGS, *model_args(model)], environ={})
    return EngineConfig(**args.engine_kwargs())


def test_the_download_schemes_are_the_ones_kserve_fetches_with_an_init_container() -> None:
    assert set(DOWNLOADED) == set(DRAFT_DOWNLOAD_SCHEMES)


@pytest.mark.parametrize("platform", PLATFORMS.values(), ids=PLATFORMS.keys())
@pytest.mark.parametrize("uri", DOWNLOADED.values(), ids=DOWNLOADED.keys())
def test_a_downloaded_draft_is_fetched_by_kserves_storage_initializer(uri: str, platform: Platform) -> None:
    model = dm(uri, decoding={"profile": "fast"})
    children = build_children(model, platform)
    for child in children:
        validate_upstream(child)
    predictor = build_inference_service(model, platform)["spec"]["predictor"]
    (init,) = predictor["initContainers"]
    assert init["name"] == DRAFT_INITIALIZER_NAME != "storage-initializer"
    assert init["image"] == platform.storage_initializer_image
    assert init["args"] == [uri, DRAFT_MOUNT_PATH]
    assert init["volumeMounts"] == [{"name": "draft-model", "mountPath": DRAFT_MOUNT_PATH}]
    assert {"name": "draft-model", "emptyDir": {}} in predictor["volumes"]
    assert {"name": "draft-model", "mountPath": DRAFT_MOUNT_PATH, "readOnly": True} in predictor["model"][
        "volumeMounts"
    ]
    # The main model stays KServe's: storageUri, fetched by KServe's own storage-initializer.
    assert predictor["model"]["storageUri"] == "s3://models/dream-7b"
    assert "serviceAccountName" not in predictor  # the pod's (and so both initializers') account
    assert f"--draft-model={DRAFT_MOUNT_PATH}" in predictor["model"]["args"]
    config = server_config(model)
    assert (config.decoding, config.draft_model) == ("apd", DRAFT_MOUNT_PATH)


@pytest.mark.parametrize("profile,policy", [("balanced", "threshold"), ("quality", "reference")])
def test_balanced_and_quality_load_a_downloaded_draft_keeping_their_policy(profile: str, policy: str) -> None:
    config = server_config(dm(DOWNLOADED["s3"], decoding={"profile": profile}))
    assert (config.decoding, config.draft_model) == (policy, DRAFT_MOUNT_PATH)


def test_a_downloaded_draft_sits_beside_the_api_keys_volume() -> None:
    model = dm(DOWNLOADED["gs"], auth={"apiKeysSecretRef": {"name": "keys"}})
    predictor = build_inference_service(model)["spec"]["predictor"]
    validate_upstream(build_inference_service(model))
    assert [v["name"] for v in predictor["volumes"]] == ["draft-model", "api-keys"]
    assert [m["name"] for m in predictor["model"]["volumeMounts"]] == ["draft-model", "api-keys"]


def test_the_storage_initializer_image_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(STORAGE_INITIALIZER_IMAGE_ENV, "registry.example/kserve-storage-initializer@sha256:ab")
    isvc = build_inference_service(dm(DOWNLOADED["s3"]), Platform())
    assert isvc["spec"]["predictor"]["initContainers"][0]["image"].startswith("registry.example/")


def test_a_pvc_draft_keeps_its_claim_volume_and_no_init_container() -> None:
    model = dm("pvc://drafts/qwen2.5-0.5b")
    isvc = build_inference_service(model)
    validate_upstream(isvc)
    predictor = isvc["spec"]["predictor"]
    assert "initContainers" not in predictor
    assert predictor["volumes"] == [
        {"name": "draft-model", "persistentVolumeClaim": {"claimName": "drafts", "readOnly": True}}
    ]
    assert server_config(model).draft_model == f"{DRAFT_MOUNT_PATH}/qwen2.5-0.5b"


def test_an_hf_draft_is_still_downloaded_by_the_server() -> None:
    model = dm("hf://Qwen/Qwen2.5-0.5B-Instruct")
    isvc = build_inference_service(model)
    validate_upstream(isvc)
    assert "initContainers" not in isvc["spec"]["predictor"]
    assert "volumes" not in isvc["spec"]["predictor"]
    assert server_config(model).draft_model == "Qwen/Qwen2.5-0.5B-Instruct"


@pytest.mark.parametrize(
    "uri", [*DOWNLOADED.values(), "pvc://drafts/q", "hf://Qwen/Qwen2.5-0.5B", "oci://quay.io/org/qwen:0.5b"]
)
def test_every_draft_scheme_passes_the_crd(uri: str) -> None:
    obj = body(uri)
    assert our_errors(obj) == []
    assert cel_errors(crd_schema(load_crd(str(OUR_CRD)), "v1alpha1"), obj) == []


@pytest.mark.parametrize("uri", OCI)
def test_an_oci_plus_draft_is_refused_by_the_crd_and_the_model_saying_why(uri: str) -> None:
    obj = body(uri)
    assert our_errors(obj), "the schema would accept an oci+native/oci+fetch draft"
    cel = cel_errors(crd_schema(load_crd(str(OUR_CRD)), "v1alpha1"), obj)
    assert any(OCI_DRAFT_REFUSAL in error for error in cel), cel
    with pytest.raises(ValidationError, match="modelcar"):
        DiffusionModel.from_body(obj)


def test_the_crd_refusal_message_is_the_models() -> None:
    draft = crd_schema(load_crd(str(OUR_CRD)), "v1alpha1")["properties"]["spec"]["properties"]["draftModel"]
    assert [rule["message"] for rule in draft["x-kubernetes-validations"]] == [OCI_DRAFT_REFUSAL]
