"""The OpenAI-compatible HTTP server: app factory, state, lifespan, and uvicorn with a draining shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import threading
from collections.abc import AsyncIterator, Iterator

import uvicorn
from fastapi import FastAPI
from starlette.datastructures import State

from vdiff.config import EngineConfig
from vdiff.engine.protocol import EngineClient
from vdiff.entrypoints import health, invocations, unsupported
from vdiff.entrypoints.api_keys import ApiKeyStore
from vdiff.entrypoints.body_limit import RequestBodyLimit
from vdiff.entrypoints.frontend_args import FrontendArgs
from vdiff.entrypoints.middleware import add_frontend_middleware
from vdiff.entrypoints.openai.chat_completion import router as chat_router
from vdiff.entrypoints.openai.chat_completion.serving import OpenAIServingChat
from vdiff.entrypoints.openai.completion import router as completion_router
from vdiff.entrypoints.openai.completion.serving import OpenAIServingCompletion
from vdiff.entrypoints.openai.errors import register_exception_handlers
from vdiff.entrypoints.openai.models import router as models_router
from vdiff.entrypoints.openai.models.serving import OpenAIServingModels
from vdiff.entrypoints.openai.tokenize import router as tokenize_router
from vdiff.entrypoints.openai.tokenize.serving import OpenAIServingTokenization
from vdiff.entrypoints.rate_limit import AccessControl, RateLimiter, RateLimitMiddleware
from vdiff.entrypoints.server_state import ServerState
from vdiff.entrypoints.stats import bind_engine_stats, log_stats_forever
from vdiff.entrypoints.ui import router as ui_router
from vdiff.errors import EngineDeadError
from vdiff.metrics import ServerMetrics, instrument_app

logger = logging.getLogger(__name__)

EXTRA_SHUTDOWN_S = 5.0
"""After draining, how long uvicorn may take to flush the last responses and close connections."""
ENGINE_WATCH_INTERVAL_S = 0.5
"""How often the server checks that the engine loop is still alive (a dead one stops the server)."""


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    state: ServerState = app.state.vdiff
    stats_task = None
    if not state.args.disable_log_stats:
        stats_task = asyncio.create_task(log_stats_forever(state, state.args.log_stats_interval))
    try:
        yield
    finally:
        if stats_task is not None:
            stats_task.cancel()
            await asyncio.gather(stats_task, return_exceptions=True)


def build_app(args: FrontendArgs) -> FastAPI:
    docs: dict[str, str | None] = {}
    if args.disable_fastapi_docs:
        docs = {"openapi_url": None, "docs_url": None, "redoc_url": None}
    app = FastAPI(title="vdiff", lifespan=lifespan, root_path=args.root_path or "", **docs)  # type: ignore[arg-type]
    routers = (
        health,
        models_router,
        completion_router,
        chat_router,
        tokenize_router,
        invocations,
        unsupported,
    )
    for router_module in routers:
        app.include_router(router_module.router)
    if args.enable_tokenizer_info_endpoint:
        app.include_router(tokenize_router.info_router)
    if not args.disable_ui:
        app.include_router(ui_router.router)
    register_exception_handlers(app)
    app.add_middleware(RequestBodyLimit, max_body_bytes=args.max_request_body_bytes)
    app.add_middleware(RateLimitMiddleware)  # inside CORS: a 429 carries the CORS headers too
    add_frontend_middleware(app, args)
    instrument_app(app)
    return app


def served_model_names(config: EngineConfig) -> list[str]:
    return list(config.served_model_names) or [config.model]


def init_app_state(engine: EngineClient, state: State, args: FrontendArgs) -> ServerState:
    names = served_model_names(engine.config)
    metrics = ServerMetrics(names[0])
    stats_poller = bind_engine_stats(engine, metrics)
    access = AccessControl(
        ApiKeyStore(args.api_keys, args.api_key_file),
        RateLimiter(args.rate_limit_requests_per_minute, args.rate_limit_tokens_per_minute),
    )
    access.bind_metrics(metrics)
    serving_kwargs = {"metrics": metrics, "log_requests": args.enable_log_requests}
    server_state = ServerState(
        engine=engine,
        args=args,
        metrics=metrics,
        models=OpenAIServingModels(engine, names),
        completion=OpenAIServingCompletion(
            engine, names, **serving_kwargs, max_prompts_per_request=args.max_prompts_per_request
        ),
        chat=OpenAIServingChat(
            engine,
            names,
            **serving_kwargs,
            trust_request_chat_template=args.trust_request_chat_template,
            enable_auto_tool_choice=args.enable_auto_tool_choice,
            exclude_tools_when_tool_choice_none=args.exclude_tools_when_tool_choice_none,
            tool_call_parser=args.tool_call_parser,
        ),
        tokenization=OpenAIServingTokenization(engine, names, **serving_kwargs),
        stats_poller=stats_poller,
        access=access,
    )
    state.vdiff = server_state
    return server_state


class DrainingServer(uvicorn.Server):
    """uvicorn whose first SIGTERM/SIGINT drains the engine (503 to newcomers) before stopping; exits 0.

    uvicorn's own handling re-raises the signal after shutdown (the process then dies by the signal);
    a pod must see a clean exit, so signals are handled here instead. A second signal forces the exit.
    If the engine loop dies, the server stops and serve() raises EngineDeadError (the process exits
    non-zero, so Kubernetes restarts the pod instead of keeping a server that only answers 503).
    """

    def __init__(self, config: uvicorn.Config, state: ServerState) -> None:
        super().__init__(config)
        self.state = state
        self.drain_task: asyncio.Task[None] | None = None
        self.engine_error: BaseException | None = None

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        watchdog = asyncio.create_task(self._watch_engine())
        try:
            await super().serve(sockets)
        finally:
            watchdog.cancel()
            await asyncio.gather(watchdog, return_exceptions=True)
        if self.engine_error is not None:
            raise EngineDeadError(f"The engine loop died: {self.engine_error!r}") from self.engine_error

    async def _watch_engine(self) -> None:
        engine = self.state.engine
        while not engine.errored:
            await asyncio.sleep(ENGINE_WATCH_INTERVAL_S)
        self.engine_error = getattr(engine, "dead_error", None) or EngineDeadError("The engine loop died")
        logger.error("the engine died (%r): stopping the server", self.engine_error)
        self.should_exit = True

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        loop = asyncio.get_running_loop()
        handled = (signal.SIGTERM, signal.SIGINT)
        for sig in handled:
            loop.add_signal_handler(sig, self.request_shutdown, sig)
        try:
            yield
        finally:
            for sig in handled:
                loop.remove_signal_handler(sig)

    def request_shutdown(self, sig: int | None = None) -> None:
        name = signal.Signals(sig).name if sig is not None else "shutdown request"
        if self.drain_task is None:
            logger.info("%s: draining (grace period %.0f s)", name, self.state.args.shutdown_grace_period)
            self.drain_task = asyncio.get_running_loop().create_task(self._drain_then_exit())
        else:
            logger.warning("%s again: exiting now", name)
            self.force_exit = True
            self.should_exit = True

    async def _drain_then_exit(self) -> None:
        self.state.is_draining = True
        try:
            await self.state.engine.drain(self.state.args.shutdown_grace_period)
        except Exception:
            logger.exception("draining the engine failed; stopping anyway")
        self.should_exit = True


def make_uvicorn_config(app: FastAPI, args: FrontendArgs) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        host=args.host,
        port=args.port,
        log_level=args.uvicorn_log_level,
        timeout_graceful_shutdown=int(EXTRA_SHUTDOWN_S),
        timeout_keep_alive=5,
        ssl_keyfile=args.ssl_keyfile,
        ssl_certfile=args.ssl_certfile,
        ssl_ca_certs=args.ssl_ca_certs,
        ssl_cert_reqs=args.ssl_cert_reqs,
    )


async def serve_http(app: FastAPI, args: FrontendArgs, sock: socket.socket | None = None) -> None:
    """Serve until a signal has drained the engine (or the server fails to start)."""
    server = DrainingServer(make_uvicorn_config(app, args), app.state.vdiff)
    await server.serve(sockets=None if sock is None else [sock])


async def run_server(
    engine_config: EngineConfig, args: FrontendArgs, sock: socket.socket | None = None
) -> None:
    """Load the model, serve it (on `sock` when bound beforehand), drain on SIGTERM/SIGINT, shut down."""
    from vdiff.engine.async_engine import AsyncLLMEngine  # torch and the model code load only when serving

    engine = AsyncLLMEngine.from_config(engine_config)
    try:
        app = build_app(args)
        init_app_state(engine, app.state, args)
        port = args.port if sock is None else sock.getsockname()[1]
        scheme = "https" if args.is_ssl else "http"
        logger.info(
            "vdiff serving %s on %s://%s:%d", served_model_names(engine.config), scheme, args.host, port
        )
        await serve_http(app, args, sock)
    finally:
        await engine.shutdown()
