"""Tensor-parallel building blocks: each parallel layer on 2 gloo ranks against the unsharded layer, the
head-split rule, and the mirrored key/value record against its replay."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from server.tensor_parallel_helpers import build_layers, layer_outputs, run_ranks
from vdiff.distributed.layers import plan_heads
from vdiff.distributed.mirror import Mirror, Replica
from vdiff.distributed.state import TensorParallel
from vdiff.engine.kv_cache import SequenceKV, pad_past
from vdiff.errors import VdiffValidationError

ATOL = 1e-5


@pytest.fixture(scope="module")
def full_layers(tmp_path_factory: pytest.TempPathFactory) -> tuple[torch.nn.Module, Path]:
    torch.manual_seed(0)
    layers = build_layers()
    with torch.no_grad():
        for param in layers.parameters():
            param.normal_()
    path = tmp_path_factory.mktemp("tp-layers") / "model.safetensors"
    save_file({name: param.detach().contiguous() for name, param in layers.named_parameters()}, str(path))
    return layers.eval(), path


@pytest.mark.slow
def test_every_parallel_layer_on_two_ranks_matches_the_unsharded_layer(
    full_layers: tuple[torch.nn.Module, Path], tmp_path: Path
) -> None:
    """Column shards concatenate to the full output; row-parallel partial sums, the vocabulary-parallel
    embedding and both LM heads equal the full layer on rank 0; a LLaDA block (GQA heads split, and the
    one key/value head replicated) gives the full hidden state and its heads' share of the keys/values.
    Each rank reads only its slices from the safetensors file (the real loader)."""
    layers, path = full_layers
    generator = torch.Generator().manual_seed(1)
    inputs = {
        "x8": torch.randn(2, 3, 8, generator=generator),
        "x6": torch.randn(2, 3, 6, generator=generator),
        "x16": torch.randn(2, 3, 16, generator=generator),
        "h4": torch.randn(5, 4, generator=generator),
        "ids": torch.tensor([[0, 5, 6, 10], [3, 10, 1, 7]]),
        "positions": torch.arange(3).expand(2, -1),
    }
    ranks = run_ranks(layer_outputs, (str(path), inputs), tmp_path)
    with torch.inference_mode():
        from vdiff.models.layers import rotary_cos_sin

        cos, sin = rotary_cos_sin(inputs["positions"], 4, 10000.0)
        torch.testing.assert_close(torch.cat([r["column"] for r in ranks], -1), layers.column(inputs["x8"]))
        for name, expected in (
            ("row", layers.row(inputs["x6"])),
            ("embedding", layers.embedding(inputs["ids"])),
        ):
            for rank in ranks:  # an all-reduce: every rank has the full result
                torch.testing.assert_close(rank[name], expected, atol=ATOL, rtol=ATOL)
        torch.testing.assert_close(ranks[0]["head"], layers.head(inputs["h4"]), atol=ATOL, rtol=ATOL)
        torch.testing.assert_close(
            ranks[0]["tied"], inputs["h4"] @ layers.embedding.weight.T, atol=ATOL, rtol=ATOL
        )
        for name in ("gqa_block", "mqa_block"):
            hidden, (k, v) = getattr(layers, name)(inputs["x16"], cos, sin, None, None, False)
            for rank in ranks:
                torch.testing.assert_close(rank[name], hidden, atol=ATOL, rtol=ATOL)
            for index, expected in enumerate((k, v)):
                if name == "gqa_block":  # 2 key/value heads: one per rank
                    got = torch.cat([rank[name + "_kv"][index] for rank in ranks], dim=1)
                else:  # 1 key/value head: both ranks hold it
                    got = ranks[1][name + "_kv"][index]
                torch.testing.assert_close(got, expected, atol=ATOL, rtol=ATOL)
    full_bytes = sum(p.numel() * p.element_size() for p in layers.parameters())
    assert all(rank["param_bytes"] < 0.7 * full_bytes for rank in ranks)


def test_head_split_follows_vllms_rule() -> None:
    """vllm/model_executor/layers/linear.py QKVParallelLinear: query heads must divide; key/value heads
    are split when tp divides them, else tp must be a multiple of them (each rank then holds the one
    head its query heads read)."""
    split = plan_heads(8, 4, 16, TensorParallel(1, 2))
    assert (split.num_heads, split.num_kv_heads, split.q_rows, split.kv_rows) == (4, 2, (64, 128), (32, 64))
    replicated = [plan_heads(8, 2, 16, TensorParallel(rank, 4)) for rank in range(4)]
    assert [plan.kv_rows for plan in replicated] == [(0, 16), (0, 16), (16, 32), (16, 32)]
    assert [plan.q_rows for plan in replicated] == [(0, 32), (32, 64), (64, 96), (96, 128)]
    with pytest.raises(VdiffValidationError, match="must divide the model's 6 attention heads"):
        plan_heads(6, 6, 16, TensorParallel(0, 4))
    with pytest.raises(VdiffValidationError, match="key/value heads or be a multiple"):
        plan_heads(12, 3, 16, TensorParallel(0, 2))


def test_a_replica_replaying_the_record_holds_what_rank_0_holds() -> None:
    """The engine's key/value handling (from_batch, crop, concat, pad_past's allocate-and-assign, a
    growing buffer) applied to MirroredTensor handles, replayed on a copy of the forward outputs,
    ends with the same tensors under the same handles; a dropped handle is freed in the replica."""
    mirror, replica = Mirror(), Replica()
    generator = torch.Generator().manual_seed(0)
    outputs = [(torch.randn(2, 2, 6, 3, generator=generator), torch.randn(2, 2, 6, 3, generator=generator))]
    handles = [(("out", 0, 0, 0)), (("out", 0, 0, 1))]
    replica.store(handles[0], outputs[0][0].clone())
    replica.store(handles[1], outputs[0][1].clone())
    past = [(mirror.wrap(outputs[0][0], handles[0]), mirror.wrap(outputs[0][1], handles[1]))]
    first = SequenceKV.from_batch(past, 0, 0, 4)
    second = SequenceKV.from_batch(past, 1, 2, 5).crop(2)
    joined = first.crop(3).concat(second)
    buffer = SequenceKV(
        [k.new_empty(k.shape[0], 8, k.shape[-1]) for k in joined.keys],
        [v.new_zeros(2, 8, 3) for v in joined.values],
    )
    for new, part in zip(buffer.keys + buffer.values, joined.keys + joined.values, strict=True):
        new[:, : joined.length] = part
    batched, mask = pad_past([joined, None, second], torch.device("cpu"))
    assert mask is not None and batched is not None
    del past, first
    replica.apply(mirror.take_ops())
    for mirrored in (*joined.keys, *joined.values, *batched[0]):
        torch.testing.assert_close(replica.tensors[mirrored.handle], mirrored.local, atol=0, rtol=0)
    for mirrored in buffer.keys:
        torch.testing.assert_close(
            replica.tensors[mirrored.handle][:, :5], mirrored.local[:, :5], atol=0, rtol=0
        )
    live = len(replica)
    del joined, second, buffer, batched
    replica.apply(mirror.take_ops())
    assert len(replica) < live and handles[0] not in replica.tensors
    with pytest.raises(TypeError, match="not supported on a mirrored"):
        torch.stack([mirror.wrap(torch.zeros(1))])
