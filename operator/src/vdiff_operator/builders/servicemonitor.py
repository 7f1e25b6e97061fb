"""ServiceMonitor scraping the predictor's /metrics (only where OpenShift AI does not scrape already)."""

from __future__ import annotations

from typing import Any

from vdiff_operator.builders.common import PORT_NAME, inference_service_name, metadata, service_monitor_name
from vdiff_operator.models import DiffusionModel

API_VERSION = "monitoring.coreos.com/v1"


def build_service_monitor(dm: DiffusionModel) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": "ServiceMonitor",
        "metadata": metadata(dm, service_monitor_name(dm)),
        "spec": {
            "selector": {
                "matchLabels": {
                    "serving.kserve.io/inferenceservice": inference_service_name(dm),
                    "component": "predictor",
                }
            },
            "namespaceSelector": {"matchNames": [dm.namespace]},
            "endpoints": [
                {
                    "port": PORT_NAME,
                    "path": "/metrics",
                    "interval": dm.spec.monitoring.interval,
                    "scheme": "http",
                }
            ],
        },
    }
