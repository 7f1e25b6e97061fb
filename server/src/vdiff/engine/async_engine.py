"""AsyncLLMEngine: the EngineClient the HTTP layer uses; the LLMEngine step loop runs in its own thread.

All engine state is touched by the engine thread only. The event loop admits requests (the input
processor: resolve and check, once, read-only), then sends the frozen request and abort commands
through a thread-safe queue; the thread applies them between steps and pushes every RequestOutput into
the request's asyncio.Queue with loop.call_soon_threadsafe. Model forwards release the GIL, so the
event loop stays responsive while the engine computes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

from vdiff.config import EngineConfig
from vdiff.engine.block_manager import BLOCK_SIZE
from vdiff.engine.input_processor import EngineRequest
from vdiff.engine.llm_engine import LLMEngine
from vdiff.engine.outputs import RequestOutput
from vdiff.engine.protocol import EngineClient
from vdiff.engine.stats import EngineStats, EngineStatsSnapshot, StatsPublisher
from vdiff.errors import EngineDeadError, EngineDrainingError, VdiffValidationError
from vdiff.sampling_params import SamplingParams

logger = logging.getLogger(__name__)

IDLE_POLL_S = 0.5


@dataclass(slots=True)
class _Stream:
    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue[RequestOutput | BaseException]


@dataclass(slots=True)
class _Add:
    request: EngineRequest
    accepted: asyncio.Future[None]


@dataclass(slots=True)
class _Abort:
    request_id: str


def _settle(future: asyncio.Future[None], error: BaseException | None) -> None:
    if future.done():
        return
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(error)


class AsyncLLMEngine(EngineClient):
    def __init__(self, engine: LLMEngine) -> None:
        self.engine = engine
        self.config = engine.config
        self.tokenizer_info = engine.tokenizer_info
        self._commands: queue.SimpleQueue[_Add | _Abort] = queue.SimpleQueue()
        self._wakeup = threading.Event()
        self._streams: dict[str, _Stream] = {}
        self._streams_lock = threading.Lock()
        self._dead_error: BaseException | None = None
        self._draining = False
        self._stopping = False
        defaults = engine.input_processor.resolve(SamplingParams())
        self._stats_publisher = StatsPublisher(
            engine.stats, block_size=BLOCK_SIZE, kv_cache=str(getattr(defaults, "kv_cache", "none"))
        )
        self._thread = threading.Thread(target=self._run, name="vdiff-engine", daemon=True)
        self._thread.start()

    @classmethod
    def from_config(cls, config: EngineConfig) -> AsyncLLMEngine:
        return cls(LLMEngine(config))

    # ------------------------------------------------------------ EngineClient
    async def generate(
        self, prompt_token_ids: list[int], params: SamplingParams, request_id: str
    ) -> AsyncIterator[RequestOutput]:
        self._check_accepting()
        request = self.engine.process_request(prompt_token_ids, params, request_id)
        loop = asyncio.get_running_loop()
        stream = _Stream(loop, asyncio.Queue())
        with self._streams_lock:
            if request_id in self._streams:
                raise VdiffValidationError(f"Request id {request_id!r} is already in use", "request_id")
            self._streams[request_id] = stream
        finished = False
        try:
            accepted: asyncio.Future[None] = loop.create_future()
            self._send(_Add(request, accepted))
            if self._dead_error is not None:  # died before it could see the command
                raise EngineDeadError("The engine loop died")
            await accepted
            while True:
                item = await stream.queue.get()
                if isinstance(item, BaseException):
                    finished = True
                    raise item
                finished = item.finished
                yield item
                if finished:
                    return
        finally:
            with self._streams_lock:
                self._streams.pop(request_id, None)
            if not finished and self._dead_error is None:
                self._send(_Abort(request_id))

    async def abort(self, request_id: str) -> None:
        self._send(_Abort(request_id))

    async def check_health(self) -> None:
        if self._dead_error is not None:
            raise EngineDeadError(f"The engine loop died: {self._dead_error!r}") from self._dead_error
        if not self._thread.is_alive():
            raise EngineDeadError("The engine loop is not running")

    @property
    def is_running(self) -> bool:
        return self._thread.is_alive() and self._dead_error is None and not self._stopping

    @property
    def errored(self) -> bool:
        return self._dead_error is not None

    @property
    def dead_error(self) -> BaseException | None:
        return self._dead_error

    @property
    def is_draining(self) -> bool:
        return self._draining

    async def drain(self, grace_period_s: float) -> None:
        self._draining = True
        deadline = time.monotonic() + grace_period_s
        while self._has_work() and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        with self._streams_lock:
            remaining = list(self._streams)
        for request_id in remaining:
            self._send(_Abort(request_id))
        abort_deadline = time.monotonic() + 5.0
        while self._has_work() and time.monotonic() < abort_deadline:
            await asyncio.sleep(0.01)

    async def shutdown(self) -> None:
        self._draining = True
        self._stopping = True
        self._wakeup.set()
        await asyncio.to_thread(self._thread.join, 30)
        self._fail_streams(EngineDeadError("The engine has shut down"))

    # ----------------------------------------------------------- introspection
    def get_stats_snapshot(self) -> EngineStatsSnapshot:
        """The engine's counters and queue sizes as of its latest loop turn (built on the engine thread)."""
        return self._stats_publisher.latest

    @property
    def stats(self) -> EngineStats:
        return self.engine.stats

    @property
    def num_in_flight(self) -> int:
        with self._streams_lock:
            return len(self._streams)

    @property
    def num_running_seqs(self) -> int:
        return self.engine.num_running_seqs

    @property
    def num_waiting_requests(self) -> int:
        return self.engine.num_waiting_requests

    @property
    def max_model_len(self) -> int:
        return self.engine.max_model_len

    # ------------------------------------------------------------ engine thread
    def _check_accepting(self) -> None:
        if self._dead_error is not None or self._stopping:
            raise EngineDeadError("The engine is not running")
        if self._draining:
            raise EngineDrainingError("The server is shutting down and accepts no new requests")

    def _has_work(self) -> bool:
        alive = self._dead_error is None and self._thread.is_alive()
        return alive and (self.engine.has_unfinished_requests() or not self._commands.empty())

    def _send(self, command: _Add | _Abort) -> None:
        self._commands.put(command)
        self._wakeup.set()

    def _run(self) -> None:
        try:
            while not self._stopping:
                self._wakeup.clear()
                self.engine.check_alive()
                self._apply_commands()
                self._publish_stats()
                if not self.engine.has_unfinished_requests():
                    self._wakeup.wait(IDLE_POLL_S)
                    continue
                outputs = self.engine.step()
                failures = self.engine.pop_failures()
                self._publish_stats()  # before delivering: a client that got its output sees it counted
                for output in outputs:
                    self._deliver(output.request_id, output)
                for request_id, error in failures:
                    self._deliver(request_id, error)
        except BaseException as error:  # the loop is dead: tell everyone waiting
            logger.exception("The engine loop died")
            self._dead_error = error
            dead = EngineDeadError(f"The engine loop died: {error!r}")
            self._fail_pending_adds(dead)
            self._fail_streams(dead)

    def _publish_stats(self) -> None:
        engine = self.engine
        self._stats_publisher.after(
            engine.scheduler.num_running_seqs,
            engine.scheduler.num_waiting_seqs,
            num_preemptions=engine.num_preemptions,
            kv_cache_usage=engine.kv_cache_usage,
            num_gpu_blocks=engine.cache_scheduler.blocks.num_blocks,
        )

    def _pop_commands(self) -> Iterator[_Add | _Abort]:
        """The commands queued so far, removed as they are yielded."""
        while True:
            try:
                yield self._commands.get_nowait()
            except queue.Empty:
                return

    def _apply_commands(self) -> None:
        for command in self._pop_commands():
            if isinstance(command, _Abort):
                output = self.engine.abort_request(command.request_id)
                if output is not None:
                    self._deliver(command.request_id, output)
                continue
            error: BaseException | None = None
            try:
                self.engine.add_processed(command.request)
            except Exception as exc:  # validation / queue full: the caller's problem, not the loop's
                error = exc
            self._call_in_loop(command.accepted.get_loop(), _settle, command.accepted, error)

    def _deliver(self, request_id: str, item: RequestOutput | BaseException) -> None:
        with self._streams_lock:
            stream = self._streams.get(request_id)
        if stream is not None:
            self._call_in_loop(stream.loop, stream.queue.put_nowait, item)

    def _fail_pending_adds(self, error: BaseException) -> None:
        for command in self._pop_commands():
            if isinstance(command, _Add):
                self._call_in_loop(command.accepted.get_loop(), _settle, command.accepted, error)

    def _fail_streams(self, error: BaseException) -> None:
        with self._streams_lock:
            streams = list(self._streams.values())
        for stream in streams:
            self._call_in_loop(stream.loop, stream.queue.put_nowait, error)

    @staticmethod
    def _call_in_loop(loop: asyncio.AbstractEventLoop, callback: Any, *args: Any) -> None:
        with contextlib.suppress(RuntimeError):  # the consumer's loop is already closed
            loop.call_soon_threadsafe(callback, *args)
