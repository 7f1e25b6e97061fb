"""Pure ASGI middleware: a request body over the limit gets 413 in OpenAI's error shape, from its
Content-Length before any of it is read, or (chunked) as soon as the bytes read so far exceed the limit."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from vdiff.entrypoints.openai.errors import RequestTooLargeError, error_response


class BodyTooLargeError(Exception):
    """Raised into the app by receive() once the body exceeds the limit (the 413 is already sent)."""


def declared_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


class RequestBodyLimit:
    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = declared_length(scope)
        if length is not None and length > self.max_body_bytes:
            await self._refuse(scope, receive, send)
            return
        num_received = 0
        response_started = False
        refused = False

        async def limited_receive() -> Message:
            nonlocal num_received, refused
            message = await receive()
            if message["type"] == "http.request":
                num_received += len(message.get("body", b""))
                if num_received > self.max_body_bytes:
                    if not response_started and not refused:
                        refused = True
                        await self._refuse(scope, receive, send)
                    raise BodyTooLargeError
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal response_started
            if refused:  # the app's answer to the aborted body read; the client already has its 413
                return
            if message["type"] == "http.response.start":
                response_started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except BodyTooLargeError:
            if not refused:
                raise

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = error_response(RequestTooLargeError(self.max_body_bytes))
        response.headers["Connection"] = "close"
        await response(scope, receive, send)
