"""How much memory the KV caches may take: vLLM's --gpu-memory-utilization, or --kv-cache-memory-bytes.

On CUDA, after the weights are loaded, the largest step the scheduler may issue (--max-num-batched-tokens
query positions, without a cache) runs once on dummy tokens: what the device may hold under the
utilization, minus the memory in use at that step's peak, is the cache budget. On other devices there is
nothing to profile; the budget is --kv-cache-memory-bytes, else a tenth of the machine's memory.
"""

from __future__ import annotations

import logging
import os

import torch

from vdiff.engine.decoding.base import ForwardRequest

logger = logging.getLogger(__name__)

CPU_CACHE_FRACTION = 0.1


def kv_bytes_per_token(runner) -> int:
    """Bytes of keys and values one position costs in the model's cache (0 without a cache)."""
    if not getattr(runner.model, "supports_kv_cache", True) or not runner.supports_batching:
        return 0
    ids = torch.full((1, 2), runner.pad_token_id, dtype=torch.int64)
    before = runner.num_forwards
    [result] = runner.execute([ForwardRequest(ids, torch.arange(2), torch.arange(1), use_cache=True)])
    runner.num_forwards = before
    if result.past_key_values is None:
        return 0
    total = sum(
        k.numel() * k.element_size() + v.numel() * v.element_size() for k, v in result.past_key_values
    )
    return total // 2


def default_max_num_batched_tokens(max_model_len: int) -> int:
    return max(8192, max_model_len)


def available_bytes(utilization: float, total: int, peak_in_use: int) -> int:
    """What the caches get: the utilization's share of the device minus the profiled peak."""
    return max(0, int(utilization * total) - peak_in_use)


def profile_peak_bytes(runner, num_tokens: int, max_model_len: int) -> int:
    """CUDA: the memory in use at the peak of a step of num_tokens query positions (full canvases)."""
    device = runner.device
    length = min(num_tokens, max_model_len)
    rows = max(1, num_tokens // length)
    ids = torch.full((rows, length), runner.pad_token_id, dtype=torch.int64)
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    before = runner.num_forwards
    runner.execute([ForwardRequest(ids, torch.arange(length), torch.arange(min(length, 64)))])
    runner.num_forwards = before
    torch.cuda.synchronize(device)
    return int(torch.cuda.max_memory_allocated(device))


def cache_budget_bytes(config, runner, max_model_len: int) -> int:
    if config.kv_cache_memory_bytes is not None:
        return config.kv_cache_memory_bytes
    device = runner.device
    if device.type == "cuda":
        tokens = config.max_num_batched_tokens or default_max_num_batched_tokens(max_model_len)
        peak = profile_peak_bytes(runner, tokens, max_model_len)
        total = torch.cuda.get_device_properties(device).total_memory
        budget = available_bytes(config.gpu_memory_utilization, total, peak)
        logger.info(
            "cache budget %.2f GiB: %.0f%% of %.1f GiB minus the %.2f GiB peak of a %d-token step",
            budget / 2**30,
            100 * config.gpu_memory_utilization,
            total / 2**30,
            peak / 2**30,
            tokens,
        )
        return budget
    # tensor-parallel ranks on one CPU share its memory: each gets its part of the tenth
    ranks = max(1, getattr(config, "tensor_parallel_size", 1))
    return int(CPU_CACHE_FRACTION * os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")) // ranks
