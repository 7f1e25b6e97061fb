"""Structured outputs: constrain a sequence's tokens to a JSON schema, regex, choice or grammar."""

from vdiff.structured.params import StructuredOutputsParams

__all__ = ["StructuredOutputsParams"]
