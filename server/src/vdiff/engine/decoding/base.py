"""The seam between the engine and an unmasking policy.

Every engine step, for every running sequence, the engine asks the sequence's policy what the
sequence contributes to the one batched forward (`prepare` -> ForwardRequest), runs that forward for
all sequences together (ModelRunner), then hands each policy the logits of its sequences (`commit`),
which writes tokens into the canvases. Frontier tracking, stop conditions and streaming are the
engine's job; a policy only decides which positions are queried and which get committed.

A policy object is shared by all sequences that use it; per-sequence state (KV-cache handles, APD
verifier caches, step counters beyond Sequence.block_index/step_in_block) lives in
`Sequence.decoding_state`, created in `init_sequence` and dropped in `release`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence as Seq
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from vdiff.errors import VdiffValidationError

if TYPE_CHECKING:
    from vdiff.config import EngineConfig
    from vdiff.engine.model_runner import ModelRunner
    from vdiff.engine.sequence import Sequence
    from vdiff.engine.stats import EngineStats
    from vdiff.models.base import KVCache
    from vdiff.tokenizer import TokenizerInfo


@dataclass(slots=True)
class ForwardRequest:
    """What one sequence feeds to the next forward.

    Rows share positions and logit indices: one row normally, two for classifier-free guidance
    (conditional, then unconditional).
    """

    input_ids: torch.Tensor
    """[rows, L] int64: the query tokens (the whole canvas, or a window of it)."""
    position_ids: torch.Tensor
    """[L] int64: canvas positions of the queries (RoPE positions)."""
    logit_indices: torch.Tensor
    """[K] int64: query indices whose logits the policy needs (already shifted for Dream)."""
    past: Seq[Any] | None = None
    """Per row, cached keys/values of other positions (vdiff.engine.kv_cache.SequenceKV-like:
    `.keys`/`.values` lists of [num_kv_heads, P, head_dim], `.length`), or None."""
    use_cache: bool = False
    """Return the keys/values of the query positions (ForwardResult.past_key_values)."""
    decided: torch.Tensor | None = None
    """[K] int64: the canvas position each logit row decides (logits processors and logprobs read it)."""

    @property
    def num_rows(self) -> int:
        return self.input_ids.shape[0]

    @property
    def num_queries(self) -> int:
        return self.input_ids.shape[1]


@dataclass(slots=True)
class ForwardResult:
    logits: torch.Tensor
    """[rows, K, vocab] float32: raw logits at ForwardRequest.logit_indices."""
    past_key_values: KVCache | None = None
    """Per layer (k, v) [rows, num_kv_heads, L, head_dim] of the query positions (use_cache only)."""


@dataclass(slots=True)
class PolicyContext:
    """What a policy may rely on about the loaded model."""

    mask_token_id: int
    logit_shift: bool
    vocab_size: int
    device: torch.device
    runner: ModelRunner
    """The target model's runner; a policy may run extra forwards (e.g. an APD verifier) in commit."""
    config: EngineConfig | None = None
    """The engine configuration (APD reads --draft-model from it)."""
    tokenizer_info: TokenizerInfo | None = None
    stats: EngineStats | None = None
    """Engine counters a policy may add to (APD records its drafts and acceptances)."""


class DecodingPolicy(ABC):
    """An unmasking rule. Subclasses register themselves with `register_policy`."""

    name: ClassVar[str]

    def __init__(self, context: PolicyContext) -> None:
        self.context = context

    def validate(self, params: Any, model_family: str) -> None:  # noqa: B027 - optional hook
        """Raise VdiffValidationError for resolved parameters this policy cannot serve."""

    def init_sequence(self, seq: Sequence) -> None:  # noqa: B027 - optional hook
        """Set up seq.decoding_state when the sequence is admitted."""

    @abstractmethod
    def prepare(self, seq: Sequence) -> ForwardRequest | None:
        """The sequence's part of the next forward, or None when it has nothing left to decode."""

    def commit(self, seqs: list[Sequence], results: list[ForwardResult]) -> None:
        """Commit tokens for every sequence of this policy in the batch (override to vectorize across
        sequences or to run a batched verifier forward)."""
        for seq, result in zip(seqs, results, strict=True):
            self.commit_one(seq, result)

    def commit_one(self, seq: Sequence, result: ForwardResult) -> None:
        raise NotImplementedError

    def release(self, seq: Sequence) -> None:
        """Free per-sequence resources when the sequence finishes or is aborted."""
        seq.decoding_state = None


_POLICIES: dict[str, type[DecodingPolicy]] = {}


def register_policy(cls: type[DecodingPolicy]) -> type[DecodingPolicy]:
    _POLICIES[cls.name] = cls
    return cls


def get_policy_class(name: str) -> type[DecodingPolicy]:
    if name not in _POLICIES:
        available = ", ".join(sorted(_POLICIES))
        raise VdiffValidationError(f"decoding {name!r} is not available (available: {available})", "decoding")
    return _POLICIES[name]


def available_policies() -> list[str]:
    return sorted(_POLICIES)
