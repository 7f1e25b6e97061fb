"""Megatron-style tensor-parallel layers; with one rank each is exactly its torch counterpart.

Column-parallel linears (q/k/v, gate/up) hold a block of output rows and need no communication;
row-parallel linears (attention output, MLP down) hold a block of input columns and all-reduce their
partial sums, once per attention and once per MLP block. The embedding and the LM head split the
vocabulary (padded to a multiple of the ranks): a token's embedding comes from the one rank holding
its row (the others add zeros), and the logits of every rank are gathered, concatenated, on rank 0.

Every parallel module lists the checkpoint slice each of its parameters is read from in `tp_slices`,
so the loader reads only that slice of the safetensors file (models.loader).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from vdiff.distributed.state import TensorParallel, building_state
from vdiff.errors import VdiffValidationError

TP_FLAG = "--tensor-parallel-size"


@dataclass(frozen=True, slots=True)
class Slice:
    """Read [start, stop) of dimension `dim` of the stored tensor, zero-padded to `size` along it."""

    dim: int
    start: int
    stop: int
    size: int
    pieces: tuple[tuple[int, int], ...] = ()
    """A fused layer's ranges [start, stop) read one after another (then start/stop are the outer span)."""


def _divide(total: int, world_size: int, what: str) -> int:
    if total % world_size:
        raise VdiffValidationError(f"{TP_FLAG} {world_size} must divide the model's {total} {what}", TP_FLAG)
    return total // world_size


class ColumnParallelLinear(nn.Linear):
    """Output rows [start, stop) of the full layer (default: this rank's equal share)."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool,
        *,
        rows: tuple[int, int] | None = None,
        what: str = "output features",
    ) -> None:
        tp = building_state()
        if rows is None:
            part = _divide(out_features, tp.world_size, what)
            rows = (tp.rank * part, (tp.rank + 1) * part)
        start, stop = rows
        super().__init__(in_features, stop - start, bias=bias)
        self.tp = tp
        self.tp_slices: dict[str, Slice] = {}
        if tp.is_parallel:
            self.tp_slices = {"weight": Slice(0, start, stop, stop - start)}
            if bias:
                self.tp_slices["bias"] = Slice(0, start, stop, stop - start)


class FusedColumnParallelLinear(nn.Linear):
    """Column-parallel over a fused weight (LLaDA2's query_key_value: rows [Q ; K ; V]): this rank reads
    its rows of each part, concatenated in the same order."""

    def __init__(self, in_features: int, pieces: list[tuple[int, int]], bias: bool) -> None:
        tp = building_state()
        size = sum(stop - start for start, stop in pieces)
        super().__init__(in_features, size, bias=bias)
        self.tp = tp
        self.tp_slices: dict[str, Slice] = {}
        if tp.is_parallel:
            spec = Slice(0, pieces[0][0], pieces[-1][1], size, tuple(pieces))
            self.tp_slices = {"weight": spec} | ({"bias": spec} if bias else {})


class RowParallelLinear(nn.Linear):
    """Input columns of this rank's share; partial outputs are summed over the ranks, then the bias
    (held whole by every rank) is added once. reduce=False returns the partial output (an MoE block sums
    its experts' partials first and all-reduces once)."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool,
        *,
        what: str = "input features",
        reduce: bool = True,
    ) -> None:
        tp = building_state()
        part = _divide(in_features, tp.world_size, what)
        if bias and not reduce:
            raise ValueError("a partial (reduce=False) row-parallel linear cannot have a bias")
        super().__init__(part, out_features, bias=bias)
        self.tp = tp
        self.reduce = reduce
        self.tp_slices: dict[str, Slice] = {}
        if tp.is_parallel:
            self.tp_slices = {"weight": Slice(1, tp.rank * part, (tp.rank + 1) * part, part)}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.tp.is_parallel:
            return super().forward(x)
        out = F.linear(x, self.weight)
        if not self.reduce:
            return out
        out = self.tp.all_reduce(out)
        return out if self.bias is None else out + self.bias


def vocab_share(vocab_size: int, tp: TensorParallel) -> tuple[int, int, int]:
    """(start, stop, part): this rank's rows of a vocabulary padded to a multiple of the ranks."""
    part = -(-vocab_size // tp.world_size)
    start = min(tp.rank * part, vocab_size)
    return start, min(start + part, vocab_size), part


class VocabParallelEmbedding(nn.Embedding):
    def __init__(self, num_embeddings: int, embedding_dim: int) -> None:
        tp = building_state()
        start, stop, part = vocab_share(num_embeddings, tp)
        super().__init__(part if tp.is_parallel else num_embeddings, embedding_dim)
        self.tp = tp
        self.vocab_size, self.vocab_start = num_embeddings, start
        self.tp_slices: dict[str, Slice] = {"weight": Slice(0, start, stop, part)} if tp.is_parallel else {}

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        if not self.tp.is_parallel:
            return super().forward(input_ids)
        local = input_ids - self.vocab_start
        outside = (local < 0) | (local >= self.weight.shape[0])
        out = F.embedding(local.masked_fill(outside, 0), self.weight)
        return self.tp.all_reduce(out.masked_fill(outside[..., None], 0))

    def project(self, hidden: torch.Tensor) -> torch.Tensor:
        """The tied LM head: logits over the whole vocabulary on rank 0."""
        return self.tp.gather_last_dim(F.linear(hidden, self.weight), self.vocab_size)


class ParallelLMHead(nn.Linear):
    """The untied LM head, vocabulary rows split like VocabParallelEmbedding; logits gathered on rank 0."""

    def __init__(self, in_features: int, vocab_size: int, bias: bool) -> None:
        tp = building_state()
        start, stop, part = vocab_share(vocab_size, tp)
        super().__init__(in_features, part if tp.is_parallel else vocab_size, bias=bias)
        self.tp = tp
        self.vocab_size = vocab_size
        self.tp_slices: dict[str, Slice] = {}
        if tp.is_parallel:
            self.tp_slices = {"weight": Slice(0, start, stop, part)}
            if bias:
                self.tp_slices["bias"] = Slice(0, start, stop, part)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.tp.gather_last_dim(super().forward(hidden), self.vocab_size)


@dataclass(frozen=True, slots=True)
class HeadPlan:
    """This rank's attention heads: a block of query heads and the key/value heads they read."""

    num_heads: int
    num_kv_heads: int
    q_rows: tuple[int, int]
    kv_rows: tuple[int, int]


def plan_heads(num_heads: int, num_kv_heads: int, head_dim: int, tp: TensorParallel) -> HeadPlan:
    """Query heads split evenly; key/value heads split when the ranks divide them, else each rank holds
    the one its query heads read (replicated over world_size / num_kv_heads ranks). The rule of vLLM's
    QKVParallelLinear (vllm/model_executor/layers/linear.py): anything else is refused."""
    world, rank = tp.world_size, tp.rank
    local_heads = _divide(num_heads, world, "attention heads")
    if num_kv_heads % world == 0:
        local_kv = num_kv_heads // world
        first_kv = rank * local_kv
    elif world % num_kv_heads == 0:
        local_kv, first_kv = 1, rank * num_kv_heads // world
    else:
        raise VdiffValidationError(
            f"{TP_FLAG} {world} must divide the model's {num_kv_heads} key/value heads or be a multiple "
            "of them",
            TP_FLAG,
        )
    q_start = rank * local_heads * head_dim
    kv_start = first_kv * head_dim
    return HeadPlan(
        local_heads,
        local_kv,
        (q_start, q_start + local_heads * head_dim),
        (kv_start, kv_start + local_kv * head_dim),
    )
