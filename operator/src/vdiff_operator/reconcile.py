"""Level-based reconcile: observe the cluster, apply the desired children, derive conditions."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from vdiff_operator import status as st
from vdiff_operator.builders import build_children, scaling_plan, wants_route, wants_service_monitor
from vdiff_operator.builders.common import inference_service_name
from vdiff_operator.builders.credentials import StorageCredentials, credentials_from_objects
from vdiff_operator.builders.inferenceservice import downloads_draft
from vdiff_operator.kube import ApiError, KubeApi
from vdiff_operator.models import Condition, DiffusionModel

logger = logging.getLogger(__name__)


@dataclass
class Outcome:
    status: dict[str, Any]
    events: list[tuple[str, str]] = field(default_factory=list)
    """(reason, message) for each child created or updated."""
    retry_reason: str | None = None
    """Set when the reconcile must be retried later (e.g. KServe not installed yet)."""
    apply_error: str | None = None
    """Set when the API server refused a child (4xx); the next resync tries again."""


APPLY_FAILED = "ApplyFailed"


async def reconcile(
    dm: DiffusionModel,
    api: KubeApi,
    *,
    previous: list[dict[str, Any]],
    default_image: str,
    prometheus_url: str | None = None,
) -> Outcome:
    def condition(type_: str, status: st.ConditionStatus, reason: str, message: str) -> Condition:
        return st.make_condition(type_, status, reason, message, generation=dm.generation, previous=previous)

    discovery = await api.discover(default_image, prometheus_url)
    if not discovery.has_kserve:
        message = "KServe (serving.kserve.io v1beta1 + v1alpha1) is not installed; retrying"
        conditions = [
            condition(st.READY, "False", "KServeNotInstalled", message),
            condition(st.RECONCILED, "False", "KServeNotInstalled", message),
            condition(st.INFERENCE_SERVICE_READY, "Unknown", "KServeNotInstalled", message),
        ]
        status = st.build_status(dm, conditions, url=None, inference_service=None)
        return Outcome(status, retry_reason=message)

    platform = discovery.platform
    observed: dict[str, dict[str, Any]] = {}
    events: list[tuple[str, str]] = []
    warnings: list[str] = []
    credentials = None
    if downloads_draft(dm):
        credentials, warnings = await read_storage_credentials(api, dm)
    for child in build_children(dm, platform, credentials):
        kind, name = child["kind"], child["metadata"]["name"]
        try:
            action, observed[kind] = await api.apply(child)
        except ApiError as error:
            if kind == "Template":
                # The dashboard Template is a convenience: missing RBAC there must not block serving.
                warnings.append(f"dashboard Template not applied: {error}")
                continue
            if not 400 <= error.status < 500:
                raise  # the API server is unwell: kopf retries with back-off
            # Refused (a webhook denial, an invalid field, RBAC): the user must see why, in status.
            # Children after this one depend on it (the InferenceService names its runtime): stop here.
            message = f"{kind} {name}: {error.message or error}"
            conditions = [
                condition(st.READY, "False", APPLY_FAILED, message),
                condition(st.RECONCILED, "False", APPLY_FAILED, message),
            ]
            status = st.build_status(dm, conditions, url=None, inference_service=inference_service_name(dm))
            return Outcome(status, events=events, apply_error=message)
        if action != "unchanged":
            events.append((action.capitalize(), f"{action.capitalize()} {kind} {name}"))
            logger.info("%s %s %s/%s", action, kind, child["metadata"].get("namespace"), name)

    isvc = observed.get("InferenceService")
    isvc_status, isvc_reason, isvc_message = st.inference_service_readiness(isvc)
    route_host = None
    if wants_route(dm, platform):
        route_status, route_reason, route_message, route_host = st.route_admission(observed.get("Route"))
    elif not dm.spec.route.enabled:
        route_status, route_reason, route_message = "False", "Disabled", "spec.route.enabled is false"
    else:
        route_status, route_reason = "False", "RouteAPINotAvailable"
        route_message = "No route.openshift.io API (vanilla Kubernetes)"
    if wants_service_monitor(dm, platform):
        monitored = condition(st.MONITORED, "True", "ServiceMonitorCreated", "ServiceMonitor applied")
    elif dm.spec.monitoring.service_monitor == "Disabled":
        monitored = condition(st.MONITORED, "False", "Disabled", "spec.monitoring.serviceMonitor is Disabled")
    elif platform.has_dsc_initialization and platform.has_service_monitor_api:
        monitored = condition(st.MONITORED, "True", "OpenShiftAI", "odh-model-controller scrapes the runtime")
    else:
        no_api = "No monitoring.coreos.com API"
        monitored = condition(st.MONITORED, "False", "MonitoringAPINotAvailable", no_api)

    url = st.service_url(route_host, isvc)
    reconciled_message = "; ".join(["All children applied", *warnings])
    ready_message = f"Serving at {url}" if isvc_status == "True" and url else isvc_message
    conditions = [
        condition(st.READY, isvc_status, "Ready" if isvc_status == "True" else isvc_reason, ready_message),
        condition(st.RECONCILED, "True", "Applied", reconciled_message),
        condition(st.INFERENCE_SERVICE_READY, isvc_status, isvc_reason, isvc_message),
        condition(st.ROUTE_ADMITTED, route_status, route_reason, route_message),
        monitored,
    ]
    plan = scaling_plan(dm, platform)
    if plan is not None:
        conditions.append(
            condition(st.AUTOSCALING, "True" if plan.honoured else "False", plan.reason, plan.message)
        )
    status = st.build_status(dm, conditions, url=url, inference_service=inference_service_name(dm))
    return Outcome(status, events=events)


DRAFT_CREDENTIALS_ROLE = "vdiff-operator-draft-credentials"


def _rbac_hint(error: ApiError) -> str:
    if error.status != 403:
        return ""
    return f"; grant the optional ClusterRole {DRAFT_CREDENTIALS_ROLE} (config/draft-credentials-rbac)"


async def read_storage_credentials(api: KubeApi, dm: DiffusionModel) -> tuple[StorageCredentials, list[str]]:
    """The predictor's ServiceAccount and the Secrets it lists, read the way KServe's credential builder
    reads them (GET each, in order; pkg/credentials/service_account_credentials.go). A Secret that cannot
    be read is left out with a warning: the draft is then fetched with what remains."""
    namespace, account = dm.namespace, dm.spec.predictor_service_account
    try:
        service_account = await api.get("v1", "ServiceAccount", namespace, account)
    except ApiError as error:
        unreadable = (
            f"ServiceAccount {account} not readable ({error}): draft fetched without credentials"
            + _rbac_hint(error)
        )
        return StorageCredentials(), [unreadable]
    if service_account is None:
        return StorageCredentials(), []
    objects, warnings = [{**service_account, "kind": "ServiceAccount"}], []
    for ref in service_account.get("secrets") or []:
        try:
            secret = await api.get("v1", "Secret", namespace, ref.get("name", ""))
        except ApiError as error:
            warnings.append(f"Secret {ref.get('name')} not readable ({error}){_rbac_hint(error)}")
            continue
        if secret is not None:
            objects.append({**secret, "kind": "Secret"})
    credentials, missing = credentials_from_objects(objects, namespace, account)
    return credentials, warnings + missing


def invalid_spec_status(
    dm_body: dict[str, Any], previous: list[dict[str, Any]], error: str
) -> dict[str, Any]:
    """Status for a spec the operator cannot parse (the API server enforces most of the schema)."""
    generation = (dm_body.get("metadata") or {}).get("generation") or 1
    conditions = [
        st.make_condition(t, "False", "InvalidSpec", error, generation=generation, previous=previous)
        for t in (st.READY, st.RECONCILED)
    ]
    return {"observedGeneration": generation, "conditions": [c.model_dump(by_alias=True) for c in conditions]}
