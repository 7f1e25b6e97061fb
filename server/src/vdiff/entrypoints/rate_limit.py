"""Per-key rate limits (--rate-limit-requests-per-minute, --rate-limit-tokens-per-minute) and per-key metrics.

Each client (an API key's name, or without keys the client address) has a token bucket per limit: it holds
at most the per-minute limit and refills continuously at limit/60 per second. A request takes one from the
requests bucket. Generated tokens are counted after the fact: when a request finishes, its completion
tokens (all n choices) are taken from the tokens bucket, which may go below zero; while it is at or below
zero the client's new requests get 429 (so one request may overshoot the limit, and the next ones wait
until the debt has refilled).

Every response to a limited client carries OpenAI's x-ratelimit-limit-*, x-ratelimit-remaining-* and
x-ratelimit-reset-* headers (reset: time until the bucket is full again); a 429 also carries Retry-After.
Probes (/health, /ping, /version, /metrics) and the API docs are never limited nor counted.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from http import HTTPStatus

from starlette.datastructures import Headers, MutableHeaders
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from vdiff.entrypoints.api_keys import ApiKeyStore, bearer_token
from vdiff.entrypoints.openai.errors import error_info_for
from vdiff.metrics import ServerMetrics

OPEN_PATHS = frozenset({"/health", "/ping", "/version", "/metrics", "/docs", "/docs/oauth2-redirect",
                        "/redoc", "/openapi.json"})  # fmt: skip
"""Never limited nor counted: probes, the scrape endpoint, the API docs."""
ANONYMOUS = "anonymous"
"""The key_name label of requests when the server has no API keys (limits are then per client address)."""
KEY_NAME_SCOPE = "vdiff.api_key_name"
"""Scope entry where the middleware leaves the name of the key a request authenticated with."""
DEFAULT_MAX_CLIENTS = 10_000
"""Most clients tracked at once; beyond it the least recently seen is forgotten (a fresh, full bucket)."""
SECONDS_PER_MINUTE = 60.0

_current_client: ContextVar[str | None] = ContextVar("vdiff_rate_limit_client", default=None)


@dataclass(slots=True)
class Bucket:
    capacity: float
    level: float
    updated: float

    def refill(self, now: float) -> None:
        gained = max(0.0, now - self.updated) * self.capacity / SECONDS_PER_MINUTE
        self.level = min(self.capacity, self.level + gained)
        self.updated = now

    def seconds_until(self, level: float) -> float:
        return max(0.0, (level - self.level) * SECONDS_PER_MINUTE / self.capacity)


@dataclass(slots=True)
class ClientBuckets:
    requests: Bucket | None
    tokens: Bucket | None

    def buckets(self) -> dict[str, Bucket]:
        named = {"requests": self.requests, "tokens": self.tokens}
        return {name: bucket for name, bucket in named.items() if bucket is not None}

    def is_full(self, now: float) -> bool:
        for bucket in self.buckets().values():
            bucket.refill(now)
            if bucket.level < bucket.capacity:
                return False
        return True


@dataclass(frozen=True, slots=True)
class Decision:
    limit: str | None
    """None: admitted; else the limit that refused it ('requests' or 'tokens')."""
    retry_after_s: float = 0.0


def format_reset(seconds: float) -> str:
    """OpenAI's reset duration: '20ms', '1s', '6m0s'."""
    if seconds < 1.0:
        return f"{math.ceil(seconds * 1000)}ms"
    whole = math.ceil(seconds)
    minutes, rest = divmod(whole, 60)
    return f"{minutes}m{rest}s" if minutes else f"{rest}s"


class RateLimiter:
    """Token buckets per client; `clock` (seconds, monotonic) is injectable so tests need not wait."""

    def __init__(
        self,
        requests_per_minute: int | None,
        tokens_per_minute: int | None,
        clock: Callable[[], float] = time.monotonic,
        max_clients: int = DEFAULT_MAX_CLIENTS,
    ) -> None:
        self.requests_per_minute = requests_per_minute
        self.tokens_per_minute = tokens_per_minute
        self.clock = clock
        self.max_clients = max_clients
        self._clients: OrderedDict[str, ClientBuckets] = OrderedDict()

    @property
    def is_enabled(self) -> bool:
        return bool(self.requests_per_minute or self.tokens_per_minute)

    @property
    def num_clients(self) -> int:
        return len(self._clients)

    def _bucket(self, capacity: int | None, now: float) -> Bucket | None:
        return Bucket(float(capacity), float(capacity), now) if capacity else None

    def _client(self, client: str, now: float) -> ClientBuckets:
        buckets = self._clients.get(client)
        if buckets is None:
            buckets = ClientBuckets(
                self._bucket(self.requests_per_minute, now), self._bucket(self.tokens_per_minute, now)
            )
            self._clients[client] = buckets
        self._clients.move_to_end(client)
        self._evict(now)
        for bucket in buckets.buckets().values():
            bucket.refill(now)
        return buckets

    def _evict(self, now: float) -> None:
        """Forget idle clients (all buckets full again: the same as a new client), and the least recently
        seen beyond max_clients; amortised O(1) per request."""
        while len(self._clients) > self.max_clients:
            self._clients.popitem(last=False)
        while len(self._clients) > 1:
            oldest = next(iter(self._clients.values()))
            if not oldest.is_full(now):
                break
            self._clients.popitem(last=False)

    def admit(self, client: str) -> Decision:
        """Take one request from the client's bucket, or say which limit refuses it and for how long."""
        buckets = self._client(client, self.clock())
        if buckets.requests is not None and buckets.requests.level < 1.0:
            return Decision("requests", buckets.requests.seconds_until(1.0))
        if buckets.tokens is not None and buckets.tokens.level <= 0.0:
            return Decision("tokens", buckets.tokens.seconds_until(min(1.0, buckets.tokens.capacity)))
        if buckets.requests is not None:
            buckets.requests.level -= 1.0
        return Decision(None)

    def charge_tokens(self, client: str, num_tokens: int) -> None:
        buckets = self._client(client, self.clock())
        if buckets.tokens is not None:
            buckets.tokens.level -= num_tokens

    def charge_current_request(self, num_tokens: int) -> None:
        """Called when a request finishes (ServerMetrics.generation_listeners), in the request's context."""
        client = _current_client.get()
        if client is not None and self.tokens_per_minute:
            self.charge_tokens(client, num_tokens)

    def headers(self, client: str) -> dict[str, str]:
        headers: dict[str, str] = {}
        for name, bucket in self._client(client, self.clock()).buckets().items():
            headers[f"x-ratelimit-limit-{name}"] = str(int(bucket.capacity))
            headers[f"x-ratelimit-remaining-{name}"] = str(max(0, math.floor(bucket.level)))
            headers[f"x-ratelimit-reset-{name}"] = format_reset(bucket.seconds_until(bucket.capacity))
        return headers


@dataclass(slots=True)
class AccessControl:
    """What a server checks before a generation: its API keys and its per-key limits."""

    keys: ApiKeyStore
    limiter: RateLimiter
    metrics: ServerMetrics | None = field(default=None)

    def bind_metrics(self, metrics: ServerMetrics) -> None:
        self.metrics = metrics
        metrics.generation_listeners.append(self.limiter.charge_current_request)

    def key_name(self, scope: Scope) -> str | None:
        """The name of the key the request presents (None: none matches); ANONYMOUS without keys."""
        if not self.keys.is_required:
            return ANONYMOUS
        if KEY_NAME_SCOPE not in scope:
            authorization = Headers(scope=scope).get("authorization", "")
            scope[KEY_NAME_SCOPE] = self.keys.authenticate(bearer_token(authorization))
        return scope[KEY_NAME_SCOPE]


def rate_limited_response(decision: Decision, headers: dict[str, str]) -> JSONResponse:
    what = "requests" if decision.limit == "requests" else "generated tokens"
    message = f"Rate limit reached: too many {what} per minute for this API key; retry after the reset."
    status, info = error_info_for(HTTPException(HTTPStatus.TOO_MANY_REQUESTS, message))
    retry_after = str(max(1, math.ceil(decision.retry_after_s)))
    return JSONResponse({"error": info}, status_code=status, headers={**headers, "Retry-After": retry_after})


def _relative_path(scope: Scope) -> str:
    path, root = scope.get("path", ""), scope.get("root_path", "")
    return path[len(root) :] if root and path.startswith(root) else path


class RateLimitMiddleware:
    """Counts each authenticated request by key name, applies the per-key limits and adds the
    x-ratelimit-* headers. Reads the server's AccessControl at request time (app.state.vdiff.access);
    a wrong or missing key passes through untouched (the route's require_api_key answers 401)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        access = self._access(scope)
        if access is None or scope["type"] != "http" or scope.get("method") == "OPTIONS":
            await self.app(scope, receive, send)
            return
        if _relative_path(scope) in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        key_name = access.key_name(scope)
        if key_name is None:
            await self.app(scope, receive, send)
            return
        metrics = access.metrics
        if metrics is not None:
            metrics.requests_by_key.labels(model_name=metrics.model_name, key_name=key_name).inc()
        limiter = access.limiter
        if not limiter.is_enabled:
            await self.app(scope, receive, send)
            return
        client = key_name if access.keys.is_required else f"address:{(scope.get('client') or ('?',))[0]}"
        decision = limiter.admit(client)
        if decision.limit is not None:
            if metrics is not None:
                metrics.rate_limited.labels(
                    model_name=metrics.model_name, key_name=key_name, limit=decision.limit
                ).inc()
            await rate_limited_response(decision, limiter.headers(client))(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in limiter.headers(client).items():
                    headers[name] = value
            await send(message)

        reset = _current_client.set(client)
        try:
            await self.app(scope, receive, send_with_headers)
        finally:
            _current_client.reset(reset)

    @staticmethod
    def _access(scope: Scope) -> AccessControl | None:
        app = scope.get("app")
        state = getattr(getattr(app, "state", None), "vdiff", None)
        return getattr(state, "access", None)
