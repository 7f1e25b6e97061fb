"""The sampling math of the reference decoders (LLaDA `generate`, Dream `diffusion_generate`).

Every function works on the masked positions of ONE sequence ([K, vocab] float32 logits) and draws
randomness only from that sequence's generator, so results never depend on what else is batched.
"""

from __future__ import annotations

import struct

import torch


def llada_transfer_schedule(num_masked: int, num_steps: int) -> list[int]:
    """How many tokens each step of a block commits: an even split, remainder to the earliest steps."""
    base, remainder = divmod(num_masked, num_steps)
    return [base + (1 if step < remainder else 0) for step in range(num_steps)]


def dream_timesteps(num_steps: int, eps: float) -> torch.Tensor:
    """Dream's time grid linspace(1, eps, steps + 1), in float32 like the reference."""
    return torch.linspace(1, eps, num_steps + 1, dtype=torch.float32)


def dream_reveal_fractions(timesteps: torch.Tensor) -> list[float]:
    """Per step, 1 - s/t in float32 as the reference computes it (exact float32 values)."""
    return (1 - timesteps[1:] / timesteps[:-1]).tolist()


def dream_num_transfer(num_masked: int, step: int, reveal_fractions: list[float]) -> int:
    """Dream's reveal count floor(#mask * (1 - s/t)), all remaining masks at the last step.

    Float32 math like the reference: the double product of two float32 values is exact, so rounding it
    to float32 gives the float32 product."""
    if step >= len(reveal_fractions) - 1:
        return num_masked
    return int(_to_float32(num_masked * reveal_fractions[step]))


def _to_float32(value: float) -> float:
    return struct.unpack("f", struct.pack("f", value))[0]


def gumbel_argmax(
    logits: torch.Tensor, temperature: float, generator: torch.Generator | None
) -> torch.Tensor:
    """LLaDA's sampler: argmax(exp(l) / (-log U)^T) in float64, i.e. a sample of softmax(l / T)."""
    if temperature == 0:
        return logits.argmax(dim=-1)
    logits = logits.to(torch.float64)
    noise = torch.rand(logits.shape, dtype=torch.float64, device=logits.device, generator=generator)
    return (logits.exp() / (-torch.log(noise)) ** temperature).argmax(dim=-1)


def top_p_logits(logits: torch.Tensor, top_p: float) -> torch.Tensor:
    """Keep the smallest set of tokens whose probability mass reaches top_p (the first always kept)."""
    sorted_logits, sorted_indices = torch.sort(logits, descending=True)
    cumulative = torch.cumsum(torch.softmax(sorted_logits, dim=-1), dim=-1)
    remove = cumulative > top_p
    remove[..., 1:] = remove[..., :-1].clone()
    remove[..., 0] = False
    mask = torch.zeros_like(logits, dtype=torch.bool).scatter_(-1, sorted_indices, remove)
    return logits.masked_fill(mask, torch.finfo(logits.dtype).min)


def top_k_logits(logits: torch.Tensor, top_k: int) -> torch.Tensor:
    top_k = min(top_k, logits.shape[-1])
    kth = torch.topk(logits, top_k)[0][..., -1, None]
    return logits.masked_fill(logits < kth, torch.finfo(logits.dtype).min)


def filter_logits(logits: torch.Tensor, top_p: float, top_k: int) -> torch.Tensor:
    if top_p < 1:
        logits = top_p_logits(logits, top_p)
    if top_k > 0:
        logits = top_k_logits(logits, top_k)
    return logits


def dream_sample_tokens(
    logits: torch.Tensor,
    temperature: float,
    top_p: float,
    top_k: int,
    confidence_kind: str,
    generator: torch.Generator | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Dream's `sample_tokens`: (confidence, token) per position.

    confidence_kind: "prob" (p of the chosen token), "margin" (p1 - p2) or "neg_entropy" (Σ p log p).
    """
    if temperature > 0:
        logits = logits / temperature
    logits = filter_logits(logits, top_p, top_k)
    probs = torch.softmax(logits, dim=-1)
    if temperature > 0 and probs.shape[0] > 0:
        tokens = torch.multinomial(probs, 1, generator=generator).squeeze(-1)
        confidence = probs.gather(-1, tokens[:, None]).squeeze(-1)
    else:
        confidence, tokens = probs.max(dim=-1)
    if confidence_kind == "margin":
        top2 = torch.topk(probs, 2, dim=-1).values
        confidence = top2[:, 0] - top2[:, 1]
    elif confidence_kind == "neg_entropy":
        confidence = torch.sum(probs * torch.log(probs + 1e-10), dim=-1)
    return confidence, tokens


def avoid_mask_token(tokens: torch.Tensor, logits: torch.Tensor, mask_token_id: int) -> torch.Tensor:
    """Replace a predicted mask token by the best other token, so a committed position never stays masked.

    Real checkpoints never predict the mask token; this only matters for degenerate models.
    """
    is_mask = tokens == mask_token_id
    if not bool(is_mask.any()):
        return tokens
    runner_up = logits.index_fill(-1, torch.tensor([mask_token_id], device=logits.device), float("-inf"))
    return torch.where(is_mask, runner_up.argmax(dim=-1), tokens)


def guidance_rows(
    canvas: torch.Tensor, prompt_len: int, mask_token_id: int, cfg_scale: float
) -> torch.Tensor:
    """[rows, L]: the canvas (a view: the runner copies it before anything commits), plus a copy with
    the prompt masked for classifier-free guidance (cfg > 0)."""
    if cfg_scale <= 0:
        return canvas.unsqueeze(0)
    unconditional = canvas.clone()
    unconditional[:prompt_len] = mask_token_id
    return torch.stack([canvas, unconditional])


_ARANGE = torch.arange(0)


def positions(start: int, end: int) -> torch.Tensor:
    """Canvas positions [start, end) as int64: a view of one shared range (read-only), so a step does
    not build a new tensor per sequence."""
    global _ARANGE
    if _ARANGE.shape[0] < end:
        _ARANGE = torch.arange(max(end, 2 * _ARANGE.shape[0]))
    return _ARANGE[start:end]


def guided_logits(logits: torch.Tensor, cfg_scale: float) -> torch.Tensor:
    """[rows, K, vocab] -> [K, vocab]: the conditional row, mixed u + (cfg + 1)(c - u) when a second
    (unconditional) row is present."""
    if logits.shape[0] != 2:
        return logits[0]
    conditional, unconditional = logits[0], logits[1]
    return unconditional + (cfg_scale + 1) * (conditional - unconditional)
