"""HTTP wiring of POST /v1/chat/completions."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request, Response

from vdiff.entrypoints.dependencies import GENERATION_GUARDS, respond_until_disconnect
from vdiff.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest
from vdiff.entrypoints.server_state import ServerState, get_server_state

router = APIRouter()


@router.post("/v1/chat/completions", dependencies=GENERATION_GUARDS)
async def create_chat_completion(
    body: ChatCompletionRequest, request: Request, state: ServerState = Depends(get_server_state)
) -> Response:
    serving = state.chat
    work = serving.start_stream(body) if body.stream else serving.create_chat_completion(body)
    return await respond_until_disconnect(request, work)
