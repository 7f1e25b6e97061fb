"""The HTTP middleware vLLM's flags configure: CORS (--allowed-origins ...), X-Request-Id
(--enable-request-id-headers) and user middleware (--middleware), added by build_app in vLLM's way."""

from __future__ import annotations

import importlib
import inspect
import uuid
from typing import Any

from fastapi import FastAPI
from starlette.datastructures import Headers, MutableHeaders
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from vdiff.entrypoints.frontend_args import FrontendArgs
from vdiff.errors import VdiffValidationError

REQUEST_ID_HEADER = "X-Request-Id"


class XRequestIdMiddleware:
    """Every HTTP response carries X-Request-Id: the request's own header when it sent one, else a new
    uuid4 hex (vLLM's XRequestIdMiddleware)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        request_id = Headers(scope=scope).get(REQUEST_ID_HEADER) or uuid.uuid4().hex

        async def send_with_request_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                if REQUEST_ID_HEADER not in headers:
                    headers.append(REQUEST_ID_HEADER, request_id)
            await send(message)

        await self.app(scope, receive, send_with_request_id)


def import_middleware(path: str) -> tuple[str, Any]:
    """('class', cls) or ('function', coroutine function) for a --middleware import path module.name."""
    module_path, _, name = path.rpartition(".")
    if not module_path or not name:
        raise VdiffValidationError(
            f"--middleware {path!r} must be an import path of the form module.name", "--middleware"
        )
    try:
        imported = getattr(importlib.import_module(module_path), name)
    except (ImportError, AttributeError) as error:
        raise VdiffValidationError(
            f"--middleware {path!r} cannot be imported: {error}", "--middleware"
        ) from None
    if inspect.isclass(imported):
        return "class", imported
    if inspect.iscoroutinefunction(imported):
        return "function", imported
    raise VdiffValidationError(
        f"--middleware {path!r} must be an ASGI middleware class or an async function", "--middleware"
    )


def add_frontend_middleware(app: FastAPI, args: FrontendArgs) -> None:
    """CORS first, then X-Request-Id, then --middleware in order (each added one wraps the ones before)."""
    app.add_middleware(
        CORSMiddleware,
        allow_origins=args.allowed_origins,
        allow_credentials=args.allow_credentials,
        allow_methods=args.allowed_methods,
        allow_headers=args.allowed_headers,
    )
    if args.enable_request_id_headers:
        app.add_middleware(XRequestIdMiddleware)
    for path in args.middleware:
        kind, imported = import_middleware(path)
        if kind == "class":
            app.add_middleware(imported)
        else:
            app.middleware("http")(imported)
