"""Flags of the HTTP front end (the engine's flags come from EngineConfig); docstrings become --help."""

from __future__ import annotations

from dataclasses import dataclass

from vdiff.errors import VdiffValidationError, check_choice

UVICORN_LOG_LEVELS = ("critical", "error", "warning", "info", "debug", "trace")


@dataclass(slots=True)
class FrontendArgs:
    host: str = "0.0.0.0"
    """Address to listen on."""
    port: int = 8000
    """Port to listen on."""
    api_key: str | None = None
    """If set, clients must send 'Authorization: Bearer <key>' (probes, /version, /metrics stay open)."""
    uvicorn_log_level: str = "info"
    """Log level of uvicorn (critical, error, warning, info, debug, trace)."""
    disable_log_stats: bool = False
    """Do not log throughput and queue statistics every few seconds."""
    enable_log_requests: bool = False
    """Log every request's prompt length and sampling parameters."""
    root_path: str | None = None
    """ASGI root_path when the server sits behind a path-prefixing proxy."""
    shutdown_grace_period: float = 30.0
    """Seconds in-flight requests may take to finish after SIGTERM/SIGINT before they are aborted."""
    log_stats_interval: float = 10.0
    """Seconds between two statistics log lines."""
    max_request_body_bytes: int = 8 * 1024 * 1024
    """Largest request body accepted; a larger one gets 413 before it is read (or as soon as it exceeds)."""
    max_prompts_per_request: int = 1024
    """Most prompts one /v1/completions request may batch (a list of prompts); more get 400."""

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise VdiffValidationError("--port must be in [0, 65535]", "--port")
        check_choice(self.uvicorn_log_level, UVICORN_LOG_LEVELS, "--uvicorn-log-level")
        if self.shutdown_grace_period < 0:
            raise VdiffValidationError("--shutdown-grace-period must be >= 0", "--shutdown-grace-period")
        if self.log_stats_interval <= 0:
            raise VdiffValidationError("--log-stats-interval must be positive", "--log-stats-interval")
        if self.max_request_body_bytes < 1:
            raise VdiffValidationError("--max-request-body-bytes must be >= 1", "--max-request-body-bytes")
        if self.max_prompts_per_request < 1:
            raise VdiffValidationError("--max-prompts-per-request must be >= 1", "--max-prompts-per-request")
        if self.api_key == "":
            self.api_key = None
