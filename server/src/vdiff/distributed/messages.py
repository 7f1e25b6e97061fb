"""What rank 0 broadcasts to the workers: the whole protocol of the tensor-parallel group."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from vdiff.distributed.mirror import Handle, Op


@dataclass(slots=True)
class LoadModel:
    """Load this model's slices (every rank answers with a LoadStatus through gather_object)."""

    key: int
    config: dict[str, Any]
    """EngineConfig keyword arguments."""


@dataclass(slots=True)
class LoadStatus:
    """Each rank's answer to LoadModel."""

    error: str | None = None
    parameter_bytes: int = 0
    """Bytes of the weights this rank holds."""


def parameter_bytes(model: torch.nn.Module) -> int:
    return sum(param.numel() * param.element_size() for param in model.parameters())


@dataclass(slots=True)
class RunForward:
    """One model forward, after replaying `ops` on the mirrored keys/values."""

    key: int
    forward_id: int
    ops: list[Op]
    input_ids: torch.Tensor
    position_ids: torch.Tensor
    attention_mask: torch.Tensor | None
    past: list[tuple[Handle, Handle]] | None
    """Per layer the handles of the padded past keys and values."""
    use_cache: bool
    logits_indices: torch.Tensor | None


@dataclass(slots=True)
class Ping:
    """Nothing to do: sent when idle, so a worker's wait never reaches the collective timeout."""


@dataclass(slots=True)
class Stop:
    """Leave the loop and exit 0."""

    reason: str = field(default="shutdown")


def output_handle(forward_id: int, layer: int, is_value: bool) -> Handle:
    """The handle every rank files a forward's new keys (values) of one layer under."""
    return ("out", forward_id, layer, int(is_value))
