"""A real kopf operator (vdiff_operator's handlers) against kmock's in-memory Kubernetes API over HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import kmock
import kopf
import pytest
import vdiff_operator  # noqa: F401  (registers the handlers)
import yaml
from api_server import keda_scaled_object, rbac_attributes
from crd_schemas import validate_upstream
from emulator import RECORDED, Emulator
from vdiff_operator.builders import inferenceservice

NS = "models"
DM = "vdiff.io/v1alpha1/diffusionmodels"
ISVC = "serving.kserve.io/v1beta1/inferenceservices"
RUNTIME = "serving.kserve.io/v1alpha1/servingruntimes"
ROUTE = "route.openshift.io/v1/routes"
MONITOR = "monitoring.coreos.com/v1/servicemonitors"
TEMPLATE = "template.openshift.io/v1/templates"
DSCI = "dscinitialization.opendatahub.io/v1/dscinitializations"
KSERVE = {
    ISVC: kmock.ResourceInfo(
        kind="InferenceService", namespaced=True, verbs={"get", "list", "watch", "create"}
    ),
    RUNTIME: kmock.ResourceInfo(kind="ServingRuntime", namespaced=True, verbs={"get", "list", "create"}),
}
OPENSHIFT = {
    ROUTE: kmock.ResourceInfo(kind="Route", namespaced=True, verbs={"get", "list", "create"}),
    MONITOR: kmock.ResourceInfo(kind="ServiceMonitor", namespaced=True, verbs={"get", "list", "create"}),
}


pytestmark = [pytest.mark.slow, pytest.mark.timeout(60), pytest.mark.kmock(cls=Emulator)]


def declare(emulator: kmock.KubernetesEmulator, resources: dict[str, kmock.ResourceInfo]) -> None:
    for key, info in resources.items():
        emulator.resources[key] = info


Permission = tuple[str, str, str, str | None]  # (apiGroup, resource, verb, namespace or None)


def operator_permissions(emulator: kmock.KubernetesEmulator) -> set[Permission]:
    """The authorization attributes of every request the operator made (the test's own carry no token)."""
    used: set[Permission] = set()
    for request in list(emulator):
        if not request.headers.get("Authorization"):
            continue
        attributes = rbac_attributes(str(request.method.value), request.url.path, dict(request.params))
        if attributes is not None:
            used.add((*attributes, request.namespace))
    return used


@pytest.fixture
async def cluster(
    kmock: kmock.KubernetesEmulator,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
):
    kubeconfig = {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": "kmock",
        "clusters": [{"name": "kmock", "cluster": {"server": str(kmock.url).rstrip("/")}}],
        "users": [{"name": "kmock", "user": {"token": "test"}}],
        "contexts": [{"name": "kmock", "context": {"cluster": "kmock", "user": "kmock"}}],
    }
    (tmp_path / "kubeconfig").write_text(yaml.safe_dump(kubeconfig))
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "kubeconfig"))
    monkeypatch.setenv("VDIFF_OPERATOR_RETRY_SECONDS", "1")
    monkeypatch.setenv("RELATED_IMAGE_VDIFF_SERVER", "registry.example/vdiff-server:test")
    # kopf needs these to start watching (see openshift-ai.md).
    kmock.resources["v1/namespaces"] = kmock.ResourceInfo(
        kind="Namespace", namespaced=False, verbs={"list", "watch"}
    )
    kmock.resources["v1/events"] = kmock.ResourceInfo(kind="Event", namespaced=True, verbs={"create"})
    kmock.resources["apiextensions.k8s.io/v1/customresourcedefinitions"] = kmock.ResourceInfo(
        kind="CustomResourceDefinition", namespaced=False, verbs={"list", "watch"}
    )
    kmock.resources[DM] = kmock.ResourceInfo(
        kind="DiffusionModel",
        namespaced=True,
        verbs={"get", "list", "watch", "patch"},
        subresources={"status"},
        shortnames={"dm"},
    )
    yield kmock
    RECORDED[request.node.name] = operator_permissions(kmock)


@contextlib.asynccontextmanager
async def running_operator() -> AsyncIterator[None]:
    stop, ready = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(
        kopf.operator(
            registry=kopf.get_default_registry(),
            clusterwide=True,
            standalone=True,
            stop_flag=stop,
            ready_flag=ready,
            memo=kopf.Memo(),
        )
    )
    try:
        await asyncio.wait_for(ready.wait(), timeout=10)
        yield
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=10)


def live(
    emulator: kmock.KubernetesEmulator, resource: str, name: str, namespace: str | None = NS
) -> dict | None:
    key = (kmock.resource(resource), namespace, name)
    if key not in emulator.objects or emulator.objects[key].deleted:
        return None
    return json.loads(json.dumps(emulator.objects[key].raw, default=dict))


async def eventually(check: Callable[[], Any], what: str, timeout: float = 15) -> Any:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        result = check()
        if result:
            return result
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


def condition(dm: dict | None, type_: str) -> dict:
    for item in ((dm or {}).get("status") or {}).get("conditions") or []:
        if item["type"] == type_:
            return item
    return {}


def sample(name: str = "llada") -> dict:
    return {
        "apiVersion": "vdiff.io/v1alpha1",
        "kind": "DiffusionModel",
        "metadata": {
            "name": name,
            "namespace": NS,
            "uid": f"uid-{name}",
            "resourceVersion": "1",
            "generation": 1,
        },
        "spec": {"model": {"uri": "hf://GSAI-ML/LLaDA-8B-Instruct"}, "decoding": {"profile": "balanced"}},
    }


async def api(emulator: kmock.KubernetesEmulator, method: str, path: str, body: Any = None) -> int:
    headers = {"Content-Type": "application/merge-patch+json"} if method == "PATCH" else {}
    async with emulator.request(method, path, json=body, headers=headers) as response:
        return response.status


async def test_create_update_drift_and_delete(cluster: kmock.KubernetesEmulator) -> None:
    declare(cluster, KSERVE | OPENSHIFT)
    async with running_operator():
        assert (
            await api(cluster, "POST", f"/apis/vdiff.io/v1alpha1/namespaces/{NS}/diffusionmodels", sample())
            < 300
        )

        isvc = await eventually(lambda: live(cluster, ISVC, "llada"), "InferenceService")
        runtime = await eventually(lambda: live(cluster, RUNTIME, "llada"), "ServingRuntime")
        route = await eventually(lambda: live(cluster, ROUTE, "llada-api"), "Route")
        monitor = await eventually(lambda: live(cluster, MONITOR, "llada-engine"), "ServiceMonitor")
        for child in (isvc, runtime, route, monitor):
            (owner,) = child["metadata"]["ownerReferences"]
            assert (owner["kind"], owner["name"], owner["uid"], owner["controller"]) == (
                "DiffusionModel",
                "llada",
                "uid-llada",
                True,
            )
            validate_upstream(child)
        assert runtime["spec"]["containers"][0]["image"] == "registry.example/vdiff-server:test"
        assert "--decoding=threshold" in isvc["spec"]["predictor"]["model"]["args"]
        assert live(cluster, ROUTE, "llada") is None  # odh-model-controller's name stays free

        dm = await eventually(
            lambda: condition(live(cluster, DM, "llada"), "Reconciled") and live(cluster, DM, "llada"),
            "status",
        )
        assert condition(dm, "Reconciled")["status"] == "True"
        assert condition(dm, "Ready")["status"] == "Unknown"
        assert condition(dm, "RouteAdmitted")["reason"] == "Pending"
        assert dm["status"]["observedGeneration"] == 1
        assert dm["status"]["servedModelName"] == "llada"
        assert not any(k.startswith("kopf.zalando.org") for k in dm["metadata"].get("annotations", {}))
        await eventually(
            lambda: any(
                r.method == "POST"
                and r.resource is not None
                and r.resource.plural == "events"
                and "Created" in r.text
                for r in list(cluster)
            ),
            "an event for each child created",
        )

        # Update the spec: children follow.
        patch = {
            "metadata": {"generation": 2},
            "spec": {"decoding": {"steps": 64}, "replicas": {"min": 1, "max": 3}},
        }
        assert (
            await api(
                cluster, "PATCH", f"/apis/vdiff.io/v1alpha1/namespaces/{NS}/diffusionmodels/llada", patch
            )
            < 300
        )
        isvc = await eventually(
            lambda: (
                (o := live(cluster, ISVC, "llada"))
                and "--diffusion-steps=64" in o["spec"]["predictor"]["model"]["args"]
                and o
            ),
            "InferenceService updated",
        )
        assert isvc["spec"]["predictor"]["maxReplicas"] == 3
        await eventually(
            lambda: (live(cluster, DM, "llada") or {}).get("status", {}).get("observedGeneration") == 2,
            "observedGeneration",
        )

        # Another controller adds its finalizer and annotation: we leave them alone.
        odh = {"metadata": {"finalizers": ["odh.inferenceservice.finalizers"], "annotations": {"odh": "x"}}}
        assert (
            await api(
                cluster,
                "PATCH",
                f"/apis/serving.kserve.io/v1beta1/namespaces/{NS}/inferenceservices/llada",
                odh,
            )
            < 300
        )

        # Drift: a deleted child comes back with the timer; an edited field is restored.
        assert (
            await api(cluster, "DELETE", f"/apis/route.openshift.io/v1/namespaces/{NS}/routes/llada-api")
            < 300
        )
        for path, body in (
            (f"/apis/serving.kserve.io/v1alpha1/namespaces/{NS}/servingruntimes/llada",
             {"spec": {"multiModel": True}}),
            (f"/apis/monitoring.coreos.com/v1/namespaces/{NS}/servicemonitors/llada-engine",
             {"spec": {"namespaceSelector": {"matchNames": ["elsewhere"]}}}),
        ):  # fmt: skip
            assert await api(cluster, "PATCH", path, body) < 300
        edit = {"spec": {"predictor": {"maxReplicas": 7}}}
        assert (
            await api(
                cluster,
                "PATCH",
                f"/apis/serving.kserve.io/v1beta1/namespaces/{NS}/inferenceservices/llada",
                edit,
            )
            < 300
        )
        await eventually(lambda: live(cluster, ROUTE, "llada-api"), "Route recreated")
        isvc = await eventually(
            lambda: (o := live(cluster, ISVC, "llada")) and o["spec"]["predictor"]["maxReplicas"] == 3 and o,
            "drift repaired",
        )
        await eventually(
            lambda: (
                live(cluster, RUNTIME, "llada")["spec"]["multiModel"] is False
                and live(cluster, MONITOR, "llada-engine")["spec"]["namespaceSelector"]
                == {"matchNames": [NS]}
            ),
            "runtime and ServiceMonitor repaired by the resync loop",
        )
        route_path = f"/apis/route.openshift.io/v1/namespaces/{NS}/routes/llada-api"
        assert await api(cluster, "PATCH", route_path, {"spec": {"wildcardPolicy": "Subdomain"}}) < 300
        await eventually(
            lambda: live(cluster, ROUTE, "llada-api")["spec"]["wildcardPolicy"] == "None", "Route repaired"
        )
        assert isvc["metadata"]["finalizers"] == ["odh.inferenceservice.finalizers"]
        assert isvc["metadata"]["annotations"]["odh"] == "x"

        # KServe and the router report readiness: Ready, with the Route's URL.
        ready = {
            "status": {"conditions": [{"type": "Ready", "status": "True"}], "url": "http://llada.models.svc"}
        }
        await api(
            cluster,
            "PATCH",
            f"/apis/serving.kserve.io/v1beta1/namespaces/{NS}/inferenceservices/llada/status",
            ready,
        )
        admitted = {
            "status": {
                "ingress": [
                    {
                        "host": "llada-api-models.apps.example.com",
                        "routerName": "default",
                        "conditions": [{"type": "Admitted", "status": "True"}],
                    }
                ]
            }
        }
        await api(
            cluster, "PATCH", f"/apis/route.openshift.io/v1/namespaces/{NS}/routes/llada-api/status", admitted
        )
        dm = await eventually(
            lambda: (
                condition(live(cluster, DM, "llada"), "Ready").get("status") == "True"
                and live(cluster, DM, "llada")
            ),
            "Ready=True",
        )
        assert dm["status"]["url"] == "https://llada-api-models.apps.example.com"
        assert condition(dm, "RouteAdmitted")["status"] == "True"

        assert "finalizers" not in live(cluster, DM, "llada")["metadata"]
        # Delete: no finalizer of ours holds it; children carry owner references for the garbage collector.
        assert (
            await api(cluster, "DELETE", f"/apis/vdiff.io/v1alpha1/namespaces/{NS}/diffusionmodels/llada")
            < 300
        )
        await eventually(lambda: live(cluster, DM, "llada") is None, "DiffusionModel gone")


async def test_kserve_missing_then_installed(cluster: kmock.KubernetesEmulator) -> None:
    async with running_operator():
        assert (
            await api(
                cluster, "POST", f"/apis/vdiff.io/v1alpha1/namespaces/{NS}/diffusionmodels", sample("dream")
            )
            < 300
        )
        dm = await eventually(
            lambda: (
                condition(live(cluster, DM, "dream"), "Ready").get("reason") == "KServeNotInstalled"
                and live(cluster, DM, "dream")
            ),
            "KServeNotInstalled",
        )
        assert condition(dm, "Ready")["status"] == "False"
        assert live(cluster, ISVC, "dream") is None

        declare(cluster, KSERVE)  # KServe gets installed; no Route API (vanilla Kubernetes)
        isvc = await eventually(lambda: live(cluster, ISVC, "dream"), "InferenceService after KServe appears")
        validate_upstream(isvc)
        dm = await eventually(
            lambda: (
                condition(live(cluster, DM, "dream"), "Reconciled").get("status") == "True"
                and live(cluster, DM, "dream")
            ),
            "reconciled",
        )
        assert condition(dm, "RouteAdmitted")["reason"] == "RouteAPINotAvailable"
        assert condition(dm, "Monitored")["reason"] == "MonitoringAPINotAvailable"
        assert live(cluster, ROUTE, "dream-api") is None


async def test_openshift_ai_gets_the_dashboard_template(cluster: kmock.KubernetesEmulator) -> None:
    declare(cluster, KSERVE | OPENSHIFT)
    declare(
        cluster,
        {
            TEMPLATE: kmock.ResourceInfo(kind="Template", namespaced=True, verbs={"get", "create"}),
            DSCI: kmock.ResourceInfo(kind="DSCInitialization", namespaced=False, verbs={"list"}),
        },
    )
    cluster.objects[DSCI, None, "default-dsci"] = {
        "apiVersion": "dscinitialization.opendatahub.io/v1",
        "kind": "DSCInitialization",
        "metadata": {"name": "default-dsci", "uid": "dsci", "resourceVersion": "1"},
        "spec": {"applicationsNamespace": "redhat-ods-applications"},
    }
    async with running_operator():
        assert (
            await api(cluster, "POST", f"/apis/vdiff.io/v1alpha1/namespaces/{NS}/diffusionmodels", sample())
            < 300
        )
        template = await eventually(
            lambda: live(cluster, TEMPLATE, "vdiff-runtime", "redhat-ods-applications"), "Template"
        )
        validate_upstream(template)
        assert template["objects"][0]["kind"] == "ServingRuntime"
        path = "/apis/template.openshift.io/v1/namespaces/redhat-ods-applications/templates/vdiff-runtime"
        assert (
            await api(cluster, "PATCH", path, {"metadata": {"labels": {"opendatahub.io/dashboard": "no"}}})
            < 300
        )
        await eventually(
            lambda: (
                live(cluster, TEMPLATE, "vdiff-runtime", "redhat-ods-applications")["metadata"]["labels"][
                    "opendatahub.io/dashboard"
                ]
                == "true"
            ),
            "Template label repaired",
        )
        dm = await eventually(
            lambda: condition(live(cluster, DM, "llada"), "Monitored") and live(cluster, DM, "llada"),
            "status",
        )
        assert condition(dm, "Monitored")["reason"] == "OpenShiftAI"
        assert live(cluster, MONITOR, "llada-engine") is None  # odh-model-controller scrapes it already
        assert live(cluster, ISVC, "llada")["metadata"]["labels"]["opendatahub.io/dashboard"] == "true"


RHOAI = {
    TEMPLATE: kmock.ResourceInfo(kind="Template", namespaced=True, verbs={"get", "create"}),
    DSCI: kmock.ResourceInfo(kind="DSCInitialization", namespaced=False, verbs={"list"}),
}


def seed_rhoai(emulator: kmock.KubernetesEmulator) -> None:
    declare(emulator, KSERVE | OPENSHIFT | RHOAI)
    emulator.objects[DSCI, None, "default-dsci"] = {
        "apiVersion": "dscinitialization.opendatahub.io/v1",
        "kind": "DSCInitialization",
        "metadata": {"name": "default-dsci", "uid": "dsci", "resourceVersion": "1"},
        "spec": {"applicationsNamespace": "redhat-ods-applications"},
    }


def writes(emulator: kmock.KubernetesEmulator, since: int = 0) -> list[str]:
    """Every mutating request (events included) after the first `since` requests."""
    return [
        f"{r.method} {r.url.path}"
        for r in list(emulator)[since:]
        if str(r.method).upper().rsplit(".", 1)[-1] in ("POST", "PUT", "PATCH", "DELETE")
    ]


async def mark_ready(emulator: kmock.KubernetesEmulator, name: str) -> None:
    ready = {
        "status": {"conditions": [{"type": "Ready", "status": "True"}], "url": f"http://{name}.{NS}.svc"}
    }
    path = f"/apis/serving.kserve.io/v1beta1/namespaces/{NS}/inferenceservices/{name}/status"
    assert await api(emulator, "PATCH", path, ready) < 300


def children(emulator: kmock.KubernetesEmulator, name: str) -> dict[str, dict | None]:
    return {
        kind: live(emulator, resource, child)
        for kind, resource, child in (
            ("InferenceService", ISVC, name),
            ("ServingRuntime", RUNTIME, name),
            ("Route", ROUTE, f"{name}-api"),
            ("ServiceMonitor", MONITOR, f"{name}-engine"),
        )
    }


async def test_two_models_in_one_namespace_and_deleting_one(cluster: kmock.KubernetesEmulator) -> None:
    """Both runtimes pass KServe's ServingRuntime admission (api_server.servingruntime_denial, from kserve
    pkg/webhook/admission/servingruntime/servingruntime_webhook.go); GC follows ownerReferences only."""
    declare(cluster, KSERVE | OPENSHIFT)
    async with running_operator():
        for name in ("llada", "dream"):
            path = f"/apis/vdiff.io/v1alpha1/namespaces/{NS}/diffusionmodels"
            assert await api(cluster, "POST", path, sample(name)) < 300
        for name in ("llada", "dream"):
            await eventually(lambda n=name: all(children(cluster, n).values()), f"children of {name}")
            await mark_ready(cluster, name)
        for name in ("llada", "dream"):
            dm = await eventually(
                lambda n=name: (
                    condition(live(cluster, DM, n), "Ready").get("status") == "True" and live(cluster, DM, n)
                ),
                f"{name} Ready",
            )
            assert condition(dm, "Reconciled")["status"] == "True"
            isvc = live(cluster, ISVC, name)
            assert isvc["spec"]["predictor"]["model"]["runtime"] == name  # explicit: no auto-selection
            runtime = live(cluster, RUNTIME, name)
            assert runtime["spec"]["supportedModelFormats"] == [{"name": "vdiff", "autoSelect": False}]

        kept = children(cluster, "llada")
        since = len(list(cluster))
        path = f"/apis/vdiff.io/v1alpha1/namespaces/{NS}/diffusionmodels/dream"
        assert await api(cluster, "DELETE", path) < 300
        await eventually(lambda: live(cluster, DM, "dream") is None, "dream gone")
        await eventually(lambda: not any(children(cluster, "dream").values()), "dream's children collected")
        await asyncio.sleep(1.5)  # a few resyncs of llada
        assert children(cluster, "llada") == kept
        assert not [w for w in writes(cluster, since) if "/llada" in w and "/diffusionmodels/" not in w]


async def test_resync_of_an_unchanged_object_writes_nothing(cluster: kmock.KubernetesEmulator) -> None:
    """The server's stored form is not what we sent (api_server.isvc_defaults: KServe's
    inference_service_defaults.go rewrites RawDeployment -> Standard and re-marshals quantities;
    api_server.template_stored: openshift/api template/v1/types.go drops omitempty fields)."""
    seed_rhoai(cluster)
    body = sample()
    body["spec"]["resources"] = {"gpus": 0, "cpu": "0.5", "memory": "2048Mi", "limits": {"cpu": "1.5"}}
    async with running_operator():
        path = f"/apis/vdiff.io/v1alpha1/namespaces/{NS}/diffusionmodels"
        assert await api(cluster, "POST", path, body) < 300
        await eventually(
            lambda: live(cluster, TEMPLATE, "vdiff-runtime", "redhat-ods-applications"), "Template"
        )
        await eventually(
            lambda: condition(live(cluster, DM, "llada"), "Reconciled").get("status") == "True", "reconciled"
        )
        isvc = live(cluster, ISVC, "llada")
        assert isvc["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "Standard"
        resources = isvc["spec"]["predictor"]["model"]["resources"]
        assert resources["requests"] == {"cpu": "500m", "memory": "2Gi"}
        assert resources["limits"] == {"cpu": "1500m", "memory": "2Gi"}
        template = live(cluster, TEMPLATE, "vdiff-runtime", "redhat-ods-applications")
        assert "parameters" not in template
        await asyncio.sleep(1.0)  # let the create-time writes (status, events) settle

        since = len(list(cluster))
        await asyncio.sleep(2.5)  # five resync ticks at 0.5 s
        reads = [
            r for r in list(cluster)[since:] if r.resource is not None and r.resource.plural == "templates"
        ]
        assert len(reads) >= 2, "the drift timer did not run"
        assert writes(cluster, since) == []


async def test_a_denied_apply_is_reported_in_status(
    cluster: kmock.KubernetesEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the first version's runtime formats (autoSelect + priority 1 on every runtime), KServe's webhook
    denies the second model's runtime; the API's message must reach the DiffusionModel's conditions."""
    from vdiff_operator.builders import servingruntime

    original = servingruntime.runtime_spec

    def first_version(*args: Any, **kwargs: Any) -> dict:
        spec = original(*args, **kwargs)
        spec["supportedModelFormats"] = [{"name": "vdiff", "autoSelect": True, "priority": 1}]
        return spec

    monkeypatch.setattr(servingruntime, "runtime_spec", first_version)
    declare(cluster, KSERVE)
    async with running_operator():
        path = f"/apis/vdiff.io/v1alpha1/namespaces/{NS}/diffusionmodels"
        assert await api(cluster, "POST", path, sample("llada")) < 300
        await eventually(lambda: live(cluster, ISVC, "llada"), "first model's InferenceService")
        assert await api(cluster, "POST", path, sample("dream")) < 300
        dm = await eventually(
            lambda: (
                condition(live(cluster, DM, "dream"), "Ready").get("reason") == "ApplyFailed"
                and live(cluster, DM, "dream")
            ),
            "ApplyFailed",
        )
        expected = (
            'admission webhook "servingruntime.kserve-webhook-server.validator" denied the request: '
            "same priority assigned for the model format vdiff in the servingruntimes llada and dream "
            f"in namespace {NS}"
        )
        assert condition(dm, "Ready")["status"] == "False"
        assert expected in condition(dm, "Ready")["message"]
        assert condition(dm, "Reconciled") == {**condition(dm, "Reconciled"), "status": "False"}
        assert live(cluster, RUNTIME, "dream") is None
        assert live(cluster, ISVC, "dream") is None  # it would name a runtime that does not exist
        await eventually(
            lambda: any(r.resource is not None and r.resource.plural == "events" and "ApplyFailed" in r.text
                        for r in list(cluster)),
            "a Warning event",
        )  # fmt: skip


def finalizer_writes(emulator: kmock.KubernetesEmulator) -> list[str]:
    """Operator requests that touched a DiffusionModel's finalizers."""
    return [
        r.text
        for r in list(emulator)
        if r.headers.get("Authorization") and "/diffusionmodels/" in r.url.path and "finalizers" in r.text
    ]


async def test_no_finalizer_so_deleting_without_the_operator_completes(
    cluster: kmock.KubernetesEmulator,
) -> None:
    """kopf adds its finalizer for timers/daemons/delete handlers only (kopf/on.py requires_finalizer;
    nolar/kopf#548, #896): with on.event + create/update/resume and our own resync loop, none is ever added,
    so a DiffusionModel deleted after the operator was uninstalled does not hang in Terminating."""
    declare(cluster, KSERVE)
    async with running_operator():
        path = f"/apis/vdiff.io/v1alpha1/namespaces/{NS}/diffusionmodels"
        assert await api(cluster, "POST", path, sample()) < 300
        await eventually(
            lambda: condition(live(cluster, DM, "llada"), "Reconciled").get("status") == "True", "reconciled"
        )
        await asyncio.sleep(1.2)  # a couple of resync passes
        assert "finalizers" not in live(cluster, DM, "llada")["metadata"]
        assert finalizer_writes(cluster) == []
    # The operator is gone (uninstalled first); the DiffusionModel is deleted at once, not Terminating.
    url = str(cluster.url).rstrip("/") + f"{path}/llada"
    async with aiohttp.ClientSession() as session, session.delete(url) as response:
        assert response.status < 300
    assert live(cluster, DM, "llada") is None


async def test_a_finalizer_left_by_an_older_version_is_removed(cluster: kmock.KubernetesEmulator) -> None:
    """Versions with a timer left `vdiff.io/finalizer` on live objects; kopf removes the configured
    finalizer when no handler requires one (kopf/_core/reactor/processing.py), Terminating ones included."""
    declare(cluster, KSERVE)
    kept = sample("kept")
    kept["metadata"]["finalizers"] = ["vdiff.io/finalizer"]
    stuck = sample("stuck")
    stuck["metadata"] |= {"finalizers": ["vdiff.io/finalizer"], "deletionTimestamp": "2026-11-30T00:00:00Z"}
    for body in (kept, stuck):
        cluster.objects[DM, NS, body["metadata"]["name"]] = body
    async with running_operator():
        await eventually(
            lambda: (
                "vdiff.io/finalizer" not in (live(cluster, DM, "kept")["metadata"].get("finalizers") or [])
            ),
            "our finalizer removed",
        )
        await eventually(lambda: live(cluster, DM, "stuck") is None, "a Terminating DiffusionModel released")
        await eventually(lambda: live(cluster, ISVC, "kept"), "the kept model is still served")


async def test_a_rotated_token_is_read_again(cluster: kmock.KubernetesEmulator, tmp_path: Path) -> None:
    """The kubelet rotates a projected service-account token; the old one stops authenticating (401). The
    operator's client must pick up the new one (kube.KubeApi: re-read after a 401 and every minute)."""
    declare(cluster, KSERVE)
    cluster.valid_tokens = {"test"}
    async with running_operator():
        path = f"/apis/vdiff.io/v1alpha1/namespaces/{NS}/diffusionmodels"
        assert await api(cluster, "POST", path, sample()) < 300
        await eventually(lambda: live(cluster, ISVC, "llada"), "InferenceService with the first token")

        kubeconfig = yaml.safe_load((tmp_path / "kubeconfig").read_text())
        kubeconfig["users"][0]["user"]["token"] = "rotated"
        (tmp_path / "kubeconfig").write_text(yaml.safe_dump(kubeconfig))
        cluster.valid_tokens = {"rotated"}
        since = len(list(cluster))
        isvc_path = f"/apis/serving.kserve.io/v1beta1/namespaces/{NS}/inferenceservices/llada"
        assert await api(cluster, "PATCH", isvc_path, {"spec": {"predictor": {"maxReplicas": 9}}}) < 300
        await eventually(
            lambda: live(cluster, ISVC, "llada")["spec"]["predictor"]["maxReplicas"] == 1,
            "drift repaired with the rotated token",
        )
        after = [r for r in list(cluster)[since:] if r.headers.get("Authorization")]
        assert any(
            r.headers["Authorization"] == "Bearer rotated" and str(r.method.value) == "PATCH" for r in after
        )


KEDA = {
    "keda.sh/v1alpha1/scaledobjects": kmock.ResourceInfo(kind="ScaledObject", namespaced=True, verbs={"get"}),
    "keda.sh/v1alpha1/triggerauthentications": kmock.ResourceInfo(
        kind="TriggerAuthentication", namespaced=True, verbs={"get"}
    ),
}


def autoscaled(name: str = "llada") -> dict:
    body = sample(name)
    body["spec"]["autoscaling"] = {"minReplicas": 1, "maxReplicas": 4, "metric": "queueDepth", "target": 2}
    return body


async def test_queue_depth_autoscaling_without_then_with_keda(cluster: kmock.KubernetesEmulator) -> None:
    """OpenShift AI without KEDA: KServe's HPA on CPU and a condition saying why; once KEDA's CRDs appear the
    next resync moves the InferenceService to KServe's KEDA path (kserve
    pkg/controller/v1beta1/inferenceservice/reconcilers/keda/keda_reconciler.go) and drops scaleMetric, which
    KServe's webhook denies with KEDA (api_server.isvc_autoscaling_denial, from kserve
    pkg/apis/serving/v1beta1/inference_service_validation.go, is applied by the emulator)."""
    seed_rhoai(cluster)
    async with running_operator():
        path = f"/apis/vdiff.io/v1alpha1/namespaces/{NS}/diffusionmodels"
        assert await api(cluster, "POST", path, autoscaled()) < 300
        dm = await eventually(
            lambda: condition(live(cluster, DM, "llada"), "Autoscaling") and live(cluster, DM, "llada"),
            "Autoscaling condition",
        )
        assert condition(dm, "Autoscaling")["status"] == "False"
        assert condition(dm, "Autoscaling")["reason"] == "KEDANotInstalled"
        assert "needs KEDA" in condition(dm, "Autoscaling")["message"]
        assert condition(dm, "Reconciled")["status"] == "True"
        isvc = live(cluster, ISVC, "llada")
        validate_upstream(isvc)
        assert isvc["metadata"]["annotations"]["serving.kserve.io/autoscalerClass"] == "hpa"
        predictor = isvc["spec"]["predictor"]
        assert (predictor["scaleMetric"], predictor["scaleTarget"]) == ("cpu", 80)
        assert (predictor["minReplicas"], predictor["maxReplicas"]) == (1, 4)
        assert "autoScaling" not in predictor

        declare(cluster, KEDA)  # the Custom Metrics Autoscaler operator is installed
        isvc = await eventually(
            lambda: (
                (o := live(cluster, ISVC, "llada"))
                and o["metadata"]["annotations"]["serving.kserve.io/autoscalerClass"] == "keda"
                and o
            ),
            "InferenceService on KEDA",
        )
        validate_upstream(isvc)
        predictor = isvc["spec"]["predictor"]
        assert "scaleMetric" not in predictor and "scaleTarget" not in predictor
        (metric,) = predictor["autoScaling"]["metrics"]
        external = metric["external"]
        assert (
            external["metric"]["query"]
            == 'sum(vllm:num_requests_waiting{namespace="models",model_name="llada"})'
        )
        assert external["metric"]["namespace"] == NS
        assert external["authenticationRef"]["authenticationRef"] == {"name": "inference-prometheus-auth"}
        validate_upstream(keda_scaled_object(isvc))
        dm = await eventually(
            lambda: (
                condition(live(cluster, DM, "llada"), "Autoscaling").get("status") == "True"
                and live(cluster, DM, "llada")
            ),
            "Autoscaling=True",
        )
        assert condition(dm, "Autoscaling")["reason"] == "KEDA"
        # odh-model-controller makes the TriggerAuthentication; the operator never writes one (nor a Secret).
        assert not [w for w in writes(cluster) if "keda.sh" in w or "/secrets" in w]


async def test_cpu_autoscaling_needs_no_keda(cluster: kmock.KubernetesEmulator) -> None:
    declare(cluster, KSERVE)
    body = sample()
    body["spec"]["autoscaling"] = {"minReplicas": 2, "maxReplicas": 3, "metric": "cpu", "target": 70}
    async with running_operator():
        path = f"/apis/vdiff.io/v1alpha1/namespaces/{NS}/diffusionmodels"
        assert await api(cluster, "POST", path, body) < 300
        dm = await eventually(
            lambda: condition(live(cluster, DM, "llada"), "Autoscaling") and live(cluster, DM, "llada"),
            "Autoscaling condition",
        )
        assert (condition(dm, "Autoscaling")["status"], condition(dm, "Autoscaling")["reason"]) == (
            "True",
            "HPA",
        )
        predictor = live(cluster, ISVC, "llada")["spec"]["predictor"]
        assert (predictor["scaleMetric"], predictor["scaleTarget"], predictor["minReplicas"]) == (
            "cpu",
            70,
            2,
        )


async def test_a_denied_autoscaling_field_is_reported(
    cluster: kmock.KubernetesEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """If the builder ever sent scaleMetric with KEDA, KServe's webhook would refuse the InferenceService
    (inference_service_validation.go `validateScalingKedaCompExtension`); the emulator must too."""
    from vdiff_operator.builders import autoscaling

    original = autoscaling.scaling_plan

    def with_scale_metric(*args: Any, **kwargs: Any) -> Any:
        plan = original(*args, **kwargs)
        return plan and dataclasses.replace(plan, predictor={**plan.predictor, "scaleMetric": "cpu"})

    monkeypatch.setattr(autoscaling, "scaling_plan", with_scale_metric)
    monkeypatch.setattr(inferenceservice, "scaling_plan", with_scale_metric)
    seed_rhoai(cluster)
    declare(cluster, KEDA)
    async with running_operator():
        path = f"/apis/vdiff.io/v1alpha1/namespaces/{NS}/diffusionmodels"
        assert await api(cluster, "POST", path, autoscaled()) < 300
        dm = await eventually(
            lambda: (
                condition(live(cluster, DM, "llada"), "Ready").get("reason") == "ApplyFailed"
                and live(cluster, DM, "llada")
            ),
            "ApplyFailed",
        )
        assert "ScaleMetric is not supported for KEDA" in condition(dm, "Ready")["message"]
        assert live(cluster, ISVC, "llada") is None


# Admission checks, not requests: nothing in the e2e run can show them (operator/RBAC.md says why).
ADMISSION_ONLY = {
    # kubernetes plugin/pkg/admission/gc/gc_admission.go: blockOwnerDeletion needs update on owner/finalizers
    ("vdiff.io", "diffusionmodels/finalizers", "update"),
    # openshift-apiserver pkg/route/apiserver/registry/route/strategy.go: a Route with spec.host
    ("route.openshift.io", "routes/custom-host", "create"),
}
APPLICATIONS_NAMESPACE = "redhat-ods-applications"


def granted(path: Path) -> set[tuple[str, str, str]]:
    role = yaml.safe_load(path.read_text())
    return {
        (group, resource, verb)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


def test_rbac_is_exactly_what_the_e2e_run_used(request: pytest.FixtureRequest) -> None:
    """Least privilege (defect 5): the ClusterRole, the applications-namespace Role and the optional
    draft-credentials ClusterRole grant exactly the (group, resource, verb) the operator requested in the e2e
    tests (test_e2e_*.py) (api_server.rbac_attributes,
    from k8s.io/apiserver pkg/endpoints/request/requestinfo.go), and the CSV's clusterPermissions are the
    ClusterRole."""
    e2e = {
        item.name
        for item in request.session.items
        if item.module.__name__.rsplit(".", 1)[-1].startswith("test_e2e_")
    } - {request.node.name}
    if set(RECORDED) != e2e:
        pytest.skip("needs every e2e test (test_e2e_*.py) in the same run")
    repo = Path(__file__).resolve().parents[2]
    cluster_role = granted(repo / "config/rbac/role.yaml")
    templates = granted(repo / "config/applications-rbac/role.yaml")
    draft_credentials = granted(repo / "config/draft-credentials-rbac/cluster_role.yaml")
    used = set().union(*RECORDED.values())
    in_applications = {p[:3] for p in used if p[0] == "template.openshift.io"}
    assert {p[3] for p in used if p[0] == "template.openshift.io"} == {APPLICATIONS_NAMESPACE}
    assert templates == in_applications, "applications-namespace Role"
    # The optional ClusterRole: the reads of KServe's credential builder for an s3/gs/http(s) draft only.
    credential_reads = {p[:3] for p in used if p[1] in ("serviceaccounts", "secrets")}
    assert draft_credentials == credential_reads == {("", "serviceaccounts", "get"), ("", "secrets", "get")}
    assert not cluster_role & draft_credentials, "Secrets are never in the operator's own ClusterRole"
    expected = {p[:3] for p in used} - in_applications - credential_reads
    assert cluster_role - ADMISSION_ONLY == expected, "ClusterRole"
    csv = yaml.safe_load((repo / "bundle/manifests/vdiff-operator.clusterserviceversion.yaml").read_text())
    (permission,) = csv["spec"]["install"]["spec"]["clusterPermissions"]
    assert permission["rules"] == yaml.safe_load((repo / "config/rbac/role.yaml").read_text())["rules"]
    assert "permissions" not in csv["spec"]["install"]["spec"]
