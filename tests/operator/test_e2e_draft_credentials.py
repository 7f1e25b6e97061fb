"""e2e (kopf against the emulator): a private-bucket draft gets the credentials KServe gives its own
storage-initializer, read from the predictor's ServiceAccount and its Secrets (issue 15 defect 9).

KServe's rules (pkg/credentials/service_account_credentials.go `CreateSecretVolumeAndEnv`, s3/s3_secret.go,
s3/utils.go `BuildS3EnvVars`): the account's Secrets in order; one with the configured secret-access-key
name is S3: AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY by secretKeyRef, then S3_USE_HTTPS / S3_ENDPOINT /
AWS_ENDPOINT_URL from the `serving.kserve.io/s3-endpoint` (+ `s3-usehttps`) annotation. Reads are GETs only
(the RBAC check in test_e2e_kmock.py sees these requests too), and a denied read leaves the draft without
credentials with the reason in the Reconciled condition.
"""

from __future__ import annotations

import asyncio
import base64

import kmock
import pytest
from crd_schemas import validate_upstream
from emulator import Emulator
from test_e2e_kmock import (  # the shared cluster fixture records this module's requests for the RBAC check
    DM,
    ISVC,
    KSERVE,
    NS,
    api,
    cluster,  # noqa: F401  (fixture)
    condition,
    declare,
    eventually,
    live,
    running_operator,
    sample,
    writes,
)
from vdiff_operator.builders.inferenceservice import DRAFT_INITIALIZER_NAME

pytestmark = [pytest.mark.slow, pytest.mark.timeout(60), pytest.mark.kmock(cls=Emulator)]

CORE = {
    "v1/serviceaccounts": kmock.ResourceInfo(kind="ServiceAccount", namespaced=True, verbs={"get", "create"}),
    "v1/secrets": kmock.ResourceInfo(kind="Secret", namespaced=True, verbs={"get", "create", "patch"}),
}
DMS = f"/apis/vdiff.io/v1alpha1/namespaces/{NS}/diffusionmodels"


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def secret(endpoint: str) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": "minio-creds",
            "namespace": NS,
            "resourceVersion": "1",
            "annotations": {"serving.kserve.io/s3-endpoint": endpoint, "serving.kserve.io/s3-usehttps": "0"},
        },
        "data": {"AWS_ACCESS_KEY_ID": b64("AKIA-test"), "AWS_SECRET_ACCESS_KEY": b64("s3cr3t")},
    }


SERVICE_ACCOUNT = {
    "apiVersion": "v1",
    "kind": "ServiceAccount",
    "metadata": {"name": "models-sa", "namespace": NS, "resourceVersion": "1"},
    "secrets": [{"name": "minio-creds"}, {"name": "gone"}],
}


def with_draft() -> dict:
    dm = sample()
    dm["spec"].update(serviceAccountName="models-sa", draftModel={"uri": "s3://drafts/qwen2.5-0.5b"})
    return dm


def draft_env(isvc: dict | None) -> list[dict] | None:
    if not isvc:
        return None
    containers = isvc["spec"]["predictor"].get("initContainers", [])
    (init,) = [c for c in containers if c["name"] == DRAFT_INITIALIZER_NAME]
    return init.get("env", [])


def expected_env(endpoint: str) -> list[dict]:
    def ref(key: str) -> dict:
        return {"secretKeyRef": {"name": "minio-creds", "key": key}}

    return [
        {"name": "AWS_ACCESS_KEY_ID", "valueFrom": ref("AWS_ACCESS_KEY_ID")},
        {"name": "AWS_SECRET_ACCESS_KEY", "valueFrom": ref("AWS_SECRET_ACCESS_KEY")},
        {"name": "S3_USE_HTTPS", "value": "0"},
        {"name": "S3_ENDPOINT", "value": endpoint},
        {"name": "AWS_ENDPOINT_URL", "value": f"http://{endpoint}"},
    ]


async def seed(emulator: kmock.KubernetesEmulator) -> None:
    """The ServiceAccount, its Secret, and the DiffusionModel (the test's own requests carry no token)."""
    assert await api(emulator, "POST", f"/api/v1/namespaces/{NS}/serviceaccounts", SERVICE_ACCOUNT) < 300
    assert (
        await api(emulator, "POST", f"/api/v1/namespaces/{NS}/secrets", secret("minio.models.svc:9000")) < 300
    )
    assert await api(emulator, "POST", DMS, with_draft()) < 300


def dm_with(emulator: kmock.KubernetesEmulator, type_: str) -> dict | None:
    dm = live(emulator, DM, "llada")
    return dm if condition(dm, type_) else None


def isvc_with_draft_env(emulator: kmock.KubernetesEmulator) -> dict | None:
    isvc = live(emulator, ISVC, "llada")
    return isvc if draft_env(isvc) else None


async def test_an_s3_draft_gets_the_service_accounts_credentials_and_follows_them(
    cluster: kmock.KubernetesEmulator,  # noqa: F811
) -> None:
    declare(cluster, KSERVE | CORE)
    await seed(cluster)
    async with running_operator():
        isvc = await eventually(lambda: isvc_with_draft_env(cluster), "the draft's credentials")
        validate_upstream(isvc)
        assert isvc["spec"]["predictor"]["serviceAccountName"] == "models-sa"
        assert draft_env(isvc) == expected_env("minio.models.svc:9000")
        assert "s3cr3t" not in str(isvc) and b64("s3cr3t") not in str(isvc)  # referenced, never copied
        dm = await eventually(lambda: dm_with(cluster, "Reconciled"), "status")
        reconciled = condition(dm, "Reconciled")
        assert reconciled["status"] == "True"
        assert "Secret gone (listed on ServiceAccount models-sa) not found" in reconciled["message"]

        # Unchanged account and Secrets: the resyncs read them again and write nothing.
        await asyncio.sleep(1.0)
        since = len(list(cluster))
        await asyncio.sleep(2.0)  # four resync ticks at 0.5 s
        reads = [
            r for r in list(cluster)[since:] if r.resource is not None and r.resource.plural == "secrets"
        ]
        assert len(reads) >= 2, "the resync did not read the Secrets"
        assert writes(cluster, since) == []

        # The Secret's endpoint changes: the next resync re-reads it, as KServe would on the next pod.
        moved = {"metadata": {"annotations": {"serving.kserve.io/s3-endpoint": "minio.storage.svc:9000"}}}
        assert await api(cluster, "PATCH", f"/api/v1/namespaces/{NS}/secrets/minio-creds", moved) < 300
        await eventually(
            lambda: draft_env(live(cluster, ISVC, "llada")) == expected_env("minio.storage.svc:9000"),
            "the InferenceService follows the Secret",
        )


async def test_without_the_optional_role_the_draft_has_no_credentials_and_status_says_why(
    cluster: kmock.KubernetesEmulator,  # noqa: F811
) -> None:
    declare(cluster, KSERVE | CORE)
    await seed(cluster)
    cluster.forbidden = frozenset({"serviceaccounts", "secrets"})
    async with running_operator():
        dm = await eventually(lambda: dm_with(cluster, "Reconciled"), "status")
        message = condition(dm, "Reconciled")["message"]
        assert "ServiceAccount models-sa not readable" in message
        assert "vdiff-operator-draft-credentials" in message
        isvc = live(cluster, ISVC, "llada")
        assert draft_env(isvc) == []
        validate_upstream(isvc)


def isvc_with_modelcar(emulator: kmock.KubernetesEmulator) -> dict | None:
    isvc = live(emulator, ISVC, "llada")
    return isvc if isvc and isvc["spec"]["predictor"].get("containers") else None


async def test_an_oci_draft_is_applied_as_a_second_modelcar_without_reading_credentials(
    cluster: kmock.KubernetesEmulator,  # noqa: F811
) -> None:
    """KServe's modelcar rules (pkg/utils/utils.go, see test_draft_modelcar.py): the live InferenceService
    keeps the draft's sidecar, its pre-fetch init container and shareProcessNamespace; an image needs no
    storage credentials, so the operator reads no ServiceAccount or Secret."""
    declare(cluster, KSERVE | CORE)
    dm = sample()
    dm["spec"].update(
        model={"uri": "oci://quay.io/org/llada:8b"}, draftModel={"uri": "oci://quay.io/org/q:1"}
    )
    assert await api(cluster, "POST", DMS, dm) < 300
    async with running_operator():
        isvc = await eventually(lambda: isvc_with_modelcar(cluster), "the draft's modelcar")
        validate_upstream(isvc)
        predictor = isvc["spec"]["predictor"]
        assert [c["name"] for c in predictor["containers"]] == ["draft-modelcar"]
        assert [c["name"] for c in predictor["initContainers"]] == ["draft-modelcar-init"]
        assert predictor["shareProcessNamespace"] is True
        assert predictor["model"]["storageUri"] == "oci://quay.io/org/llada:8b"
        assert "--draft-model=/mnt/draft-model/models" in predictor["model"]["args"]
    plurals = {r.resource.plural for r in list(cluster) if r.resource is not None}
    assert not plurals & {"serviceaccounts", "secrets"}
