"""The alerts HTTP API: list, show, acknowledge and comment alerts; set and end silences.

JSON in and out. Every ``/api/...`` route needs ``Authorization: Bearer <token>``; ``/metrics``
(Prometheus text) and ``/healthz`` do not. Errors are ``{"error": "..."}`` — naming the field
when a field is wrong — with 400 (malformed request), 401 (no or wrong token), 404 (no such alert
or silence) or 422 (a field fails validation); a traceback is never sent. Input is bounded before
it reaches the store: ids fit SQLite's 64-bit integers, times lie in 1970..9999, text fields have a
length limit and bodies a nesting limit, so no request body or path answers 500. Every response
carries ``Content-Security-Policy: default-src 'self'``, ``X-Content-Type-Options: nosniff`` and
``Referrer-Policy: no-referrer``.

Times come from the injected ``clock`` (epoch milliseconds) so tests are exact. The store is
synchronous SQLite: every call runs in a worker thread so the event loop is never blocked.

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
from collections.abc import Callable, Generator, Mapping, Sequence
from datetime import datetime
from typing import Any, Final, TypeVar

import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from alerts.errors import AlertsError, ListenError, RuleError
from alerts.model import AlertState, Silence
from alerts.rules import parse_duration_s
from alerts.store import AlertStore, StoreClosedError
from sensors.codec import nesting_depth
from sensors.limits import MAX_TS_MS

__all__ = [
    "MAX_BODY_BYTES",
    "MAX_BODY_DEPTH",
    "MAX_ID",
    "MAX_NAME_CHARS",
    "MAX_TEXT_CHARS",
    "SECURITY_HEADERS",
    "ApiError",
    "create_app",
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
_MATCHERS: Final = ("device_id", "site", "kind")
_TEXT_FIELDS: Final = frozenset({"comment", "text", "reason"})

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


class _BearerAuth:
    """ASGI middleware: every ``/api`` path needs the bearer token (401 JSON otherwise).

    Checked before routing, so unknown ``/api`` paths do not reveal what exists.
    """

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self._expected = f"Bearer {token}".encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope.get("path", "")
        if scope["type"] == "http" and (path == "/api" or path.startswith("/api/")):
            given = Headers(scope=scope).get("authorization", "").encode("utf-8", "replace")
            if not hmac.compare_digest(given, self._expected):
                response = JSONResponse(
                    {"error": "unauthorized"},
                    status_code=401,
                    headers={"WWW-Authenticate": "Bearer"},
                )
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


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
    value = value.strip()
    if required and not value:
        raise _invalid(name, "required (must not be empty)")
    limit = MAX_TEXT_CHARS if name in _TEXT_FIELDS else MAX_NAME_CHARS
    if len(value) > limit:
        raise _invalid(name, f"{len(value)} characters; at most {limit}")
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


def silence_from(body: Mapping[str, Any], now_ms: int) -> Silence:
    """Validate a ``POST /api/silences`` body into a silence (id 0, not stored yet).

    Args:
        body: The parsed body (see :func:`parse_body`).
        now_ms: Current time, epoch milliseconds (the default ``starts``).

    Raises:
        ApiError: A field is missing or invalid (422, naming it).
    """
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
        state = _query_str(request, "state")
        if state is not None and state not in {s.value for s in AlertState}:
            states = ", ".join(s.value for s in AlertState)
            raise ApiError(400, f"{state!r} is not a state ({states})", "state")
        limit_text = _query_str(request, "limit")
        limit = 500
        if limit_text is not None:
            try:
                limit = int(limit_text)
            except ValueError:
                raise ApiError(400, f"{limit_text!r} is not a whole number", "limit") from None
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
        return JSONResponse({"alerts": [a.as_dict() for a in alerts]})

    async def show_alert(self, request: Request) -> Response:
        """``GET /api/alerts/{id}``: the alert and its history, oldest first."""
        alert_id = _path_id(request, "alert_id", "alert")
        stored = await self._alert_or_404(alert_id, lambda: self.store.get(alert_id))
        history = await run_in_threadpool(self.store.history, alert_id)
        body = stored.alert.as_dict()
        body["history"] = [{"ms": ms, "what": what, "detail": d} for ms, what, d in history]
        return JSONResponse(body)

    async def ack_alert(self, request: Request) -> Response:
        """``POST /api/alerts/{id}/ack`` ``{"by", "comment"?}``."""
        alert_id = _path_id(request, "alert_id", "alert")
        body = await _json_body(request)
        by = _str_field(body, "by", required=True)
        comment = _str_field(body, "comment", required=False)
        now = self.clock()
        alert = await self._alert_or_404(
            alert_id, lambda: self.store.acknowledge(alert_id, by, now, comment)
        )
        return JSONResponse(alert.as_dict())

    async def unack_alert(self, request: Request) -> Response:
        """``POST /api/alerts/{id}/unack`` ``{"by"}``."""
        alert_id = _path_id(request, "alert_id", "alert")
        by = _str_field(await _json_body(request), "by", required=True)
        now = self.clock()
        alert = await self._alert_or_404(
            alert_id, lambda: self.store.unacknowledge(alert_id, by, now)
        )
        return JSONResponse(alert.as_dict())

    async def comment_alert(self, request: Request) -> Response:
        """``POST /api/alerts/{id}/comment`` ``{"by", "text"}``."""
        alert_id = _path_id(request, "alert_id", "alert")
        body = await _json_body(request)
        by = _str_field(body, "by", required=True)
        text = _str_field(body, "text", required=True)
        now = self.clock()
        alert = await self._alert_or_404(
            alert_id, lambda: self.store.comment(alert_id, by, now, text)
        )
        return JSONResponse(alert.as_dict())

    async def list_silences(self, request: Request) -> Response:
        """``GET /api/silences``: all; ``?active=true`` those in force now, ``false`` the
        others (ended or not started yet)."""
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
        silence = silence_from(await _json_body(request), self.clock())
        stored = await run_in_threadpool(self.store.add_silence, silence)
        return JSONResponse(stored.as_dict(), status_code=201)

    async def end_silence(self, request: Request) -> Response:
        """``DELETE /api/silences/{id}``: ends it now (kept for the record)."""
        silence_id = _path_id(request, "silence_id", "silence")
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


def create_app(
    store: AlertStore,
    *,
    token: str,
    clock: Callable[[], int],
    metrics_registry: CollectorRegistry | None = None,
    extra_registries: Sequence[CollectorRegistry] = (),
) -> Starlette:
    """The alerts API as an ASGI application.

    Args:
        store: The alert store (calls run in worker threads).
        token: Bearer token every ``/api`` route requires (config key ``alerts.api_token``).
        clock: Current time, epoch milliseconds.
        metrics_registry: Registry served at ``/metrics`` (usually the pipeline's).
        extra_registries: More registries served at ``/metrics`` (ingest, detection).

    Returns:
        The Starlette application.

    Raises:
        ValueError: The token is empty.
    """
    if not token or not token.strip():
        raise ValueError("alerts.api_token: must not be empty (the API refuses to run unguarded)")
    api = _Handlers(
        store, clock, [r for r in (metrics_registry, *extra_registries) if r is not None]
    )
    return Starlette(
        routes=[
            Route("/api/alerts", api.list_alerts, methods=["GET"]),
            Route("/api/alerts/{alert_id:int}", api.show_alert, methods=["GET"]),
            Route("/api/alerts/{alert_id:int}/ack", api.ack_alert, methods=["POST"]),
            Route("/api/alerts/{alert_id:int}/unack", api.unack_alert, methods=["POST"]),
            Route("/api/alerts/{alert_id:int}/comment", api.comment_alert, methods=["POST"]),
            Route("/api/silences", api.list_silences, methods=["GET"]),
            Route("/api/silences", api.add_silence, methods=["POST"]),
            Route("/api/silences/{silence_id:int}", api.end_silence, methods=["DELETE"]),
            Route("/metrics", api.metrics, methods=["GET"]),
            Route("/healthz", api.healthz, methods=["GET"]),
        ],
        middleware=[Middleware(_SecurityHeaders), Middleware(_BearerAuth, token=token)],
        exception_handlers={
            ApiError: _api_error,
            HTTPException: _http_error,
            StoreClosedError: _store_closed,
            Exception: _internal_error,
        },
        max_body_size=MAX_BODY_BYTES,
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
