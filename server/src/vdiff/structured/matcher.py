"""One sequence's grammar state: the allowed-token bitmask at its frontier, consume, termination."""

from __future__ import annotations

from typing import Any

import torch

from vdiff.errors import VdiffValidationError


class GrammarLimitError(VdiffValidationError):
    """The matcher hit a parser/lexer limit mid-answer (llguidance's error state, which it never leaves).
    Raised so the step guard fails this request alone: never turned into an end token and a "stop". The
    constraint the client sent is beyond the parser's limits, so the request fails with a 400 naming it,
    as one refused at admission does."""


class GrammarMatcher:
    """llguidance's LLMatcher for one sequence. The state always describes the committed, left-contiguous
    answer (the frontier): diffusion commits out of order, a grammar state exists only left to right."""

    __slots__ = (
        "_matcher",
        "_scratch",
        "eos_token_id",
        "num_consumed",
        "num_fallbacks",
        "num_words",
        "source",
    )

    def __init__(
        self, matcher: Any, eos_token_id: int, vocab_size: int, source: str = "structured_outputs"
    ) -> None:
        """matcher: a fresh llguidance.LLMatcher (a deep copy of the compiled grammar's prototype: ~1 µs,
        where building one costs ~1 ms)."""
        self._matcher = matcher
        self.source = source
        self.eos_token_id = eos_token_id
        self.num_consumed = 0
        self.num_words = (vocab_size + 31) // 32
        self.num_fallbacks = 0
        self._scratch: torch.Tensor | None = None
        """Frontier tokens the grammar refused although their row was masked (a row every rule emptied)."""

    def fill_bitmask(self, bitmask: torch.Tensor, row: int) -> None:
        """Row `row` of an int32 [rows, ceil(vocab / 32)] CPU bitmask: bit t set = token t allowed.
        A terminated or failed matcher allows only the end token."""
        import llguidance.torch

        llguidance.torch.fill_next_token_bitmask(self._matcher, bitmask, row)

    def forced_token(self) -> int | None:
        """The one token the grammar allows next, when it allows exactly one (then the masked distribution
        is a point mass: its confidence is 1 under any rule); else None."""
        if self._scratch is None:
            self._scratch = torch.empty(1, self.num_words, dtype=torch.int32)
        self.fill_bitmask(self._scratch, 0)
        words = self._scratch[0]
        nonzero = words.nonzero()
        if nonzero.shape[0] != 1:
            return None
        index = int(nonzero[0, 0])
        word = int(words[index]) & 0xFFFFFFFF
        if word & (word - 1):
            return None
        return index * 32 + word.bit_length() - 1

    def consume(self, token_id: int) -> bool:
        """Advance over one token; False (state unchanged) when the grammar does not allow it.
        Raises GrammarLimitError when the matcher is (or enters) its error state: an errored matcher
        allows only the end token, which would end the answer "stop" without honouring the grammar."""
        self.check()
        if self._matcher.is_stopped() or self._matcher.validate_tokens([token_id]) != 1:
            self.check()
            return False
        consumed = self._matcher.consume_token(token_id)
        self.check()
        self.num_consumed += int(consumed)
        return consumed

    def check(self) -> None:
        if self._matcher.is_error():
            raise GrammarLimitError(
                f"{self.source}: the constraint exceeded the structured outputs parser limits mid-answer: "
                f"{first_line(self.error)}",
                self.source,
            )

    def rollback(self, num_tokens: int) -> None:
        if num_tokens > 0:
            self._matcher.rollback(num_tokens)
            self.num_consumed -= num_tokens

    @property
    def is_terminated(self) -> bool:
        """The grammar is complete and admits nothing more (only the end token may follow)."""
        return self._matcher.is_stopped()

    @property
    def is_accepting(self) -> bool:
        return self._matcher.is_accepting()

    @property
    def error(self) -> str:
        return self._matcher.get_error() if self._matcher.is_error() else ""


def first_line(message: str) -> str:
    """llguidance's message without its parser-state dump (verbose errors append the state)."""
    return message.strip().split("\n", 1)[0]
