"""Operator configuration: kopf settings at startup, environment knobs, the API client in memo."""

from __future__ import annotations

import logging
import os
from typing import Any

import kopf

from vdiff_operator.builders.common import DEFAULT_IMAGE, IMAGE_ENV
from vdiff_operator.kube import KubeApi, load_connection

ANNOTATION_PREFIX = "operator.vdiff.io"
FINALIZER = "vdiff.io/finalizer"


def resync_interval() -> float:
    """Seconds between drift-repair passes (VDIFF_OPERATOR_RESYNC_SECONDS, default 60)."""
    return float(os.environ.get("VDIFF_OPERATOR_RESYNC_SECONDS", "60"))


def retry_delay() -> float:
    """Back-off before retrying when a required API is missing (VDIFF_OPERATOR_RETRY_SECONDS, default 60)."""
    return float(os.environ.get("VDIFF_OPERATOR_RETRY_SECONDS", "60"))


def default_image() -> str:
    return os.environ.get(IMAGE_ENV) or DEFAULT_IMAGE


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
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
    memo.retry_delay = retry_delay()
    memo.reconciles = 0


@kopf.on.login()
def login(settings: kopf.OperatorSettings, **_: Any) -> kopf.ConnectionInfo | None:
    # Explicit, so credentials are looked up at login time (kopf's fallbacks decide at import time).
    return load_connection(settings)


@kopf.on.cleanup()
async def close(memo: kopf.Memo, **_: Any) -> None:
    api = getattr(memo, "api", None)
    if api is not None:
        await api.close()
