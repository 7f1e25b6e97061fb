"""HTTP wiring of GET /v1/models."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse

from vdiff.entrypoints.dependencies import require_api_key
from vdiff.entrypoints.server_state import ServerState, get_server_state

router = APIRouter()


@router.get("/v1/models", dependencies=[Depends(require_api_key)])
async def list_models(state: ServerState = Depends(get_server_state)) -> JSONResponse:
    return JSONResponse(state.models.list_models().model_dump())
