"""Per-sequence KV bookkeeping: crop, concat, block refresh windows, padding ragged rows into a batch."""

from __future__ import annotations

import pytest
import torch
from vdiff.engine.kv_cache import BlockCache, SequenceKV, pad_past

LAYERS, HEADS, DIM = 2, 2, 4


def _kv(positions: list[int]) -> SequenceKV:
    """Fake KV whose every entry encodes its canvas position, so slices are checkable."""
    pos = torch.tensor(positions, dtype=torch.float32).view(1, -1, 1).expand(HEADS, -1, DIM)
    return SequenceKV([pos + 1000 * layer for layer in range(LAYERS)], [-pos for _ in range(LAYERS)])


def _positions(kv: SequenceKV) -> list[int]:
    return kv.keys[0][0, :, 0].long().tolist()


def test_crop_slice_concat_keep_positions() -> None:
    kv = _kv(list(range(10)))
    assert _positions(kv.crop(4)) == [0, 1, 2, 3]
    assert _positions(kv.slice(7, 10)) == [7, 8, 9]
    assert _positions(kv.crop(3).concat(kv.slice(8, 10))) == [0, 1, 2, 8, 9]
    assert kv.crop(0).length == 0
    assert _positions(kv.crop(0).concat(kv.slice(2, 3))) == [2]
    assert kv.crop(5).keys[1][0, :, 0].tolist() == [1000.0, 1001.0, 1002.0, 1003.0, 1004.0]


def test_from_batch_takes_one_row_of_a_batched_output() -> None:
    batched = [(torch.arange(2 * HEADS * 5 * DIM).view(2, HEADS, 5, DIM).float(),) * 2 for _ in range(LAYERS)]
    row = SequenceKV.from_batch(batched, row=1, start=1, end=4)
    assert row.length == 3
    assert torch.equal(row.keys[0], batched[0][0][1, :, 1:4])


def test_prefix_cache_refreshes_at_each_block_and_queries_block_plus_suffix() -> None:
    cache = BlockCache("prefix", logit_shift=False)
    canvas = 20
    first = cache.window(8, 12, canvas)
    assert first.is_refresh and (first.start, first.end) == (0, canvas)
    cache.refresh(_kv(list(range(canvas))), 8, 12)
    step = cache.window(8, 12, canvas)
    assert not step.is_refresh and (step.start, step.end) == (8, canvas)
    assert _positions(step.past) == list(range(8))
    assert cache.window(12, 16, canvas).is_refresh  # new block -> refresh
    assert cache.num_refreshes == 1


def test_dual_cache_reuses_prefix_and_suffix_and_keeps_dreams_predecessor_as_query() -> None:
    cache = BlockCache("dual", logit_shift=True)
    canvas = 20
    cache.refresh(_kv(list(range(canvas))), 8, 12)
    step = cache.window(8, 12, canvas)
    assert (step.start, step.end) == (7, 12)  # position 7 predicts position 8 after the shift
    assert _positions(step.past) == [0, 1, 2, 3, 4, 5, 6, *range(12, 20)]
    cache.clear()
    assert cache.window(8, 12, canvas).is_refresh


@pytest.mark.parametrize(("mode", "shift", "end"), [("prefix", False, 20), ("dual", True, 12)])
def test_vicinity_keeps_the_positions_left_of_the_block_as_queries(mode: str, shift: bool, end: int) -> None:
    cache = BlockCache(mode, logit_shift=shift, vicinity=3)
    cache.refresh(_kv(list(range(20))), 8, 12)
    step = cache.window(8, 12, 20)
    first = 8 - 3 - (1 if shift else 0)
    assert (step.start, step.end) == (first, end)
    suffix = [] if mode == "prefix" else list(range(12, 20))
    assert _positions(step.past) == [*range(first), *suffix]  # exactly the positions not queried
    wide = BlockCache("prefix", logit_shift=shift, vicinity=50)  # wider than the prefix: start at 0
    wide.refresh(_kv(list(range(20))), 8, 12)
    assert wide.window(8, 12, 20).start == 0 and wide.past.length == 0


def test_pad_past_masks_ragged_and_missing_rows() -> None:
    rows = [_kv([0, 1, 2]), None, _kv([0, 5])]
    past, key_mask = pad_past(rows)
    assert key_mask.tolist() == [[True, True, True], [False, False, False], [True, True, False]]
    keys, values = past[1]
    assert keys.shape == (3, HEADS, 3, DIM)
    assert keys[2, 0, :2, 0].tolist() == [1000.0, 1005.0]
    assert values[0, 0, :, 0].tolist() == [0.0, -1.0, -2.0]
    assert pad_past([None, None]) == (None, None)
