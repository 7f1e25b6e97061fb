"""Every error becomes OpenAI's {"error": {message, type, param, code}} with its status, in one place."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from vdiff.errors import EngineDeadError, EngineDrainingError, QueueFullError, VdiffValidationError

logger = logging.getLogger(__name__)


class ModelNotFoundError(LookupError):
    """vLLM's 404 for an unknown model name, with the served names (its "Valid aliases")."""

    def __init__(self, model: str, served_model_names: Sequence[str] = ()) -> None:
        message = f"The model `{model}` does not exist."
        if served_model_names:
            message += f" Valid aliases: {', '.join(served_model_names)}."
        super().__init__(message)
        self.model = model
        self.served_model_names = list(served_model_names)


class EndpointNotSupportedError(LookupError):
    """A vLLM / OpenAI route vdiff does not serve (the Responses API): a 404 that says what is served."""

    def __init__(self, what: str, supported: Sequence[str], hint: str = "") -> None:
        super().__init__(
            f"{what} is not supported by vdiff (a diffusion LLM server){'; ' + hint if hint else ''}. "
            f"Supported endpoints: {', '.join(supported)}."
        )


class AuthenticationError(PermissionError):
    def __init__(self) -> None:
        super().__init__("Invalid or missing API key. Pass it as 'Authorization: Bearer <key>'.")


class RequestTooLargeError(ValueError):
    def __init__(self, max_body_bytes: int) -> None:
        super().__init__(
            f"The request body is larger than {max_body_bytes} bytes (the server's --max-request-body-bytes)."
        )


ERROR_TYPES = {
    HTTPStatus.BAD_REQUEST: "BadRequestError",
    HTTPStatus.UNAUTHORIZED: "AuthenticationError",
    HTTPStatus.NOT_FOUND: "NotFoundError",
    HTTPStatus.METHOD_NOT_ALLOWED: "MethodNotAllowedError",
    HTTPStatus.REQUEST_ENTITY_TOO_LARGE: "RequestTooLargeError",
    HTTPStatus.TOO_MANY_REQUESTS: "RateLimitError",
    HTTPStatus.INTERNAL_SERVER_ERROR: "InternalServerError",
    HTTPStatus.SERVICE_UNAVAILABLE: "ServiceUnavailableError",
}


def encodable(text: str) -> str:
    """Text that is valid UTF-8 (a client's lone surrogates echoed in a message become \\udXXX escapes)."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _info(status: HTTPStatus, message: str, param: str | None = None) -> tuple[int, dict[str, Any]]:
    error_type = ERROR_TYPES.get(status, status.phrase.replace(" ", "") + "Error")
    code = int(status)
    safe_param = None if param is None else encodable(param)
    return code, {"message": encodable(message), "type": error_type, "param": safe_param, "code": code}


def _describe_validation_error(error: RequestValidationError) -> tuple[str, str | None]:
    problems = error.errors()
    if not problems:
        return "Invalid request", None
    first = problems[0]
    if first.get("type") == "json_invalid":
        return f"Invalid JSON body: {first.get('ctx', {}).get('error', first.get('msg'))}", None
    location = [str(part) for part in first.get("loc", ()) if part != "body"]
    if not location and first.get("type") == "model_attributes_type":
        return "The request body must be a JSON object (Content-Type: application/json)", None
    param = ".".join(location) or None
    message = first.get("msg", "Invalid value")
    if param:
        message = f"{param}: {message}"
    if len(problems) > 1:
        message += f" (and {len(problems) - 1} more problem(s))"
    return message, param


def error_info_for(error: BaseException) -> tuple[int, dict[str, Any]]:
    """Status and body fields for an exception; anything unexpected is a generic 500 (details in logs)."""
    if isinstance(error, VdiffValidationError):
        return _info(HTTPStatus.BAD_REQUEST, error.message, error.param)
    if isinstance(error, RequestValidationError):
        message, param = _describe_validation_error(error)
        return _info(HTTPStatus.BAD_REQUEST, message, param)
    if isinstance(error, ModelNotFoundError):
        return _info(HTTPStatus.NOT_FOUND, str(error), "model")
    if isinstance(error, EndpointNotSupportedError):
        return _info(HTTPStatus.NOT_FOUND, str(error))
    if isinstance(error, AuthenticationError):
        return _info(HTTPStatus.UNAUTHORIZED, str(error))
    if isinstance(error, QueueFullError):
        return _info(HTTPStatus.TOO_MANY_REQUESTS, str(error))
    if isinstance(error, RequestTooLargeError):
        return _info(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, str(error))
    if isinstance(error, EngineDrainingError):
        return _info(HTTPStatus.SERVICE_UNAVAILABLE, str(error) or "The server is shutting down")
    if isinstance(error, EngineDeadError):
        return _info(HTTPStatus.SERVICE_UNAVAILABLE, str(error) or "The engine is not running")
    if isinstance(error, StarletteHTTPException):
        status = HTTPStatus(error.status_code)
        return _info(status, str(error.detail) if error.detail else status.phrase)
    logger.error("unhandled server error", exc_info=error)
    return _info(HTTPStatus.INTERNAL_SERVER_ERROR, "Internal server error")


def error_response(error: BaseException) -> JSONResponse:
    status, info = error_info_for(error)
    headers = {}
    if isinstance(error, QueueFullError):
        headers["Retry-After"] = str(max(1, math.ceil(error.retry_after_s)))
    if isinstance(error, AuthenticationError):
        headers["WWW-Authenticate"] = "Bearer"
    return JSONResponse({"error": info}, status_code=status, headers=headers)


async def _handle(_: Request, error: Exception) -> JSONResponse:
    return error_response(error)


def register_exception_handlers(app: FastAPI) -> None:
    for error_type in (
        VdiffValidationError, RequestValidationError, ModelNotFoundError, EndpointNotSupportedError,
        AuthenticationError, QueueFullError, EngineDrainingError, EngineDeadError, StarletteHTTPException,
        Exception,
    ):  # fmt: skip
        app.add_exception_handler(error_type, _handle)
