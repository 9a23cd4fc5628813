"""The alerts HTTP API: list, show, acknowledge and comment alerts; set and end silences.

JSON in and out. Every ``/api/...`` route needs ``Authorization: Bearer <token>``; ``/metrics``
(Prometheus text), ``/healthz`` and ``/openapi.json`` (the OpenAPI 3.1 description of all of
this, :func:`openapi_document`) do not. Errors are ``{"error": "..."}`` — naming the field when a
field is wrong — with 400 (malformed request), 401 (no or wrong token), 404 (no such alert or
silence), 413 (a body over :data:`MAX_BODY_BYTES`), 422 (a field fails validation), 429 (rate
limited, with ``Retry-After`` in seconds) or 503 (the store is closed); a traceback is never sent.
Input is bounded before it reaches the store: ids fit SQLite's 64-bit integers, times lie in
1970..9999, text fields have a length limit and bodies a nesting limit, so no request body or path
answers 500. Every response carries ``Content-Security-Policy: default-src 'self'``,
``X-Content-Type-Options: nosniff`` and ``Referrer-Policy: no-referrer``.

Rate limits (:class:`alerts.ratelimit.RateLimits`, off unless given): a token bucket per client
address for every request, one per token for authenticated ones, and a stricter one per client
address for failed authentications; once that one is empty, the address gets 429 on every
``/api`` route until it refills, so a token cannot be guessed quickly. Cross-origin requests
(CORS) are refused unless origins are given: then exactly those may call the API from a browser.

Times come from the injected ``clock`` (epoch milliseconds) so tests are exact; rate limits use
the injected ``monotonic`` clock (seconds). The store is synchronous SQLite: every call runs in a
worker thread so the event loop is never blocked.

Routes:

* ``GET /api/alerts?state=&site=&kind=&device_id=&limit=`` — ``{"alerts": [...]}``
* ``GET /api/alerts/{id}`` — the alert and its ``history``
* ``POST /api/alerts/{id}/ack`` ``{"by", "comment"?}``; ``.../unack`` ``{"by"}``;
  ``.../comment`` ``{"by", "text"}`` — the updated alert
* ``GET /api/silences?active=true|false`` — ``{"silences": [...]}``
* ``POST /api/silences`` ``{"author", "reason", "device_id"?, "site"?, "kind"?, "starts"?,
  "ends"? | "duration"?}`` — 201 and the silence
* ``DELETE /api/silences/{id}`` — ends it now; the silence
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import math
import os
import socket
import time
from collections.abc import Callable, Generator, Mapping, Sequence
from datetime import datetime
from typing import Any, Final, TypeVar

import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, generate_latest
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from alerts.errors import AlertsError, ListenError, RuleError
from alerts.model import Alert, AlertState, Silence
from alerts.ratelimit import RateLimits, TokenBuckets
from alerts.rules import parse_duration_s
from alerts.store import AlertStore, StoreClosedError
from detection.events import Severity
from sensors.codec import nesting_depth
from sensors.limits import MAX_TS_MS

__all__ = [
    "MAX_BODY_BYTES",
    "MAX_BODY_DEPTH",
    "MAX_ID",
    "MAX_NAME_CHARS",
    "MAX_TEXT_CHARS",
    "OPENAPI_PATH",
    "SECURITY_HEADERS",
    "SPACE_CLASS",
    "ApiError",
    "create_app",
    "openapi_document",
    "parse_body",
    "parse_listen",
    "serve_api",
    "silence_from",
]

_log = logging.getLogger("boltwatch.alerts.api")

MAX_BODY_BYTES: Final = 64 * 1024
"""Requests are a few fields; anything bigger is refused (413) before it is read."""
MAX_BODY_DEPTH: Final = 8
"""Deepest nesting of arrays and objects in a request body (levels); bodies are flat objects."""
MAX_LIMIT: Final = 10_000
"""Upper bound of ``limit`` on ``GET /api/alerts``."""
MAX_ID: Final = 2**63 - 1
"""Largest alert or silence id (SQLite's integer); a larger one in a path is refused (404)."""
MAX_TEXT_CHARS: Final = 4_000
"""Longest comment or silence reason (characters)."""
MAX_NAME_CHARS: Final = 256
"""Longest ``by``, ``author``, ``device_id``, ``site`` or ``kind`` (characters)."""
SECURITY_HEADERS: Final = (
    (b"content-security-policy", b"default-src 'self'"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
)
"""Sent with every response (errors included)."""
OPENAPI_PATH: Final = "/openapi.json"
"""Where the OpenAPI description (:func:`openapi_document`) is served, without a token."""
_MATCHERS: Final = ("device_id", "site", "kind")
_TEXT_FIELDS: Final = frozenset({"comment", "text", "reason"})
_SILENCE_FIELDS: Final = ("author", "reason", *_MATCHERS, "starts", "ends", "duration")

_T = TypeVar("_T")


class ApiError(AlertsError):
    """A request the API refuses: sent as ``{"error": message}`` with ``status``.

    Attributes:
        status: HTTP status (400, 404, 422).
        field: The offending field or query parameter ("" when none).
    """

    def __init__(self, status: int, message: str, field: str = "") -> None:
        super().__init__(f"{field}: {message}" if field else message)
        self.status = status
        self.field = field


def _invalid(field: str, message: str) -> ApiError:
    return ApiError(422, message, field)


def _is_api(path: str) -> bool:
    return path == "/api" or path.startswith("/api/")


def _too_many(message: str, wait_s: float) -> Response:
    """429 with ``Retry-After`` in whole seconds (at least 1, rounded up)."""
    retry_after = max(1, math.ceil(wait_s))
    return JSONResponse(
        {"error": f"{message}; retry after {retry_after} s"},
        status_code=429,
        headers={"Retry-After": str(retry_after)},
    )


class _Guard:
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
            return _too_many("too many requests from this address", wait)
        if not _is_api(scope.get("path", "")):
            return None
        failures = self._auth_failures
        if failures is not None and (wait := failures.wait_s(address)) > 0:
            self._refused.labels(reason="auth_failures").inc()
            return _too_many("too many failed authentications from this address", wait)
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
            return _too_many("too many requests with this token", wait)
        return None


class _BodyLimit:
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


class _SecurityHeaders:
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


def _str_field(body: Mapping[str, Any], name: str, *, required: bool) -> str:
    value = body.get(name)
    if value is None:
        if required:
            raise _invalid(name, "required")
        return ""
    if not isinstance(value, str):
        raise _invalid(name, "must be a string")
    # Measured before stripping: the limit is on what is sent (as the OpenAPI maxLength says).
    limit = MAX_TEXT_CHARS if name in _TEXT_FIELDS else MAX_NAME_CHARS
    if len(value) > limit:
        raise _invalid(name, f"{len(value)} characters; at most {limit}")
    value = value.strip()
    if required and not value:
        raise _invalid(name, "required (must not be empty)")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate ("\ud800" in the JSON): not storable text
        raise _invalid(name, "not valid Unicode (lone surrogate)") from None
    return value


def _time_ms(value: object, name: str) -> int:
    """Epoch ms of an RFC 3339 string or of a number of epoch milliseconds (1970..9999)."""
    what = "must be an RFC 3339 time or epoch milliseconds"
    if isinstance(value, bool):
        raise _invalid(name, what)
    if isinstance(value, int | float):
        # Bounded before int(): NaN, infinity and 1e300 would fail there or overflow SQLite.
        if not (isinstance(value, int) or math.isfinite(value)) or not 0 <= value <= MAX_TS_MS:
            raise _invalid(name, f"epoch milliseconds must be between 0 and {MAX_TS_MS} (9999)")
        return int(value)
    if isinstance(value, str):
        try:
            dt = datetime.fromisoformat(value.strip())
        except ValueError:
            raise _invalid(name, f"{value[:64]!r} is not an RFC 3339 time") from None
        if dt.tzinfo is None:
            raise _invalid(name, f"{value[:64]!r} has no UTC offset (add Z or +01:00)")
        ms = round(dt.timestamp() * 1000)
        if not 0 <= ms <= MAX_TS_MS:
            raise _invalid(name, f"{value[:64]!r} is not between 1970 and 9999 (UTC)")
        return ms
    raise _invalid(name, what)


def _only_fields(body: Mapping[str, Any], known: Sequence[str]) -> None:
    """422 naming the first field of ``body`` that is not in ``known``: a misspelt matcher
    (``devce_id``) must not silently widen a silence."""
    for name in body:
        if name not in known:
            raise _invalid(name[:64] or '""', f"unknown field; fields are {', '.join(known)}")


def silence_from(body: Mapping[str, Any], now_ms: int) -> Silence:
    """Validate a ``POST /api/silences`` body into a silence (id 0, not stored yet).

    Args:
        body: The parsed body (see :func:`parse_body`).
        now_ms: Current time, epoch milliseconds (the default ``starts``).

    Raises:
        ApiError: A field is missing or invalid (422, naming it).
    """
    _only_fields(body, _SILENCE_FIELDS)
    author = _str_field(body, "author", required=True)
    reason = _str_field(body, "reason", required=True)
    matchers = {m: _str_field(body, m, required=False) for m in _MATCHERS}
    if not any(matchers.values()):
        raise _invalid("device_id", "give at least one matcher: device_id, site or kind")
    starts_ms = now_ms if body.get("starts") is None else _time_ms(body["starts"], "starts")
    ends, duration = body.get("ends"), body.get("duration")
    if ends is not None and duration is not None:
        raise _invalid("duration", "give ends or duration, not both")
    if ends is not None:
        ends_ms = _time_ms(ends, "ends")
    elif duration is not None:
        try:
            duration_s = parse_duration_s(duration, "duration")
        except RuleError as exc:
            raise _invalid("duration", exc.reason) from exc
        if duration_s * 1000 > MAX_TS_MS - starts_ms:
            raise _invalid("duration", "ends after 9999-12-31")
        ends_ms = starts_ms + round(duration_s * 1000)
    else:
        raise _invalid("ends", "give ends (a time) or duration (like 2h)")
    if ends_ms <= starts_ms:
        raise _invalid("ends", "must be after starts")
    return Silence(0, starts_ms, ends_ms, author, reason, **matchers)


def parse_body(raw: bytes) -> dict[str, Any]:
    """A request body as a JSON object (``{}`` when empty).

    Raises:
        ApiError: 400 when the body is not a JSON object, nests deeper than
            :data:`MAX_BODY_DEPTH`, or holds a number Python refuses to parse (over 4300 digits).
    """
    if not raw.strip():
        return {}
    # Bounded before parsing: json's recursion would end in RecursionError (a 500) first.
    if nesting_depth(raw, MAX_BODY_DEPTH) > MAX_BODY_DEPTH:
        raise ApiError(400, f"the body nests arrays and objects deeper than {MAX_BODY_DEPTH}")
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, not UTF-8, huge int
        raise ApiError(400, f"the body is not JSON ({str(exc)[:200]})") from exc
    if not isinstance(body, dict):
        raise ApiError(400, "the body must be a JSON object")
    return body


async def _json_body(request: Request) -> dict[str, Any]:
    return parse_body(await request.body())


def _path_id(request: Request, name: str, what: str) -> int:
    """An id from the path; beyond SQLite's integers it cannot exist (404, naming the field)."""
    value: int = request.path_params[name]
    if value > MAX_ID:
        raise ApiError(404, f"no {what} {value} (ids are at most {MAX_ID})", name)
    return value


def _alert_json(alert: Alert) -> dict[str, Any]:
    """``alert.as_dict()`` with non-finite numbers in ``data`` as null.

    Detectors report "never" as infinity (``hours_to_alarm_line`` of a bolt that is not losing
    preload); JSON has no infinity, and json.dumps(allow_nan=False) would fail with a 500.
    """
    body = alert.as_dict()
    data: Mapping[str, Any] = body["data"]
    body["data"] = {
        k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in data.items()
    }
    return body


def _only_query(request: Request, *known: str) -> None:
    """400 naming the first query parameter that is not in ``known`` (``limt=5`` is a typo, not
    a request for the default)."""
    for name in request.query_params:
        if name not in known:
            raise ApiError(
                400,
                f"unknown query parameter; known: {', '.join(known) or 'none'}",
                name[:64] or '""',
            )


def _query_str(request: Request, name: str) -> str | None:
    value = request.query_params.get(name)
    if value is None:
        return None
    return value.strip() or None


def _query_bool(request: Request, name: str) -> bool | None:
    value = _query_str(request, name)
    if value is None:
        return None
    lowered = value.lower()
    if lowered in {"true", "1", "yes"}:
        return True
    if lowered in {"false", "0", "no"}:
        return False
    raise ApiError(400, f"{value!r} is not true or false", name)


class _Handlers:
    """The endpoints, sharing the store, the clock and the metrics registries."""

    def __init__(
        self, store: AlertStore, clock: Callable[[], int], registries: Sequence[CollectorRegistry]
    ) -> None:
        self.store = store
        self.clock = clock
        self.registries = list(registries)

    async def _alert_or_404(self, alert_id: int, call: Callable[[], _T | None]) -> _T:
        found = await run_in_threadpool(call)
        if found is None:
            raise ApiError(404, f"no alert {alert_id}")
        return found

    async def list_alerts(self, request: Request) -> Response:
        """``GET /api/alerts``: newest activity first, filtered by the query."""
        _only_query(request, "state", "site", "kind", "device_id", "limit")
        state = _query_str(request, "state")
        if state is not None and state not in {s.value for s in AlertState}:
            states = ", ".join(s.value for s in AlertState)
            raise ApiError(400, f"{state!r} is not a state ({states})", "state")
        limit_text = _query_str(request, "limit")
        limit = 500
        if limit_text is not None:
            # ASCII digits only: int() also takes "+5", "1_000" and other scripts' digits.
            if not (limit_text.isascii() and limit_text.isdigit()) or len(limit_text) > 9:
                raise ApiError(400, f"{limit_text[:64]!r} is not a whole number", "limit")
            limit = int(limit_text)
            if not 1 <= limit <= MAX_LIMIT:
                raise ApiError(400, f"must be between 1 and {MAX_LIMIT}", "limit")
        alerts = await run_in_threadpool(
            self.store.alerts,
            state=state,
            site=_query_str(request, "site"),
            kind=_query_str(request, "kind"),
            device_id=_query_str(request, "device_id"),
            limit=limit,
        )
        return JSONResponse({"alerts": [_alert_json(a) for a in alerts]})

    async def show_alert(self, request: Request) -> Response:
        """``GET /api/alerts/{id}``: the alert and its history, oldest first."""
        alert_id = _path_id(request, "alert_id", "alert")
        _only_query(request)
        stored = await self._alert_or_404(alert_id, lambda: self.store.get(alert_id))
        history = await run_in_threadpool(self.store.history, alert_id)
        body = _alert_json(stored.alert)
        body["history"] = [{"ms": ms, "what": what, "detail": d} for ms, what, d in history]
        return JSONResponse(body)

    async def ack_alert(self, request: Request) -> Response:
        """``POST /api/alerts/{id}/ack`` ``{"by", "comment"?}``."""
        alert_id = _path_id(request, "alert_id", "alert")
        _only_query(request)
        body = await _json_body(request)
        _only_fields(body, ("by", "comment"))
        by = _str_field(body, "by", required=True)
        comment = _str_field(body, "comment", required=False)
        now = self.clock()
        alert = await self._alert_or_404(
            alert_id, lambda: self.store.acknowledge(alert_id, by, now, comment)
        )
        return JSONResponse(_alert_json(alert))

    async def unack_alert(self, request: Request) -> Response:
        """``POST /api/alerts/{id}/unack`` ``{"by"}``."""
        alert_id = _path_id(request, "alert_id", "alert")
        _only_query(request)
        body = await _json_body(request)
        _only_fields(body, ("by",))
        by = _str_field(body, "by", required=True)
        now = self.clock()
        alert = await self._alert_or_404(
            alert_id, lambda: self.store.unacknowledge(alert_id, by, now)
        )
        return JSONResponse(_alert_json(alert))

    async def comment_alert(self, request: Request) -> Response:
        """``POST /api/alerts/{id}/comment`` ``{"by", "text"}``."""
        alert_id = _path_id(request, "alert_id", "alert")
        _only_query(request)
        body = await _json_body(request)
        _only_fields(body, ("by", "text"))
        by = _str_field(body, "by", required=True)
        text = _str_field(body, "text", required=True)
        now = self.clock()
        alert = await self._alert_or_404(
            alert_id, lambda: self.store.comment(alert_id, by, now, text)
        )
        return JSONResponse(_alert_json(alert))

    async def silences(self, request: Request) -> Response:
        """``/api/silences``: one route for GET and POST, so a 405 lists both in ``Allow``."""
        if request.method == "POST":
            return await self.add_silence(request)
        return await self.list_silences(request)

    async def list_silences(self, request: Request) -> Response:
        """``GET /api/silences``: all; ``?active=true`` those in force now, ``false`` the
        others (ended or not started yet)."""
        _only_query(request, "active")
        active = _query_bool(request, "active")
        now = self.clock()
        if active:
            silences = await run_in_threadpool(self.store.silences, now)
        else:
            silences = await run_in_threadpool(self.store.silences)
            if active is False:
                silences = [s for s in silences if not s.starts_ms <= now < s.ends_ms]
        return JSONResponse({"silences": [s.as_dict() for s in silences]})

    async def add_silence(self, request: Request) -> Response:
        """``POST /api/silences``: 201 and the stored silence."""
        _only_query(request)
        silence = silence_from(await _json_body(request), self.clock())
        stored = await run_in_threadpool(self.store.add_silence, silence)
        return JSONResponse(stored.as_dict(), status_code=201)

    async def end_silence(self, request: Request) -> Response:
        """``DELETE /api/silences/{id}``: ends it now (kept for the record)."""
        silence_id = _path_id(request, "silence_id", "silence")
        _only_query(request)
        now = self.clock()

        def end() -> Silence | None:
            if not self.store.end_silence(silence_id, now):
                return None
            return next((s for s in self.store.silences() if s.id == silence_id), None)

        ended = await run_in_threadpool(end)
        if ended is None:
            raise ApiError(404, f"no silence {silence_id}")
        return JSONResponse(ended.as_dict())

    async def metrics(self, _: Request) -> Response:
        """``GET /metrics``: Prometheus text of every registry."""
        text = b"".join(generate_latest(r) for r in self.registries)
        return Response(text, media_type=CONTENT_TYPE_LATEST)

    async def healthz(self, _: Request) -> Response:
        """``GET /healthz``: ok when the store answers (503 when it is closed)."""
        await run_in_threadpool(self.store.counts)
        return JSONResponse({"status": "ok"})

    async def openapi(self, _: Request) -> Response:
        """``GET /openapi.json``: :func:`openapi_document`."""
        return JSONResponse(_OPENAPI)


def create_app(
    store: AlertStore,
    *,
    token: str,
    clock: Callable[[], int],
    metrics_registry: CollectorRegistry | None = None,
    extra_registries: Sequence[CollectorRegistry] = (),
    rate_limits: RateLimits | None = None,
    cors_origins: Sequence[str] = (),
    monotonic: Callable[[], float] = time.monotonic,
) -> Starlette:
    """The alerts API as an ASGI application.

    Args:
        store: The alert store (calls run in worker threads).
        token: Bearer token every ``/api`` route requires (config key ``alerts.api_token``).
        clock: Current time, epoch milliseconds.
        metrics_registry: Registry served at ``/metrics`` (usually the pipeline's).
        extra_registries: More registries served at ``/metrics`` (ingest, detection).
        rate_limits: Per-client, per-token and failed-authentication limits (config keys
            ``alerts.api_rate_per_s``, ``api_burst``, ``api_auth_failures_per_min``); None: no
            limits. Refusals are counted on ``/metrics`` as ``boltwatch_api_refused_total``.
        cors_origins: Origins (``https://ops.example.com``) browsers may call the API from
            (config key ``alerts.api_cors_origins``); empty: no CORS headers at all.
        monotonic: Monotonic time in seconds, for the rate limits.

    Returns:
        The Starlette application.

    Raises:
        ValueError: The token is empty.
    """
    if not token or not token.strip():
        raise ValueError("alerts.api_token: must not be empty (the API refuses to run unguarded)")
    own = CollectorRegistry()
    refused = Counter(
        "boltwatch_api_refused",
        "API requests refused before their handler, by reason "
        "(unauthorized, auth_failures, client_rate, token_rate)",
        ["reason"],
        registry=own,
    )
    api = _Handlers(
        store, clock, [r for r in (metrics_registry, *extra_registries, own) if r is not None]
    )
    # Outermost first. CORS sits outside the guard so that preflights (which carry no token) are
    # answered, and so that a browser can read the 401 and 429 it gets.
    middleware = [Middleware(_SecurityHeaders)]
    if cors_origins:
        middleware.append(
            Middleware(
                CORSMiddleware,
                allow_origins=list(cors_origins),
                allow_methods=["GET", "POST", "DELETE"],
                allow_headers=["Authorization", "Content-Type"],
                expose_headers=["Retry-After"],
            )
        )
    middleware += [
        Middleware(_BodyLimit, max_bytes=MAX_BODY_BYTES),
        Middleware(_Guard, token=token, limits=rate_limits, monotonic=monotonic, refused=refused),
    ]
    return Starlette(
        routes=[
            Route("/api/alerts", api.list_alerts, methods=["GET"]),
            Route("/api/alerts/{alert_id:int}", api.show_alert, methods=["GET"]),
            Route("/api/alerts/{alert_id:int}/ack", api.ack_alert, methods=["POST"]),
            Route("/api/alerts/{alert_id:int}/unack", api.unack_alert, methods=["POST"]),
            Route("/api/alerts/{alert_id:int}/comment", api.comment_alert, methods=["POST"]),
            Route("/api/silences", api.silences, methods=["GET", "POST"]),
            Route("/api/silences/{silence_id:int}", api.end_silence, methods=["DELETE"]),
            Route("/metrics", api.metrics, methods=["GET"]),
            Route("/healthz", api.healthz, methods=["GET"]),
            Route(OPENAPI_PATH, api.openapi, methods=["GET"]),
        ],
        middleware=middleware,
        exception_handlers={
            ApiError: _api_error,
            HTTPException: _http_error,
            StoreClosedError: _store_closed,
            Exception: _internal_error,
        },
    )


async def _api_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)  # noqa: S101 - registered for ApiError only
    return JSONResponse({"error": str(exc)}, status_code=exc.status)


async def _http_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)  # noqa: S101 - registered for HTTPException only
    return JSONResponse({"error": exc.detail}, status_code=exc.status_code, headers=exc.headers)


async def _store_closed(_: Request, exc: Exception) -> Response:
    return JSONResponse({"error": str(exc)}, status_code=503)


async def _internal_error(request: Request, exc: Exception) -> Response:
    # A bug, not input (inputs are bounded above): logged with its traceback, and answered as
    # JSON with the security headers (this handler runs outside the middleware stack).
    _log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
    return JSONResponse(
        {"error": "internal error (logged)"},
        status_code=500,
        headers={k.decode(): v.decode() for k, v in SECURITY_HEADERS},
    )


# -- the OpenAPI description ---------------------------------------------------------------------


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def _object(properties: dict[str, Any], required: Sequence[str] = ()) -> dict[str, Any]:
    """A closed object: what the API sends has exactly these fields."""
    out: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        out["required"] = list(required)
    out["additionalProperties"] = False
    return out


def _error(description: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"description": description, "content": _json(_ref("Error"))}
    if headers:
        out["headers"] = headers
    return out


def _ok(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": _json(schema)}


def _nullable(schema: dict[str, Any], description: str) -> dict[str, Any]:
    """An optional request field: null is the same as leaving it out."""
    return {"anyOf": [schema, {"type": "null"}], "description": description}


_MS_SCHEMA: Final = {"type": "integer", "minimum": 0, "description": "epoch milliseconds, UTC"}
# What str.strip() removes (str.isspace()); JSON Schema's \s is another set (it lacks
# U+001C..U+001F and has U+FEFF), so "not blank" is spelt out.
SPACE_CLASS: Final = (
    r"\t\n\x0b\x0c\r\x1c-\x1f \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
)
"""Regex character class (without brackets) of the characters ``str.strip()`` removes."""
_WHO_SCHEMA: Final = {
    "type": "string",
    "minLength": 1,
    "maxLength": MAX_NAME_CHARS,
    "pattern": f"[^{SPACE_CLASS}]",
    "description": "who (at least one non-space character)",
}
_TIME_SCHEMA: Final = {
    "anyOf": [
        {"type": "string", "format": "date-time", "description": "RFC 3339 with an offset"},
        {"type": "number", "minimum": 0, "maximum": MAX_TS_MS, "description": "epoch ms"},
    ]
}
_DURATION_SCHEMA: Final = {
    "anyOf": [
        {
            "type": "string",
            "pattern": (
                f"^[{SPACE_CLASS}]*[0-9]+([.][0-9]+)?[{SPACE_CLASS}]*(ms|s|m|h|d)?[{SPACE_CLASS}]*$"
            ),
        },
        {"type": "number", "minimum": 0},
    ]
}
_ERRORS: Final = {
    "400": _error("Malformed: a query parameter, or a body that is not a JSON object"),
    "401": _error(
        "No or wrong bearer token",
        {"WWW-Authenticate": {"schema": {"type": "string", "enum": ["Bearer"]}}},
    ),
    "404": _error("No such alert or silence (or route)"),
    "413": _error(f"The body is larger than {MAX_BODY_BYTES} bytes"),
    "422": _error("A field fails validation; the message starts with its name"),
    "429": _error(
        "Rate limited (per client address, per token, or after failed authentications)",
        {"Retry-After": {"required": True, "schema": {"type": "integer", "minimum": 1}}},
    ),
    "503": _error("The alert store is closed (the service is stopping)"),
}


def _responses(ok_status: str, ok: dict[str, Any], *errors: str) -> dict[str, Any]:
    return {ok_status: ok, **{code: _ERRORS[code] for code in errors}}


def _id_param(name: str, what: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "description": f"The {what}'s id",
        "schema": {"type": "integer", "minimum": 0, "maximum": MAX_ID},
        "example": 1,
    }


def _query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": schema,
    }


def _body(schema: dict[str, Any], example: dict[str, Any]) -> dict[str, Any]:
    return {
        "required": True,
        "content": {"application/json": {"schema": schema, "example": example}},
    }


def _schemas() -> dict[str, Any]:
    text = {"type": "string"}
    alert_fields: dict[str, Any] = {
        "id": {"type": "integer", "minimum": 1},
        "device_id": text,
        "kind": {**text, "description": "event kind (loosening, preload_low, no_data, ...)"},
        "site": text,
        "group": {**text, "description": "notification group key (joint or site)"},
        "severity": {"type": "string", "enum": [str(s) for s in Severity]},
        "state": {"type": "string", "enum": [s.value for s in AlertState]},
        "first_ms": _MS_SCHEMA,
        "last_event_ms": _MS_SCHEMA,
        "active_ms": {**_MS_SCHEMA, "description": "0 while pending"},
        "cleared_ms": {**_MS_SCHEMA, "description": "0 while not cleared"},
        "explanation": text,
        "data": {
            "type": "object",
            "additionalProperties": {"type": ["number", "null"]},
            "description": "the latest event's numbers (null: infinite, e.g. never)",
        },
        "acknowledged": {"type": "boolean"},
        "ack_by": text,
        "ack_ms": _MS_SCHEMA,
        "comments": {"type": "array", "items": _ref("Comment")},
        "flapping": {"type": "boolean"},
        "late": {"type": "boolean", "description": "the latest event came from late readings"},
    }
    history = {
        "type": "array",
        "items": _object(
            {"ms": _MS_SCHEMA, "what": text, "detail": text}, ["ms", "what", "detail"]
        ),
        "description": "oldest first",
    }
    silence_fields: dict[str, Any] = {
        "id": {"type": "integer", "minimum": 1},
        "starts_ms": _MS_SCHEMA,
        "ends_ms": _MS_SCHEMA,
        "author": text,
        "reason": text,
        "device_id": {**text, "description": '"" matches every device'},
        "site": {**text, "description": '"" matches every site'},
        "kind": {**text, "description": '"" matches every kind'},
    }
    matcher = {"type": "string", "maxLength": MAX_NAME_CHARS}
    return {
        "Error": _object({"error": text}, ["error"]),
        "Comment": _object(
            {"author": text, "ms": _MS_SCHEMA, "text": text}, ["author", "ms", "text"]
        ),
        "Alert": _object(alert_fields, list(alert_fields)),
        "AlertWithHistory": _object(
            {**alert_fields, "history": history}, [*alert_fields, "history"]
        ),
        "Alerts": _object({"alerts": {"type": "array", "items": _ref("Alert")}}, ["alerts"]),
        "Silence": _object(silence_fields, list(silence_fields)),
        "Silences": _object(
            {"silences": {"type": "array", "items": _ref("Silence")}}, ["silences"]
        ),
        "AckRequest": _object(
            {
                "by": _WHO_SCHEMA,
                "comment": _nullable(
                    {"type": "string", "maxLength": MAX_TEXT_CHARS}, "also added as a comment"
                ),
            },
            ["by"],
        ),
        "UnackRequest": _object({"by": _WHO_SCHEMA}, ["by"]),
        "CommentRequest": _object(
            {
                "by": _WHO_SCHEMA,
                "text": {**_WHO_SCHEMA, "maxLength": MAX_TEXT_CHARS, "description": "the comment"},
            },
            ["by", "text"],
        ),
        "SilenceRequest": {
            **_object(
                {
                    "author": _WHO_SCHEMA,
                    "reason": {**_WHO_SCHEMA, "maxLength": MAX_TEXT_CHARS, "description": "why"},
                    "device_id": _nullable(matcher, "only this device"),
                    "site": _nullable(matcher, "only this site"),
                    "kind": _nullable(matcher, "only this alert kind"),
                    "starts": _nullable(_TIME_SCHEMA, "default: now"),
                    "ends": _nullable(_TIME_SCHEMA, "after starts"),
                    "duration": _nullable(
                        _DURATION_SCHEMA, "90s, 5m, 2h, 1d or seconds (instead of ends)"
                    ),
                },
                ["author", "reason"],
            ),
            "allOf": [
                {"anyOf": [{"required": [m], "properties": {m: _WHO_SCHEMA}} for m in _MATCHERS]},
                {
                    "anyOf": [
                        {"required": ["ends"], "properties": {"ends": _TIME_SCHEMA}},
                        {"required": ["duration"], "properties": {"duration": _DURATION_SCHEMA}},
                    ]
                },
                {
                    "not": {
                        "required": ["ends", "duration"],
                        "properties": {"ends": _TIME_SCHEMA, "duration": _DURATION_SCHEMA},
                    }
                },
            ],
            "description": (
                "At least one non-empty matcher (device_id, site, kind); ends or duration, not "
                "both; ends after starts and before 10000-01-01 (422 naming the field otherwise: "
                "the last rule is one a schema cannot state)."
            ),
        },
        "Health": _object({"status": {"type": "string", "enum": ["ok"]}}, ["status"]),
    }


def openapi_document() -> dict[str, Any]:
    """The OpenAPI 3.1 description of the API, as served at :data:`OPENAPI_PATH`.

    Every operation lists its request (parameters, body) and every status it can answer with its
    body schema; the property tests (``tests/unit/test_api_schema.py``) hold the API to it.
    """
    alert_id = _id_param("alert_id", "alert")
    alert_post: list[str] = ["400", "401", "404", "413", "422", "429", "503"]

    def alert_action(summary: str, action: str, example: dict[str, Any]) -> dict[str, Any]:
        return {
            "post": {
                "summary": summary,
                "operationId": f"{action}Alert",
                "parameters": [alert_id],
                "requestBody": _body(_ref(f"{action.capitalize()}Request"), example),
                "responses": _responses(
                    "200", _ok("The updated alert", _ref("Alert")), *alert_post
                ),
            }
        }

    return {
        "openapi": "3.1.0",
        "info": {
            "title": "boltwatch alerts API",
            "version": "1",
            "description": (
                "Alerts and silences of boltwatch. Every /api route needs "
                '`Authorization: Bearer <token>`. Errors are `{"error": "..."}`.'
            ),
        },
        "security": [{"bearer": []}],
        "paths": {
            "/api/alerts": {
                "get": {
                    "summary": "List alerts, newest activity first",
                    "operationId": "listAlerts",
                    "parameters": [
                        _query(
                            "state",
                            {"type": "string", "enum": ["", *(s.value for s in AlertState)]},
                            "only this state (empty: any)",
                        ),
                        _query("site", {"type": "string"}, "only this site"),
                        _query("kind", {"type": "string"}, "only this kind"),
                        _query("device_id", {"type": "string"}, "only this device"),
                        _query(
                            "limit",
                            {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": 500},
                            "at most this many",
                        ),
                    ],
                    "responses": _responses(
                        "200", _ok("The alerts", _ref("Alerts")), "400", "401", "429", "503"
                    ),
                }
            },
            "/api/alerts/{alert_id}": {
                "get": {
                    "summary": "One alert and its history",
                    "operationId": "showAlert",
                    "parameters": [alert_id],
                    "responses": _responses(
                        "200",
                        _ok("The alert", _ref("AlertWithHistory")),
                        *("401", "404", "429", "503"),
                    ),
                }
            },
            "/api/alerts/{alert_id}/ack": alert_action(
                "Acknowledge an alert", "ack", {"by": "alice", "comment": "crew on site tomorrow"}
            ),
            "/api/alerts/{alert_id}/unack": alert_action(
                "Take an acknowledgement back", "unack", {"by": "alice"}
            ),
            "/api/alerts/{alert_id}/comment": alert_action(
                "Comment an alert", "comment", {"by": "bob", "text": "retightened, watching"}
            ),
            "/api/silences": {
                "get": {
                    "summary": "List silences",
                    "operationId": "listSilences",
                    "parameters": [
                        _query(
                            "active",
                            {
                                "type": "string",
                                "enum": ["", "true", "false", "1", "0", "yes", "no"],
                            },
                            "true: in force now; false: ended or not started yet; empty: all",
                        )
                    ],
                    "responses": _responses(
                        "200", _ok("The silences", _ref("Silences")), "400", "401", "429", "503"
                    ),
                },
                "post": {
                    "summary": "Create a silence",
                    "operationId": "addSilence",
                    "requestBody": _body(
                        _ref("SilenceRequest"),
                        {
                            "author": "ops",
                            "reason": "retightening campaign",
                            "site": "bridge-b",
                            "duration": "8h",
                        },
                    ),
                    "responses": _responses(
                        "201",
                        _ok("The stored silence", _ref("Silence")),
                        *("400", "401", "413", "422", "429", "503"),
                    ),
                },
            },
            "/api/silences/{silence_id}": {
                "delete": {
                    "summary": "End a silence now (it is kept for the record)",
                    "operationId": "endSilence",
                    "parameters": [_id_param("silence_id", "silence")],
                    "responses": _responses(
                        "200", _ok("The ended silence", _ref("Silence")), "401", "404", "429", "503"
                    ),
                }
            },
            "/metrics": {
                "get": {
                    "summary": "Prometheus metrics",
                    "operationId": "metrics",
                    "security": [],
                    "responses": _responses(
                        "200",
                        {
                            "description": "Prometheus text exposition",
                            "content": {"text/plain": {"schema": {"type": "string"}}},
                        },
                        "429",
                    ),
                }
            },
            "/healthz": {
                "get": {
                    "summary": "Liveness: the store answers",
                    "operationId": "healthz",
                    "security": [],
                    "responses": _responses("200", _ok("Alive", _ref("Health")), "429", "503"),
                }
            },
            OPENAPI_PATH: {
                "get": {
                    "summary": "This description",
                    "operationId": "openapi",
                    "security": [],
                    "responses": _responses(
                        "200", _ok("OpenAPI 3.1 document", {"type": "object"}), "429"
                    ),
                }
            },
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": _schemas(),
        },
    }


_OPENAPI: Final = openapi_document()


def parse_listen(text: str) -> tuple[str, int]:
    """``"127.0.0.1:8080"``, ``"[::1]:8080"`` or ``":8080"`` (all interfaces) to (host, port).

    Raises:
        ValueError: Not HOST:PORT with a port in 1..65535.
    """
    host, sep, port_text = text.strip().rpartition(":")
    if not sep:
        raise ValueError(f"listen address {text!r} is not HOST:PORT (like 127.0.0.1:8080)")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ValueError(f"listen address {text!r}: write an IPv6 host in brackets, [::1]:8080")
    try:
        port = int(port_text)
    except ValueError:
        raise ValueError(f"listen address {text!r}: port {port_text!r} is not a number") from None
    if not 1 <= port <= 65535:
        raise ValueError(f"listen address {text!r}: port {port} is not in 1..65535")
    return host or "0.0.0.0", port  # noqa: S104 - ":8080" asks for every interface


class _EmbeddedServer(uvicorn.Server):
    """A uvicorn server that leaves signals to the service that embeds it.

    uvicorn would install its own SIGINT/SIGTERM handlers and re-raise the signal after serving;
    here the host service owns the signals and stops the API by cancelling its task.
    """

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


async def serve_api(app: ASGIApp, host: str, port: int) -> None:
    """Serve ``app`` with uvicorn in the running event loop until cancelled.

    Cancelling the task stops accepting connections, lets requests in flight finish (uvicorn's
    graceful shutdown) and then re-raises the cancellation.

    Args:
        app: The ASGI application (from :func:`create_app`).
        host: Address to listen on (``0.0.0.0``, ``::``, ``127.0.0.1``...).
        port: TCP port.

    Raises:
        ListenError: The address cannot be bound (in use, not local); an OSError whose message
            names the address and whose ``key`` is ``alerts.api_listen``.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        # Bound here rather than by uvicorn, which would sys.exit() on a port already in use.
        sock = socket.create_server((host, port), family=family)
    except OSError as exc:
        # os.strerror: create_server's own strerror repeats the address ("while attempting...").
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        raise ListenError(
            "alerts.api_listen", exc.errno, f"cannot listen on {host}:{port}: {reason}"
        ) from exc
    # log_config=None: the host service's logging setup stays; uvicorn's loggers are only quieted.
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_config=None,
        log_level="warning",
        lifespan="off",
        access_log=False,
    )
    server = _EmbeddedServer(config)
    task = asyncio.create_task(server.serve(sockets=[sock]), name=f"alerts-api {host}:{port}")
    try:
        await asyncio.shield(task)
    except asyncio.CancelledError:
        server.should_exit = True
        await task
        raise
    finally:
        sock.close()
