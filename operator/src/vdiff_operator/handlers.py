"""Thin kopf wiring: every trigger runs the same idempotent reconcile."""

from __future__ import annotations

import contextlib
from typing import Any

import kopf
from pydantic import ValidationError

from vdiff_operator.merge import is_subset
from vdiff_operator.models import GROUP, PLURAL, VERSION, DiffusionModel
from vdiff_operator.reconcile import APPLY_FAILED, invalid_spec_status, reconcile
from vdiff_operator.settings import resync_interval


async def _reconcile(body: kopf.Body, status: kopf.Status, patch: kopf.Patch, memo: kopf.Memo) -> None:
    previous = list((status or {}).get("conditions") or [])
    try:
        dm = DiffusionModel.from_body(body)
    except (ValidationError, ValueError) as error:
        patch.status.update(invalid_spec_status(dict(body), previous, str(error)))
        raise kopf.PermanentError(f"invalid spec: {error}") from error
    outcome = await reconcile(dm, memo.api, previous=previous, default_image=memo.default_image)
    memo.reconciles = getattr(memo, "reconciles", 0) + 1
    if not is_subset(outcome.status, dict(status or {})):  # an unchanged resync writes nothing
        patch.status.update(outcome.status)
    for reason, message in outcome.events:
        kopf.info(body, reason=reason, message=message)
    if outcome.apply_error:
        kopf.warn(body, reason=APPLY_FAILED, message=outcome.apply_error)
    if outcome.retry_reason:
        kopf.warn(body, reason="KServeNotInstalled", message=outcome.retry_reason)
        raise kopf.TemporaryError(outcome.retry_reason, delay=memo.retry_delay)


@kopf.on.resume(GROUP, VERSION, PLURAL)
@kopf.on.create(GROUP, VERSION, PLURAL)
@kopf.on.update(GROUP, VERSION, PLURAL, field="spec")
async def apply_spec(
    body: kopf.Body, status: kopf.Status, patch: kopf.Patch, memo: kopf.Memo, **_: Any
) -> None:
    await _reconcile(body, status, patch, memo)


@kopf.timer(GROUP, VERSION, PLURAL, interval=resync_interval(), initial_delay=resync_interval())
async def repair_drift(
    body: kopf.Body, status: kopf.Status, patch: kopf.Patch, memo: kopf.Memo, **_: Any
) -> None:
    """Someone edited or deleted a child, KServe appeared, an isvc became ready: converge again."""
    with contextlib.suppress(kopf.TemporaryError):  # reported in status; the next tick retries
        await _reconcile(body, status, patch, memo)
