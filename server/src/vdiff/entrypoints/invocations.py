"""POST /invocations (vLLM's SageMaker-style route): the body's shape picks chat or completions.

As vLLM: the body is tried as a chat request first, then as a completion request; the first that
validates is served by that endpoint (streaming included). Unlike vLLM, --api-key protects it too.
"""

from __future__ import annotations

import json

import pydantic
from fastapi import APIRouter, Depends, Request, Response

from vdiff.entrypoints.dependencies import GENERATION_GUARDS
from vdiff.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest
from vdiff.entrypoints.openai.chat_completion.router import create_chat_completion
from vdiff.entrypoints.openai.completion.protocol import CompletionRequest
from vdiff.entrypoints.openai.completion.router import create_completion
from vdiff.entrypoints.server_state import ServerState, get_server_state
from vdiff.errors import VdiffValidationError

router = APIRouter()

INVOCATION_TYPES = ((ChatCompletionRequest, create_chat_completion), (CompletionRequest, create_completion))
"""In vLLM's order: earlier types win (a body with both messages and prompt is a chat)."""


@router.post("/invocations", dependencies=GENERATION_GUARDS)
async def invocations(request: Request, state: ServerState = Depends(get_server_state)) -> Response:
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise VdiffValidationError(f"JSON decode error: {error}") from error
    for request_type, endpoint in INVOCATION_TYPES:
        try:
            parsed = request_type.model_validate(body)
        except pydantic.ValidationError:
            continue
        return await endpoint(parsed, request, state)  # type: ignore[arg-type]
    names = [request_type.__name__ for request_type, _ in INVOCATION_TYPES]
    raise VdiffValidationError(f"Cannot find suitable handler for request. Expected one of: {names}")
