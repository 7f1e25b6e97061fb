"""Run the full HTTP server in a background thread of this process (tests, benchmarks, notebooks).

The server is the same app and uvicorn as `vdiff serve`, on a loopback port picked by the OS; the engine
is created inside the server's event loop. stop() drains like SIGTERM does.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import replace

from vdiff.config import EngineConfig
from vdiff.engine.protocol import EngineClient
from vdiff.entrypoints.api_server import DrainingServer, build_app, init_app_state, make_uvicorn_config
from vdiff.entrypoints.frontend_args import FrontendArgs
from vdiff.entrypoints.server_state import ServerState

EngineFactory = Callable[[EngineConfig], EngineClient]


def default_engine_factory(config: EngineConfig) -> EngineClient:
    from vdiff.engine.async_engine import AsyncLLMEngine  # torch loads only when an engine is made

    return AsyncLLMEngine.from_config(config)


class BackgroundServer:
    def __init__(
        self,
        config: EngineConfig,
        args: FrontendArgs | None = None,
        engine_factory: EngineFactory = default_engine_factory,
    ) -> None:
        self.config = config
        self.args = replace(args or FrontendArgs(), host="127.0.0.1", port=0, disable_log_stats=True)
        self.engine_factory = engine_factory
        self.state: ServerState | None = None
        self.port: int | None = None
        self._server: DrainingServer | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 120.0) -> BackgroundServer:
        self._thread = threading.Thread(target=self._run, name="vdiff-server", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not (self._server is not None and self._server.started):
            if self._error is not None:
                raise RuntimeError("the background server failed to start") from self._error
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the background server did not start")
            time.sleep(0.02)
        return self

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as error:
            self._error = error

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        engine = self.engine_factory(self.config)
        try:
            app = build_app(self.args)
            self.state = init_app_state(engine, app.state, self.args)
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
            self._server = DrainingServer(make_uvicorn_config(app, self.args), self.state)
            await self._server.serve(sockets=[sock])
        finally:
            await engine.shutdown()
            if self.config.tensor_parallel_size > 1:  # the workers were started from this thread
                from vdiff.distributed.group import shutdown_workers

                shutdown_workers()

    def stop(self, timeout_s: float = 60.0) -> None:
        """Drain (in-flight requests get the grace period), then stop the server and the engine."""
        if self._loop is not None and self._server is not None and self._thread is not None:
            if self._thread.is_alive():
                self._loop.call_soon_threadsafe(self._server.request_shutdown)
            self._thread.join(timeout_s)

    def __enter__(self) -> BackgroundServer:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()
