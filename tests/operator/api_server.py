"""What a real cluster does to our children and kmock does not: one small named helper per upstream rule.

kmock stores what it is given (gotchas.md). The defects of the first operator hid exactly there, so the
emulator used by test_e2e_kmock.py applies these rules:

- `servingruntime_denial`: KServe's validating webhook for ServingRuntimes
  (kserve/kserve pkg/webhook/admission/servingruntime/servingruntime_webhook.go, same in the ODH fork).
- `isvc_defaults`: KServe's mutating webhook for InferenceServices: `RawDeployment` becomes `Standard`
  (kserve pkg/apis/serving/v1beta1/inference_service_defaults.go, since v0.17.0 / kserve #5025) and the
  typed object is marshalled back, so `resource.Quantity` values come back canonical.
- `isvc_autoscaling_denial`: KServe's validating webhook on a Standard (raw) InferenceService's scaling fields
  (kserve pkg/apis/serving/v1beta1/inference_service_validation.go, `validateInferenceServiceAutoscaler`,
  `validateScalingHPACompExtension`, `validateScalingKedaCompExtension`).
- `keda_scaled_object`: the ScaledObject KServe's KEDA reconciler makes from such an InferenceService
  (kserve pkg/controller/v1beta1/inferenceservice/reconcilers/keda/keda_reconciler.go,
  `createKedaScaledObject`, `getKedaMetrics`), so the trigger we imply can be checked against KEDA's own CRD.
- `template_stored`: the OpenShift API server's typed Template: omitempty fields are dropped
  (openshift/api template/v1/types.go).
- `canonical_quantity`: k8s.io/apimachinery pkg/api/resource/quantity.go `CanonicalizeBytes`
  (kept apart from vdiff_operator.normalize on purpose: the emulator is the oracle, not the product).
- `rbac_attributes`: the (apiGroup, resource, verb) an authorizer sees for a request
  (k8s.io/apiserver pkg/endpoints/request/requestinfo.go), so the e2e run can check config/rbac against what
  the operator really calls; `unauthorized_status` is the 401 for a token that no longer authenticates;
  `forbidden_status` the 403 for a request no grant allows (k8s.io/apiserver
  pkg/endpoints/handlers/responsewriters/errors.go, `forbiddenMessage`).
- `dependents_to_collect`: the garbage collector deleting objects whose owners are all gone
  (kubernetes pkg/controller/garbagecollector/garbagecollector.go, `attemptToDeleteItem`).
"""

from __future__ import annotations

import copy
import re
from fractions import Fraction
from typing import Any

DEPLOYMENT_MODE = "serving.kserve.io/deploymentMode"
WEBHOOK_NAME = "servingruntime.kserve-webhook-server.validator"

# ---------------------------------------------------------------------------------------------------------
# resource.Quantity (apimachinery pkg/api/resource/quantity.go, suffix.go)

_SUFFIX = re.compile(r"^(\d+(?:\.\d*)?|\.\d+)(Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE]?)$")
_BIN = ["", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"]
_DEC = {-9: "n", -6: "u", -3: "m", 0: "", 3: "k", 6: "M", 9: "G", 12: "T", 15: "P", 18: "E"}
_DEC_EXP = {v: k for k, v in _DEC.items()}


def canonical_quantity(text: str) -> str:
    """`2048Mi` -> `2Gi`, `0.5` -> `500m`, `1000` -> `1k`, `1.5Gi` -> `1536Mi` (non-negative, SI forms)."""
    match = _SUFFIX.match(text)
    if match is None:
        return text
    number, suffix = match.groups()
    binary = suffix.endswith("i")
    value = Fraction(number) * (1024 ** _BIN.index(suffix) if binary else Fraction(10) ** _DEC_EXP[suffix])
    value = Fraction(-((-value * 10**9) // 1), 10**9)  # round up to nano units
    if value == 0:
        return "0"
    if binary and value >= 1024 and value.denominator == 1:
        power = max(p for p in range(7) if value % 1024**p == 0)
        return f"{int(value) // 1024**power}{_BIN[power]}"
    exponent = max(e for e in _DEC if (value / Fraction(10) ** e).denominator == 1)
    return f"{int(value / Fraction(10) ** exponent)}{_DEC[exponent]}"


def _canonical_resources(resources: dict[str, Any]) -> None:
    for block in ("requests", "limits"):
        for name, quantity in (resources.get(block) or {}).items():
            resources[block][name] = canonical_quantity(str(quantity))


# ---------------------------------------------------------------------------------------------------------
# KServe webhooks


def _auto_select(model_format: dict[str, Any]) -> bool:
    return model_format.get("autoSelect") is True  # IsAutoSelectEnabled: a nil pointer is false


def _same_format(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """areSupportedModelFormatsEqual: names equal case-insensitively, versions both unset or equal."""
    return str(a.get("name", "")).lower() == str(b.get("name", "")).lower() and a.get("version") == b.get(
        "version"
    )


def servingruntime_denial(new: dict[str, Any], existing: list[dict[str, Any]]) -> str | None:
    """The message KServe's ServingRuntimeValidator.Handle denies `new` with, or None when admitted.

    `existing` are the runtimes already in the namespace (on update, `new`'s old self is among them).
    """
    spec = new.get("spec") or {}
    if spec.get("disabled") is True:
        return None
    name, namespace = new["metadata"]["name"], new["metadata"].get("namespace")
    formats = spec.get("supportedModelFormats") or []
    # validateModelFormatPrioritySame (run once per existing runtime in upstream; once is enough here).
    seen: dict[str, Any] = {}
    for model_format in filter(_auto_select, formats):
        if model_format["name"] in seen:
            before, now = seen[model_format["name"]], model_format.get("priority")
            if before is not None and now is not None and before != now and existing:
                return (
                    f"different priorities assigned for the model format {model_format['name']} "
                    f"under the servingruntime {name}"
                )
        else:
            seen[model_format["name"]] = model_format.get("priority")
    # validateServingRuntimePriority against every other enabled runtime of the same multiModel kind.
    for other in existing:
        other_spec = other.get("spec") or {}
        other_name = other["metadata"]["name"]
        if (
            bool(spec.get("multiModel")) != bool(other_spec.get("multiModel"))
            or other_spec.get("disabled") is True
            or other_name == name
        ):
            continue
        if not set(spec.get("protocolVersions") or []) & set(other_spec.get("protocolVersions") or []):
            continue
        for theirs in filter(_auto_select, other_spec.get("supportedModelFormats") or []):
            for ours in filter(_auto_select, formats):
                if not _same_format(theirs, ours):
                    continue
                if theirs.get("priority") is not None and theirs.get("priority") == ours.get("priority"):
                    return (
                        f"same priority assigned for the model format {ours['name']} "
                        f"in the servingruntimes {other_name} and {name} in namespace {namespace}"
                    )
    return None


def denial_status(message: str) -> dict[str, Any]:
    """The Status the API server returns for a webhook's admission.Denied (403 Forbidden)."""
    full = f'admission webhook "{WEBHOOK_NAME}" denied the request: {message}'
    return {"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": full, "reason": "Forbidden",
            "code": 403}  # fmt: skip


def isvc_defaults(isvc: dict[str, Any]) -> dict[str, Any]:
    """InferenceService as KServe >= 0.17's defaulting webhook leaves it."""
    out = copy.deepcopy(isvc)
    annotations = (out.get("metadata") or {}).get("annotations") or {}
    if annotations.get(DEPLOYMENT_MODE) == "RawDeployment":
        annotations[DEPLOYMENT_MODE] = "Standard"
    model = ((out.get("spec") or {}).get("predictor") or {}).get("model") or {}
    if "resources" in model:
        _canonical_resources(model["resources"])
    return out


AUTOSCALER_CLASS = "serving.kserve.io/autoscalerClass"
AUTOSCALER_CLASSES = ("hpa", "keda", "external", "none")  # constants.AutoscalerAllowedClassList
HPA_METRICS = ("cpu", "memory")  # constants.AutoscalerAllowedHPAMetricsList
ISVC_WEBHOOK_NAME = "inferenceservice.kserve-webhook-server.validator"


def _scale_target_denial(target: dict[str, Any]) -> str | None:
    """validateScaleTarget."""
    kind = target.get("type")
    if kind == "Utilization":
        utilization = target.get("averageUtilization")
        if utilization is None:
            return "the AverageUtilization type should be set"
        if not 1 <= utilization <= 100:
            return "the target utilization percentage should be a [1-100] integer"
    if kind == "AverageValue" and target.get("averageValue") is None:
        return "the AverageValue type should be set"
    if kind == "Value" and target.get("value") is None:
        return "the Value type should be set"
    return None


def isvc_autoscaling_denial(isvc: dict[str, Any]) -> str | None:
    """Why KServe's webhook denies the predictor's scaling fields of a stored (Standard-mode)
    InferenceService, or None. Only the raw-mode branches: a RawDeployment annotation has been rewritten
    to Standard already (`isvc_defaults`)."""
    annotations = (isvc.get("metadata") or {}).get("annotations") or {}
    if AUTOSCALER_CLASS in annotations and annotations[AUTOSCALER_CLASS] not in AUTOSCALER_CLASSES:
        return f"[{annotations[AUTOSCALER_CLASS]}] is not a supported autoscaler class type"
    if annotations.get(DEPLOYMENT_MODE) != "Standard":
        return None
    predictor = (isvc.get("spec") or {}).get("predictor") or {}
    metrics = (predictor.get("autoScaling") or {}).get("metrics") or []
    autoscaler = annotations.get(AUTOSCALER_CLASS)
    if autoscaler == "hpa":
        metric = predictor.get("scaleMetric", "cpu")
        if metric not in HPA_METRICS:
            return f"[{metric}] is not a supported metric"
        target = predictor.get("scaleTarget")
        # upstream: `metric == MetricCPU && target < 1 || target > 100` (so > 100 is denied for memory too)
        if target is not None and ((metric == "cpu" and target < 1) or target > 100):
            return "the target utilization percentage should be a [1-100] integer"
        for spec in metrics:
            if spec.get("type") != "Resource":
                return (
                    f"invalid HPA metric source type with value [{spec.get('type')}],"
                    "valid metric source types are Resource"
                )
    if autoscaler == "keda":
        if "scaleMetric" in predictor:
            return "ScaleMetric is not supported for KEDA"
        for spec in metrics:
            if spec.get("type") == "External":
                external = spec.get("external")
                if external is None:
                    return "metricSpec.External is not set for external metric source type"
                if not (external.get("metric") or {}).get("query"):
                    return "the query should not be empty"
                if (external.get("target") or {}).get("value") is None:
                    return "the target threshold value should not be empty"
                denied = _scale_target_denial(external["target"])
                if denied:
                    return denied
            elif spec.get("type") not in ("Resource", "PodMetric"):
                return (
                    f"unknown KEDA metric type with value [{spec.get('type')}]."
                    "Valid types are Resource,External,PodMetric"
                )
    return None


def isvc_denial_status(message: str) -> dict[str, Any]:
    full = f'admission webhook "{ISVC_WEBHOOK_NAME}" denied the request: {message}'
    return {"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": full, "reason": "Forbidden",
            "code": 403}  # fmt: skip


def keda_scaled_object(isvc: dict[str, Any]) -> dict[str, Any]:
    """The ScaledObject `<isvc>-predictor` KServe creates for `autoscalerClass: keda` (External metrics only:
    type = backend; serverAddress, query, threshold as `%f` of target.value; namespace for prometheus;
    authModes and authenticationRef when set). minReplicaCount defaults to 1, maxReplicaCount >= min."""
    meta = isvc["metadata"]
    predictor = isvc["spec"]["predictor"]
    component = f"{meta['name']}-predictor"
    triggers = []
    for spec in (predictor.get("autoScaling") or {}).get("metrics") or []:
        if spec.get("type") != "External":
            continue
        external = spec["external"]
        metric = external["metric"]
        trigger: dict[str, Any] = {
            "type": metric["backend"],
            "metadata": {
                "serverAddress": metric.get("serverAddress", ""),
                "query": metric["query"],
                "threshold": f"{float(Fraction(str(external['target']['value']))):f}",
            },
        }
        if metric["backend"] == "prometheus" and metric.get("namespace"):
            trigger["metadata"]["namespace"] = metric["namespace"]
        auth = external.get("authenticationRef")
        if auth:
            if auth.get("authModes"):
                trigger["metadata"]["authModes"] = auth["authModes"]
            if auth["authenticationRef"].get("name"):
                trigger["authenticationRef"] = {"name": auth["authenticationRef"]["name"]}
        triggers.append(trigger)
    minimum = predictor.get("minReplicas", 1)
    return {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": {"name": component, "namespace": meta.get("namespace")},
        "spec": {
            "scaleTargetRef": {"name": component},
            "triggers": triggers,
            "minReplicaCount": minimum,
            "maxReplicaCount": max(predictor.get("maxReplicas", 0), minimum),
        },
    }


# ---------------------------------------------------------------------------------------------------------
# OpenShift typed API: Template (openshift/api template/v1/types.go)

TEMPLATE_OMITEMPTY = ("message", "parameters", "labels")
PARAMETER_OMITEMPTY = ("displayName", "description", "value", "generate", "from", "required")


def _empty(value: Any) -> bool:
    return value is None or value is False or value == "" or value == [] or value == {}


def template_stored(template: dict[str, Any]) -> dict[str, Any]:
    """The Template as the API server stores it: Go's omitempty drops empty fields; objects stay raw."""
    out = copy.deepcopy(template)
    for key in TEMPLATE_OMITEMPTY:
        if key in out and _empty(out[key]):
            del out[key]
    for parameter in out.get("parameters") or []:
        for key in PARAMETER_OMITEMPTY:
            if key in parameter and _empty(parameter[key]):
                del parameter[key]
    return out


STORED_FORM = {"inferenceservices": isvc_defaults, "templates": template_stored}
"""plural -> how the server rewrites an object of that kind before storing it."""


# ---------------------------------------------------------------------------------------------------------
# Garbage collection by ownerReferences


def dependents_to_collect(
    objects: list[dict[str, Any]], gone_uids: set[str]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(to delete, to strip of dangling refs): a dependent goes once none of its owners exists any more."""
    live_uids = {(o.get("metadata") or {}).get("uid") for o in objects} - gone_uids
    delete, strip = [], []
    for obj in objects:
        refs = (obj.get("metadata") or {}).get("ownerReferences") or []
        owners = {ref.get("uid") for ref in refs}
        if not owners & gone_uids:
            continue
        (strip if owners & live_uids else delete).append(obj)
    return delete, strip


# ---------------------------------------------------------------------------------------------------------
# Authorization attributes of a request (k8s.io/apiserver pkg/endpoints/request/requestinfo.go)

_VERB_BY_METHOD = {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}


def rbac_attributes(method: str, path: str, query: dict[str, str]) -> tuple[str, str, str] | None:
    """(apiGroup, resource[/subresource], verb) the way RequestInfoFactory.NewRequestInfo derives them, or
    None for a non-resource URL (/api, /apis, /version: allowed by system:discovery).

    GET on a collection is `list`, with `?watch=true` (or a /watch/ prefix) `watch`, on a name `get`;
    DELETE on a collection is `deletecollection`.
    """
    parts = [p for p in path.split("/") if p]
    if len(parts) < 2 or parts[0] not in ("api", "apis"):
        return None
    rest = parts[2:] if parts[0] == "api" else parts[3:]
    group = "" if parts[0] == "api" else parts[1]
    if not rest:
        return None
    watch = query.get("watch") in ("1", "true")
    if rest[0] == "watch":
        watch, rest = True, rest[1:]
    if rest[0] == "namespaces" and len(rest) >= 3:
        rest = rest[2:]
    resource, name, sub = rest[0], rest[1] if len(rest) > 1 else None, rest[2] if len(rest) > 2 else None
    if method == "GET":
        verb = "watch" if watch else ("get" if name else "list")
    elif method == "DELETE" and not name:
        verb = "deletecollection"
    else:
        verb = _VERB_BY_METHOD[method]
    return group, f"{resource}/{sub}" if sub else resource, verb


def unauthorized_status() -> dict[str, Any]:
    """What the API server answers a request whose bearer token does not authenticate (any more)."""
    return {"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": "Unauthorized",
            "reason": "Unauthorized", "code": 401}  # fmt: skip


def forbidden_status(
    group: str, resource: str, verb: str, name: str | None, namespace: str | None
) -> dict[str, Any]:
    """The Status an authorizer's denial gets (responsewriters.Forbidden / forbiddenMessage)."""
    user = "system:serviceaccount:vdiff-system:vdiff-operator"
    plural = resource.split("/")[0]
    what = f'{plural} "{name}"' if name else plural
    where = f' in the namespace "{namespace}"' if namespace else " at the cluster scope"
    cannot = f'cannot {verb} resource "{resource}" in API group "{group}"{where}'
    message = f'{what} is forbidden: User "{user}" {cannot}'
    return {"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": message,
            "reason": "Forbidden", "details": {"name": name or "", "kind": plural}, "code": 403}  # fmt: skip
