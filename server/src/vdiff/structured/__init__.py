"""Structured outputs: constrain a sequence's tokens to a JSON schema, regex, choice or grammar.

The engine contract (what the HTTP layer relies on):
- a request whose SamplingParams has `structured_outputs=StructuredOutputsParams(...)` is constrained;
  every decoding policy honours it (engine/decoding/constrained.py: commits from the frontier only);
- the constraint is compiled once, at admission (engine/input_processor.py), by the backend that
  --structured-outputs-config names (llguidance, "guidance"); an invalid schema, regex or grammar raises
  VdiffValidationError(message, param=params.source) there, so the server answers 400 naming the field;
  so does a valid one beyond the bounded parser limits (probed there: backend.INITIAL_LEXER_FUEL), and a
  matcher that errors mid-answer fails its own request (GrammarLimitError), never ends it "stop";
- a completed grammar ends the sequence with finish_reason "stop" (the end token follows); max_tokens
  before that ends it with "length"; stop strings and streaming work as for free requests.
"""

from vdiff.structured.params import StructuredOutputsParams

__all__ = ["StructuredOutputsParams"]
