"""Evaluate a CRD's x-kubernetes-validations (CEL) on an object with cel-python, as the API server would."""

from __future__ import annotations

from typing import Any

import celpy


def _rules(schema: dict[str, Any], obj: Any, path: str) -> list[tuple[str, str, str, Any]]:
    """(path, rule, message, self) for every rule whose node exists in the object."""
    found = [
        (path, r["rule"], r.get("message", r["rule"]), obj)
        for r in schema.get("x-kubernetes-validations", [])
    ]
    if isinstance(obj, dict):
        for key, sub in (schema.get("properties") or {}).items():
            if key in obj:
                found += _rules(sub, obj[key], f"{path}.{key}")
    if isinstance(obj, list) and "items" in schema:
        for index, item in enumerate(obj):
            found += _rules(schema["items"], item, f"{path}[{index}]")
    return found


def all_rules(schema: dict[str, Any]) -> list[str]:
    rules = [r["rule"] for r in schema.get("x-kubernetes-validations", [])]
    for sub in (schema.get("properties") or {}).values():
        rules += all_rules(sub)
    if "items" in schema:
        rules += all_rules(schema["items"])
    return rules


def cel_errors(schema: dict[str, Any], obj: dict[str, Any]) -> list[str]:
    env = celpy.Environment()
    errors = []
    for path, rule, message, value in _rules(schema, obj, ""):
        result = env.program(env.compile(rule)).evaluate({"self": celpy.json_to_cel(value)})
        if result is not True and not (isinstance(result, celpy.celtypes.BoolType) and bool(result)):
            errors.append(f"{path or '<root>'}: {message}")
    return errors
