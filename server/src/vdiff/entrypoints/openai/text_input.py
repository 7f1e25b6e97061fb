"""Client text on its way to the tokenizer: text that is not valid Unicode is the client's error (400)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from vdiff.errors import VdiffValidationError


def check_text(value: Any, param: str) -> None:
    """Every string in value (nested lists and dicts included) must encode as UTF-8 (no lone surrogates)."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as error:
            raise VdiffValidationError(
                f"{param} is not valid Unicode text: lone surrogate {value[error.start]!r} "
                f"at position {error.start}",
                param,
            ) from None
    elif isinstance(value, dict):
        for key, item in value.items():
            check_text(key, param)
            check_text(item, param)
    elif isinstance(value, list | tuple):
        for item in value:
            check_text(item, param)


def encode_text(encode: Callable[[str], list[int]], text: str, param: str) -> list[int]:
    """Token ids of a client's text; text the tokenizer refuses is a 400 naming param, not a 500."""
    check_text(text, param)
    try:
        return encode(text)
    except (TypeError, UnicodeEncodeError) as error:
        raise VdiffValidationError(f"{param} could not be tokenized: {error}", param) from error
