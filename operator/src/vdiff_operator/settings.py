"""Operator configuration: kopf settings at startup, environment knobs, the API client in memo."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from typing import Any

import kopf

from vdiff_operator import handlers
from vdiff_operator.builders.common import DEFAULT_IMAGE, IMAGE_ENV
from vdiff_operator.kube import KubeApi, load_connection

ANNOTATION_PREFIX = "operator.vdiff.io"
FINALIZER = "vdiff.io/finalizer"
"""No handler needs a finalizer (handlers.py), so none is ever added. The name stays configured because kopf
removes *this* name from objects that still carry it from operator versions with a timer
(kopf/_core/reactor/processing.py: "Removing the finalizer, as there are no handlers requiring it")."""


def resync_interval() -> float:
    """Seconds between drift-repair passes of the resync loop (VDIFF_OPERATOR_RESYNC_SECONDS, default 60)."""
    return float(os.environ.get("VDIFF_OPERATOR_RESYNC_SECONDS", "60"))


def retry_delay() -> float:
    """Back-off before retrying when a required API is missing (VDIFF_OPERATOR_RETRY_SECONDS, default 60)."""
    return float(os.environ.get("VDIFF_OPERATOR_RETRY_SECONDS", "60"))


def prometheus_url() -> str | None:
    """A Prometheus KEDA can query without credentials, for queue-depth autoscaling outside OpenShift AI
    (VDIFF_PROMETHEUS_URL, e.g. http://prometheus-operated.monitoring.svc:9090); unset: none."""
    return os.environ.get("VDIFF_PROMETHEUS_URL") or None


def default_image() -> str:
    return os.environ.get(IMAGE_ENV) or DEFAULT_IMAGE


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    # kopf's bookkeeping lives in annotations under our prefix, never in .status.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=ANNOTATION_PREFIX)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=ANNOTATION_PREFIX, key="last-handled-configuration"
    )
    settings.persistence.finalizer = FINALIZER
    settings.posting.level = logging.INFO
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.networking.request_timeout = 60
    memo.api = KubeApi(settings)
    memo.default_image = default_image()
    memo.prometheus_url = prometheus_url()
    memo.retry_delay = retry_delay()
    memo.reconciles = 0
    memo.tracked = handlers.Tracked()
    memo.resync_task = asyncio.create_task(handlers.resync_forever(memo, resync_interval()), name="resync")


@kopf.on.login()
def login(settings: kopf.OperatorSettings, **_: Any) -> kopf.ConnectionInfo | None:
    # Explicit, so credentials are looked up at login time (kopf's fallbacks decide at import time).
    return load_connection(settings)


@kopf.on.cleanup()
async def close(memo: kopf.Memo, **_: Any) -> None:
    task = getattr(memo, "resync_task", None)
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    api = getattr(memo, "api", None)
    if api is not None:
        await api.close()
