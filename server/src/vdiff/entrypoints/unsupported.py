"""vLLM / OpenAI routes vdiff does not serve: a 404 whose JSON body names what is served instead of
Starlette's bare "Not Found" (a client pointed at the Responses API learns to use chat completions)."""

from __future__ import annotations

from fastapi import APIRouter, Request

from vdiff.entrypoints.openai.errors import EndpointNotSupportedError

router = APIRouter()

SUPPORTED_ENDPOINTS = (
    "GET /v1/models",
    "GET /v1/models/{model}",
    "POST /v1/completions",
    "POST /v1/chat/completions",
    "POST /tokenize",
    "POST /detokenize",
    "GET /tokenizer_info",
    "POST /invocations",
    "GET /health",
    "GET /ping",
    "GET /version",
    "GET /metrics",
)
ALL_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE"]


@router.api_route("/v1/responses", methods=ALL_METHODS, include_in_schema=False)
@router.api_route("/v1/responses/{rest:path}", methods=ALL_METHODS, include_in_schema=False)
async def responses_api(request: Request) -> None:
    raise EndpointNotSupportedError(
        f"The Responses API ({request.method} {request.url.path})",
        SUPPORTED_ENDPOINTS,
        "use POST /v1/chat/completions (the openai client's chat.completions.create)",
    )
