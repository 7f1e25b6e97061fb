"""The commit rule for constrained sequences (structured outputs), shared by every policy.

A grammar state exists only left to right, and diffusion commits out of order. So a constrained
sequence commits from its frontier only:
1. the frontier position's logits are masked by the grammar state (FrontierMasks: the bitmasks are filled
   on a worker thread while the forward runs, then applied as one batched mask on the device), and the
   policy's own sampler picks its token: the frontier token is always committed, so every step progresses;
2. the following positions of the same forward are taken in order while each one's token (the policy's
   pick) is allowed by the state the previous tokens reached AND the policy's own rule accepts it
   (threshold confidence, APD acceptance, the block rule, the reference transfer count). An allowed pick
   is exactly what masking that position by the new state would pick at temperature 0, and a sampled
   pick conditioned on being allowed follows the masked distribution; a confidence read before masking
   is a lower bound of the masked one, so the rule is only ever stricter. Where the pick fails but the
   new state allows exactly one token (JSON punctuation, a key the schema fixes), the masked distribution
   is a point mass of confidence 1: that token is committed under any confidence rule (APD ends its run
   there: its verifier scored the draft, so its cache is kept only up to that position). The first
   position that fails ends the run: it waits to become the frontier, where it is masked;
3. no position right of the run is committed; when the grammar is complete the end token follows (in the
   same step when its position was queried), so the sequence finishes "stop".
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Sequence as Seq
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from vdiff.engine.sequence import Sequence

MIN_THREADED_MASKS = 1
"""Fill bitmasks on the worker thread from this many constrained sequences per step (llguidance drops
the GIL, so the masks overlap the forward; bench/structured.py measures the difference)."""


def is_constrained(seq: Any) -> bool:
    return getattr(seq, "grammar", None) is not None


def frontier_run(
    seq: Sequence,
    decided: torch.Tensor,
    tokens: torch.Tensor,
    accept: torch.Tensor | None = None,
    max_count: int | None = None,
    stop_after_forced: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(canvas indices, tokens) to commit: the frontier's token, then the run rule 2 allows.

    decided [K] canvas indices of the forward's logit rows (ascending), tokens [K] the policy's picks,
    accept [K] bool the policy's own rule per position (row 0 ignored), max_count a per-step count."""
    matcher = seq.grammar
    start = seq.prompt_len + seq.frontier
    positions, chosen = decided.tolist(), tokens.tolist()
    accepted = accept.tolist() if accept is not None else None
    limit = len(positions) if max_count is None else max(1, min(max_count, len(positions)))
    end_tokens = set(seq.params.stop_token_ids)
    run_positions: list[int] = []
    run_tokens: list[int] = []
    for index, position in enumerate(positions):
        if position != start + index:
            break
        if index >= limit:
            break
        token = chosen[index]
        passes = index == 0 or accepted is None or bool(accepted[index])
        if not (passes and matcher.consume(token)):
            if index == 0:
                token = first_allowed(matcher)  # only a degenerate row (every token masked) gets here
                matcher.num_fallbacks += 1
            else:
                forced = matcher.forced_token()
                if forced is None:
                    break
                token = forced
            matcher.consume(token)
            if index > 0 and token != chosen[index] and stop_after_forced:
                run_positions.append(position)
                run_tokens.append(token)
                break
        run_positions.append(position)
        run_tokens.append(token)
        if token == matcher.eos_token_id or token in end_tokens:
            break
        if matcher.is_terminated:
            if index + 1 < len(positions) and positions[index + 1] == position + 1:
                run_positions.append(position + 1)
                run_tokens.append(matcher.eos_token_id)
            break
    return torch.tensor(run_positions, dtype=torch.int64), torch.tensor(run_tokens, dtype=torch.int64)


def first_allowed(matcher: Any) -> int:
    bitmask = torch.zeros(1, matcher.num_words, dtype=torch.int32)
    matcher.fill_bitmask(bitmask, 0)
    allowed = unpack_bitmask(bitmask, bitmask.shape[1] * 32)[0].nonzero().flatten()
    if not allowed.numel() or bool((allowed == matcher.eos_token_id).any()):
        return matcher.eos_token_id
    return int(allowed[0])


_BITS = torch.arange(32, dtype=torch.int32)


def unpack_bitmask(bitmask: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """int32 [rows, words] -> bool [rows, vocab_size] (bit t of the mask = token t allowed)."""
    bits = _BITS.to(bitmask.device)
    allowed = ((bitmask.unsqueeze(-1) >> bits) & 1).bool().view(bitmask.shape[0], -1)
    if allowed.shape[1] < vocab_size:
        allowed = torch.nn.functional.pad(allowed, (0, vocab_size - allowed.shape[1]))
    return allowed[:, :vocab_size]


class FrontierMasks:
    """Per step: the frontier bitmask of every constrained sequence, filled while the forward runs,
    then applied to each one's frontier logit row (the first queried position) in one batched op."""

    def __init__(self, num_words: int) -> None:
        self.num_words = num_words
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._pending: concurrent.futures.Future | None = None
        self._rows: dict[int, int] = {}
        self._bitmask: torch.Tensor | None = None

    def start(self, seqs: Seq[Sequence]) -> None:
        """Fill the bitmasks of the constrained sequences of the coming forward (worker thread)."""
        if self._pending is not None:  # a step that never reached apply (its forward failed)
            self._pending.result()
        constrained = [seq for seq in seqs if is_constrained(seq) and not seq.is_scoring]
        self._rows = {seq.seq_id: row for row, seq in enumerate(constrained)}
        if not constrained:
            self._bitmask = self._pending = None
            return
        bitmask = self._bitmask = torch.empty(len(constrained), self.num_words, dtype=torch.int32)
        matchers = [seq.grammar for seq in constrained]
        if len(matchers) >= MIN_THREADED_MASKS:
            if self._executor is None:
                self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="vdiff-grammar")
            self._pending = self._executor.submit(_fill, matchers, bitmask)
        else:
            _fill(matchers, bitmask)
            self._pending = None

    def apply(self, seqs: Seq[Sequence], results: Seq[Any]) -> None:
        """Mask the frontier row of each constrained sequence's logits in place (the conditional row when
        classifier-free guidance adds a second: the mix keeps its -inf)."""
        if self._pending is not None:
            self._pending.result()
            self._pending = None
        if self._bitmask is None:
            return
        picked = [
            (self._rows[seq.seq_id], result)
            for seq, result in zip(seqs, results, strict=True)
            if seq.seq_id in self._rows and not seq.is_finished and result.logits.shape[1] > 0
        ]
        if not picked:
            return
        logits0 = picked[0][1].logits
        rows = torch.stack([result.logits[0, 0] for _, result in picked])
        index = torch.tensor([row for row, _ in picked])
        allowed = unpack_bitmask(self._bitmask[index].to(logits0.device, non_blocking=True), rows.shape[-1])
        masked = rows.masked_fill(~allowed, float("-inf"))
        empty = ~allowed.any(dim=-1) | torch.isinf(masked.amax(dim=-1))
        if bool(empty.any()):  # another rule masked every allowed token: the grammar wins
            masked = torch.where(empty[:, None], torch.where(allowed, 0.0, float("-inf")), masked)
        with torch.inference_mode():  # the runner's logits are inference tensors
            for slot, (_, result) in enumerate(picked):
                result.logits[0, 0] = masked[slot]

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False)
            self._executor = None


def _fill(matchers: list[Any], bitmask: torch.Tensor) -> None:
    for row, matcher in enumerate(matchers):
        matcher.fill_bitmask(bitmask, row)
