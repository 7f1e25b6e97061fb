"""Block-diffusion SFT for the SDAR-layout demo model (sdar-demo), as SDAR and BD3-LM train.

One forward over the 2L layout `[x_t | x_0]` (docs: ../shared/reference/block-diffusion.md §0): the
noisy copy's block k attends to itself and to the clean copy's blocks < k; the clean copy is
block-causal among itself. Blocks are cut at absolute positions (position // B, the row's own positions
from 0), so the prompt's last partial block shares a block with the first answer tokens exactly as at
inference. Each (row, block) draws its own mask rate t, and the masked answer tokens are scored with
LLaDA's 1/t weight.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from vdiff.models.layers import rotary_cos_sin

from bench.demo_training import Batch, SpecialIds


def two_copy_mask(position_ids: torch.Tensor, key_mask: torch.Tensor, block_size: int) -> torch.Tensor:
    """[B, 1, 2N, 2N] bool (True = attend) over `[x_t | x_0]`, both copies at the same positions."""
    blocks = position_ids // block_size
    query, key = blocks[:, :, None], blocks[:, None, :]
    noisy_to_noisy = query == key
    noisy_to_clean = key < query
    clean_to_clean = key <= query
    clean_to_noisy = torch.zeros_like(noisy_to_noisy)
    mask = torch.cat(
        [torch.cat([noisy_to_noisy, noisy_to_clean], 2), torch.cat([clean_to_noisy, clean_to_clean], 2)], 1
    )
    keys = torch.cat([key_mask, key_mask], 1).bool()
    mask = (mask & keys[:, None, :])[:, None]
    return mask | ~mask.any(dim=-1, keepdim=True)


def block_diffusion_loss(
    model: torch.nn.Module, batch: Batch, special: SpecialIds, generator: torch.Generator
) -> torch.Tensor:
    block_size = model.block_size
    batch_size, total = batch.input_ids.shape
    width = batch.prompt_width
    canvas = total - width
    blocks = batch.position_ids // block_size
    eps = 1e-3
    t_per_block = eps + (1 - eps) * torch.rand(batch_size, int(blocks.max()) + 1, generator=generator)
    t = t_per_block.gather(1, blocks)[:, width:]
    is_masked = torch.rand(batch_size, canvas, generator=generator) < t
    forced = torch.randint(canvas, (batch_size,), generator=generator)
    is_masked[torch.arange(batch_size), forced] = True
    noisy = batch.input_ids.clone()
    noisy[:, width:][is_masked] = special.mask
    input_ids = torch.cat([noisy, batch.input_ids], 1)
    positions = torch.cat([batch.position_ids, batch.position_ids], 1)
    mask = two_copy_mask(batch.position_ids, batch.attention_mask, block_size)
    cos, sin = rotary_cos_sin(positions, model.rotary_dim, model.config.rope_theta)
    x = model.embeddings(input_ids)
    for layer in model.model.layers:
        x, _ = layer(x, cos, sin, mask, None)
    logits = model.project_logits(model.model.norm(x[:, width:total])).float()
    targets = batch.input_ids[:, width:]
    token_loss = F.cross_entropy(logits[is_masked], targets[is_masked], reduction="none")
    weights = (1.0 / t)[is_masked] / canvas
    return (token_loss * weights).sum() / batch_size
