"""Fast-dLLM confidence-aware parallel decoding: threshold and factor commit rules."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from vdiff.engine.decoding.base import DecodingPolicy, ForwardRequest, ForwardResult, register_policy
from vdiff.engine.decoding.constrained import frontier_run, is_constrained
from vdiff.engine.decoding.sampling import (
    avoid_mask_token,
    filter_logits,
    guidance_rows,
    guided_logits,
    gumbel_argmax,
    positions,
)
from vdiff.engine.kv_cache import BlockCache, SequenceKV
from vdiff.engine.sequence import Sequence
from vdiff.errors import VdiffValidationError


def select_parallel(
    confidence: torch.Tensor,
    candidates: torch.Tensor,
    threshold: torch.Tensor,
    factor: torch.Tensor | None = None,
) -> torch.Tensor:
    """Which candidate positions to commit this step, for every row of a batch at once.

    confidence [B, L] float, candidates [B, L] bool (masked positions of the current block),
    threshold [B] in (0, 1], factor [B] (rows with factor > 0 use the factor rule instead).
    Returns commit [B, L] bool: the most confident candidate of every row that has one, plus
    - threshold rule: every candidate with confidence >= threshold (τ = 1 commits exactly one);
    - factor rule: the longest run of the sorted confidences c(1) >= c(2) >= ... with
      (i + 1) * (1 - c(i)) < factor for every i (Fast-dLLM Theorem 1).
    """
    num_rows, length = confidence.shape
    scores = confidence.float().masked_fill(~candidates, float("-inf"))
    has_candidate = candidates.any(dim=-1)
    best = scores.topk(1, dim=-1).indices.squeeze(-1)
    commit = torch.zeros_like(candidates)
    commit[torch.arange(num_rows, device=commit.device), best] = has_candidate

    threshold = threshold.to(scores).view(num_rows, 1)
    by_threshold = candidates & (scores >= threshold) & (threshold < 1)
    if factor is None:
        return commit | by_threshold

    factor = factor.to(scores).view(num_rows, 1)
    sorted_scores, order = scores.sort(dim=-1, descending=True, stable=True)
    rank = torch.arange(1, length + 1, device=scores.device, dtype=scores.dtype)
    passes = ((rank + 1) * (1 - sorted_scores) < factor) & torch.isfinite(sorted_scores)
    passes[:, 0] = True
    leading_run = passes.to(torch.int8).cumprod(dim=-1).bool()
    by_factor = torch.zeros_like(candidates).scatter(-1, order, leading_run) & candidates
    return commit | torch.where(factor > 0, by_factor, by_threshold)


@dataclass(slots=True)
class ThresholdState:
    """Per-sequence state: the pending step's queried positions and one block cache per row."""

    caches: list[BlockCache] = field(default_factory=list)
    masked: torch.Tensor | None = None
    """Canvas indices of the current block's masks queried by the pending forward."""
    is_refresh: bool = False
    num_refreshes: int = 0
    visible: int = 0
    """Canvas positions the pending forward shows the model (Sequence.visible_length)."""


@register_policy
class ThresholdPolicy(DecodingPolicy):
    """Commit every masked position of the current block whose confidence clears τ (or the factor
    rule), at least the most confident one; blocks left to right; optional Fast-dLLM block cache."""

    name = "threshold"

    def validate(self, params: Any, model_family: str) -> None:
        if params.kv_cache != "none" and not getattr(self.context.runner.model, "supports_kv_cache", True):
            raise VdiffValidationError(
                "this model is served without KV cache support; use kv_cache 'none'", "kv_cache"
            )
        if params.kv_cache == "dual" and getattr(self.context.runner.model, "is_block_causal", False):
            raise VdiffValidationError(
                "kv_cache 'dual' caches later positions, which a block-causal model never attends to; use "
                "decoding 'block' (an exact cache) or kv_cache 'prefix'",
                "kv_cache",
            )

    def init_sequence(self, seq: Sequence) -> None:
        state = ThresholdState()
        if seq.params.kv_cache in ("prefix", "dual"):
            num_rows = 2 if seq.params.cfg_scale > 0 else 1
            state.caches = [
                BlockCache(seq.params.kv_cache, self.context.logit_shift, seq.params.kv_cache_vicinity or 0)
                for _ in range(num_rows)
            ]
        seq.decoding_state = state

    def prepare(self, seq: Sequence) -> ForwardRequest | None:
        state: ThresholdState = seq.decoding_state
        block = self._current_block(seq, state)
        if block is None:
            return None
        state.visible = visible = seq.visible_length(block)
        canvas = seq.canvas[:visible]
        rows = guidance_rows(canvas, seq.prompt_len, self.context.mask_token_id, seq.params.cfg_scale)
        shift = 1 if self.context.logit_shift else 0
        if not state.caches:
            state.is_refresh = False
            return ForwardRequest(
                input_ids=rows,
                position_ids=positions(0, visible),
                logit_indices=state.masked - shift,
                decided=state.masked,
            )
        start, end = seq.prompt_len + block.start, seq.prompt_len + block.end
        windows = [cache.window(start, end, visible) for cache in state.caches]
        window = windows[0]
        state.is_refresh = window.is_refresh
        return ForwardRequest(
            input_ids=rows[:, window.start : window.end].contiguous(),
            position_ids=positions(window.start, window.end),
            logit_indices=state.masked - shift - window.start,
            past=None if window.is_refresh else [w.past for w in windows],
            use_cache=window.is_refresh,
            decided=state.masked,
        )

    def commit(self, seqs: list[Sequence], results: list[ForwardResult]) -> None:
        if not seqs:
            return
        tokens, confidence, candidates = self._sample(seqs, results)
        device = confidence.device
        threshold = torch.tensor([seq.params.threshold for seq in seqs], device=device)
        factors = [seq.params.factor or 0.0 for seq in seqs]
        factor = torch.tensor(factors, device=device) if any(factors) else None
        chosen = select_parallel(confidence, candidates, threshold, factor)
        # one gather for every sequence: (row, column) of each commit -> canvas index and token
        rows, columns = chosen.nonzero(as_tuple=True)
        canvas_indices = torch.zeros_like(tokens)
        canvas_indices[candidates] = torch.cat([seq.decoding_state.masked for seq in seqs]).to(device)
        per_row = chosen.sum(dim=-1).tolist()
        committed_indices = list(canvas_indices[rows, columns].cpu().split(per_row))
        committed_tokens = list(tokens[rows, columns].cpu().split(per_row))
        for row, seq in enumerate(seqs):
            if is_constrained(seq):  # from the frontier, while the grammar and τ (or the factor rule) accept
                count = seq.decoding_state.masked.shape[0]
                rule = chosen[row] & (
                    (confidence[row] >= threshold[row]) | (factor is not None and factors[row] > 0)
                )
                committed_indices[row], committed_tokens[row] = frontier_run(
                    seq, seq.decoding_state.masked, tokens[row, :count].cpu(), rule[:count].cpu()
                )
        for row, (seq, result) in enumerate(zip(seqs, results, strict=True)):
            state: ThresholdState = seq.decoding_state
            if state.is_refresh:
                self._refresh(seq, state, result)
            seq.commit(committed_indices[row], committed_tokens[row])
            seq.step_in_block += 1

    def _current_block(self, seq: Sequence, state: ThresholdState):
        """Skip blocks without masks (threshold decoding ignores the step budget); leaves the current
        block's masked canvas indices in state.masked."""
        while (block := seq.current_block) is not None:
            state.masked = seq.masked_positions(block.start, block.end)
            if state.masked.numel():
                return block
            seq.block_index += 1
            seq.step_in_block = 0
        return None

    def _refresh(self, seq: Sequence, state: ThresholdState, result: ForwardResult) -> None:
        block = seq.current_block
        assert block is not None and result.past_key_values is not None
        start, end = seq.prompt_len + block.start, seq.prompt_len + block.end
        for row, cache in enumerate(state.caches):
            canvas_kv = SequenceKV.from_batch(result.past_key_values, row, 0, state.visible)
            cache.refresh(canvas_kv, start, end)
        state.num_refreshes += 1

    def _sample(
        self, seqs: list[Sequence], results: list[ForwardResult]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Tokens (LLaDA's float64 Gumbel sampler, per-sequence generator) and their probabilities,
        padded to [num_seqs, max_masks]; candidates marks the real entries."""
        num_masks = [seq.decoding_state.masked.shape[0] for seq in seqs]
        width = max(num_masks)
        seq_logits = [
            guided_logits(result.logits, seq.params.cfg_scale)
            for seq, result in zip(seqs, results, strict=True)
        ]
        logits = torch.cat(seq_logits) if len(seq_logits) > 1 else seq_logits[0]
        device = logits.device
        tokens = logits.argmax(dim=-1)  # temperature 0; sampled sequences are overwritten below
        start = 0
        for seq, count, seq_logit in zip(seqs, num_masks, seq_logits, strict=True):
            params = seq.params
            if params.temperature > 0:
                sample_from = filter_logits(seq_logit, params.top_p, params.top_k)
                tokens[start : start + count] = gumbel_argmax(sample_from, params.temperature, seq.generator)
            start += count
        tokens = avoid_mask_token(tokens, logits, self.context.mask_token_id)
        confidence = torch.softmax(logits, dim=-1).gather(-1, tokens[:, None]).squeeze(-1)

        lengths = torch.tensor(num_masks, device=device)
        rows = torch.repeat_interleave(torch.arange(len(seqs), device=device), lengths)
        columns = torch.arange(tokens.shape[0], device=device) - torch.repeat_interleave(
            lengths.cumsum(0) - lengths, lengths
        )
        padded_tokens = torch.zeros(len(seqs), width, dtype=torch.int64, device=device)
        padded_tokens[rows, columns] = tokens
        padded_confidence = torch.zeros(len(seqs), width, dtype=confidence.dtype, device=device)
        padded_confidence[rows, columns] = confidence
        candidates = torch.arange(width, device=device).view(1, -1) < lengths.view(-1, 1)
        return padded_tokens, padded_confidence, candidates
