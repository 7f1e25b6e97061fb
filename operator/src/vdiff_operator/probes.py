"""Liveness data for `kopf run --liveness=http://0.0.0.0:8080/healthz`."""

from __future__ import annotations

from typing import Any

import kopf


@kopf.on.probe(id="reconciles")
def reconciles(memo: kopf.Memo, **_: Any) -> int:
    return int(getattr(memo, "reconciles", 0))
