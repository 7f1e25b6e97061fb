"""The request fields that constrain an output, mapped onto one StructuredOutputsParams (vLLM's meaning).

vLLM 0.33 (vllm/entrypoints/generate/base/protocol.py: structured_outputs_from_response_format,
ResponseFormat, JsonSchemaResponseFormat, structural-tag formats; chat_completion/protocol.py and
completion/protocol.py: validate_response_format, check_structured_outputs_count) reads `response_format`
and `structured_outputs` on both generation endpoints; the guided_* fields of vLLM <= 0.11 (removed in 0.33,
which ignores them) are honoured with their old meaning instead of being ignored. One request carries at
most one constraint: two sources at once are a 400 naming the second, as is anything malformed, so the
engine only ever compiles a constraint whose origin the error can name (StructuredOutputsParams.source).
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from vdiff.errors import VdiffValidationError
from vdiff.structured.params import StructuredOutputsParams

MAX_JSON_NESTING = 64
"""vLLM's check_json_nesting: objects and arrays in a schema nest at most this deep."""


class JsonSchemaResponseFormat(BaseModel):
    """OpenAI's response_format.json_schema: `schema` is the JSON schema; `strict` true or false both
    constrain (a constrained output always conforms; vLLM ignores `strict` too)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    name: str
    description: str | None = None
    json_schema: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: bool | None = None


class ResponseFormat(BaseModel):
    """{"type": "text" | "json_object" | "json_schema" | "structural_tag", ...}; only structural_tag
    carries more keys (xgrammar's `format`, or the legacy `structures` + `triggers`)."""

    model_config = ConfigDict(extra="allow")

    type: Literal["text", "json_object", "json_schema", "structural_tag"]
    json_schema: JsonSchemaResponseFormat | None = None


class StructuredOutputsRequest(BaseModel):
    """The `structured_outputs` object (vLLM's StructuredOutputsParams fields); an unknown key is a 400."""

    model_config = ConfigDict(extra="forbid")

    json_: Any = Field(default=None, alias="json")
    """A JSON schema object or its JSON text (checked by check_schema, so the error names the field)."""
    regex: str | None = None
    choice: list[str] | None = None
    grammar: str | None = None
    json_object: bool | None = None
    structural_tag: str | None = None
    disable_fallback: bool = False
    """vdiff has one grammar backend, so there is never a fallback to disable."""
    disable_any_whitespace: bool = False
    disable_additional_properties: bool = False
    whitespace_pattern: str | None = None


LEGACY_KINDS = {
    "guided_json": "json",
    "guided_regex": "regex",
    "guided_choice": "choice",
    "guided_grammar": "grammar",
}
"""vLLM <= 0.11's guided_* fields and the StructuredOutputsParams kind each set."""
LEGACY_TYPES: dict[str, tuple[type, ...]] = {
    "guided_json": (str, dict),
    "guided_regex": (str,),
    "guided_choice": (list,),
    "guided_grammar": (str,),
    "guided_whitespace_pattern": (str,),
    "guided_decoding_backend": (str,),
}


def json_nesting_depth(value: Any) -> int:
    """How deep objects and arrays nest in a parsed value, without recursion (a hostile value may nest
    deeper than Python's stack)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children = list(item.values())
        elif isinstance(item, list):
            children = item
        else:
            continue
        deepest = max(deepest, depth)
        if deepest > MAX_JSON_NESTING:
            return deepest
        stack.extend((child, depth + 1) for child in children)
    return deepest


def json_text_nesting_depth(text: str) -> int:
    """The bracket depth of JSON text, scanned (json.loads of a deep text would hit the recursion limit)."""
    depth = deepest = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
            if deepest > MAX_JSON_NESTING:
                return deepest
        elif char in "]}":
            depth -= 1
    return deepest


def check_schema(schema: Any, source: str, *, allow_text: bool = True) -> dict[str, Any] | str:
    """A JSON schema (an object, or with allow_text its JSON text): shape and nesting checked."""
    if isinstance(schema, str) and allow_text:
        if json_text_nesting_depth(schema) > MAX_JSON_NESTING:
            raise _too_deep(source)
        try:
            parsed = json.loads(schema)
        except ValueError as error:
            raise VdiffValidationError(
                f"{source}: the JSON schema is not valid JSON: {error}", source
            ) from None
        check_schema(parsed, source, allow_text=False)
        return schema
    if not isinstance(schema, dict):
        raise VdiffValidationError(
            f"{source}: a JSON schema must be an object, got {type(schema).__name__}", source
        )
    if json_nesting_depth(schema) > MAX_JSON_NESTING:
        raise _too_deep(source)
    return schema


def _too_deep(source: str) -> VdiffValidationError:
    return VdiffValidationError(
        f"{source}: the JSON schema is nested too deeply: objects and arrays may nest at most "
        f"{MAX_JSON_NESTING} levels",
        source,
    )


def from_response_format(response_format: ResponseFormat | None) -> StructuredOutputsParams | None:
    """vLLM's structured_outputs_from_response_format: json_object, json_schema and structural_tag."""
    if response_format is None or response_format.type == "text":
        _no_extra(response_format)
        return None
    source = "response_format"
    if response_format.type == "json_object":
        _no_extra(response_format)
        return StructuredOutputsParams(json_object=True, source=source)
    if response_format.type == "json_schema":
        _no_extra(response_format)
        spec = response_format.json_schema
        if spec is None:
            raise VdiffValidationError(
                "When response_format type is 'json_schema', the 'json_schema' field must be provided.",
                source,
            )
        if spec.json_schema is None:
            raise VdiffValidationError(
                "response_format.json_schema.schema must be provided (the JSON schema to follow)", source
            )
        schema = check_schema(spec.json_schema, source, allow_text=False)
        return StructuredOutputsParams(json=schema, source=source)  # type: ignore[arg-type]
    extra = response_format.model_extra or {}
    if not ("format" in extra or ("structures" in extra and "triggers" in extra)):
        raise VdiffValidationError("Invalid response_format structural_tag specification.", source)
    payload = json.dumps({"type": "structural_tag", **extra})
    if json_text_nesting_depth(payload) > MAX_JSON_NESTING:
        raise _too_deep(source)
    return StructuredOutputsParams(structural_tag=payload, source=source)


def _no_extra(response_format: ResponseFormat | None) -> None:
    if response_format is not None and response_format.model_extra:
        name = sorted(response_format.model_extra)[0]
        raise VdiffValidationError(
            f"response_format.{name} is not a field of response_format type {response_format.type!r}",
            "response_format",
        )


def from_structured_outputs(request: StructuredOutputsRequest | None) -> StructuredOutputsParams | None:
    if request is None:
        return None
    kinds = [
        kind
        for kind, value in (
            ("json", request.json_), ("regex", request.regex), ("choice", request.choice),
            ("grammar", request.grammar), ("json_object", request.json_object or None),
            ("structural_tag", request.structural_tag),
        )
        if value is not None
    ]  # fmt: skip
    source = f"structured_outputs.{kinds[0]}" if len(kinds) == 1 else "structured_outputs"
    json_schema = request.json_
    if json_schema is not None:
        json_schema = check_schema(json_schema, source)  # type: ignore[assignment]
    if (
        request.structural_tag is not None
        and json_text_nesting_depth(request.structural_tag) > MAX_JSON_NESTING
    ):
        raise _too_deep(source)
    return StructuredOutputsParams(
        json=json_schema,
        regex=request.regex,
        choice=tuple(request.choice) if request.choice is not None else None,
        grammar=request.grammar,
        json_object=request.json_object,
        structural_tag=request.structural_tag,
        disable_any_whitespace=request.disable_any_whitespace,
        disable_additional_properties=request.disable_additional_properties,
        whitespace_pattern=request.whitespace_pattern,
        source=source,
    )


def from_legacy_fields(extra: dict[str, Any]) -> StructuredOutputsParams | None:
    """guided_json / guided_regex / guided_choice / guided_grammar with guided_whitespace_pattern, as vLLM
    <= 0.11 read them (GuidedDecodingParams.from_optional); guided_decoding_backend is field_rules'."""
    for name, kinds in LEGACY_TYPES.items():
        value = extra.get(name)
        if value is not None and (not isinstance(value, kinds) or isinstance(value, bool)):
            wanted = " or ".join("an object" if kind is dict else f"a {kind.__name__}" for kind in kinds)
            raise VdiffValidationError(f"{name} must be {wanted}", name)
    sent = [name for name in LEGACY_KINDS if extra.get(name) is not None]
    pattern = extra.get("guided_whitespace_pattern")
    if not sent:
        if pattern is not None:
            raise VdiffValidationError(
                "guided_whitespace_pattern only shapes the whitespace of guided_json; send guided_json too",
                "guided_whitespace_pattern",
            )
        return None
    if len(sent) > 1:
        raise VdiffValidationError(
            f"You can only use one kind of guided decoding ({', '.join(sent)} were sent).", sent[1]
        )
    (name,) = sent
    kind, value = LEGACY_KINDS[name], extra[name]
    if pattern is not None and kind != "json":
        raise VdiffValidationError(
            "guided_whitespace_pattern only shapes the whitespace of guided_json", "guided_whitespace_pattern"
        )
    if kind == "json":
        value = check_schema(value, name)
    return StructuredOutputsParams(**{kind: value}, whitespace_pattern=pattern, source=name)


def one_constraint(*candidates: StructuredOutputsParams | None) -> StructuredOutputsParams | None:
    """At most one constraint per request: a second one is a 400 naming the field it came from."""
    present = [candidate for candidate in candidates if candidate is not None]
    if len(present) > 1:
        first, second = present[0], present[1]
        raise VdiffValidationError(
            f"only one structured-output constraint per request: {first.source} and {second.source} "
            "were both sent",
            second.source.split(".")[0],
        )
    return present[0] if present else None
