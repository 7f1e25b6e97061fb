"""OpenShift Route to the predictor Service: edge TLS, HTTP redirected, long router timeout."""

from __future__ import annotations

from typing import Any

from vdiff_operator.builders.common import PORT_NAME, metadata, predictor_service_name, route_name
from vdiff_operator.models import DiffusionModel

API_VERSION = "route.openshift.io/v1"
TIMEOUT_ANNOTATION = "haproxy.router.openshift.io/timeout"


def build_route(dm: DiffusionModel) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "to": {"kind": "Service", "name": predictor_service_name(dm), "weight": 100},
        "port": {"targetPort": PORT_NAME},
        "tls": {"termination": "edge", "insecureEdgeTerminationPolicy": "Redirect"},
        "wildcardPolicy": "None",
    }
    if dm.spec.route.host:
        spec["host"] = dm.spec.route.host
    return {
        "apiVersion": API_VERSION,
        "kind": "Route",
        "metadata": metadata(dm, route_name(dm), annotations={TIMEOUT_ANNOTATION: dm.spec.route.timeout}),
        "spec": spec,
    }
