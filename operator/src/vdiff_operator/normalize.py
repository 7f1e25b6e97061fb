"""Compare what we want with what the API server stores, the way the API server rewrites it.

A live object is not byte-for-byte what was sent:
- Go structs drop `omitempty` zero values (`parameters: []`, `required: false`, `message: ""`), both in
  typed APIs (openshift/api `template/v1/types.go`) and wherever a webhook re-marshals a typed object;
- `resource.Quantity` is written back in canonical form (`"0.5"` -> `500m`, `2048Mi` -> `2Gi`;
  k8s.io/apimachinery `pkg/api/resource/quantity.go`), which KServe's defaulting webhook does to the
  InferenceService's resources;
- KServe >= 0.17 rewrites `serving.kserve.io/deploymentMode: RawDeployment` to `Standard`
  (`pkg/apis/serving/v1beta1/inference_service_defaults.go`).
`normalized` maps both sides of a comparison to that form; we keep writing what we built.
"""

from __future__ import annotations

import math
import re
from fractions import Fraction
from typing import Any

DEPLOYMENT_MODE_ANNOTATION = "serving.kserve.io/deploymentMode"
DEPLOYMENT_MODE_ALIASES = {"RawDeployment": "Standard"}
"""Deprecated alias -> the name KServe >= 0.16 stores (equal for drift)."""

_BINARY = {"Ki": 1, "Mi": 2, "Gi": 3, "Ti": 4, "Pi": 5, "Ei": 6}
_DECIMAL = {"n": -9, "u": -6, "m": -3, "": 0, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18}
_DECIMAL_SUFFIX = {exponent: suffix for suffix, exponent in _DECIMAL.items()}
_BINARY_SUFFIX = {0: "", **{power: suffix for suffix, power in _BINARY.items()}}
_QUANTITY = re.compile(r"^([+-]?(?:\d+\.?\d*|\.\d+))([eE][+-]?\d+|[KMGTPE]i|[numkMGTPE])?$")
QUANTITY_MAPS = ("requests", "limits")
"""Keys of a `resources` block whose values are quantities (corev1.ResourceRequirements)."""
QUANTITY_FIELDS = ("sizeLimit",)
"""Single quantity fields (corev1.EmptyDirVolumeSource.sizeLimit)."""


def canonical_quantity(text: str) -> str:
    """The string a `resource.Quantity` marshals to (apimachinery `CanonicalizeBytes`); unparsable -> as is.

    Binary suffixes stay binary when the value is an integer >= 1024 (`2048Mi` -> `2Gi`); otherwise the
    value is written with the largest decimal SI (or `e<n>`) suffix leaving an integer mantissa, after
    rounding up to nano units (`0.5` -> `500m`, `1000` -> `1k`, `1.5Gi` -> `1536Mi`).
    """
    match = _QUANTITY.match(text.strip()) if isinstance(text, str) else None
    if match is None:
        return text
    number, suffix = match.group(1), match.group(2) or ""
    value = Fraction(number)
    if suffix in _BINARY:
        value *= 1024 ** _BINARY[suffix]
        style = "binary"
    elif suffix[:1] in ("e", "E") and suffix not in _DECIMAL:
        value *= Fraction(10) ** int(suffix[1:])
        style = "exponent"
    else:
        value *= Fraction(10) ** _DECIMAL[suffix]
        style = "decimal"
    sign = "-" if value < 0 else ""
    magnitude = Fraction(math.ceil(abs(value) * 10**9), 10**9)  # no precision below 1n
    if magnitude == 0:
        return "0"
    if style == "binary" and (magnitude < 1024 or magnitude.denominator != 1):
        style = "decimal"
    if style == "binary":
        integer = int(magnitude)
        power = 0
        while power < 6 and integer % 1024 ** (power + 1) == 0:
            power += 1
        return f"{sign}{integer // 1024**power}{_BINARY_SUFFIX[power]}"
    exponent = -9
    while magnitude / Fraction(10) ** (exponent + 3) == int(magnitude / Fraction(10) ** (exponent + 3)):
        if style == "decimal" and exponent + 3 > 18:
            break
        exponent += 3
    mantissa = int(magnitude / Fraction(10) ** exponent)
    if style == "exponent":
        return f"{sign}{mantissa}" + (f"e{exponent}" if exponent else "")
    return f"{sign}{mantissa}{_DECIMAL_SUFFIX[exponent]}"


def is_omitted(value: Any) -> bool:
    """A value Go's `omitempty` drops: the API server stores the object without the key."""
    return value is None or value is False or (isinstance(value, str | list | dict) and len(value) == 0)


def normalized(obj: Any, *, _key: str = "", _parent: str = "") -> Any:
    """A copy of `obj` with quantities canonical and the deploymentMode alias resolved."""
    if isinstance(obj, dict):
        if _parent == "resources" and _key in QUANTITY_MAPS:
            return {k: canonical_quantity(v) if isinstance(v, str) else v for k, v in obj.items()}
        out = {k: normalized(v, _key=k, _parent=_key) for k, v in obj.items()}
        if _key == "annotations" and out.get(DEPLOYMENT_MODE_ANNOTATION) in DEPLOYMENT_MODE_ALIASES:
            out[DEPLOYMENT_MODE_ANNOTATION] = DEPLOYMENT_MODE_ALIASES[out[DEPLOYMENT_MODE_ANNOTATION]]
        return out
    if isinstance(obj, list):
        return [normalized(item, _key=_key, _parent=_parent) for item in obj]
    if _key in QUANTITY_FIELDS and isinstance(obj, str):
        return canonical_quantity(obj)
    return obj
