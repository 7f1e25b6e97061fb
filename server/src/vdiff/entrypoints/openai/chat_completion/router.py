"""HTTP wiring of POST /v1/chat/completions."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse

from vdiff.entrypoints.dependencies import GENERATION_GUARDS, run_until_disconnect
from vdiff.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest
from vdiff.entrypoints.openai.completion.router import CLIENT_CLOSED_REQUEST
from vdiff.entrypoints.server_state import ServerState, get_server_state

router = APIRouter()


@router.post("/v1/chat/completions", dependencies=GENERATION_GUARDS)
async def create_chat_completion(
    body: ChatCompletionRequest, request: Request, state: ServerState = Depends(get_server_state)
) -> Response:
    if body.stream:
        stream = await run_until_disconnect(request, state.chat.start_stream(body))
        if stream is None:
            return Response(status_code=CLIENT_CLOSED_REQUEST)
        return StreamingResponse(stream, media_type="text/event-stream")
    result = await run_until_disconnect(request, state.chat.create_chat_completion(body))
    if result is None:
        return Response(status_code=CLIENT_CLOSED_REQUEST)
    return JSONResponse(result.model_dump())
