"""One sequence's grammar state: the allowed-token bitmask at its frontier, consume, termination."""

from __future__ import annotations

from typing import Any

import torch


class GrammarMatcher:
    """llguidance's LLMatcher for one sequence. The state always describes the committed, left-contiguous
    answer (the frontier): diffusion commits out of order, a grammar state exists only left to right."""

    __slots__ = ("_matcher", "eos_token_id", "num_consumed", "num_words", "num_fallbacks")

    def __init__(self, ll_tokenizer: Any, grammar: str, eos_token_id: int) -> None:
        import llguidance

        self._matcher = llguidance.LLMatcher(ll_tokenizer, grammar, log_level=0)
        self.eos_token_id = eos_token_id
        self.num_consumed = 0
        self.num_words = (ll_tokenizer.vocab_size + 31) // 32
        self.num_fallbacks = 0
        """Frontier tokens the grammar refused although their row was masked (a row every rule emptied)."""

    def fill_bitmask(self, bitmask: torch.Tensor, row: int) -> None:
        """Row `row` of an int32 [rows, ceil(vocab / 32)] CPU bitmask: bit t set = token t allowed.
        A terminated or failed matcher allows only the end token."""
        import llguidance.torch

        llguidance.torch.fill_next_token_bitmask(self._matcher, bitmask, row)

    def consume(self, token_id: int) -> bool:
        """Advance over one token; False (state unchanged) when the grammar does not allow it."""
        if self._matcher.is_stopped() or self._matcher.validate_tokens([token_id]) != 1:
            return False
        consumed = self._matcher.consume_token(token_id)
        self.num_consumed += int(consumed)
        return consumed

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
