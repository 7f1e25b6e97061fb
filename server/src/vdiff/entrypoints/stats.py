"""Feeds engine-side numbers (queue sizes, per-step batch sizes) into the metrics; logs them periodically."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from vdiff.engine.protocol import EngineClient
from vdiff.metrics import SchedulerSnapshot, ServerMetrics, StepStats

if TYPE_CHECKING:
    from vdiff.entrypoints.server_state import ServerState

logger = logging.getLogger("vdiff.stats")


def _core_engine(engine: EngineClient) -> Any:
    """The synchronous LLMEngine behind an EngineClient (it owns .scheduler and .stats), if reachable."""
    for candidate in (getattr(engine, "engine", None), engine):
        if candidate is not None and hasattr(candidate, "scheduler") and hasattr(candidate, "stats"):
            return candidate
    return None


class EngineStatsPoller:
    """Turns the engine's plain counters into metric observations; poll() before each scrape."""

    def __init__(self, engine: EngineClient, metrics: ServerMetrics) -> None:
        self.core = _core_engine(engine)
        self.metrics = metrics
        self.steps_seen = 0
        self.committed_seen = 0
        self.drafts_seen = (0, 0, 0)
        self.accepted_per_position_seen: list[int] = []
        if self.core is not None:
            metrics.bind_scheduler(self.snapshot)

    def snapshot(self) -> SchedulerSnapshot:
        scheduler = self.core.scheduler
        # The scheduler drops finished sequences only at its next schedule(); don't count them as running.
        num_running = sum(1 for seq in list(scheduler.running) if not seq.is_finished)
        return SchedulerSnapshot(num_running, scheduler.num_waiting_seqs)

    def poll(self) -> None:
        if self.core is None:
            return
        stats = self.core.stats
        self._poll_drafts(stats)
        num_steps, committed = stats.num_steps, stats.num_committed_tokens
        new_steps = num_steps - self.steps_seen
        if new_steps <= 0:
            return
        recent = list(stats.recent_batch_sizes)[-new_steps:]
        tokens_per_step = (committed - self.committed_seen) / new_steps
        self.metrics.record_steps([StepStats(size, tokens_per_step) for size in recent])
        missed = new_steps - len(recent)  # more steps than the engine remembers: count them, sizes unknown
        if missed > 0:
            self.metrics.engine_steps.labels(model_name=self.metrics.model_name).inc(missed)
        self.steps_seen, self.committed_seen = num_steps, committed

    def _poll_drafts(self, stats: Any) -> None:
        totals = (stats.num_spec_drafts, stats.num_spec_draft_tokens, stats.num_spec_accepted_tokens)
        if totals == self.drafts_seen:
            return
        per_position = list(stats.num_spec_accepted_per_position)
        seen = self.accepted_per_position_seen + [0] * (
            len(per_position) - len(self.accepted_per_position_seen)
        )
        self.metrics.record_drafts(
            *(now - before for now, before in zip(totals, self.drafts_seen, strict=True)),
            [now - before for now, before in zip(per_position, seen, strict=True)],
        )
        self.drafts_seen, self.accepted_per_position_seen = totals, per_position


def bind_engine_stats(engine: EngineClient, metrics: ServerMetrics) -> EngineStatsPoller:
    return EngineStatsPoller(engine, metrics)


async def log_stats_forever(state: ServerState, interval_s: float) -> None:
    metrics, poller = state.metrics, state.stats_poller
    last_tokens = metrics.totals.generation_tokens
    last_drafts = poller.drafts_seen
    while True:
        await asyncio.sleep(interval_s)
        poller.poll()
        tokens = metrics.totals.generation_tokens
        running, waiting = metrics.totals.num_running(), metrics.totals.num_waiting()
        if tokens != last_tokens or running or waiting:
            logger.info(
                "generation throughput %.1f tokens/s, running %d seqs, waiting %d seqs",
                (tokens - last_tokens) / interval_s, running, waiting,
            )  # fmt: skip
        now_drafts = poller.drafts_seen
        drafts, draft_tokens, accepted = (a - b for a, b in zip(now_drafts, last_drafts, strict=True))
        if drafts:
            logger.info(
                "APD drafts: mean acceptance length %.2f, accepted %d of %d drafted tokens (%.1f %%)",
                1 + accepted / drafts, accepted, draft_tokens, 100 * accepted / max(draft_tokens, 1),
            )  # fmt: skip
        last_tokens, last_drafts = tokens, now_drafts
