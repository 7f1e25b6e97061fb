"""The storage credentials KServe gives its storage-initializer, derived the same way for the draft model's.

KServe's pod webhook adds credentials only to its own `storage-initializer` container
(pkg/webhook/admission/pod/storage_initializer_injector.go, `CommonStorageInitialization` ->
`CredentialBuilder.CreateSecretVolumeAndEnv`). The draft's init container gets what that builder would derive
from the predictor's service account (pkg/credentials/service_account_credentials.go, s3/, gcs/, https/), from
a snapshot the reconcile reads (the ServiceAccount and the Secrets it lists): pure functions, no I/O.
"""

from __future__ import annotations

import base64
import json
import os
import posixpath
from dataclasses import dataclass, field
from typing import Any

CREDENTIALS_ENV = "VDIFF_KSERVE_CREDENTIALS"
"""The `credentials` value of KServe's `inferenceservice-config` ConfigMap, when the cluster's differs from
the shipped one: `kubectl get cm inferenceservice-config -n <kserve namespace>
-o jsonpath='{.data.credentials}'`."""

UPSTREAM_CREDENTIALS = {
    "gcs": {"gcsCredentialFileName": "gcloud-application-credentials.json"},
    "s3": {"s3AccessKeyIDName": "AWS_ACCESS_KEY_ID", "s3SecretAccessKeyName": "AWS_SECRET_ACCESS_KEY"},
}
"""kserve/kserve config/configmap/inferenceservice.yaml `credentials` (the other s3 values are empty)."""
ODH_CREDENTIALS = {
    "gcs": {"gcsCredentialFileName": "gcloud-application-credentials.json"},
    "s3": {
        "s3AccessKeyIDName": "AWS_ACCESS_KEY_ID",
        "s3SecretAccessKeyName": "AWS_SECRET_ACCESS_KEY",
        "s3CABundleConfigMap": "odh-kserve-custom-ca-bundle",
        "s3CABundle": "/etc/ssl/custom-certs/cabundle.crt",
    },
}
"""opendatahub-io/kserve config/overlays/odh/patches/inferenceservice-config-patch.yaml `credentials`."""

IRSA_ANNOTATION = "eks.amazonaws.com/role-arn"
S3_ANNOTATIONS = {
    "S3_ENDPOINT": "serving.kserve.io/s3-endpoint",
    "S3_USE_HTTPS": "serving.kserve.io/s3-usehttps",
    "S3_VERIFY_SSL": "serving.kserve.io/s3-verifyssl",
    "awsAnonymousCredential": "serving.kserve.io/s3-useanoncredential",
    "AWS_DEFAULT_REGION": "serving.kserve.io/s3-region",
    "S3_USER_VIRTUAL_BUCKET": "serving.kserve.io/s3-usevirtualbucket",
    "S3_USE_ACCELERATE": "serving.kserve.io/s3-useaccelerate",
    "AWS_CA_BUNDLE": "serving.kserve.io/s3-cabundle",
    "AWS_CA_BUNDLE_CONFIGMAP": "serving.kserve.io/s3-cabundle-configmap",
}
"""env name (= the Secret data key KServe also reads) -> annotation (pkg/credentials/s3/s3_secret.go)."""
S3_CONFIG_KEYS = {
    "S3_ENDPOINT": "s3Endpoint",
    "S3_USE_HTTPS": "s3UseHttps",
    "S3_VERIFY_SSL": "s3VerifySSL",
    "awsAnonymousCredential": "s3UseAnonymousCredential",
    "AWS_DEFAULT_REGION": "s3Region",
    "S3_USER_VIRTUAL_BUCKET": "s3UseVirtualBucket",
    "S3_USE_ACCELERATE": "s3UseAccelerate",
    "AWS_CA_BUNDLE": "s3CABundle",
    "AWS_CA_BUNDLE_CONFIGMAP": "s3CABundleConfigMap",
}
S3_ENV_ORDER = ("S3_VERIFY_SSL", "awsAnonymousCredential", "AWS_DEFAULT_REGION", "S3_USER_VIRTUAL_BUCKET",
                "S3_USE_ACCELERATE", "AWS_CA_BUNDLE", "AWS_CA_BUNDLE_CONFIGMAP")  # fmt: skip
"""BuildS3EnvVars' order after the endpoint triple (pkg/credentials/s3/utils.go)."""
GCS_MOUNT_PATH = "/var/secrets/"
GCS_ENV = "GOOGLE_APPLICATION_CREDENTIALS"
HTTPS_HOST_KEY, HTTPS_HEADERS_KEY = "https-host", "headers"
OTHER_KINDS = (
    ("AZ_CLIENT_ID", "azure"),
    ("AZURE_CLIENT_ID", "azure"),
    ("AZURE_ACCESS_TOKEN", "azure"),
    ("AZURE_STORAGE_ACCESS_KEY", "azure"),
)
"""Checked between gcs and https in mountSecretCredential: such a Secret is never read as https."""
LATER_KINDS = (("HDFS_NAMENODE", "hdfs"), ("HF_TOKEN", "hf"), ("MODELSCOPE_API_TOKEN", "modelscope"))
GCS_VOLUME = "draft-user-gcp-sa"
CA_BUNDLE_VOLUME = "draft-cabundle-cert"
"""Not KServe's `user-gcp-sa` / `cabundle-cert`: its webhook appends `cabundle-cert` to the pod without
checking for one already there, and two volumes of one name make the pod invalid."""
DEFAULT_CA_BUNDLE_MOUNT_PATH = "/etc/ssl/custom-certs"


@dataclass(frozen=True)
class CredentialConfig:
    """KServe's CredentialConfig (pkg/credentials/service_account_credentials.go): s3 key names and defaults,
    the GCS credential file name."""

    s3: dict[str, str] = field(default_factory=dict)
    gcs_credential_file_name: str = "gcloud-application-credentials.json"

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CredentialConfig:
        s3 = {k: str(v) for k, v in (data.get("s3") or {}).items() if v not in (None, "")}
        gcs = (data.get("gcs") or {}).get("gcsCredentialFileName") or "gcloud-application-credentials.json"
        return cls(s3=s3, gcs_credential_file_name=gcs)

    @property
    def access_key_id_name(self) -> str:
        return self.s3.get("s3AccessKeyIDName") or "awsAccessKeyID"

    @property
    def secret_access_key_name(self) -> str:
        return self.s3.get("s3SecretAccessKeyName") or "awsSecretAccessKey"


def credential_config(*, rhoai: bool) -> CredentialConfig:
    """VDIFF_KSERVE_CREDENTIALS if set, else the ConfigMap value KServe (or, on OpenShift AI, ODH) ships."""
    raw = os.environ.get(CREDENTIALS_ENV)
    if raw:
        return CredentialConfig.from_json(json.loads(raw))
    return CredentialConfig.from_json(ODH_CREDENTIALS if rhoai else UPSTREAM_CREDENTIALS)


@dataclass(frozen=True)
class StorageCredentials:
    """What the reconcile read: the predictor's ServiceAccount (None when absent: KServe then adds nothing)
    and each Secret it lists that exists, in the ServiceAccount's order."""

    service_account: dict[str, Any] | None = None
    secrets: tuple[dict[str, Any], ...] = ()


def credentials_from_objects(
    objects: list[dict[str, Any]], namespace: str, account: str
) -> tuple[StorageCredentials, list[str]]:
    """The snapshot KServe's builder would read among `objects` (what the API returned, or the documents
    given to `vdiff-operator render`), and a warning per Secret the account lists that is missing: KServe's
    webhook then refuses the pod (mountSecretCredential's error), so the main model fails the same way."""

    def find(kind: str, name: str) -> dict[str, Any] | None:
        for obj in objects:
            meta = obj.get("metadata") or {}
            same_namespace = meta.get("namespace", namespace) == namespace
            if obj.get("kind") == kind and meta.get("name") == name and same_namespace:
                return obj
        return None

    service_account = find("ServiceAccount", account)
    if service_account is None:
        return StorageCredentials(), []
    secrets, warnings = [], []
    for ref in service_account.get("secrets") or []:
        secret = find("Secret", ref.get("name", ""))
        if secret is None:
            warnings.append(
                f"Secret {ref.get('name')} (listed on ServiceAccount {account}) not found: "
                "the draft model's fetch gets no credentials from it"
            )
        else:
            secrets.append(secret)
    return StorageCredentials(service_account, tuple(secrets)), warnings


@dataclass
class CredentialMounts:
    env: list[dict[str, Any]] = field(default_factory=list)
    volumes: list[dict[str, Any]] = field(default_factory=list)
    volume_mounts: list[dict[str, Any]] = field(default_factory=list)


def _data(secret: dict[str, Any]) -> dict[str, str]:
    """Secret data decoded (only the non-credential values are ever used as text)."""
    raw = secret.get("data") or {}
    out = {key: base64.b64decode(value or "").decode(errors="replace") for key, value in raw.items()}
    out.update(secret.get("stringData") or {})
    return out


def _value(
    annotations: dict[str, str], data: dict[str, str] | None, env: str, config: CredentialConfig
) -> str:
    """getEnvValue: the annotation, else the Secret's data key, else the ConfigMap's s3 value."""
    if S3_ANNOTATIONS[env] in annotations:
        return annotations[S3_ANNOTATIONS[env]]
    if data is not None and env in data:
        return data[env]
    return config.s3.get(S3_CONFIG_KEYS[env], "")


def s3_env(
    annotations: dict[str, str], data: dict[str, str] | None, config: CredentialConfig
) -> list[dict[str, Any]]:
    """BuildS3EnvVars: the endpoint (a scheme prefix decides S3_USE_HTTPS), then the other values set."""
    env: list[dict[str, Any]] = []
    endpoint = _value(annotations, data, "S3_ENDPOINT", config).strip()
    if endpoint:
        lower = endpoint.lower()
        if lower.startswith("https://"):
            use_https, host, url = "1", endpoint[8:], endpoint
        elif lower.startswith("http://"):
            use_https, host, url = "0", endpoint[7:], endpoint
        else:
            use_https, host = _value(annotations, data, "S3_USE_HTTPS", config), endpoint
            url = ("http://" if use_https == "0" else "https://") + endpoint
        if use_https:
            env.append({"name": "S3_USE_HTTPS", "value": use_https})
        env += [{"name": "S3_ENDPOINT", "value": host}, {"name": "AWS_ENDPOINT_URL", "value": url}]
    for name in S3_ENV_ORDER:
        value = _value(annotations, data, name, config)
        if value:
            env.append({"name": name, "value": value})
    return env


def _merge_env(base: list[dict[str, Any]], override: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """utils.MergeEnvs: an override of a name already there replaces its value (only the value), the rest
    is appended."""
    extra = []
    for item in override:
        for existing in base:
            if existing["name"] == item["name"]:
                existing["value"] = item.get("value", "")
                break
        else:
            extra.append(item)
    return base + extra


def _secret_kind(data: dict[str, str], config: CredentialConfig) -> str | None:
    """mountSecretCredential's order of checks: s3, gcs, the azure forms, https, hdfs, hf, modelscope."""
    if config.secret_access_key_name in data:
        return "s3"
    if config.gcs_credential_file_name in data:
        return "gcs"
    for key, kind in (*OTHER_KINDS, (HTTPS_HOST_KEY, "https"), *LATER_KINDS):
        if key in data:
            return kind
    return None


def _secret_ref(secret: str, key: str) -> dict[str, Any]:
    return {"secretKeyRef": {"name": secret, "key": key}}


def _add_secret(mounts: CredentialMounts, secret: dict[str, Any], config: CredentialConfig) -> None:
    name = secret["metadata"]["name"]
    data = _data(secret)
    kind = _secret_kind(data, config)
    if kind == "s3":
        envs = [
            {"name": "AWS_ACCESS_KEY_ID", "valueFrom": _secret_ref(name, config.access_key_id_name)},
            {"name": "AWS_SECRET_ACCESS_KEY", "valueFrom": _secret_ref(name, config.secret_access_key_name)},
            *s3_env(secret["metadata"].get("annotations") or {}, data, config),
        ]
        mounts.env = _merge_env(mounts.env, envs)
    elif kind == "gcs":
        if not any(v["name"] == GCS_VOLUME for v in mounts.volumes):  # AppendVolumeIfNotExists
            mounts.volumes.append({"name": GCS_VOLUME, "secret": {"secretName": name}})
            mounts.volume_mounts.append({"name": GCS_VOLUME, "mountPath": GCS_MOUNT_PATH, "readOnly": True})
        mounts.env.append({"name": GCS_ENV, "value": GCS_MOUNT_PATH + config.gcs_credential_file_name})
    elif kind == "https" and HTTPS_HEADERS_KEY in data:
        # KServe copies the headers' text into the env; a reference gives the pod the same value without
        # writing a credential into the InferenceService.
        host = data[HTTPS_HOST_KEY]
        mounts.env.append({"name": f"{host}-headers", "valueFrom": _secret_ref(name, HTTPS_HEADERS_KEY)})
    # azure, hdfs, hf and modelscope Secrets cannot authenticate an s3/gs/http(s) download: nothing to add.


def _add_ca_bundle(mounts: CredentialMounts) -> None:
    """The CA bundle part of CommonStorageInitialization (needCaBundleMount): only when the env names a
    ConfigMap. storageInitializer.caBundleConfigMapName (a cluster-wide bundle KServe copies into every
    namespace as `global-ca-bundle`) is not read here: the env's ConfigMap replaces it in KServe too."""
    by_name = {e["name"]: e.get("value", "") for e in mounts.env}
    configmap = by_name.get("AWS_CA_BUNDLE_CONFIGMAP")
    if not configmap:
        return
    mount_path = DEFAULT_CA_BUNDLE_MOUNT_PATH
    if "AWS_CA_BUNDLE" in by_name:
        mount_path = posixpath.dirname(by_name["AWS_CA_BUNDLE"])
    mounts.env += [
        {"name": "CA_BUNDLE_CONFIGMAP_NAME", "value": configmap},
        {"name": "CA_BUNDLE_VOLUME_MOUNT_POINT", "value": mount_path},
    ]
    mounts.volumes.append({"name": CA_BUNDLE_VOLUME, "configMap": {"name": configmap}})
    mounts.volume_mounts.append({"name": CA_BUNDLE_VOLUME, "mountPath": mount_path, "readOnly": True})


def storage_credentials(credentials: StorageCredentials, config: CredentialConfig) -> CredentialMounts:
    """CreateSecretVolumeAndEnvFromServiceAccount: IRSA envs from the ServiceAccount's annotations, then each
    of its Secrets in order; then the CA bundle mount."""
    mounts = CredentialMounts()
    account = credentials.service_account
    if account is None:
        return mounts
    annotations = (account.get("metadata") or {}).get("annotations") or {}
    if IRSA_ANNOTATION in annotations:
        mounts.env += s3_env(annotations, None, config)
    for secret in credentials.secrets:
        _add_secret(mounts, secret, config)
    _add_ca_bundle(mounts)
    return mounts
