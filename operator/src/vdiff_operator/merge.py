"""Three-way merge for the fields we own (like `kubectl apply`), pure and JSON-merge-patch based.

Other controllers add their own finalizers, annotations and defaults to our children
(odh-model-controller does so on InferenceServices); we only ever touch what we set.
"""

from __future__ import annotations

import json
from typing import Any

from vdiff_operator.normalize import is_omitted, normalized

LAST_APPLIED_ANNOTATION = "vdiff.io/last-applied"
IDENTITY_KEYS = ("apiVersion", "kind")
IDENTITY_METADATA = ("name", "namespace", "ownerReferences")


def managed_fields(desired: dict[str, Any]) -> dict[str, Any]:
    """What we own in an object: labels, annotations and every top-level body field (spec, objects...)."""
    meta = desired.get("metadata", {})
    managed: dict[str, Any] = {
        key: value for key, value in desired.items() if key not in (*IDENTITY_KEYS, "metadata", "status")
    }
    managed_meta = {key: meta[key] for key in ("labels", "annotations") if key in meta}
    if managed_meta:
        managed["metadata"] = managed_meta
    return managed


def is_subset(wanted: Any, observed: Any) -> bool:
    """True when every field in `wanted` is present and equal in `observed` (extra fields are fine).

    A wanted empty value (`[]`, `{}`, `""`, `false`, null) may be absent: `omitempty` drops it on the server.
    """
    if isinstance(wanted, dict):
        return isinstance(observed, dict) and all(
            is_subset(value, observed[key]) if key in observed else is_omitted(value)
            for key, value in wanted.items()
        )
    if isinstance(wanted, list):
        return (
            isinstance(observed, list)
            and len(wanted) == len(observed)
            and all(is_subset(w, o) for w, o in zip(wanted, observed, strict=True))
        )
    return bool(wanted == observed and type(wanted) is type(observed))


def removals(last: Any, desired: Any, observed: Any) -> dict[str, Any]:
    """Null markers for keys we set before, no longer want, and that are still there."""
    if not (isinstance(last, dict) and isinstance(desired, dict) and isinstance(observed, dict)):
        return {}
    patch: dict[str, Any] = {}
    for key, value in last.items():
        if key not in observed:
            continue
        if key not in desired:
            patch[key] = None
        else:
            nested = removals(value, desired[key], observed[key])
            if nested:
                patch[key] = nested
    return patch


def deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def last_applied(observed: dict[str, Any]) -> dict[str, Any]:
    raw = observed.get("metadata", {}).get("annotations", {}).get(LAST_APPLIED_ANNOTATION)
    try:
        return json.loads(raw) if raw else {}
    except ValueError:
        return {}


def with_last_applied(desired: dict[str, Any]) -> dict[str, Any]:
    """The object to create: desired plus the record of what we own."""
    record = json.dumps(managed_fields(desired), sort_keys=True, separators=(",", ":"))
    meta = dict(desired.get("metadata", {}))
    meta["annotations"] = {**meta.get("annotations", {}), LAST_APPLIED_ANNOTATION: record}
    return {**desired, "metadata": meta}


def apply_patch(desired: dict[str, Any], observed: dict[str, Any]) -> dict[str, Any] | None:
    """A JSON merge patch bringing `observed` to `desired` for our fields, or None when nothing drifted.

    Both sides are compared as the API server stores them (vdiff_operator.normalize): a field the server
    canonicalised or dropped as empty is not drift, so an unchanged object is never patched again.
    """
    wanted = managed_fields(desired)
    dropped = removals(last_applied(observed), wanted, observed)
    in_sync = is_subset(normalized(wanted), normalized(observed))
    owners = desired.get("metadata", {}).get("ownerReferences", [])
    observed_owners = observed.get("metadata", {}).get("ownerReferences", [])
    missing_owners = [ref for ref in owners if ref.get("uid") not in {o.get("uid") for o in observed_owners}]
    if in_sync and not dropped and not missing_owners:
        return None
    patch = deep_merge(dropped, managed_fields(with_last_applied(desired)))
    if missing_owners:
        patch.setdefault("metadata", {})["ownerReferences"] = [*observed_owners, *missing_owners]
    return patch
