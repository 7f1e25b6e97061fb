"""Cache memory in fixed-size blocks, one block table per sequence (nano-vllm's block_manager).

The caches themselves are per-sequence tensors (the Fast-dLLM block cache, APD's dLLM window and
verifier caches); this accounts their memory in blocks of BLOCK_SIZE tokens of the dLLM's keys and
values, so admission and preemption work against a real budget, fragmentation is bounded by one block
per sequence, and usage is a number the metrics report. A sequence's need is what its policy will hold
at the next step (decided by `cache_tokens`), and it grows block by block.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from typing import Any

BLOCK_SIZE = 16
"""Tokens per block (vLLM's default block size)."""


def cache_tokens(seq: Any, verifier_ratio: float) -> int:
    """Tokens of dLLM keys/values the sequence's policy holds at its next step (verifier tokens counted
    at their relative size): the visible canvas for the block cache, the lookahead window plus the
    verified prefix for APD, nothing for decoding without a cache."""
    params = seq.params
    if seq.is_finished:
        return 0
    if params.decoding == "block":
        return seq.canvas.shape[0]  # the exact cache of every finished block, then the current one
    if params.decoding == "apd":
        right = min(seq.prompt_len + seq.frontier + params.apd_max_lookahead, seq.canvas.shape[0])
        return right + int(verifier_ratio * (seq.prompt_len + seq.frontier))
    if params.decoding == "threshold" and params.kv_cache in ("prefix", "dual"):
        block = seq.current_block
        rows = 2 if params.cfg_scale > 0 else 1
        return rows * (seq.visible_length(block) if block is not None else seq.canvas.shape[0])
    return 0


def most_cache_tokens(prompt_len: int, params: Any, canvas_len: int, verifier_ratio: float) -> int:
    """The most a request's sequence may ever hold: what admission compares with the whole budget."""
    if params.decoding == "block":
        return canvas_len
    if params.decoding == "apd":
        return canvas_len + int(verifier_ratio * canvas_len)
    if params.decoding == "threshold" and params.kv_cache in ("prefix", "dual"):
        return (2 if params.cfg_scale > 0 else 1) * canvas_len
    return 0


def blocks_for(num_tokens: int) -> int:
    return -(-num_tokens // BLOCK_SIZE)


class BlockManager:
    def __init__(self, num_blocks: int) -> None:
        self.num_blocks = num_blocks
        self.free_blocks: deque[int] = deque(range(num_blocks))
        self.tables: dict[int, list[int]] = {}
        """seq_id -> the blocks it holds."""

    @property
    def num_free_blocks(self) -> int:
        return len(self.free_blocks)

    @property
    def usage(self) -> float:
        """Fraction of the blocks in use (vllm:kv_cache_usage_perc)."""
        return 1.0 - len(self.free_blocks) / self.num_blocks if self.num_blocks else 0.0

    def num_held(self, seq_id: int) -> int:
        return len(self.tables.get(seq_id, ()))

    def can_hold(self, seq_id: int, num_tokens: int) -> bool:
        return blocks_for(num_tokens) - self.num_held(seq_id) <= len(self.free_blocks)

    def hold(self, seq_id: int, num_tokens: int) -> None:
        """Grow (never shrink: a cache keeps what it reached) the sequence's table to num_tokens."""
        table = self.tables.setdefault(seq_id, [])
        missing = blocks_for(num_tokens) - len(table)
        if missing > len(self.free_blocks):
            raise MemoryError(f"{missing} cache blocks needed, {len(self.free_blocks)} free")
        for _ in range(max(missing, 0)):
            table.append(self.free_blocks.popleft())

    def free(self, seq_ids: Iterable[int]) -> None:
        for seq_id in seq_ids:
            self.free_blocks.extend(self.tables.pop(seq_id, ()))
