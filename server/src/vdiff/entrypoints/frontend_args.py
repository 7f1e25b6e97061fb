"""Flags of the HTTP front end (the engine's flags come from EngineConfig); docstrings become --help."""

from __future__ import annotations

import contextlib
import errno
import socket
import ssl
from dataclasses import dataclass, field
from pathlib import Path

from vdiff.entrypoints.openai.tool_parsers import check_tool_parser
from vdiff.errors import VdiffValidationError, check_choice

UVICORN_LOG_LEVELS = ("critical", "error", "warning", "info", "debug", "trace")


@dataclass(slots=True)
class FrontendArgs:
    host: str = "0.0.0.0"
    """Address to listen on."""
    port: int = 8000
    """Port to listen on (checked free before the model loads)."""
    api_key: str | list[str] | None = None
    """If set, clients must send 'Authorization: Bearer <key>' (probes, /version, /metrics stay open);
    several keys: repeat the flag or give several values. The env variable holds one key; VLLM_API_KEY is
    read too, as vLLM does."""
    api_key_file: str | None = None
    """File of API keys, one per line as 'key' or 'name:key' (blank lines and # comments ignored), or a
    directory of files named after their key (a mounted Secret); re-read when it changes. The name labels
    the per-key metrics and limits."""
    rate_limit_requests_per_minute: int | None = None
    """Requests each API key (without keys: each client address) may send per minute (token bucket);
    more get 429 with Retry-After (default: no limit)."""
    rate_limit_tokens_per_minute: int | None = None
    """Generated tokens each API key (without keys: each client address) may use per minute, counted when
    a request finishes; while over it, new requests get 429 (default: no limit)."""
    uvicorn_log_level: str = "info"
    """Log level of uvicorn (critical, error, warning, info, debug, trace)."""
    disable_log_stats: bool = False
    """Do not log throughput and queue statistics every few seconds."""
    enable_log_requests: bool = False
    """Log every request's prompt length and sampling parameters."""
    disable_log_requests: bool = False
    """vLLM's older inverse of --enable-log-requests: do not log requests (wins over
    --enable-log-requests)."""
    root_path: str | None = None
    """ASGI root_path when the server sits behind a path-prefixing proxy."""
    allowed_origins: list[str] = field(default_factory=list)
    """CORS: origins allowed to call the API from a browser, a JSON list as vLLM ('["*"]') or a
    comma-separated list (default: none, cross-origin browser access is off)."""
    allowed_methods: list[str] = field(default_factory=lambda: ["*"])
    """CORS: allowed methods, a JSON list or a comma-separated list."""
    allowed_headers: list[str] = field(default_factory=lambda: ["*"])
    """CORS: allowed request headers, a JSON list or a comma-separated list."""
    allow_credentials: bool = False
    """CORS: allow credentials (cookies, Authorization) on cross-origin requests."""
    ssl_keyfile: str | None = None
    """Serve HTTPS: the PEM private key file (with --ssl-certfile)."""
    ssl_certfile: str | None = None
    """Serve HTTPS: the PEM certificate (chain) file."""
    ssl_ca_certs: str | None = None
    """CA certificates file used to verify client certificates (see --ssl-cert-reqs)."""
    ssl_cert_reqs: int = int(ssl.CERT_NONE)
    """Whether a client certificate is required: 0 none, 1 optional, 2 required (Python's ssl.CERT_*)."""
    middleware: list[str] = field(default_factory=list)
    """Import path (module.name) of an extra ASGI middleware class (app.add_middleware) or async function
    (@app.middleware('http')); repeat the flag for several, as vLLM."""
    enable_request_id_headers: bool = False
    """Add an X-Request-Id header to every response (the request's own X-Request-Id, else a new id)."""
    disable_fastapi_docs: bool = False
    """Do not serve the OpenAPI schema, Swagger UI and ReDoc (/openapi.json, /docs, /redoc)."""
    enable_tokenizer_info_endpoint: bool = False
    """Serve GET /tokenizer_info (as vLLM, off by default: it shows the chat template and the rest of the
    tokenizer's configuration)."""
    disable_ui: bool = False
    """vdiff: do not serve the live canvas page at /ui (docs/live-view.md); the API's stream_canvas stays."""
    trust_request_chat_template: bool = False
    """Let requests send their own chat_template (as vLLM, off by default: a template is code that runs
    in the server, and a hostile one can loop for hours)."""
    enable_auto_tool_choice: bool = False
    """Let tool_choice "auto" (the default when a request sends tools) call tools: the model's free text
    is parsed for calls by --tool-call-parser (without it, "auto" is a 400, as vLLM)."""
    exclude_tools_when_tool_choice_none: bool = False
    """With tool_choice "none", do not render the request's tools into the prompt (as vLLM; by default
    the chat template still shows them)."""
    tool_call_parser: str | None = None
    """The format auto tool calls are parsed from: hermes (<tool_call>{...}</tool_call>, Hermes and the
    Qwen2.5 family, Dream); needed by --enable-auto-tool-choice. "required" and named tool choices need no
    parser: their output is constrained to the call JSON."""
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
        if self.ssl_cert_reqs not in (ssl.CERT_NONE, ssl.CERT_OPTIONAL, ssl.CERT_REQUIRED):
            raise VdiffValidationError("--ssl-cert-reqs must be 0, 1 or 2", "--ssl-cert-reqs")
        if self.ssl_keyfile and not self.ssl_certfile:
            raise VdiffValidationError("--ssl-keyfile needs --ssl-certfile", "--ssl-certfile")
        if isinstance(self.api_key, list):
            keys = [key for key in self.api_key if key]
            self.api_key = keys[0] if len(keys) == 1 else keys or None
        if self.api_key == "":
            self.api_key = None
        if self.api_key_file == "":
            self.api_key_file = None
        if self.api_key_file is not None and not Path(self.api_key_file).expanduser().exists():
            raise VdiffValidationError(f"--api-key-file {self.api_key_file} does not exist", "--api-key-file")
        for name in ("rate_limit_requests_per_minute", "rate_limit_tokens_per_minute"):
            value = getattr(self, name)
            if value is not None and value < 1:
                flag = "--" + name.replace("_", "-")
                raise VdiffValidationError(f"{flag} must be >= 1 (leave it unset for no limit)", flag)
        if self.disable_log_requests:
            self.enable_log_requests = False
        check_tool_parser(self.tool_call_parser, auto_tool_choice=self.enable_auto_tool_choice)

    @property
    def is_ssl(self) -> bool:
        return bool(self.ssl_certfile)

    @property
    def api_keys(self) -> list[str]:
        """--api-key as a list (one key, several, or none)."""
        if self.api_key is None:
            return []
        return [self.api_key] if isinstance(self.api_key, str) else list(self.api_key)


@dataclass(slots=True)
class VllmCompatArgs:
    """vLLM flags that have no effect here or are not supported yet: checked by `vdiff serve` before loading
    (a one-line warning or exit 2), never passed to the engine."""

    enable_prefix_caching: bool | None = None
    """vLLM's cross-request prefix cache. Accepted with a warning: a bidirectional diffusion model's prompt
    KV depends on the whole canvas, so no exact cache can be shared between requests (--kv-cache prefix is
    the approximate per-request one)."""
    enable_chunked_prefill: bool | None = None
    """vLLM's chunked prefill. Accepted with a warning: vdiff chunks by model (block-diffusion prompts in
    --max-num-batched-tokens chunks, a bidirectional canvas whole)."""
    swap_space: float | None = None
    """vLLM's CPU swap space (GiB) for preempted requests. Accepted with a warning: a preempted sequence is
    recomputed, never swapped."""
    disable_custom_all_reduce: bool | None = None
    """vLLM's switch for its custom all-reduce kernel. Accepted with a warning: tensor parallel all-reduces
    through torch.distributed (NCCL, gloo) only."""
    distributed_executor_backend: str | None = None
    """How vLLM starts its ranks: mp (processes, what vdiff's -tp does) and uni are accepted; ray and
    external_launcher exit 2."""
    pipeline_parallel_size: int | None = None
    """vLLM's pipeline parallelism: 1 is accepted; more exits 2 (use --tensor-parallel-size)."""
    kv_cache_dtype: str | None = None
    """The KV cache's dtype: auto (the model's dtype, which vdiff stores) is accepted; fp8 variants exit 2."""
    load_format: str | None = None
    """How vLLM reads the weights: auto and safetensors are accepted; other formats exit 2."""
    tokenizer_mode: str | None = None
    """The tokenizer implementation: auto and hf are accepted; slow, mistral and custom exit 2."""
    reasoning_parser: str | None = None
    """vLLM's reasoning-content parser: exits 2 (no reasoning parser is implemented)."""


def bind_socket(args: FrontendArgs) -> socket.socket:
    """Bind --host:--port now (listening starts with the server), so a port in use fails in a second
    instead of after the model has loaded; raises VdiffValidationError naming --port."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            args.host, args.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except socket.gaierror as error:
        raise VdiffValidationError(f"--host {args.host!r} cannot be resolved: {error}", "--host") from None
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn: a restart may rebind at once
    if family == socket.AF_INET6:  # as asyncio's create_server, which uvicorn used before
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    try:
        sock.bind(address)
    except OSError as error:
        sock.close()
        cause = "another process listens there" if error.errno == errno.EADDRINUSE else "check --host"
        raise VdiffValidationError(
            f"cannot listen on {args.host}:{args.port}: {error.strerror or error} ({cause}); choose another "
            "port with --port (for `make serve`: make serve SERVE_ARGS='--port N')",
            "--port",
        ) from None
    return sock
