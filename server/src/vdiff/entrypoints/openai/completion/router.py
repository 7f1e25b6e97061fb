"""HTTP wiring of POST /v1/completions."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request, Response

from vdiff.entrypoints.dependencies import GENERATION_GUARDS, respond_until_disconnect
from vdiff.entrypoints.openai.completion.protocol import CompletionRequest
from vdiff.entrypoints.server_state import ServerState, get_server_state

router = APIRouter()


@router.post("/v1/completions", dependencies=GENERATION_GUARDS)
async def create_completion(
    body: CompletionRequest, request: Request, state: ServerState = Depends(get_server_state)
) -> Response:
    serving = state.completion
    work = serving.start_stream(body) if body.stream else serving.create_completion(body)
    return await respond_until_disconnect(request, work)
