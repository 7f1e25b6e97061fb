"""Request guards shared by the routers: API key, draining, and cancellation on client disconnect."""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import Awaitable
from typing import TypeVar

from fastapi import Depends, Request

from vdiff.entrypoints.openai.errors import AuthenticationError
from vdiff.entrypoints.server_state import ServerState, get_server_state
from vdiff.errors import EngineDrainingError

T = TypeVar("T")


def require_api_key(request: Request, state: ServerState = Depends(get_server_state)) -> None:
    expected = state.args.api_key
    if expected is None:
        return
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    presented = token.strip() if scheme.lower() == "bearer" else ""
    if not hmac.compare_digest(presented.encode(), expected.encode()):
        raise AuthenticationError()


def reject_when_draining(state: ServerState = Depends(get_server_state)) -> None:
    if state.is_draining:
        raise EngineDrainingError("The server is shutting down and accepts no new requests")


GENERATION_GUARDS = [Depends(require_api_key), Depends(reject_when_draining)]


async def _wait_for_disconnect(request: Request) -> None:
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


async def run_until_disconnect(request: Request, work: Awaitable[T]) -> T | None:
    """Run work, cancelling it (and so aborting its engine requests) if the client goes away first."""
    work_task = asyncio.ensure_future(work)
    disconnect_task = asyncio.ensure_future(_wait_for_disconnect(request))
    try:
        await asyncio.wait({work_task, disconnect_task}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        disconnect_task.cancel()
        if not work_task.done():
            work_task.cancel()
            await asyncio.gather(work_task, return_exceptions=True)
    if work_task.cancelled():
        return None
    return work_task.result()
