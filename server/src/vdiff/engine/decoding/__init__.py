"""Unmasking policies. Every module of this package is imported so its policies register themselves:
a new policy is a new file defining a `DecodingPolicy` subclass decorated with `@register_policy`."""

from __future__ import annotations

import importlib
import pkgutil

from vdiff.engine.decoding.base import (
    DecodingPolicy,
    ForwardRequest,
    ForwardResult,
    PolicyContext,
    available_policies,
    get_policy_class,
    register_policy,
)

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = [
    "DecodingPolicy",
    "ForwardRequest",
    "ForwardResult",
    "PolicyContext",
    "available_policies",
    "get_policy_class",
    "register_policy",
]
