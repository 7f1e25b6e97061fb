"""HTTP wiring of GET /v1/models and GET /v1/models/{model}."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse

from vdiff.entrypoints.dependencies import require_api_key
from vdiff.entrypoints.server_state import ServerState, get_server_state

router = APIRouter(dependencies=[Depends(require_api_key)])


@router.get("/v1/models")
async def list_models(state: ServerState = Depends(get_server_state)) -> JSONResponse:
    return JSONResponse(state.models.list_models().model_dump())


@router.get("/v1/models/{model_id:path}")
async def retrieve_model(model_id: str, state: ServerState = Depends(get_server_state)) -> JSONResponse:
    """A served name may hold slashes (GSAI-ML/LLaDA-8B-Instruct), hence the path converter."""
    return JSONResponse(state.models.retrieve_model(model_id).model_dump())
