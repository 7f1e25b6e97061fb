"""HTTP wiring of POST /tokenize, POST /detokenize and GET /tokenizer_info (vLLM serves them outside /v1)."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse

from vdiff.entrypoints.dependencies import require_api_key
from vdiff.entrypoints.openai.tokenize.protocol import DetokenizeRequest, TokenizeRequest
from vdiff.entrypoints.server_state import ServerState, get_server_state

router = APIRouter(dependencies=[Depends(require_api_key)])
info_router = APIRouter(dependencies=[Depends(require_api_key)])
"""GET /tokenizer_info, only with --enable-tokenizer-info-endpoint (vLLM's serve/tokenize/api_router.py)."""


@router.post("/tokenize")
async def tokenize(body: TokenizeRequest, state: ServerState = Depends(get_server_state)) -> JSONResponse:
    return JSONResponse((await state.tokenization.tokenize(body)).model_dump())


@router.post("/detokenize")
async def detokenize(body: DetokenizeRequest, state: ServerState = Depends(get_server_state)) -> JSONResponse:
    return JSONResponse((await state.tokenization.detokenize(body)).model_dump())


@info_router.get("/tokenizer_info")
async def tokenizer_info(state: ServerState = Depends(get_server_state)) -> JSONResponse:
    return JSONResponse(state.tokenization.tokenizer_info().model_dump())
