"""Thin kopf wiring: every trigger runs the same idempotent reconcile, and none needs a finalizer.

kopf adds its finalizer only for handlers that need one: `@kopf.timer` and `@kopf.daemon` always do
(`requires_finalizer=True`, kopf/on.py; nolar/kopf#548, #896), a non-optional `@kopf.on.delete` does, while
create/update/resume and `@kopf.on.event` do not (kopf/on.py `requires_finalizer=None`; watching handlers have
no such field). And when no handler needs it, kopf removes `settings.persistence.finalizer` from objects
that still carry it (kopf/_core/reactor/processing.py, "Removing the finalizer, as there are no handlers
requiring it"). So DiffusionModels are tracked by `on.event`, reconciled on create/update/resume, and drift
is repaired by our own loop (`resync_forever`), started in `@kopf.on.startup` and cancelled in
`@kopf.on.cleanup` (settings.py).
"""

from __future__ import annotations

import asyncio
import copy
import logging
from dataclasses import dataclass, field
from typing import Any

import kopf
from pydantic import ValidationError

from vdiff_operator.kube import KubeApi
from vdiff_operator.merge import is_subset
from vdiff_operator.models import API_VERSION, GROUP, KIND, PLURAL, VERSION, DiffusionModel
from vdiff_operator.reconcile import APPLY_FAILED, invalid_spec_status, reconcile

logger = logging.getLogger(__name__)

Key = tuple[str, str]  # (namespace, name)


@dataclass
class Tracked:
    """Every DiffusionModel the watch stream has shown and not yet deleted (filled by `track`)."""

    bodies: dict[Key, dict[str, Any]] = field(default_factory=dict)
    locks: dict[Key, asyncio.Lock] = field(default_factory=dict)

    def lock(self, key: Key) -> asyncio.Lock:
        return self.locks.setdefault(key, asyncio.Lock())


@dataclass
class Result:
    status: dict[str, Any] | None
    """The status to write, None when unchanged."""
    events: list[tuple[str, str, str]]
    """(type, reason, message) to post on the DiffusionModel."""
    retry: str | None = None
    invalid: str | None = None


def _key(body: dict[str, Any]) -> Key:
    meta = body.get("metadata") or {}
    return meta.get("namespace") or "default", meta.get("name", "")


async def reconcile_body(body: dict[str, Any], memo: kopf.Memo) -> Result:
    """One reconcile of one DiffusionModel body, for the kopf handlers and the resync loop alike."""
    current = dict(body.get("status") or {})
    previous = list(current.get("conditions") or [])
    try:
        dm = DiffusionModel.from_body(body)
    except (ValidationError, ValueError) as error:
        status = invalid_spec_status(dict(body), previous, str(error))
        return Result(None if is_subset(status, current) else status, [], invalid=str(error))
    async with memo.tracked.lock(_key(body)):
        outcome = await reconcile(
            dm,
            memo.api,
            previous=previous,
            default_image=memo.default_image,
            prometheus_url=getattr(memo, "prometheus_url", None),
        )
    memo.reconciles = getattr(memo, "reconciles", 0) + 1
    events = [("Normal", reason, message) for reason, message in outcome.events]
    if outcome.apply_error:
        events.append(("Warning", APPLY_FAILED, outcome.apply_error))
    if outcome.retry_reason:
        events.append(("Warning", "KServeNotInstalled", outcome.retry_reason))
    status = None if is_subset(outcome.status, current) else outcome.status  # unchanged: write nothing
    return Result(status, events, retry=outcome.retry_reason)


def _post(body: dict[str, Any], events: list[tuple[str, str, str]]) -> None:
    for type_, reason, message in events:
        kopf.event(body, type=type_, reason=reason, message=message)


@kopf.on.resume(GROUP, VERSION, PLURAL)
@kopf.on.create(GROUP, VERSION, PLURAL)
@kopf.on.update(GROUP, VERSION, PLURAL, field="spec")
async def apply_spec(body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, **_: Any) -> None:
    result = await reconcile_body(copy.deepcopy(dict(body)), memo)
    if result.status is not None:
        patch.status.update(result.status)
    _post(body, result.events)
    if result.invalid:
        raise kopf.PermanentError(f"invalid spec: {result.invalid}")
    if result.retry:
        raise kopf.TemporaryError(result.retry, delay=memo.retry_delay)


@kopf.on.event(GROUP, VERSION, PLURAL)
def track(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    """Remember the latest body of every DiffusionModel for the resync loop (needs no finalizer)."""
    raw = event["object"]
    key = _key(raw)
    if event["type"] == "DELETED":
        memo.tracked.bodies.pop(key, None)
        memo.tracked.locks.pop(key, None)
    else:
        memo.tracked.bodies[key] = copy.deepcopy(dict(raw))


async def resync_once(memo: kopf.Memo) -> None:
    """Reconcile every tracked DiffusionModel again: a deleted or edited child, KServe installed late, an
    InferenceService that became ready. Errors are logged; the next pass retries."""
    api: KubeApi = memo.api
    for key, body in list(memo.tracked.bodies.items()):
        if (body.get("metadata") or {}).get("deletionTimestamp"):
            continue
        try:
            result = await reconcile_body(body, memo)
            if result.status is not None:
                stored = await api.patch_status(API_VERSION, KIND, key[0], key[1], result.status)
                if key in memo.tracked.bodies and stored:
                    memo.tracked.bodies[key] = stored
            for type_, reason, message in result.events:
                await api.post_event(body, type_, reason, message)
        except asyncio.CancelledError:
            raise
        except Exception as error:  # one broken object must not stop the others
            logger.warning("resync of %s/%s failed: %s", key[0], key[1], error)


async def resync_forever(memo: kopf.Memo, interval: float) -> None:
    while True:
        await asyncio.sleep(interval)
        await resync_once(memo)
