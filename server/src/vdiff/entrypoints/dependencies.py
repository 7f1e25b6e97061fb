"""Shared by the generation routers: API key (api_keys.py) and draining guards, cancellation on client
disconnect (499), and the streaming-or-JSON response."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable
from typing import TypeVar

from fastapi import Depends, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel

from vdiff.entrypoints.openai.errors import AuthenticationError
from vdiff.entrypoints.server_state import ServerState, get_server_state
from vdiff.errors import EngineDrainingError

T = TypeVar("T")
CLIENT_CLOSED_REQUEST = 499


def require_api_key(request: Request, state: ServerState = Depends(get_server_state)) -> None:
    """401 unless the request presents one of the server's keys (entrypoints/api_keys.py, compared in
    constant time); the rate-limit middleware has usually matched it already."""
    if state.access.key_name(request.scope) is None:
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


async def respond_until_disconnect(
    request: Request, work: Awaitable[AsyncIterator[str] | BaseModel]
) -> Response:
    """A generation endpoint's response: an SSE iterator is streamed, a response model sent as JSON, and
    a client gone before either is ready gets 499 (its engine requests are aborted)."""
    result = await run_until_disconnect(request, work)
    if result is None:
        return Response(status_code=CLIENT_CLOSED_REQUEST)
    if isinstance(result, BaseModel):
        return JSONResponse(result.model_dump())
    return StreamingResponse(result, media_type="text/event-stream")
