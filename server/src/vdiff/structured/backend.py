"""The llguidance backend: a StructuredOutputsParams becomes a grammar for the model's tokenizer.

Token bytes come from the checkpoint's own Hugging Face tokenizer (llguidance reads its tokenizer.json:
byte-level BPE, SentencePiece byte fallback), sized to the model's logits vocabulary (rows past the
tokenizer are never allowed). Grammars are checked and compiled once per (kind, value, options) and
cached; every sequence then gets its own matcher (vdiff.structured.matcher).
"""

from __future__ import annotations

import copy
import json
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from vdiff.errors import VdiffValidationError
from vdiff.structured.config import FLAG, StructuredOutputsConfig
from vdiff.structured.matcher import GrammarMatcher, first_line
from vdiff.structured.params import StructuredOutputsParams

if TYPE_CHECKING:
    from vdiff.tokenizer import TokenizerInfo

CACHE_SIZE = 256
"""Compiled grammars kept (least recently used dropped)."""

INITIAL_LEXER_FUEL = 200_000
"""llguidance's budget for building regex expressions (its default 1_000_000). The lexer's expression
limit scales with it, and one pathological regex spends it all in a single mask or forced-prefix
computation: (a{1000}){1000} reaches the limit ~9x sooner at this value than at the default. The
per-step limits (step_lexer_fuel, step_max_items) keep llguidance's defaults."""


def parser_limits(llguidance: Any) -> Any:
    """The bounded ParserLimits every grammar of this backend is checked, probed and run under."""
    return llguidance.LLParserLimits(initial_lexer_fuel=INITIAL_LEXER_FUEL, verbose_errors=False)


@dataclass(frozen=True, slots=True)
class CompiledGrammar:
    """A checked llguidance grammar for one tokenizer; `new_matcher` starts a sequence's state."""

    backend: GuidanceBackend
    prototype: Any
    """An llguidance.LLMatcher in its start state, never advanced: sequences start from deep copies."""
    source: str

    def new_matcher(self) -> GrammarMatcher:
        return GrammarMatcher(
            self.prototype.deep_copy(), self.backend.eos_token_id, self.vocab_size, self.source
        )

    @property
    def vocab_size(self) -> int:
        return self.backend.vocab_size


class GuidanceBackend:
    name = "guidance"

    def __init__(
        self, tokenizer_info: TokenizerInfo, vocab_size: int, config: StructuredOutputsConfig
    ) -> None:
        try:
            import llguidance
            import llguidance.hf
        except ImportError as error:  # the pin is a dependency: only a broken install gets here
            raise VdiffValidationError(
                f"{FLAG}: backend 'guidance' needs llguidance ({error})", FLAG
            ) from error
        self._llguidance = llguidance
        self.config = config
        self.vocab_size = max(vocab_size, len(tokenizer_info.tokenizer))
        self.eos_token_id = tokenizer_info.eos_token_ids[0]
        self.special_tokens = frozenset(tokenizer_info.tokenizer.get_added_vocab())
        self.ll_tokenizer = llguidance.hf.from_tokenizer(
            tokenizer_info.tokenizer, n_vocab=self.vocab_size, eos_token=list(tokenizer_info.eos_token_ids)
        )
        self.limits = parser_limits(llguidance)
        self._cache: OrderedDict[tuple, Any] = OrderedDict()
        self._lock = threading.Lock()

    def compile(self, params: StructuredOutputsParams) -> CompiledGrammar:
        """Check and compile (cached); an invalid schema, regex or grammar names params.source."""
        key = self._key(params)
        with self._lock:
            prototype = self._cache.get(key)
            if prototype is not None:
                self._cache.move_to_end(key)
                return CompiledGrammar(self, prototype, params.source)
        grammar = self._serialize(params)
        matcher_class = self._llguidance.LLMatcher
        is_error, messages = matcher_class.validate_grammar_with_warnings(
            grammar, self.ll_tokenizer, limits=self.limits
        )
        if is_error:
            raise VdiffValidationError(
                f"{params.source}: invalid {params.kind}: {messages[0]}", params.source
            )
        prototype = matcher_class(self.ll_tokenizer, grammar, log_level=0, limits=self.limits)
        if prototype.is_error():
            raise VdiffValidationError(
                f"{params.source}: invalid {params.kind}: {prototype.get_error()}", params.source
            )
        self._probe(prototype, params)
        with self._lock:
            self._cache[key] = prototype
            while len(self._cache) > CACHE_SIZE:
                self._cache.popitem(last=False)
        return CompiledGrammar(self, prototype, params.source)

    def _probe(self, prototype: Any, params: StructuredOutputsParams) -> None:
        """Run the first steps on a copy: the forced prefix, the first mask and one allowed token. A
        grammar that is valid but beyond the parser limits fails here (a 400 naming the field) instead
        of in the engine step, where llguidance's error state would allow only the end token."""
        matcher = GrammarMatcher(prototype.deep_copy(), self.eos_token_id, self.vocab_size)
        raw = matcher._matcher
        raw.compute_ff_bytes()
        if not raw.is_error():
            from vdiff.engine.decoding.constrained import first_allowed

            token = first_allowed(matcher)
            if token != self.eos_token_id and not raw.is_error():
                raw.consume_token(token)
        if raw.is_error():
            raise VdiffValidationError(
                f"{params.source}: the {params.kind} is too complex for the structured outputs parser "
                f"limits ({first_line(raw.get_error())})",
                params.source,
            )

    def _key(self, params: StructuredOutputsParams) -> tuple:
        value = getattr(params, params.kind)
        if isinstance(value, dict):
            value = json.dumps(value, sort_keys=True)
        return (
            params.kind,
            value,
            params.disable_any_whitespace,
            params.disable_additional_properties,
            params.whitespace_pattern,
        )

    def _json_options(self, params: StructuredOutputsParams) -> dict[str, Any]:
        options: dict[str, Any] = {
            "whitespace_flexible": not (params.disable_any_whitespace or self.config.disable_any_whitespace)
        }
        if params.whitespace_pattern is not None:
            options["whitespace_pattern"] = params.whitespace_pattern
        return options

    def _schema_grammar(self, schema: str | dict[str, Any], params: StructuredOutputsParams) -> str:
        if isinstance(schema, str):
            try:
                schema = json.loads(schema)
            except ValueError as error:
                raise VdiffValidationError(
                    f"{params.source}: the JSON schema is not valid JSON ({error})", params.source
                ) from None
        if not isinstance(schema, dict | bool):
            raise VdiffValidationError(f"{params.source}: a JSON schema must be an object", params.source)
        if isinstance(schema, dict) and (
            params.disable_additional_properties or self.config.disable_additional_properties
        ):
            schema = copy.deepcopy(schema)
            _close_objects(schema)
        try:
            return self._llguidance.LLMatcher.grammar_from_json_schema(
                schema, defaults=self._json_options(params)
            )
        except (ValueError, TypeError) as error:
            raise VdiffValidationError(
                f"{params.source}: invalid JSON schema ({error})", params.source
            ) from None

    def _serialize(self, params: StructuredOutputsParams) -> str:
        llg, kind = self._llguidance, params.kind
        if kind == "json":
            return self._schema_grammar(params.json, params)  # type: ignore[arg-type]
        if kind == "json_object":
            return self._schema_grammar({"type": "object"}, params)
        if kind == "regex":
            return llg.LLMatcher.grammar_from_regex(params.regex)
        if kind == "choice":
            return llg.grammar_from("choice", json.dumps(list(params.choice or ())))
        if kind == "grammar":
            try:
                return llg.grammar_from("grammar", params.grammar)
            except ValueError as error:
                raise VdiffValidationError(
                    f"{params.source}: invalid grammar ({error})", params.source
                ) from None
        return self._structural_tag(params)

    def _structural_tag(self, params: StructuredOutputsParams) -> str:
        """vLLM's structural_tag ({"structures": [{"begin", "schema", "end"}], "triggers": [...]})."""
        source = params.source
        try:
            spec = (
                json.loads(params.structural_tag)
                if isinstance(params.structural_tag, str)
                else params.structural_tag
            )
            triggers = list(spec["triggers"])
            tags = []
            for structure in spec["structures"]:
                begin = structure["begin"]
                trigger = next((t for t in triggers if begin.startswith(t)), None)
                if trigger is None:
                    raise VdiffValidationError(
                        f"{source}: trigger of {begin!r} not in triggers {triggers}", source
                    )
                tags.append(
                    self._llguidance.StructTag(
                        trigger=trigger,
                        begin=begin,
                        grammar=self._schema_grammar(structure["schema"], params),
                        end=structure["end"],
                    )
                )
        except (ValueError, KeyError, TypeError, AssertionError) as error:
            raise VdiffValidationError(f"{source}: invalid structural_tag ({error!r})", source) from None
        if not tags:
            raise VdiffValidationError(f"{source}: structural_tag has no structures", source)
        # a trigger spelled <...> is a special token only when this tokenizer has it as one
        special = all(tag.trigger in self.special_tokens for tag in tags if tag.trigger.startswith("<"))
        return self._llguidance.StructTag.to_grammar(tags, assume_special=special)


def _close_objects(schema: Any) -> None:
    """additionalProperties: false wherever an object schema lists properties and says nothing else."""
    if isinstance(schema, list):
        for item in schema:
            _close_objects(item)
        return
    if not isinstance(schema, dict):
        return
    for key, value in schema.items():
        if key in ("properties", "patternProperties", "$defs", "definitions", "dependentSchemas"):
            if isinstance(value, dict):
                for sub in value.values():
                    _close_objects(sub)
        elif isinstance(value, dict | list) and key != "enum" and key != "const":
            _close_objects(value)
    if "additionalProperties" not in schema and isinstance(schema.get("properties"), dict):
        schema["additionalProperties"] = False


def create_backend(
    tokenizer_info: TokenizerInfo, vocab_size: int, flag_value: dict[str, Any] | None
) -> GuidanceBackend:
    """The backend --structured-outputs-config names (startup: an unavailable one is refused here)."""
    return GuidanceBackend(tokenizer_info, vocab_size, StructuredOutputsConfig.from_flag(flag_value))
