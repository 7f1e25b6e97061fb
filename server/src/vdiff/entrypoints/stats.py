"""Feeds engine-side numbers (queues, per-step batch sizes) into the metrics, and logs them periodically."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from vdiff.engine.protocol import EngineClient
from vdiff.metrics import SchedulerSnapshot, ServerMetrics

if TYPE_CHECKING:
    from vdiff.entrypoints.server_state import ServerState

logger = logging.getLogger("vdiff.stats")


def bind_engine_stats(engine: EngineClient, metrics: ServerMetrics) -> None:
    """Wire the engine's scheduler counters and step statistics into the metrics."""
    scheduler_snapshot = getattr(engine, "scheduler_snapshot", None)
    if scheduler_snapshot is not None:
        metrics.bind_scheduler(lambda: SchedulerSnapshot(*scheduler_snapshot()))
    add_step_listener = getattr(engine, "add_step_listener", None)
    if add_step_listener is not None:
        add_step_listener(metrics.record_steps)


async def log_stats_forever(state: ServerState, interval_s: float) -> None:
    metrics = state.metrics
    last_tokens = metrics.totals.generation_tokens
    while True:
        await asyncio.sleep(interval_s)
        tokens = metrics.totals.generation_tokens
        running, waiting = metrics.totals.num_running(), metrics.totals.num_waiting()
        if tokens != last_tokens or running or waiting:
            logger.info(
                "generation throughput %.1f tokens/s, running %d seqs, waiting %d seqs",
                (tokens - last_tokens) / interval_s, running, waiting,
            )  # fmt: skip
        last_tokens = tokens
