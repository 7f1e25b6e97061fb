"""How the predictor scales (pure): KServe RawDeployment's KEDA path, or its HPA, from spec.autoscaling.

KServe (pkg/controller/v1beta1/inferenceservice/reconcilers/keda/keda_reconciler.go) turns
`serving.kserve.io/autoscalerClass: keda` plus `spec.predictor.autoScaling.metrics[].external` into a
ScaledObject `<isvc>-predictor` with a `prometheus` trigger (serverAddress, query, threshold = target.value,
namespace, authModes, authenticationRef); with class `hpa` it makes an HPA from `scaleMetric`/`scaleTarget`
(reconcilers/hpa). Its webhook (pkg/apis/serving/v1beta1/inference_service_validation.go) rejects
`scaleMetric` with KEDA and anything but cpu|memory, target 1-100, with HPA.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from vdiff_operator.builders.common import Platform
from vdiff_operator.models import DEFAULT_TARGETS, DiffusionModel

AUTOSCALER_CLASS_ANNOTATION = "serving.kserve.io/autoscalerClass"
THANOS_QUERIER_TENANCY_URL = "https://thanos-querier.openshift-monitoring.svc:9092"
"""The tenancy port: queries need `namespace`, and the caller needs `get pods.metrics.k8s.io` there."""
ODH_PROMETHEUS_AUTH = "inference-prometheus-auth"
"""odh-model-controller creates ServiceAccount, token Secret, Role, RoleBinding and this TriggerAuthentication
in a namespace as soon as an InferenceService there has an External prometheus metric
(odh-model-controller internal/controller/serving/reconcilers/kserve_keda_reconciler.go); we reference it
and never create an object of that name."""
SERIES = {"queueDepth": "vllm:num_requests_waiting", "concurrency": "vllm:num_requests_running"}

# Autoscaling condition reasons
KEDA = "KEDA"
HPA = "HPA"
KEDA_NOT_INSTALLED = "KEDANotInstalled"
PROMETHEUS_NOT_CONFIGURED = "PrometheusNotConfigured"


@dataclass(frozen=True)
class ScalingPlan:
    autoscaler_class: str
    """KServe's autoscalerClass: keda or hpa."""
    predictor: dict[str, Any]
    """Fields merged into spec.predictor besides min/maxReplicas."""
    honoured: bool
    """False when the requested metric could not be used and the plan fell back to CPU."""
    reason: str
    message: str


def _label_value(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


def metric_query(dm: DiffusionModel, metric: str) -> str:
    """Total waiting (or running) requests of this model in its namespace; KEDA divides by the threshold."""
    selector = f'namespace="{_label_value(dm.namespace)}",model_name="{_label_value(dm.served_model_name)}"'
    return f"sum({SERIES[metric]}{{{selector}}})"


def _hpa(target: int, honoured: bool, reason: str, message: str) -> ScalingPlan:
    return ScalingPlan("hpa", {"scaleMetric": "cpu", "scaleTarget": target}, honoured, reason, message)


def scaling_plan(dm: DiffusionModel, platform: Platform) -> ScalingPlan | None:
    """None without spec.autoscaling (KServe's defaults apply, as before the field existed)."""
    spec = dm.spec.autoscaling
    if spec is None:
        return None
    if spec.metric == "cpu":
        return _hpa(
            spec.effective_target, True, HPA, f"HPA on CPU, target {spec.effective_target}% of the request"
        )
    cpu = DEFAULT_TARGETS["cpu"]
    fallback = f"; scaling on CPU ({cpu}% of the request) with an HPA instead"
    if not platform.has_keda:
        message = (
            f"metric {spec.metric} needs KEDA (CRD scaledobjects.keda.sh) and it is not installed{fallback}"
        )
        return _hpa(cpu, False, KEDA_NOT_INSTALLED, message)
    metric: dict[str, Any] = {"backend": "prometheus", "query": metric_query(dm, spec.metric)}
    external: dict[str, Any] = {
        "metric": metric,
        "target": {"type": "Value", "value": str(spec.effective_target)},
    }
    if platform.has_dsc_initialization:
        metric |= {"serverAddress": THANOS_QUERIER_TENANCY_URL, "namespace": dm.namespace}
        external["authenticationRef"] = {
            "authModes": "bearer",
            "authenticationRef": {"name": ODH_PROMETHEUS_AUTH},
        }
        source = f"thanos-querier with TriggerAuthentication {ODH_PROMETHEUS_AUTH} (odh-model-controller)"
    elif platform.prometheus_url:
        metric["serverAddress"] = platform.prometheus_url
        source = platform.prometheus_url
    else:
        message = (
            f"metric {spec.metric} needs a Prometheus for KEDA: OpenShift AI (thanos-querier) "
            "or the operator's "
            f"VDIFF_PROMETHEUS_URL{fallback}"
        )
        return _hpa(cpu, False, PROMETHEUS_NOT_CONFIGURED, message)
    message = f"KEDA on {SERIES[spec.metric]} from {source}, threshold {spec.effective_target} per replica"
    return ScalingPlan(
        "keda",
        {"autoScaling": {"metrics": [{"type": "External", "external": external}]}},
        True,
        KEDA,
        message,
    )
