"""The alerts API's ASGI middleware: rate limits and the bearer token (:class:`Guard`), the body
size limit (:class:`BodyLimit`) and the security headers on every response
(:class:`SecurityHeaders`)."""

from __future__ import annotations

import hmac
import logging
import math
from collections.abc import Callable

from prometheus_client import Counter
from starlette.datastructures import Headers
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from alerts.api_input import SECURITY_HEADERS, ApiError
from alerts.ratelimit import RateLimits, TokenBuckets

__all__ = ["BodyLimit", "Guard", "SecurityHeaders", "is_api", "too_many"]

_log = logging.getLogger("boltwatch.alerts.api")


def is_api(path: str) -> bool:
    return path == "/api" or path.startswith("/api/")


def too_many(message: str, wait_s: float) -> Response:
    """429 with ``Retry-After`` in whole seconds (at least 1, rounded up)."""
    retry_after = max(1, math.ceil(wait_s))
    return JSONResponse(
        {"error": f"{message}; retry after {retry_after} s"},
        status_code=429,
        headers={"Retry-After": str(retry_after)},
    )


class Guard:
    """ASGI middleware: rate limits, and the bearer token on every ``/api`` path.

    In order: the client address's bucket (every path), then on ``/api`` paths the address's
    failed-authentication bucket (empty: 429 even with the right token, so guessing stays slow),
    the token (401, and one failure taken from that bucket), and the token's bucket. Checked
    before routing, so unknown ``/api`` paths do not reveal what exists.
    """

    def __init__(
        self,
        app: ASGIApp,
        token: str,
        limits: RateLimits | None,
        monotonic: Callable[[], float],
        refused: Counter,
    ) -> None:
        self.app = app
        self._expected = f"Bearer {token}".encode()
        self._refused = refused
        self._per_client: TokenBuckets | None = None
        self._per_token: TokenBuckets | None = None
        self._auth_failures: TokenBuckets | None = None
        if limits is not None and limits.rate_per_s > 0:
            self._per_client = TokenBuckets(
                limits.rate_per_s, limits.burst, clock=monotonic, max_keys=limits.max_clients
            )
            # One token today: its bucket is shared by every client that holds it.
            self._per_token = TokenBuckets(limits.rate_per_s, limits.burst, clock=monotonic)
        if limits is not None and limits.auth_failures_per_min > 0:
            per_min = limits.auth_failures_per_min
            self._auth_failures = TokenBuckets(
                per_min / 60.0,
                max(1, math.floor(per_min)),
                clock=monotonic,
                max_keys=limits.max_clients,
            )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        refusal = self._check(scope)
        if refusal is not None:
            await refusal(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def _check(self, scope: Scope) -> Response | None:
        client = scope.get("client")
        address = str(client[0]) if client else "-"
        if self._per_client is not None and (wait := self._per_client.acquire(address)) > 0:
            self._refused.labels(reason="client_rate").inc()
            return too_many("too many requests from this address", wait)
        if not is_api(scope.get("path", "")):
            return None
        failures = self._auth_failures
        if failures is not None and (wait := failures.wait_s(address)) > 0:
            self._refused.labels(reason="auth_failures").inc()
            return too_many("too many failed authentications from this address", wait)
        given = Headers(scope=scope).get("authorization", "").encode("utf-8", "replace")
        if not hmac.compare_digest(given, self._expected):
            self._refused.labels(reason="unauthorized").inc()
            if failures is not None:
                failures.acquire(address)
                if failures.wait_s(address) > 0:
                    _log.warning("alerts API: failed authentications from %s: slowed down", address)
            return JSONResponse(
                {"error": "unauthorized"}, status_code=401, headers={"WWW-Authenticate": "Bearer"}
            )
        if self._per_token is not None and (wait := self._per_token.acquire("token")) > 0:
            self._refused.labels(reason="token_rate").inc()
            return too_many("too many requests with this token", wait)
        return None


class BodyLimit:
    """ASGI middleware: bodies over ``max_bytes`` are refused with 413 (JSON, inside the security
    headers), from ``Content-Length`` before anything is read, or while a chunked body is read.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    def _error(self) -> ApiError:
        return ApiError(413, f"the body is larger than {self.max_bytes} bytes")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length", "").strip()
        # ASCII digits only ("²".isdigit() is true), and no int() of a 5000-digit header.
        digits = declared.isascii() and declared.isdigit()
        if digits and (len(declared) > 18 or int(declared) > self.max_bytes):
            response = JSONResponse({"error": str(self._error())}, status_code=413)
            await response(scope, receive, send)
            return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    # Raised inside the handler that reads the body: answered by _api_error.
                    raise self._error()
            return message

        await self.app(scope, limited_receive, send)


class SecurityHeaders:
    """ASGI middleware: the :data:`SECURITY_HEADERS` on every HTTP response (401 and 413 too)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                names = {k.lower() for k, _ in message.get("headers", [])}
                extra = [(k, v) for k, v in SECURITY_HEADERS if k not in names]
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        await self.app(scope, receive, send_with_headers)
