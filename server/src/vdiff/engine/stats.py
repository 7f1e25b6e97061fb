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


ITERATION_TOKENS_BUCKETS = (1, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384)
"""vLLM's buckets for vllm:iteration_tokens_total (vllm/v1/metrics/buckets.py)."""
TOKENS_PER_STEP_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000, 50000, 100000)
BATCH_SIZE_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 256, 512)


@dataclass(slots=True)
class StepHistogram:
    """A cumulative histogram of per-step values kept by the engine thread (plain numbers, no prometheus)."""

    bounds: tuple[float, ...]
    bucket_counts: list[int] = field(default_factory=list)
    """[i]: observations <= bounds[i] (not cumulative here; the exporter accumulates)."""
    count: int = 0
    total: float = 0.0

    def __post_init__(self) -> None:
        if not self.bucket_counts:
            self.bucket_counts = [0] * len(self.bounds)

    def observe(self, value: float) -> None:
        self.count += 1
        self.total += value
        for index, bound in enumerate(self.bounds):
            if value <= bound:
                self.bucket_counts[index] += 1
                return

    def frozen(self) -> HistogramSnapshot:
        return HistogramSnapshot(self.bounds, tuple(self.bucket_counts), self.count, self.total)


@dataclass(frozen=True, slots=True)
class HistogramSnapshot:
    bounds: tuple[float, ...]
    bucket_counts: tuple[int, ...]
    count: int
    total: float


@dataclass(frozen=True, slots=True)
class EngineStatsSnapshot:
    """Everything the HTTP layer reads about the engine, built on the engine thread after each step.

    Immutable: any thread may read the latest one (EngineClient.get_stats_snapshot) without locks."""

    num_running_seqs: int = 0
    num_waiting_seqs: int = 0
    num_steps: int = 0
    num_forwards: int = 0
    num_denoising_steps: int = 0
    num_committed_tokens: int = 0
    num_prompt_tokens: int = 0
    num_generation_tokens: int = 0
    num_preemptions: int = 0
    """Running sequences preempted because the cache budget ran out (engine/cache_scheduler.py)."""
    kv_cache_usage: float = 0.0
    """Fraction of the cache budget's blocks held by sequences (engine/block_manager.py)."""
    num_gpu_blocks: int = 0
    """Blocks of BLOCK_SIZE tokens in the cache budget."""
    num_spec_drafts: int = 0
    num_spec_draft_tokens: int = 0
    num_spec_accepted_tokens: int = 0
    num_spec_accepted_per_position: tuple[int, ...] = ()
    iteration_tokens: HistogramSnapshot = field(
        default_factory=lambda: StepHistogram(ITERATION_TOKENS_BUCKETS).frozen()
    )
    tokens_committed_per_step: HistogramSnapshot = field(
        default_factory=lambda: StepHistogram(TOKENS_PER_STEP_BUCKETS).frozen()
    )
    batch_size: HistogramSnapshot = field(default_factory=lambda: StepHistogram(BATCH_SIZE_BUCKETS).frozen())
    block_size: int | None = None
    """Tokens per cache block (engine/block_manager.py BLOCK_SIZE)."""
    kv_cache: str = "none"
    """The server's default --kv-cache mode."""


class StatsPublisher:
    """Engine-thread side: turns EngineStats' running totals into per-step histograms and snapshots.

    Call after() on the engine thread once per loop turn; `latest` is what other threads read."""

    def __init__(self, stats: EngineStats, *, block_size: int | None = None, kv_cache: str = "none") -> None:
        self.stats = stats
        self.block_size, self.kv_cache = block_size, kv_cache
        self.iteration_tokens = StepHistogram(ITERATION_TOKENS_BUCKETS)
        self.tokens_committed_per_step = StepHistogram(TOKENS_PER_STEP_BUCKETS)
        self.batch_size = StepHistogram(BATCH_SIZE_BUCKETS)
        self._steps_seen = stats.num_steps
        self._committed_seen = stats.num_committed_tokens
        self._generated_seen = stats.num_generation_tokens
        self._prompt_seen = stats.num_prompt_tokens
        self.latest = EngineStatsSnapshot(block_size=block_size, kv_cache=kv_cache)

    def after(
        self,
        num_running_seqs: int,
        num_waiting_seqs: int,
        *,
        num_preemptions: int = 0,
        kv_cache_usage: float = 0.0,
        num_gpu_blocks: int = 0,
    ) -> EngineStatsSnapshot:
        stats = self.stats
        new_steps = stats.num_steps - self._steps_seen
        if new_steps > 0:
            # vLLM's iteration tokens: prompt tokens prefilled + tokens generated in the step. Here: prompt
            # tokens admitted since the previous step (their first forward is this one) + tokens it reported.
            generated = stats.num_generation_tokens - self._generated_seen
            prompt = stats.num_prompt_tokens - self._prompt_seen
            committed = stats.num_committed_tokens - self._committed_seen
            for _ in range(new_steps):  # one per loop turn in the server; spread evenly otherwise
                self.iteration_tokens.observe((prompt + generated) / new_steps)
                self.tokens_committed_per_step.observe(committed / new_steps)
                self.batch_size.observe(stats.last_batch_size)
            self._steps_seen = stats.num_steps
            self._committed_seen = stats.num_committed_tokens
            self._generated_seen = stats.num_generation_tokens
            self._prompt_seen = stats.num_prompt_tokens
        self.latest = EngineStatsSnapshot(
            num_running_seqs=num_running_seqs,
            num_waiting_seqs=num_waiting_seqs,
            num_steps=stats.num_steps,
            num_forwards=stats.num_forwards,
            num_denoising_steps=stats.num_denoising_steps,
            num_committed_tokens=stats.num_committed_tokens,
            num_prompt_tokens=stats.num_prompt_tokens,
            num_generation_tokens=stats.num_generation_tokens,
            num_preemptions=num_preemptions,
            kv_cache_usage=kv_cache_usage,
            num_gpu_blocks=num_gpu_blocks,
            num_spec_drafts=stats.num_spec_drafts,
            num_spec_draft_tokens=stats.num_spec_draft_tokens,
            num_spec_accepted_tokens=stats.num_spec_accepted_tokens,
            num_spec_accepted_per_position=tuple(stats.num_spec_accepted_per_position),
            iteration_tokens=self.iteration_tokens.frozen(),
            tokens_committed_per_step=self.tokens_committed_per_step.frozen(),
            batch_size=self.batch_size.frozen(),
            block_size=self.block_size,
            kv_cache=self.kv_cache,
        )
        return self.latest
