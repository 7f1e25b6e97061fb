"""This process's place in the tensor-parallel group: rank, world size and the collectives layers use."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist


@dataclass(frozen=True, slots=True)
class TensorParallel:
    rank: int = 0
    world_size: int = 1
    group: Any = None
    """The process group of the compute collectives (NCCL on CUDA, gloo on CPU); None when world_size 1."""

    @property
    def is_parallel(self) -> bool:
        return self.world_size > 1

    def partition(self, size: int) -> tuple[int, int]:
        """[start, stop) of this rank's equal share of `size` (size must divide)."""
        part = size // self.world_size
        return self.rank * part, (self.rank + 1) * part

    def all_reduce(self, tensor: torch.Tensor) -> torch.Tensor:
        if self.is_parallel:
            dist.all_reduce(tensor, group=self.group)
        return tensor

    def gather_last_dim(self, tensor: torch.Tensor, size: int) -> torch.Tensor:
        """Every rank's [..., part] on rank 0 as [..., size] (the parts concatenated, padding dropped);
        other ranks get their own part back (callers ignore it)."""
        if not self.is_parallel:
            return tensor
        tensor = tensor.contiguous()
        parts = [torch.empty_like(tensor) for _ in range(self.world_size)] if self.rank == 0 else None
        dist.gather(tensor, parts, dst=0, group=self.group)
        if parts is None:
            return tensor
        return torch.cat(parts, dim=-1)[..., :size]


SINGLE = TensorParallel()
_building: TensorParallel = SINGLE


def building_state() -> TensorParallel:
    """The state modules built now are sharded for (SINGLE outside `build_sharded`)."""
    return _building


@contextlib.contextmanager
def build_sharded(state: TensorParallel) -> Iterator[None]:
    """Modules constructed inside hold only `state.rank`'s slices of their weights."""
    global _building
    previous, _building = _building, state
    try:
        yield
    finally:
        _building = previous
