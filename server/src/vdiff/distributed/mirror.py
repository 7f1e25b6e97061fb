"""Keys/values that stay on the rank that computed them, driven from rank 0.

Under tensor parallelism every rank's keys/values are those of its own heads. Rank 0's engine (the
policies, the block manager, model_runner's padding) handles them exactly as it handles plain tensors,
through MirroredTensor: a handle wrapping rank 0's own shard. Every operation on a handle is applied to
rank 0's shard at once and recorded; the workers replay the record (Replica.apply) before the next
forward, on their shards, under the same handles. The operations the engine uses are position-wise
(index, assign, concatenate, allocate), so each rank's result is its shard of the unsharded result.
A handle that rank 0 drops is freed on every rank. Only the record crosses process boundaries.
"""

from __future__ import annotations

import collections
import itertools
from collections.abc import Hashable, Iterable
from typing import Any

import torch

Op = tuple[Any, ...]
Handle = Hashable


class Mirror:
    """Rank 0's record of operations on mirrored tensors, sent with the next forward."""

    def __init__(self) -> None:
        self._ops: collections.deque[Op] = collections.deque()  # append/popleft are thread-safe
        self._handles = itertools.count()

    def wrap(self, local: torch.Tensor, handle: Handle | None = None) -> MirroredTensor:
        return MirroredTensor(self, local, next(self._handles) if handle is None else handle)

    def record(self, op: Op) -> None:
        self._ops.append(op)

    def take_ops(self) -> list[Op]:
        ops = []
        while self._ops:
            ops.append(self._ops.popleft())
        return ops


def _handle_of(value: Any) -> Any:
    if isinstance(value, MirroredTensor):
        return ("handle", value.handle)
    if isinstance(value, torch.Tensor):
        return ("value", value.cpu())
    return ("value", value)


def _check_index(index: Any) -> None:
    parts = index if isinstance(index, tuple) else (index,)
    if any(isinstance(part, (MirroredTensor, torch.Tensor)) for part in parts):
        raise TypeError("a mirrored key/value tensor can only be indexed by ints and slices")


class MirroredTensor:
    """Rank 0's shard of a tensor every rank holds its own shard of (the engine's view of a KV tensor)."""

    __slots__ = ("handle", "local", "mirror")

    def __init__(self, mirror: Mirror, local: torch.Tensor, handle: Handle) -> None:
        self.mirror, self.local, self.handle = mirror, local, handle

    def __del__(self) -> None:
        try:  # noqa: SIM105 - contextlib may already be gone at interpreter shutdown
            self.mirror.record(("free", self.handle))
        except Exception:  # interpreter shutdown
            pass

    def __repr__(self) -> str:
        return f"MirroredTensor(handle={self.handle!r}, local={tuple(self.local.shape)})"

    # ------------------------------------------------------------------ metadata (rank 0's shard)
    @property
    def shape(self) -> torch.Size:
        return self.local.shape

    @property
    def dtype(self) -> torch.dtype:
        return self.local.dtype

    @property
    def device(self) -> torch.device:
        return self.local.device

    @property
    def ndim(self) -> int:
        return self.local.ndim

    def dim(self) -> int:
        return self.local.dim()

    def size(self, dim: int | None = None) -> Any:
        return self.local.size() if dim is None else self.local.size(dim)

    def numel(self) -> int:
        return self.local.numel()

    def element_size(self) -> int:
        return self.local.element_size()

    # ------------------------------------------------------------------ recorded operations
    def __getitem__(self, index: Any) -> MirroredTensor:
        _check_index(index)
        out = self.mirror.wrap(self.local[index])
        self.mirror.record(("index", out.handle, self.handle, index))
        return out

    def __setitem__(self, index: Any, value: Any) -> None:
        _check_index(index)
        self.local[index] = value.local if isinstance(value, MirroredTensor) else value
        self.mirror.record(("setitem", self.handle, index, _handle_of(value)))

    def _new(self, kind: str, size: tuple[Any, ...], kwargs: dict[str, Any]) -> MirroredTensor:
        device = kwargs.pop("device", None)
        if device is not None and torch.device(device) != self.local.device:
            raise TypeError(f"mirrored tensors stay on their rank's device, not {device}")
        dtype = kwargs.pop("dtype", None)
        if kwargs:
            raise TypeError(f"{kind}: unsupported arguments {sorted(kwargs)} for a mirrored tensor")
        shape = tuple(size[0]) if len(size) == 1 and not isinstance(size[0], int) else tuple(size)
        local = getattr(self.local, kind)(shape, dtype=dtype)
        out = self.mirror.wrap(local)
        self.mirror.record(("new", out.handle, self.handle, kind, shape, dtype))
        return out

    def new_empty(self, *size: Any, **kwargs: Any) -> MirroredTensor:
        return self._new("new_empty", size, kwargs)

    def new_zeros(self, *size: Any, **kwargs: Any) -> MirroredTensor:
        return self._new("new_zeros", size, kwargs)

    @classmethod
    def __torch_function__(cls, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        if func is torch.cat:
            tensors = args[0]
            dim = args[1] if len(args) > 1 else kwargs.get("dim", 0)
            if not all(isinstance(tensor, MirroredTensor) for tensor in tensors):
                raise TypeError("torch.cat mixes mirrored and plain tensors")
            mirror = tensors[0].mirror
            out = mirror.wrap(torch.cat([tensor.local for tensor in tensors], dim=dim))
            mirror.record(("cat", out.handle, [tensor.handle for tensor in tensors], dim))
            return out
        raise TypeError(f"{getattr(func, '__name__', func)} is not supported on a mirrored key/value tensor")


class Replica:
    """A worker's tensors under rank 0's handles, kept in step by replaying rank 0's record."""

    def __init__(self) -> None:
        self.tensors: dict[Handle, torch.Tensor] = {}

    def _value(self, encoded: tuple[str, Any], device: torch.device) -> Any:
        kind, value = encoded
        if kind == "handle":
            return self.tensors[value]
        return value.to(device) if isinstance(value, torch.Tensor) else value

    def apply(self, ops: Iterable[Op]) -> None:
        tensors = self.tensors
        for op in ops:
            kind = op[0]
            if kind == "free":
                tensors.pop(op[1], None)
            elif kind == "index":
                tensors[op[1]] = tensors[op[2]][op[3]]
            elif kind == "setitem":
                target = tensors[op[1]]
                target[op[2]] = self._value(op[3], target.device)
            elif kind == "new":
                _, out, like, method, shape, dtype = op
                tensors[out] = getattr(tensors[like], method)(shape, dtype=dtype)
            elif kind == "cat":
                tensors[op[1]] = torch.cat([tensors[handle] for handle in op[2]], dim=op[3])
            else:
                raise ValueError(f"unknown mirrored operation {kind!r}")

    def store(self, handle: Handle, tensor: torch.Tensor) -> None:
        self.tensors[handle] = tensor

    def __len__(self) -> int:
        return len(self.tensors)
