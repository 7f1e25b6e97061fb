"""Pure builders: golden YAML per sample and platform, upstream-schema validity, and the rules they encode."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import yaml
from api_server import AUTOSCALER_CLASS, isvc_autoscaling_denial, isvc_defaults, keda_scaled_object
from crd_schemas import REPO_ROOT, validate_upstream
from vdiff_operator.builders import Platform, build_children, build_template, scaling_plan
from vdiff_operator.builders.args import PROFILES, decoding_settings, model_args
from vdiff_operator.models import DiffusionModel

GOLDEN = Path(__file__).parent / "golden"
SAMPLES = {
    p.stem.removeprefix("vdiff_v1alpha1_diffusionmodel_"): p
    for p in (REPO_ROOT / "config/samples").glob("vdiff_*.yaml")
}
PLATFORMS = {
    "kubernetes": Platform(),
    "kubernetes-monitoring": Platform(has_service_monitor_api=True),
    "openshift": Platform.openshift(),
    "rhoai": Platform.openshift(rhoai=True),
}


def load(name: str, **spec_overrides: Any) -> DiffusionModel:
    body = yaml.safe_load(SAMPLES[name].read_text())
    body["metadata"].update(namespace="models", uid="0b5c3f7e-0000-4000-8000-000000000001", generation=1)
    if "autoscaling" in spec_overrides:
        body["spec"].pop("replicas", None)  # exclusive with spec.autoscaling (CEL rule)
    body["spec"].update(spec_overrides)
    return DiffusionModel.from_body(body)


def dm(**spec: Any) -> DiffusionModel:
    body = {
        "metadata": {"name": "m", "namespace": "ns", "uid": "u"},
        "spec": {"model": {"uri": "hf://o/r"}, **spec},
    }
    return DiffusionModel.from_body(body)


def by_kind(children: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {child["kind"]: child for child in children}


@pytest.mark.parametrize("platform", PLATFORMS)
@pytest.mark.parametrize("sample", sorted(SAMPLES))
def test_golden(sample: str, platform: str) -> None:
    rendered = yaml.safe_dump_all(build_children(load(sample), PLATFORMS[platform]), sort_keys=True)
    path = GOLDEN / f"{sample}.{platform}.yaml"
    if os.environ.get("VDIFF_UPDATE_GOLDEN") == "1":
        path.write_text(rendered)
    assert path.exists(), f"missing golden file {path.name}; run with VDIFF_UPDATE_GOLDEN=1 and review it"
    assert rendered == path.read_text()


VARIANTS = {
    "quality-no-gpu": dict(decoding={"profile": "quality"}, resources={"gpus": 0, "cpu": 2}),
    "pvc-draft": dict(draftModel={"uri": "pvc://drafts/qwen2-0.5b"}, decoding={"profile": "fast"}),
    "everything": dict(
        model={
            "uri": "oci://quay.io/models/llada:8b",
            "servedModelName": "llada",
            "trustRemoteCode": True,
            "maxModelLen": 8192,
            "maxNumSeqs": 32,
            "dtype": "bfloat16",
        },
        quantization="bitsandbytes-4bit",
        decoding={
            "profile": "balanced",
            "decoding": "threshold",
            "threshold": 0.8,
            "kvCache": "dual",
            "steps": 64,
            "blockLength": 32,
            "remasking": "low_confidence",
        },
        resources={
            "gpus": 2,
            "gpuResourceName": "amd.com/gpu",
            "cpu": "8",
            "memory": "64Gi",
            "limits": {"cpu": "16", "memory": "80Gi"},
            "sharedMemory": "8Gi",
        },
        replicas={"min": 0, "max": 4},
        image="quay.io/me/vdiff:dev",
        imagePullSecrets=[{"name": "pull"}],
        apiKeySecretRef={"name": "key"},
        route={"host": "llada.apps.example.com", "timeout": "30m"},
        monitoring={"serviceMonitor": "Enabled", "interval": "15s"},
        tolerations=[{"key": "dedicated", "operator": "Equal", "value": "ai", "effect": "NoSchedule"}],
        nodeSelector={"nvidia.com/gpu.product": "H100"},
        env=[
            {"name": "VDIFF_LOG", "value": "debug"},
            {"name": "T", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}},
        ],
        args=["--seed=7"],
    ),
}


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("platform", ["openshift", "rhoai"])
def test_every_emitted_object_fits_the_upstream_crds(variant: str, platform: str) -> None:
    children = build_children(dm(**VARIANTS[variant]), PLATFORMS[platform])
    assert children
    for child in children:
        validate_upstream(child)


def test_samples_fit_the_upstream_crds() -> None:
    for name in SAMPLES:
        for child in build_children(load(name), PLATFORMS["rhoai"]):
            validate_upstream(child)


def test_profile_table() -> None:
    assert decoding_settings(dm(decoding={"profile": "quality"})) == {"decoding": "reference"}
    assert decoding_settings(dm(decoding={"profile": "balanced"})) == PROFILES["balanced"]
    assert decoding_settings(dm(decoding={"profile": "fast"})) == {
        "decoding": "threshold",
        "threshold": 0.7,
        "kv_cache": "dual",
        "kv_cache_vicinity": 16,
    }
    assert decoding_settings(dm(decoding={"profile": "fast", "kvCacheVicinity": 0}))["kv_cache_vicinity"] == 0
    # the vicinity only goes with a cache
    assert "kv_cache_vicinity" not in decoding_settings(dm(decoding={"profile": "fast", "kvCache": "none"}))
    fast_apd = dm(decoding={"profile": "fast"}, draftModel={"uri": "hf://Qwen/Qwen2.5-0.5B-Instruct"})
    assert decoding_settings(fast_apd) == {"decoding": "apd"}
    assert "--draft-model=Qwen/Qwen2.5-0.5B-Instruct" in model_args(fast_apd)
    # Overrides win over the profile; threshold only goes with threshold decoding.
    assert decoding_settings(dm(decoding={"profile": "balanced", "kvCache": "none", "threshold": 0.95})) == {
        "decoding": "threshold",
        "threshold": 0.95,
        "kv_cache": "none",
    }
    assert decoding_settings(dm(decoding={"profile": "balanced", "decoding": "reference"})) == {
        "decoding": "reference"
    }
    assert decoding_settings(dm(decoding={"profile": "fast", "decoding": "reference"})) == {
        "decoding": "reference",
        "kv_cache": "dual",
        "kv_cache_vicinity": 16,
    }


def test_server_flags() -> None:
    args = model_args(dm(**VARIANTS["everything"]))
    assert args[0] == "--served-model-name=llada"
    for flag in (
        "--diffusion-steps=64",
        "--block-length=32",
        "--remasking=low_confidence",
        "--threshold=0.8",
        "--kv-cache=dual",
        "--max-model-len=8192",
        "--max-num-seqs=32",
        "--dtype=bfloat16",
        "--quantization=bitsandbytes-4bit",
        "--trust-remote-code",
    ):
        assert flag in args
    assert args[-1] == "--seed=7"
    assert model_args(dm())[0] == "--served-model-name=m"


def test_inference_service_shape() -> None:
    isvc = by_kind(build_children(dm(**VARIANTS["everything"]), Platform.openshift()))["InferenceService"]
    assert isvc["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "RawDeployment"
    predictor = isvc["spec"]["predictor"]
    assert (predictor["minReplicas"], predictor["maxReplicas"]) == (0, 4)
    resources = predictor["model"]["resources"]
    assert resources["requests"]["amd.com/gpu"] == resources["limits"]["amd.com/gpu"] == "2"
    assert resources["limits"]["memory"] == "80Gi"
    assert predictor["tolerations"] == [
        {"key": "dedicated", "operator": "Equal", "value": "ai", "effect": "NoSchedule"}
    ]
    assert predictor["model"]["env"][0] == {
        "name": "VDIFF_API_KEY",
        "valueFrom": {"secretKeyRef": {"name": "key", "key": "api-key"}},
    }
    assert predictor["model"]["storageUri"] == "oci://quay.io/models/llada:8b"


def test_pvc_draft_model_is_mounted() -> None:
    isvc = by_kind(build_children(dm(**VARIANTS["pvc-draft"]), Platform()))["InferenceService"]
    predictor = isvc["spec"]["predictor"]
    assert predictor["volumes"] == [
        {"name": "draft-model", "persistentVolumeClaim": {"claimName": "drafts", "readOnly": True}}
    ]
    assert predictor["model"]["volumeMounts"][0]["mountPath"] == "/mnt/draft-model"
    assert "--draft-model=/mnt/draft-model/qwen2-0.5b" in predictor["model"]["args"]


def test_no_gpu_means_no_gpu_toleration_or_recreate() -> None:
    predictor = by_kind(build_children(dm(**VARIANTS["quality-no-gpu"]), Platform()))["InferenceService"][
        "spec"
    ]["predictor"]
    assert "tolerations" not in predictor and "deploymentStrategy" not in predictor
    assert "nvidia.com/gpu" not in predictor["model"]["resources"]["requests"]


def test_route_never_takes_the_odh_name() -> None:
    route = by_kind(build_children(dm(), Platform.openshift()))["Route"]
    assert route["metadata"]["name"] == "m-api"
    assert route["spec"]["to"] == {"kind": "Service", "name": "m-predictor", "weight": 100}
    assert route["spec"]["port"] == {"targetPort": "http"}
    assert route["spec"]["tls"] == {"termination": "edge", "insecureEdgeTerminationPolicy": "Redirect"}
    assert route["metadata"]["annotations"]["haproxy.router.openshift.io/timeout"] == "600s"


@pytest.mark.parametrize(
    ("platform", "mode", "expected"),
    [
        (Platform(), "Auto", False),
        (Platform(has_service_monitor_api=True), "Auto", True),
        (Platform.openshift(rhoai=True), "Auto", False),  # odh-model-controller scrapes already
        (Platform.openshift(rhoai=True), "Enabled", True),
        (Platform(), "Enabled", False),  # no API to create it in
        (Platform.openshift(), "Disabled", False),
    ],
)
def test_service_monitor_rules(platform: Platform, mode: str, expected: bool) -> None:
    kinds = by_kind(build_children(dm(monitoring={"serviceMonitor": mode}), platform))
    assert ("ServiceMonitor" in kinds) is expected


def test_kinds_per_platform() -> None:
    assert sorted(by_kind(build_children(dm(), Platform()))) == ["InferenceService", "ServingRuntime"]
    assert "Route" not in by_kind(build_children(dm(route={"enabled": False}), Platform.openshift()))
    rhoai = by_kind(build_children(dm(), Platform.openshift(rhoai=True)))
    assert sorted(rhoai) == ["InferenceService", "Route", "ServingRuntime", "Template"]


def test_dashboard_template() -> None:
    template = build_template("redhat-ods-applications", "quay.io/vdiff/vdiff-server:0.1.0")
    assert template["metadata"]["namespace"] == "redhat-ods-applications"
    assert template["metadata"]["labels"]["opendatahub.io/dashboard"] == "true"
    assert "ownerReferences" not in template["metadata"]
    runtime = template["objects"][0]
    assert runtime["kind"] == "ServingRuntime"
    container = runtime["spec"]["containers"][0]
    assert container["name"] == "kserve-container"
    assert "--served-model-name={{.Name}}" in container["args"]
    assert runtime["spec"]["annotations"]["opendatahub.io/kserve-runtime"] == "vllm"


# ---------------------------------------------------------------------------------------------------------
# spec.autoscaling (builders/autoscaling.py)

AUTOSCALING_PLATFORMS = {
    "kubernetes": Platform(),
    "kubernetes-keda": Platform(
        has_keda=True, prometheus_url="http://prometheus-operated.monitoring.svc:9090"
    ),
    "openshift-keda": Platform.openshift(keda=True),  # no OpenShift AI, no VDIFF_PROMETHEUS_URL
    "rhoai": Platform.openshift(rhoai=True),
    "rhoai-keda": Platform.openshift(rhoai=True, keda=True),
}
QUEUE_DEPTH = {"minReplicas": 1, "maxReplicas": 4, "metric": "queueDepth", "target": 3}


def isvc_of(platform: Platform, **spec: Any) -> dict[str, Any]:
    return by_kind(build_children(load("llada", **spec), platform))["InferenceService"]


@pytest.mark.parametrize("platform", AUTOSCALING_PLATFORMS)
def test_golden_queue_depth_autoscaling(platform: str) -> None:
    """Reviewed by hand: rhoai-keda is the KEDA path (openshift-ai.md, Autoscaling in raw mode)."""
    isvc = isvc_of(AUTOSCALING_PLATFORMS[platform], autoscaling=QUEUE_DEPTH)
    rendered = yaml.safe_dump(isvc, sort_keys=True)
    path = GOLDEN / f"llada-queue-depth.{platform}.yaml"
    if os.environ.get("VDIFF_UPDATE_GOLDEN") == "1":
        path.write_text(rendered)
    assert path.exists(), f"missing golden file {path.name}; run with VDIFF_UPDATE_GOLDEN=1 and review it"
    assert rendered == path.read_text()


@pytest.mark.parametrize("metric", ["queueDepth", "concurrency", "cpu"])
@pytest.mark.parametrize("platform", AUTOSCALING_PLATFORMS)
def test_autoscaled_objects_fit_kserve_keda_and_its_webhook(platform: str, metric: str) -> None:
    """Every emitted object fits the upstream CRDs, KServe's webhook admits the InferenceService
    (api_server.isvc_autoscaling_denial, from kserve
    pkg/apis/serving/v1beta1/inference_service_validation.go),
    and the ScaledObject KServe derives from it (api_server.keda_scaled_object, from kserve
    pkg/controller/v1beta1/inferenceservice/reconcilers/keda/keda_reconciler.go) fits KEDA's CRD."""
    spec = {"minReplicas": 2, "maxReplicas": 5, "metric": metric}
    for child in build_children(load("llada", autoscaling=spec), AUTOSCALING_PLATFORMS[platform]):
        validate_upstream(child)
        if child["kind"] != "InferenceService":
            continue
        stored = isvc_defaults(child)
        assert isvc_autoscaling_denial(stored) is None
        if child["metadata"]["annotations"][AUTOSCALER_CLASS] == "keda":
            scaled_object = keda_scaled_object(stored)
            validate_upstream(scaled_object)
            assert scaled_object["spec"]["minReplicaCount"] == 2
            assert scaled_object["spec"]["maxReplicaCount"] == 5


def test_keda_trigger_on_openshift_ai() -> None:
    """thanos-querier's tenancy port with `namespace`, and odh-model-controller's TriggerAuthentication
    (odh-model-controller internal/controller/serving/reconcilers/kserve_keda_reconciler.go: SA, token
    Secret, Role, RoleBinding and TriggerAuthentication `inference-prometheus-auth`, bearerToken<-token,
    ca<-ca.crt)."""
    isvc = isvc_of(
        Platform.openshift(rhoai=True, keda=True), model={"uri": "hf://o/r", "servedModelName": "llada-8b"},
        autoscaling=QUEUE_DEPTH,
    )  # fmt: skip
    assert isvc["metadata"]["annotations"][AUTOSCALER_CLASS] == "keda"
    predictor = isvc["spec"]["predictor"]
    assert "scaleMetric" not in predictor and "scaleTarget" not in predictor  # KServe denies it with KEDA
    assert (predictor["minReplicas"], predictor["maxReplicas"]) == (1, 4)
    (metric,) = predictor["autoScaling"]["metrics"]
    assert metric == {
        "type": "External",
        "external": {
            "metric": {
                "backend": "prometheus",
                "serverAddress": "https://thanos-querier.openshift-monitoring.svc:9092",
                "namespace": "models",
                "query": 'sum(vllm:num_requests_waiting{namespace="models",model_name="llada-8b"})',
            },
            "target": {"type": "Value", "value": "3"},
            "authenticationRef": {
                "authModes": "bearer",
                "authenticationRef": {"name": "inference-prometheus-auth"},
            },
        },
    }
    trigger = keda_scaled_object(isvc_defaults(isvc))["spec"]["triggers"][0]
    assert trigger["metadata"]["threshold"] == "3.000000"
    assert trigger["authenticationRef"] == {"name": "inference-prometheus-auth"}
    # We never create odh-model-controller's objects: it owns and deletes them.
    kinds = {child["kind"] for child in build_children(load("llada", autoscaling=QUEUE_DEPTH),
                                                      Platform.openshift(rhoai=True, keda=True))}  # fmt: skip
    assert "TriggerAuthentication" not in kinds and "Secret" not in kinds


def test_concurrency_reads_running_requests_and_escapes_the_model_name() -> None:
    platform = Platform(has_keda=True, prometheus_url="http://prom:9090")
    spec = {"maxReplicas": 3, "metric": "concurrency"}
    isvc = isvc_of(platform, model={"uri": "hf://o/r", "servedModelName": 'we"ird'}, autoscaling=spec)
    external = isvc["spec"]["predictor"]["autoScaling"]["metrics"][0]["external"]
    assert external["metric"] == {
        "backend": "prometheus",
        "serverAddress": "http://prom:9090",
        "query": 'sum(vllm:num_requests_running{namespace="models",model_name="we\\"ird"})',
    }
    assert external["target"]["value"] == "8" and "authenticationRef" not in external


@pytest.mark.parametrize(
    ("platform", "metric", "reason", "honoured"),
    [
        (Platform(), "queueDepth", "KEDANotInstalled", False),
        (Platform.openshift(rhoai=True), "concurrency", "KEDANotInstalled", False),
        (Platform.openshift(keda=True), "queueDepth", "PrometheusNotConfigured", False),
        (Platform.openshift(rhoai=True, keda=True), "queueDepth", "KEDA", True),
        (Platform(), "cpu", "HPA", True),
        (Platform.openshift(rhoai=True, keda=True), "cpu", "HPA", True),
    ],
)
def test_without_keda_it_is_an_hpa_on_cpu(
    platform: Platform, metric: str, reason: str, honoured: bool
) -> None:
    """KServe raw mode: class hpa with scaleMetric cpu|memory and scaleTarget 1-100
    (kserve pkg/controller/v1beta1/inferenceservice/reconcilers/hpa/hpa_reconciler.go,
    pkg/apis/serving/v1beta1/inference_service_validation.go)."""
    model = load("llada", autoscaling={"maxReplicas": 3, "metric": metric, "target": 60})
    plan = scaling_plan(model, platform)
    assert plan is not None and (plan.reason, plan.honoured) == (reason, honoured)
    predictor = by_kind(build_children(model, platform))["InferenceService"]["spec"]["predictor"]
    if reason == "KEDA":
        assert "scaleMetric" not in predictor
        return
    assert "autoScaling" not in predictor
    assert predictor["scaleMetric"] == "cpu"
    assert predictor["scaleTarget"] == (60 if metric == "cpu" else 80)  # the queue target is no CPU percent
    if not honoured:
        assert "scaling on CPU" in plan.message


def test_no_autoscaling_field_keeps_kserves_defaults() -> None:
    isvc = isvc_of(Platform.openshift(rhoai=True, keda=True))
    assert AUTOSCALER_CLASS not in isvc["metadata"]["annotations"]
    assert not {"autoScaling", "scaleMetric", "scaleTarget"} & set(isvc["spec"]["predictor"])
    assert scaling_plan(load("llada"), Platform()) is None
