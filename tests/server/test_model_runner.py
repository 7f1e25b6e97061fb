"""The model runner batches sequences into as few forwards as padding allows, with per-row results
that do not depend on what else is in the batch."""

from __future__ import annotations

from pathlib import Path

import torch
from vdiff.config import EngineConfig
from vdiff.engine.decoding.base import ForwardRequest
from vdiff.engine.kv_cache import SequenceKV
from vdiff.engine.llm_engine import LLMEngine
from vdiff.engine.model_runner import group_by_query_length


def _request(num_queries: int) -> ForwardRequest:
    return ForwardRequest(
        torch.zeros(1, num_queries, dtype=torch.int64), torch.arange(num_queries), torch.arange(1)
    )


def test_groups_never_pad_a_row_to_more_than_twice_its_queries() -> None:
    lengths = [48, 192, 48, 40, 192, 100, 96]
    groups = group_by_query_length([_request(length) for length in lengths])
    assert sorted(index for group in groups for index in group) == list(range(len(lengths)))
    assert groups == [[1, 4, 5, 6], [0, 2, 3]]
    for group in groups:
        assert max(lengths[i] for i in group) <= 2 * min(lengths[i] for i in group)


def test_uniform_lengths_stay_one_forward() -> None:
    assert group_by_query_length([_request(20), _request(17), _request(12)]) == [[0, 1, 2]]


def test_a_refreshing_row_does_not_pad_the_cached_rows(llada_checkpoint: Path) -> None:
    """One sequence forwards its whole canvas (a block-cache refresh) while another forwards an 8-token
    block over cached keys: two forwards, each result equal to running that sequence alone."""
    runner = LLMEngine(EngineConfig(model=str(llada_checkpoint), device="cpu")).runner
    generator = torch.Generator().manual_seed(0)
    canvas = torch.randint(0, 50, (2, 40), generator=generator)
    full = [
        ForwardRequest(canvas[row : row + 1], torch.arange(40), torch.arange(24, 32), use_cache=True)
        for row in range(2)
    ]
    keys = runner.execute([full[1]])[0].past_key_values
    cached_keys = SequenceKV.from_batch(keys, 0, 0, 24).concat(SequenceKV.from_batch(keys, 0, 32, 40))
    block = ForwardRequest(canvas[1:2, 24:32], torch.arange(24, 32), torch.arange(8), past=[cached_keys])

    alone = [runner.execute([request])[0].logits for request in (full[0], block)]
    before = runner.num_forwards
    together = runner.execute([full[0], block])
    assert runner.num_forwards - before == 2
    for expected, result in zip(alone, together, strict=True):
        assert torch.allclose(result.logits, expected, atol=1e-5)
    assert torch.allclose(together[1].logits, runner.execute([full[1]])[0].logits, atol=1e-4)
