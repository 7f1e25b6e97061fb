"""Fast-dLLM confidence-aware parallel decoding: threshold and factor commit rules."""

from __future__ import annotations

import torch


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
    best = scores.argmax(dim=-1)
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
