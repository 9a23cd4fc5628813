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
* ``/api/registry...`` — the registry in force: read it, put or remove one entry, its history
  (:mod:`alerts.api_registry`)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Callable, Generator, Sequence
from typing import TypeVar

import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, generate_latest
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp

from alerts.api_guard import BodyLimit, Guard, SecurityHeaders
from alerts.api_input import (
    MAX_BODY_BYTES,
    MAX_BODY_DEPTH,
    MAX_ID,
    MAX_LIMIT,
    MAX_NAME_CHARS,
    MAX_TEXT_CHARS,
    OPENAPI_PATH,
    SECURITY_HEADERS,
    ApiError,
    alert_json,
    json_body,
    only_fields,
    only_query,
    parse_body,
    path_id,
    query_bool,
    query_str,
    silence_from,
    str_field,
)
from alerts.api_registry import APPLIES, registry_routes
from alerts.errors import ListenError
from alerts.model import AlertState, Silence
from alerts.openapi import OPENAPI, SPACE_CLASS, openapi_document
from alerts.ratelimit import RateLimits
from alerts.store import AlertStore, StoreClosedError
from sensors.registry_store import RegistryStore

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

_T = TypeVar("_T")


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
        only_query(request, "state", "site", "kind", "device_id", "limit")
        state = query_str(request, "state")
        if state is not None and state not in {s.value for s in AlertState}:
            states = ", ".join(s.value for s in AlertState)
            raise ApiError(400, f"{state!r} is not a state ({states})", "state")
        limit_text = query_str(request, "limit")
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
            site=query_str(request, "site"),
            kind=query_str(request, "kind"),
            device_id=query_str(request, "device_id"),
            limit=limit,
        )
        return JSONResponse({"alerts": [alert_json(a) for a in alerts]})

    async def show_alert(self, request: Request) -> Response:
        """``GET /api/alerts/{id}``: the alert and its history, oldest first."""
        alert_id = path_id(request, "alert_id", "alert")
        only_query(request)
        stored = await self._alert_or_404(alert_id, lambda: self.store.get(alert_id))
        history = await run_in_threadpool(self.store.history, alert_id)
        body = alert_json(stored.alert)
        body["history"] = [{"ms": ms, "what": what, "detail": d} for ms, what, d in history]
        return JSONResponse(body)

    async def ack_alert(self, request: Request) -> Response:
        """``POST /api/alerts/{id}/ack`` ``{"by", "comment"?}``."""
        alert_id = path_id(request, "alert_id", "alert")
        only_query(request)
        body = await json_body(request)
        only_fields(body, ("by", "comment"))
        by = str_field(body, "by", required=True)
        comment = str_field(body, "comment", required=False)
        now = self.clock()
        alert = await self._alert_or_404(
            alert_id, lambda: self.store.acknowledge(alert_id, by, now, comment)
        )
        return JSONResponse(alert_json(alert))

    async def unack_alert(self, request: Request) -> Response:
        """``POST /api/alerts/{id}/unack`` ``{"by"}``."""
        alert_id = path_id(request, "alert_id", "alert")
        only_query(request)
        body = await json_body(request)
        only_fields(body, ("by",))
        by = str_field(body, "by", required=True)
        now = self.clock()
        alert = await self._alert_or_404(
            alert_id, lambda: self.store.unacknowledge(alert_id, by, now)
        )
        return JSONResponse(alert_json(alert))

    async def comment_alert(self, request: Request) -> Response:
        """``POST /api/alerts/{id}/comment`` ``{"by", "text"}``."""
        alert_id = path_id(request, "alert_id", "alert")
        only_query(request)
        body = await json_body(request)
        only_fields(body, ("by", "text"))
        by = str_field(body, "by", required=True)
        text = str_field(body, "text", required=True)
        now = self.clock()
        alert = await self._alert_or_404(
            alert_id, lambda: self.store.comment(alert_id, by, now, text)
        )
        return JSONResponse(alert_json(alert))

    async def silences(self, request: Request) -> Response:
        """``/api/silences``: one route for GET and POST, so a 405 lists both in ``Allow``."""
        if request.method == "POST":
            return await self.add_silence(request)
        return await self.list_silences(request)

    async def list_silences(self, request: Request) -> Response:
        """``GET /api/silences``: all; ``?active=true`` those in force now, ``false`` the
        others (ended or not started yet)."""
        only_query(request, "active")
        active = query_bool(request, "active")
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
        only_query(request)
        silence = silence_from(await json_body(request), self.clock())
        stored = await run_in_threadpool(self.store.add_silence, silence)
        return JSONResponse(stored.as_dict(), status_code=201)

    async def end_silence(self, request: Request) -> Response:
        """``DELETE /api/silences/{id}``: ends it now (kept for the record)."""
        silence_id = path_id(request, "silence_id", "silence")
        only_query(request)
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
        return JSONResponse(OPENAPI)


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
    registry: RegistryStore | None = None,
    registry_applies: str = APPLIES,
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
        registry: The registry in force and its history (``/api/registry``,
            :mod:`alerts.api_registry`); None: those routes answer 404.
        registry_applies: What an edit's response says of when the service uses it.

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
    middleware = [Middleware(SecurityHeaders)]
    if cors_origins:
        middleware.append(
            Middleware(
                CORSMiddleware,
                allow_origins=list(cors_origins),
                allow_methods=["GET", "POST", "PUT", "DELETE"],
                allow_headers=["Authorization", "Content-Type"],
                expose_headers=["Retry-After"],
            )
        )
    middleware += [
        Middleware(BodyLimit, max_bytes=MAX_BODY_BYTES),
        Middleware(Guard, token=token, limits=rate_limits, monotonic=monotonic, refused=refused),
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
            *(registry_routes(registry, registry_applies) if registry is not None else []),
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
