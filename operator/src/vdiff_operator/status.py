"""Conditions and the status block of a DiffusionModel (pure; metav1.Condition shaped)."""

from __future__ import annotations

import datetime
from typing import Any, Literal

from vdiff_operator.models import Condition, DiffusionModel, DiffusionModelStatus

ConditionStatus = Literal["True", "False", "Unknown"]

READY = "Ready"
RECONCILED = "Reconciled"
INFERENCE_SERVICE_READY = "InferenceServiceReady"
ROUTE_ADMITTED = "RouteAdmitted"
MONITORED = "Monitored"
AUTOSCALING = "Autoscaling"
"""Only with spec.autoscaling: True when the requested metric drives scaling, False (reason KEDANotInstalled
or PrometheusNotConfigured) when the operator fell back to an HPA on CPU."""
CONDITION_ORDER = (READY, RECONCILED, INFERENCE_SERVICE_READY, ROUTE_ADMITTED, MONITORED, AUTOSCALING)


def now() -> str:
    return datetime.datetime.now(datetime.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def make_condition(
    type_: str,
    status: ConditionStatus,
    reason: str,
    message: str,
    *,
    generation: int,
    previous: list[dict[str, Any]],
) -> Condition:
    """lastTransitionTime moves only when the status value changes."""
    before = next((c for c in previous if c.get("type") == type_), None)
    unchanged = before is not None and before.get("status") == status and before.get("lastTransitionTime")
    return Condition(
        type=type_,
        status=status,
        reason=reason,
        message=message,
        lastTransitionTime=before["lastTransitionTime"] if unchanged else now(),
        observedGeneration=generation,
    )


def _ready_condition(obj: dict[str, Any] | None) -> dict[str, Any] | None:
    conditions = ((obj or {}).get("status") or {}).get("conditions") or []
    return next((c for c in conditions if c.get("type") == "Ready"), None)


def inference_service_readiness(isvc: dict[str, Any] | None) -> tuple[ConditionStatus, str, str]:
    ready = _ready_condition(isvc)
    if ready is None:
        return "Unknown", "Pending", "KServe has not reported readiness yet"
    status: ConditionStatus = "True" if ready.get("status") == "True" else "False"
    reason = ready.get("reason") or ("Ready" if status == "True" else "NotReady")
    return status, reason, ready.get("message") or ""


def route_admission(route: dict[str, Any] | None) -> tuple[ConditionStatus, str, str, str | None]:
    """(status, reason, message, admitted host)."""
    for ingress in ((route or {}).get("status") or {}).get("ingress") or []:
        for condition in ingress.get("conditions") or []:
            if condition.get("type") != "Admitted":
                continue
            if condition.get("status") == "True":
                message = f"Admitted by router {ingress.get('routerName', '')}"
                return "True", "Admitted", message, ingress.get("host")
            return "False", condition.get("reason") or "NotAdmitted", condition.get("message") or "", None
    return "Unknown", "Pending", "No router has admitted the Route yet", None


def service_url(route_host: str | None, isvc: dict[str, Any] | None) -> str | None:
    if route_host:
        return f"https://{route_host}"
    isvc_status = (isvc or {}).get("status") or {}
    return isvc_status.get("url") or (isvc_status.get("address") or {}).get("url")


def build_status(
    dm: DiffusionModel, conditions: list[Condition], *, url: str | None, inference_service: str | None
) -> dict[str, Any]:
    order = {type_: index for index, type_ in enumerate(CONDITION_ORDER)}
    ordered = sorted(conditions, key=lambda c: order.get(c.type, len(order)))
    return DiffusionModelStatus(
        observedGeneration=dm.generation,
        url=url,
        servedModelName=dm.served_model_name,
        inferenceService=inference_service,
        conditions=ordered,
    ).to_patch()
