"""The engine interface the HTTP layer codes against (vLLM's EngineClient, trimmed to what we use)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from vdiff.config import EngineConfig
    from vdiff.engine.outputs import RequestOutput
    from vdiff.engine.stats import EngineStatsSnapshot
    from vdiff.sampling_params import SamplingParams
    from vdiff.tokenizer import TokenizerInfo


class EngineClient(ABC):
    config: EngineConfig
    tokenizer_info: TokenizerInfo

    @abstractmethod
    def generate(
        self, prompt_token_ids: list[int], params: SamplingParams, request_id: str
    ) -> AsyncIterator[RequestOutput]:
        """Yield a RequestOutput each time the commit frontier of any of the n generations advances.

        Raises VdiffValidationError (400), QueueFullError (429), EngineDrainingError / EngineDeadError (503).
        Cancelling the consumer (or calling abort) frees the request's batch slot within one step.
        """

    @abstractmethod
    async def abort(self, request_id: str) -> None: ...

    @abstractmethod
    async def check_health(self) -> None:
        """Raise EngineDeadError when the engine loop is dead."""

    @property
    @abstractmethod
    def is_running(self) -> bool: ...

    @property
    @abstractmethod
    def errored(self) -> bool: ...

    @abstractmethod
    async def drain(self, grace_period_s: float) -> None:
        """Stop accepting requests, wait up to grace_period_s for in-flight ones, abort the rest."""

    @abstractmethod
    async def shutdown(self) -> None: ...

    def get_stats_snapshot(self) -> EngineStatsSnapshot | None:
        """The engine's counters and queue sizes, safe to read from any thread (None: not reported)."""
        return None
