"""Pure functions from a DiffusionModel (and what the cluster offers) to child manifests; no I/O."""

from __future__ import annotations

from typing import Any

from vdiff_operator.builders.autoscaling import ScalingPlan, scaling_plan
from vdiff_operator.builders.common import Platform
from vdiff_operator.builders.credentials import StorageCredentials
from vdiff_operator.builders.inferenceservice import build_inference_service
from vdiff_operator.builders.route import build_route
from vdiff_operator.builders.servicemonitor import build_service_monitor
from vdiff_operator.builders.servingruntime import build_serving_runtime
from vdiff_operator.builders.template import build_template
from vdiff_operator.models import DiffusionModel

__all__ = [
    "Platform",
    "ScalingPlan",
    "StorageCredentials",
    "build_children",
    "build_inference_service",
    "build_route",
    "build_service_monitor",
    "build_serving_runtime",
    "build_template",
    "image_for",
    "scaling_plan",
    "wants_route",
    "wants_service_monitor",
]


def image_for(dm: DiffusionModel, platform: Platform) -> str:
    return dm.spec.image or platform.default_image


def wants_route(dm: DiffusionModel, platform: Platform) -> bool:
    return dm.spec.route.enabled and platform.has_route_api


def wants_service_monitor(dm: DiffusionModel, platform: Platform) -> bool:
    """Where OpenShift AI runs, odh-model-controller scrapes the runtime; a second monitor doubles series."""
    mode = dm.spec.monitoring.service_monitor
    if mode == "Disabled" or not platform.has_service_monitor_api:
        return False
    return mode == "Enabled" or not platform.has_dsc_initialization


def build_children(
    dm: DiffusionModel, platform: Platform, credentials: StorageCredentials | None = None
) -> list[dict[str, Any]]:
    """Every object the operator keeps in the DiffusionModel's namespace, plus the dashboard Template."""
    children = [
        build_serving_runtime(dm, image_for(dm, platform)),
        build_inference_service(dm, platform, credentials),
    ]
    if wants_route(dm, platform):
        children.append(build_route(dm))
    if wants_service_monitor(dm, platform):
        children.append(build_service_monitor(dm))
    if platform.has_dsc_initialization and platform.applications_namespace:
        children.append(build_template(platform.applications_namespace, platform.default_image))
    return children
