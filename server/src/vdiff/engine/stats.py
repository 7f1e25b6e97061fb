"""Engine-wide counters the metrics layer reads (no prometheus here: plain numbers)."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field


@dataclass(slots=True)
class EngineStats:
    num_steps: int = 0
    """Engine steps that ran at least one forward."""
    num_forwards: int = 0
    """Model forwards (equals num_steps for batching models; more for unbatched remote models)."""
    num_denoising_steps: int = 0
    """Sequence-steps: one per sequence per step it took part in."""
    num_committed_tokens: int = 0
    num_prompt_tokens: int = 0
    num_generation_tokens: int = 0
    """Tokens reported to clients (end tokens and trimmed canvas positions excluded)."""
    num_requests_finished: int = 0
    num_early_exits: int = 0
    """Sequences that ended (end token / stop) with canvas positions still masked."""
    max_batch_size: int = 0
    """Largest number of sequences in one forward so far."""
    last_batch_size: int = 0
    recent_batch_sizes: deque[int] = field(default_factory=lambda: deque(maxlen=4096))
    """Sequences per step for the most recent steps."""

    def record_step(self, batch_size: int, num_forwards: int) -> None:
        self.num_steps += 1
        self.num_forwards += num_forwards
        self.num_denoising_steps += batch_size
        self.last_batch_size = batch_size
        self.max_batch_size = max(self.max_batch_size, batch_size)
        self.recent_batch_sizes.append(batch_size)
