"""Error types shared by the engine and the HTTP layer."""

from __future__ import annotations

from collections.abc import Sequence


class VdiffValidationError(ValueError):
    """A request or configuration is invalid; the HTTP layer maps it to 400.

    `param` names the offending field (request field or CLI flag) when known.
    """

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


def check_choice(value: str | None, choices: Sequence[str], param: str, *, optional: bool = False) -> None:
    """Raise VdiffValidationError naming `param` unless value is one of choices (or None when optional)."""
    if optional and value is None:
        return
    if value not in choices:
        raise VdiffValidationError(f"{param} must be one of {', '.join(choices)}", param)


class EngineDeadError(RuntimeError):
    """The engine loop has died; the HTTP layer maps it to 503."""


class QueueFullError(RuntimeError):
    """The waiting queue is full; the HTTP layer maps it to 429 with Retry-After."""

    def __init__(self, message: str = "The server's waiting queue is full", retry_after_s: float = 1.0):
        super().__init__(message)
        self.retry_after_s = retry_after_s


class EngineDrainingError(RuntimeError):
    """The engine is shutting down and accepts no new requests; mapped to 503."""


class RequestFailedError(RuntimeError):
    """The engine failed while decoding this request (not the client's fault); mapped to 500."""
