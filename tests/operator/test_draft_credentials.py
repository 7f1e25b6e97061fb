"""An s3/gs/http(s) draft's init container gets the credentials KServe derives for its own initializer.

Rules matched (kserve/kserve @ aaac4e29):
- pkg/credentials/service_account_credentials.go `CreateSecretVolumeAndEnvFromServiceAccount`: IRSA envs from
  the ServiceAccount's annotations when it has `eks.amazonaws.com/role-arn`; then each listed Secret, in
  order, by `mountSecretCredential`: the first matching data key decides: s3 (the configured secret access
  key name), gcs (the configured credential file), azure (four forms), `https-host`, hdfs, hf, modelscope.
  S3 envs merge by name (utils.MergeEnvs), the others append.
- pkg/credentials/s3/s3_secret.go + utils.go `BuildS3EnvVars`: key envs by secretKeyRef; each value from the
  annotation, else the Secret's data key of the env's name, else the ConfigMap's s3 value; an endpoint with a
  scheme sets S3_USE_HTTPS itself.
- pkg/credentials/gcs/gcs_secret.go: the Secret as a volume at /var/secrets/ and
  GOOGLE_APPLICATION_CREDENTIALS to the file; https/https_secret.go: env `<https-host>-headers`.
- pkg/webhook/admission/pod/storage_initializer_injector.go `CommonStorageInitialization` +
  `needCaBundleMount`: a ConfigMap named by AWS_CA_BUNDLE_CONFIGMAP is mounted at AWS_CA_BUNDLE's directory
  (default /etc/ssl/custom-certs) with CA_BUNDLE_CONFIGMAP_NAME / CA_BUNDLE_VOLUME_MOUNT_POINT.
- The ConfigMap `credentials` value: config/configmap/inferenceservice.yaml (upstream) and the ODH fork's
  config/overlays/odh/patches/inferenceservice-config-patch.yaml (CA bundle defaults).
The first cases are KServe's own (pkg/credentials/service_account_credentials_test.go), outputs as there.
Deviation, on purpose: https headers are passed by secretKeyRef, not copied as text into the object.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
import yaml
from cel_rules import cel_errors
from crd_schemas import OUR_CRD, crd_schema, load_crd, our_errors, validate_upstream
from pydantic import ValidationError
from vdiff_operator.builders import Platform, build_inference_service
from vdiff_operator.builders.credentials import (
    CREDENTIALS_ENV,
    CredentialConfig,
    StorageCredentials,
    credential_config,
    credentials_from_objects,
    storage_credentials,
)
from vdiff_operator.builders.inferenceservice import DRAFT_INITIALIZER_NAME
from vdiff_operator.cli import main
from vdiff_operator.models import DiffusionModel

KSERVE_TEST_CONFIG = CredentialConfig.from_json(
    {
        "gcs": {"gcsCredentialFileName": "gcloud-application-credentials.json"},
        "s3": {
            "s3AccessKeyIDName": "awsAccessKeyID",
            "s3SecretAccessKeyName": "awsSecretAccessKey",
            "s3Endpoint": "s3.aws.com",
            "s3UseHttps": "1",
            "s3Region": "us-east-2",
            "s3VerifySSL": "1",
            "s3UseVirtualBucket": "",
            "s3UseAnonymousCredential": "false",
            "s3CABundleConfigMap": "",
            "s3CABundle": "",
        },
    }
)
"""service_account_credentials_test.go `configMap`."""


def account(
    name: str = "default", annotations: dict[str, str] | None = None, *secrets: str
) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": "default"}
    if annotations:
        meta["annotations"] = annotations
    return {"kind": "ServiceAccount", "metadata": meta, "secrets": [{"name": s} for s in secrets]}


def secret(name: str, data: dict[str, str], annotations: dict[str, str] | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": "default", "annotations": annotations or {}}
    encoded = {key: base64.b64encode(value.encode()).decode() for key, value in data.items()}
    return {"kind": "Secret", "metadata": meta, "data": encoded}


def ref(name: str, key: str) -> dict[str, Any]:
    return {"secretKeyRef": {"name": name, "key": key}}


def env_of(sa: dict[str, Any], *secrets: dict[str, Any], config: CredentialConfig = KSERVE_TEST_CONFIG):
    return storage_credentials(StorageCredentials(sa, tuple(secrets)), config)


@pytest.mark.parametrize(
    "endpoint,verify,https,url",
    [("s3.aws.com", "1", "1", "https://s3.aws.com"), ("http://s3.aws.com", "0", "0", "http://s3.aws.com")],
    ids=["Build s3 secrets envs", "Build s3 secrets envs with protocol"],
)
def test_kserves_s3_secret_cases(endpoint: str, verify: str, https: str, url: str) -> None:
    annotations = {"serving.kserve.io/s3-endpoint": endpoint}
    if verify == "0":
        annotations["serving.kserve.io/s3-verifyssl"] = "0"
    s3 = secret("s3-secret", {"awsAccessKeyID": "", "awsSecretAccessKey": ""}, annotations)
    mounts = env_of(account("default", None, "s3-secret"), s3)
    assert mounts.env == [
        {"name": "AWS_ACCESS_KEY_ID", "valueFrom": ref("s3-secret", "awsAccessKeyID")},
        {"name": "AWS_SECRET_ACCESS_KEY", "valueFrom": ref("s3-secret", "awsSecretAccessKey")},
        {"name": "S3_USE_HTTPS", "value": https},
        {"name": "S3_ENDPOINT", "value": "s3.aws.com"},
        {"name": "AWS_ENDPOINT_URL", "value": url},
        {"name": "S3_VERIFY_SSL", "value": verify},
        {"name": "awsAnonymousCredential", "value": "false"},
        {"name": "AWS_DEFAULT_REGION", "value": "us-east-2"},
    ]
    assert mounts.volumes == mounts.volume_mounts == []


def test_kserves_irsa_service_account_case() -> None:
    """TestS3ServiceAccountCredentialBuilder: no Secret, the annotations of the IRSA account."""
    sa = account(
        "default",
        {
            "serving.kserve.io/s3-endpoint": "s3.aws.com",
            "serving.kserve.io/s3-useanoncredential": "true",
            "eks.amazonaws.com/role-arn": "arn:aws:iam::123456789012:role/s3access",
        },
    )
    assert env_of(sa).env == [
        {"name": "S3_USE_HTTPS", "value": "1"},
        {"name": "S3_ENDPOINT", "value": "s3.aws.com"},
        {"name": "AWS_ENDPOINT_URL", "value": "https://s3.aws.com"},
        {"name": "S3_VERIFY_SSL", "value": "1"},
        {"name": "awsAnonymousCredential", "value": "true"},
        {"name": "AWS_DEFAULT_REGION", "value": "us-east-2"},
    ]
    assert env_of(account("default", {"serving.kserve.io/s3-endpoint": "s3.aws.com"})).env == []  # no IRSA


def test_kserves_gcs_case_under_our_volume_name() -> None:
    gcs = secret("user-gcp-sa", {"gcloud-application-credentials.json": "{}"})
    mounts = env_of(account("default", None, "user-gcp-sa"), gcs)
    assert mounts.env == [
        {
            "name": "GOOGLE_APPLICATION_CREDENTIALS",
            "value": "/var/secrets/gcloud-application-credentials.json",
        }
    ]
    assert mounts.volumes == [{"name": "draft-user-gcp-sa", "secret": {"secretName": "user-gcp-sa"}}]
    assert mounts.volume_mounts == [
        {"name": "draft-user-gcp-sa", "mountPath": "/var/secrets/", "readOnly": True}
    ]


def test_a_secret_secret_data_value_wins_over_the_config_and_an_annotation_over_both() -> None:
    data = {"awsAccessKeyID": "", "awsSecretAccessKey": "", "AWS_DEFAULT_REGION": "eu-west-1"}
    env = env_of(account("default", None, "s"), secret("s", data)).env
    assert {"name": "AWS_DEFAULT_REGION", "value": "eu-west-1"} in env
    annotated = secret("s", data, {"serving.kserve.io/s3-region": "ap-south-1"})
    assert {"name": "AWS_DEFAULT_REGION", "value": "ap-south-1"} in env_of(
        account("default", None, "s"), annotated
    ).env


def test_https_headers_are_referenced_never_copied() -> None:
    headers = json.dumps({"Authorization": "Bearer t0ken"})
    https = secret("web", {"https-host": "models.example.com", "headers": headers})
    assert env_of(account("default", None, "web"), https).env == [
        {"name": "models.example.com-headers", "valueFrom": ref("web", "headers")}
    ]


def test_the_first_matching_key_decides_the_kind() -> None:
    """An azure Secret that also has https-host is azure (checked first): nothing for an http draft; an
    hf token Secret adds nothing either (it cannot authenticate s3/gs/http)."""
    azure = secret("az", {"AZURE_CLIENT_ID": "x", "https-host": "h", "headers": "{}"})
    hf = secret("hf", {"HF_TOKEN": "x"})
    assert env_of(account("default", None, "az", "hf"), azure, hf).env == []


def test_s3_envs_merge_over_irsa_values_by_name() -> None:
    sa = account(
        "default", {"eks.amazonaws.com/role-arn": "arn:x", "serving.kserve.io/s3-region": "us-east-1"}, "s"
    )
    s3 = secret(
        "s", {"awsAccessKeyID": "", "awsSecretAccessKey": ""}, {"serving.kserve.io/s3-region": "eu-north-1"}
    )
    regions = [e for e in env_of(sa, s3).env if e["name"] == "AWS_DEFAULT_REGION"]
    assert regions == [{"name": "AWS_DEFAULT_REGION", "value": "eu-north-1"}]


def test_odh_defaults_mount_its_ca_bundle(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(CREDENTIALS_ENV, raising=False)
    odh = credential_config(rhoai=True)
    s3 = secret("aws", {"AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": ""})
    mounts = env_of(account("default", None, "aws"), s3, config=odh)
    names = {e["name"]: e.get("value") for e in mounts.env}
    assert names["AWS_CA_BUNDLE"] == "/etc/ssl/custom-certs/cabundle.crt"
    assert names["CA_BUNDLE_CONFIGMAP_NAME"] == "odh-kserve-custom-ca-bundle"
    assert names["CA_BUNDLE_VOLUME_MOUNT_POINT"] == "/etc/ssl/custom-certs"
    assert mounts.volumes == [
        {"name": "draft-cabundle-cert", "configMap": {"name": "odh-kserve-custom-ca-bundle"}}
    ]
    # Upstream's shipped config has no CA bundle, and the same key names.
    upstream = env_of(account("default", None, "aws"), s3, config=credential_config(rhoai=False))
    assert upstream.volumes == [] and "CA_BUNDLE_CONFIGMAP_NAME" not in {e["name"] for e in upstream.env}


def test_the_clusters_config_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        CREDENTIALS_ENV,
        json.dumps({"s3": {"s3SecretAccessKeyName": "secretKey", "s3AccessKeyIDName": "accessKey"}}),
    )
    config = credential_config(rhoai=True)
    s3 = secret("minio", {"accessKey": "", "secretKey": ""})
    assert env_of(account("default", None, "minio"), s3, config=config).env[:2] == [
        {"name": "AWS_ACCESS_KEY_ID", "valueFrom": ref("minio", "accessKey")},
        {"name": "AWS_SECRET_ACCESS_KEY", "valueFrom": ref("minio", "secretKey")},
    ]


def dm(draft: str, **spec: Any) -> DiffusionModel:
    body = {
        "metadata": {"name": "dream", "namespace": "default", "uid": "u"},
        "spec": {"model": {"uri": "s3://models/dream-7b"}, "draftModel": {"uri": draft}, **spec},
    }
    return DiffusionModel.from_body(body)


def test_the_initializer_gets_them_and_the_pod_their_volumes() -> None:
    objects = [
        account("models-sa", None, "gcs", "s3"),
        secret("gcs", {"gcloud-application-credentials.json": "{}"}),
        secret("s3", {"AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": ""}),
    ]
    credentials, warnings = credentials_from_objects(objects, "default", "models-sa")
    assert warnings == []
    isvc = build_inference_service(
        dm("gs://drafts/q", serviceAccountName="models-sa"), Platform(), credentials
    )
    validate_upstream(isvc)
    predictor = isvc["spec"]["predictor"]
    assert predictor["serviceAccountName"] == "models-sa"
    (init,) = predictor["initContainers"]
    assert init["name"] == DRAFT_INITIALIZER_NAME
    assert [m["name"] for m in init["volumeMounts"]] == ["draft-model", "draft-user-gcp-sa"]
    assert [v["name"] for v in predictor["volumes"]] == ["draft-model", "draft-user-gcp-sa"]
    assert [e["name"] for e in init["env"]][:3] == [
        "GOOGLE_APPLICATION_CREDENTIALS",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
    ]
    # The server container never sees the credentials.
    assert "env" not in predictor["model"]
    assert [m["name"] for m in predictor["model"]["volumeMounts"]] == ["draft-model"]


@pytest.mark.parametrize("draft", ["pvc://drafts/q", "hf://Qwen/Qwen2.5-0.5B"])
def test_drafts_without_an_init_container_get_no_credentials(draft: str) -> None:
    objects = [
        account("default", None, "s3"),
        secret("s3", {"AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": ""}),
    ]
    credentials, _ = credentials_from_objects(objects, "default", "default")
    isvc = build_inference_service(dm(draft), Platform(), credentials)
    assert "initContainers" not in isvc["spec"]["predictor"]
    assert "draft-user-gcp-sa" not in str(isvc)


def test_render_takes_the_service_account_and_secrets_from_the_input(tmp_path, capsys) -> None:
    documents = [
        {
            "apiVersion": "vdiff.io/v1alpha1",
            "kind": "DiffusionModel",
            "metadata": {"name": "dream"},
            "spec": {
                "model": {"uri": "hf://Dream-org/Dream-v0-Instruct-7B"},
                "draftModel": {"uri": "s3://d/q"},
            },
        },
        {"apiVersion": "v1", **account("default", None, "aws", "missing")},
        {"apiVersion": "v1", **secret("aws", {"AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": ""})},
    ]
    for doc in documents[1:]:
        doc["metadata"].pop("namespace")
    path = tmp_path / "in.yaml"
    path.write_text(yaml.safe_dump_all(documents))
    assert main(["render", "-f", str(path)]) == 0
    out = capsys.readouterr()
    isvc = list(yaml.safe_load_all(out.out))[1]
    env = isvc["spec"]["predictor"]["initContainers"][0]["env"]
    assert env[0] == {"name": "AWS_ACCESS_KEY_ID", "valueFrom": ref("aws", "AWS_ACCESS_KEY_ID")}
    assert "warning: Secret missing (listed on ServiceAccount default) not found" in out.err


@pytest.mark.parametrize(
    "name,ok", [("models-sa", True), ("a.b-c", True), ("Models_SA", False), ("-x", False)]
)
def test_service_account_name_is_a_dns_subdomain(name: str, ok: bool) -> None:
    obj = {
        "apiVersion": "vdiff.io/v1alpha1",
        "kind": "DiffusionModel",
        "metadata": {"name": "m", "namespace": "n"},
        "spec": {"model": {"uri": "hf://o/m"}, "serviceAccountName": name},
    }
    schema = crd_schema(load_crd(str(OUR_CRD)), "v1alpha1")
    assert (our_errors(obj) + cel_errors(schema, obj) == []) is ok
    if ok:
        DiffusionModel.from_body(obj)
    else:
        with pytest.raises(ValidationError):
            DiffusionModel.from_body(obj)
