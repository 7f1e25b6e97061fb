"""Per-sequence KV caches for fast decoding, and padding them into one batched forward.

A `SequenceKV` holds the keys/values of some canvas positions of ONE sequence (per layer
[num_kv_heads, P, head_dim], RoPE already applied). Because attention over cached keys is order-free,
any subset of positions can be passed as past keys: a prefix (Fast-dLLM prefix cache, APD windows,
the AR verifier) or prefix + suffix (Fast-dLLM dual cache).

`BlockCache` is the Fast-dLLM state machine of one sequence: at each block boundary a full-canvas
forward refreshes it; between refreshes only the current block (prefix mode: the block and all later
positions) is recomputed. With Dream's logit shift the position left of the block stays a query,
since its hidden state predicts the block's first token. A vicinity V > 0 (dInfer's vicinity refresh)
also keeps the V positions left of the block as queries: their keys are recomputed every step, so they
see the tokens committed inside the block, which the cached prefix keys do not.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from vdiff.models.base import KVCache


@dataclass(slots=True)
class SequenceKV:
    keys: list[torch.Tensor]
    values: list[torch.Tensor]

    @property
    def length(self) -> int:
        return self.keys[0].shape[1] if self.keys else 0

    @classmethod
    def from_batch(cls, past: KVCache, row: int, start: int, end: int) -> SequenceKV:
        """The query KV a batched forward returned for positions [start, end) of one row."""
        return cls([k[row, :, start:end] for k, _ in past], [v[row, :, start:end] for _, v in past])

    def crop(self, length: int) -> SequenceKV:
        return SequenceKV([k[:, :length] for k in self.keys], [v[:, :length] for v in self.values])

    def slice(self, start: int, end: int) -> SequenceKV:
        return SequenceKV([k[:, start:end] for k in self.keys], [v[:, start:end] for v in self.values])

    def concat(self, other: SequenceKV) -> SequenceKV:
        if not self.keys:
            return other
        if not other.keys:
            return self
        return SequenceKV(
            [torch.cat([a, b], dim=1) for a, b in zip(self.keys, other.keys, strict=True)],
            [torch.cat([a, b], dim=1) for a, b in zip(self.values, other.values, strict=True)],
        )


def pad_past(
    pasts: Sequence[SequenceKV | None], device: torch.device | None = None
) -> tuple[KVCache | None, torch.Tensor | None]:
    """Stack per-row past KV into [B, H, P_max, D] per layer plus a key mask [B, P_max] (True = real).

    Rows without a cache get an all-False mask; returns (None, None) when no row has one.
    """
    lengths = [0 if past is None else past.length for past in pasts]
    max_length = max(lengths, default=0)
    if max_length == 0:
        return None, None
    template = next(past for past in pasts if past is not None and past.length > 0)
    device = device or template.keys[0].device
    key_mask = torch.zeros(len(pasts), max_length, dtype=torch.bool, device=device)
    batched: KVCache = []
    for layer, (key_like, value_like) in enumerate(zip(template.keys, template.values, strict=True)):
        keys = key_like.new_zeros(
            len(pasts), key_like.shape[0], max_length, key_like.shape[-1], device=device
        )
        values = value_like.new_zeros(
            len(pasts), value_like.shape[0], max_length, value_like.shape[-1], device=device
        )
        for row, past in enumerate(pasts):
            if past is not None and lengths[row]:
                keys[row, :, : lengths[row]] = past.keys[layer]
                values[row, :, : lengths[row]] = past.values[layer]
        batched.append((keys, values))
    for row, length in enumerate(lengths):
        key_mask[row, :length] = True
    return batched, key_mask


@dataclass(slots=True)
class QueryWindow:
    """What one sequence feeds to the next forward: canvas positions [start, end) as queries."""

    start: int
    end: int
    past: SequenceKV | None = None
    is_refresh: bool = False


class BlockCache:
    """Fast-dLLM prefix / dual cache of one sequence, refreshed at every block boundary."""

    __slots__ = ("block_end", "block_start", "logit_shift", "mode", "num_refreshes", "past", "vicinity")

    def __init__(self, mode: str, logit_shift: bool, vicinity: int = 0) -> None:
        if mode not in ("prefix", "dual"):
            raise ValueError(f"unknown block cache mode {mode!r}")
        self.mode = mode
        self.logit_shift = logit_shift
        self.vicinity = vicinity
        self.block_start: int | None = None
        self.block_end: int | None = None
        self.past: SequenceKV | None = None
        self.num_refreshes = 0

    def window(self, block_start: int, block_end: int, canvas_length: int) -> QueryWindow:
        """The queries for the next step inside block [block_start, block_end)."""
        if self.block_start != block_start or self.past is None:
            return QueryWindow(0, canvas_length, None, is_refresh=True)
        end = canvas_length if self.mode == "prefix" else block_end
        return QueryWindow(self._first_query(block_start), end, self.past)

    def _first_query(self, block_start: int) -> int:
        return max(0, block_start - self.vicinity - (1 if self.logit_shift else 0))

    def refresh(self, canvas_kv: SequenceKV, block_start: int, block_end: int) -> None:
        """Keep the keys a step of this block reuses from a full-canvas forward's KV."""
        past = canvas_kv.crop(self._first_query(block_start))
        if self.mode == "dual":
            past = past.concat(canvas_kv.slice(block_end, canvas_kv.length))
        self.block_start, self.block_end = block_start, block_end
        self.past = past
        self.num_refreshes += 1

    def clear(self) -> None:
        self.block_start = self.block_end = None
        self.past = None
