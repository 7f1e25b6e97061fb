"""Open endpoints for probes and scrapers: /health, /ping, /version, /metrics."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import generate_latest

from vdiff.entrypoints.openai.errors import error_response
from vdiff.entrypoints.server_state import ServerState, get_server_state
from vdiff.errors import EngineDeadError, EngineDrainingError
from vdiff.metrics import CONTENT_TYPE, http_metrics_registry
from vdiff.version import __version__

router = APIRouter()


@router.get("/health")
async def health(state: ServerState = Depends(get_server_state)) -> Response:
    """200 while the engine is alive and accepting; 503 once it is dead or draining (readiness drops)."""
    if state.is_draining:
        return error_response(EngineDrainingError("The server is shutting down"))
    try:
        await state.engine.check_health()
    except EngineDeadError as error:
        return error_response(error)
    return Response(status_code=200)


@router.api_route("/ping", methods=["GET", "POST"])
async def ping(state: ServerState = Depends(get_server_state)) -> Response:
    return await health(state)


@router.get("/version")
async def show_version() -> JSONResponse:
    return JSONResponse({"version": __version__})


@router.get("/metrics")
async def metrics(request: Request, state: ServerState = Depends(get_server_state)) -> Response:
    """vLLM's metrics, the engine's snapshot read now, plus the HTTP metrics when instrument_app() ran."""
    body = state.metrics.render()
    http_registry = http_metrics_registry(request.app)
    if http_registry is not None:
        body += generate_latest(http_registry)
    return Response(content=body, media_type=CONTENT_TYPE)
