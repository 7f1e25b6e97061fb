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
    num_spec_drafts: int = 0
    """APD sequence-steps that drafted positions beyond the frontier for the verifier (vLLM's drafts)."""
    num_spec_draft_tokens: int = 0
    """Drafted positions beyond the frontier token, which is committed unverified."""
    num_spec_accepted_tokens: int = 0
    num_spec_accepted_per_position: list[int] = field(default_factory=list)
    """[i]: drafts whose i-th position beyond the frontier token was accepted."""

    def record_draft(self, num_draft_tokens: int, num_accepted_tokens: int) -> None:
        """One verified draft: positions beyond the frontier token, and how many of them were accepted."""
        if num_draft_tokens <= 0:
            return
        self.num_spec_drafts += 1
        self.num_spec_draft_tokens += num_draft_tokens
        self.num_spec_accepted_tokens += num_accepted_tokens
        per_position = self.num_spec_accepted_per_position
        if len(per_position) < num_accepted_tokens:
            per_position.extend([0] * (num_accepted_tokens - len(per_position)))
        for position in range(num_accepted_tokens):
            per_position[position] += 1

    def record_step(self, batch_size: int, num_forwards: int) -> None:
        self.num_steps += 1
        self.num_forwards += num_forwards
        self.num_denoising_steps += batch_size
        self.last_batch_size = batch_size
        self.max_batch_size = max(self.max_batch_size, batch_size)
        self.recent_batch_sizes.append(batch_size)
