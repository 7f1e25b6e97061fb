"""Binds the metrics to the engine's stats snapshots (EngineClient.get_stats_snapshot); the stats log."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from vdiff.engine.protocol import EngineClient
from vdiff.engine.stats import EngineStatsSnapshot
from vdiff.entrypoints.openai.serving_base import engine_max_model_len
from vdiff.metrics import ServerMetrics

if TYPE_CHECKING:
    from vdiff.entrypoints.server_state import ServerState

logger = logging.getLogger("vdiff.stats")


class EngineStatsPoller:
    """The engine's latest stats snapshot, for the metrics (read at scrape time) and the stats log line.

    Only the EngineClient interface is used: the snapshot is built on the engine thread."""

    def __init__(self, engine: EngineClient, metrics: ServerMetrics) -> None:
        self.engine = engine
        self.metrics = metrics
        self.logged = EngineStatsSnapshot()
        """The snapshot the stats log line last reported (the next line reports the change since)."""
        metrics.bind_engine(self.snapshot, engine_max_model_len(engine))

    def snapshot(self) -> EngineStatsSnapshot:
        return self.engine.get_stats_snapshot() or EngineStatsSnapshot()

    def poll(self) -> None:
        """Nothing to do: the metrics read the snapshot when they are collected (kept for callers)."""


def bind_engine_stats(engine: EngineClient, metrics: ServerMetrics) -> EngineStatsPoller:
    return EngineStatsPoller(engine, metrics)


async def log_stats_forever(state: ServerState, interval_s: float) -> None:
    poller = state.stats_poller
    while True:
        await asyncio.sleep(interval_s)
        last, now = poller.logged, poller.snapshot()
        tokens = now.num_generation_tokens - last.num_generation_tokens
        prompt = now.num_prompt_tokens - last.num_prompt_tokens
        if tokens or prompt or now.num_running_seqs or now.num_waiting_seqs:
            logger.info(
                "prompt throughput %.1f tokens/s, generation throughput %.1f tokens/s, running %d seqs, "
                "waiting %d seqs",
                prompt / interval_s, tokens / interval_s, now.num_running_seqs, now.num_waiting_seqs,
            )  # fmt: skip
        drafts = now.num_spec_drafts - last.num_spec_drafts
        draft_tokens = now.num_spec_draft_tokens - last.num_spec_draft_tokens
        accepted = now.num_spec_accepted_tokens - last.num_spec_accepted_tokens
        if drafts:
            logger.info(
                "APD drafts: mean acceptance length %.2f, accepted %d of %d drafted tokens (%.1f %%)",
                1 + accepted / drafts, accepted, draft_tokens, 100 * accepted / max(draft_tokens, 1),
            )  # fmt: skip
        poller.logged = now
