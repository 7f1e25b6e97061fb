"""APD: adaptive parallel decoding with a small autoregressive verifier (Israel et al. 2025).

The dLLM drafts positions t..t+M-1 left to right from its marginals; the AR model scores the draft;
the target is the multiplicative mixture p_T ∝ p_D^R · p_AR^(1-R). Draft and target are sampled with
the same Gumbel noise (universal coupling), and the longest prefix on which they agree is accepted.
The first drafted token is always accepted: every token left of it is committed, so it is a sample of
the dLLM's exact conditional.
"""

from __future__ import annotations

import torch


def gumbel_noise(
    num_positions: int, vocab_size: int, generator: torch.Generator | None, device
) -> torch.Tensor:
    """Standard Gumbel noise [num_positions, vocab] drawn from one sequence's own generator."""
    exponential = torch.empty(num_positions, vocab_size, device=device, dtype=torch.float32)
    exponential.exponential_(generator=generator)
    return -exponential.clamp_min(1e-30).log()


def filter_logits(logits: torch.Tensor, top_k: torch.Tensor, top_p: torch.Tensor) -> torch.Tensor:
    """Top-k / top-p filtering per row; logits [B, M, V], top_k [B] (<=0: off), top_p [B] (1: off)."""
    vocab_size = logits.shape[-1]
    sorted_logits, order = logits.sort(dim=-1, descending=True)
    rank = torch.arange(vocab_size, device=logits.device).view(1, 1, vocab_size)
    k = torch.where(top_k > 0, top_k, torch.full_like(top_k, vocab_size)).view(-1, 1, 1)
    drop = (rank >= k).expand_as(logits).clone()
    probs = sorted_logits.masked_fill(drop, float("-inf")).softmax(dim=-1)
    mass_before = probs.cumsum(dim=-1) - probs
    drop |= mass_before >= top_p.to(probs).view(-1, 1, 1)
    drop[..., 0] = False
    removed = torch.zeros_like(drop).scatter(-1, order, drop)
    return logits.masked_fill(removed, float("-inf"))


def coupled_sample(
    log_probs: torch.Tensor,
    temperature: torch.Tensor,
    gumbel: torch.Tensor | None,
    top_k: torch.Tensor | None = None,
    top_p: torch.Tensor | None = None,
) -> torch.Tensor:
    """argmax(filter(log_probs / T) + g) per position; greedy for rows with T = 0.

    log_probs [B, M, V], temperature [B], gumbel [B, M, V] (shared by draft and target).
    """
    temperature = temperature.to(log_probs).view(-1, 1, 1)
    is_sampled = temperature > 0
    scaled = log_probs / torch.where(is_sampled, temperature, torch.ones_like(temperature))
    if top_k is not None and top_p is not None:
        scaled = filter_logits(scaled, top_k, top_p)
    if gumbel is not None:
        scaled = torch.where(is_sampled, scaled + gumbel, scaled)
    return scaled.argmax(dim=-1)


def mixture_log_probs(
    dllm_log_probs: torch.Tensor, ar_log_probs: torch.Tensor, mixture_weight: torch.Tensor
) -> torch.Tensor:
    """R · log p_D + (1 - R) · log p_AR (unnormalized log of the geometric mixture), R [B]."""
    weight = mixture_weight.to(dllm_log_probs).view(-1, 1, 1)
    return weight * dllm_log_probs + (1 - weight) * ar_log_probs


def num_accepted(draft: torch.Tensor, target: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Length of the longest prefix where draft == target, the first token always accepted.

    draft, target [B, M] token ids; lengths [B] drafted positions per row (>= 1; ragged rows).
    """
    positions = torch.arange(draft.shape[1], device=draft.device).view(1, -1)
    agrees = (draft == target) | (positions == 0)
    agrees &= positions < lengths.view(-1, 1)
    return agrees.to(torch.int64).cumprod(dim=-1).sum(dim=-1)
