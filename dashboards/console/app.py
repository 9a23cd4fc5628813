"""The built-in web console: server-rendered pages (Jinja2), live by htmx polling, charts by uPlot.

Mounted at ``/console`` by ``boltwatch run`` and ``boltwatch demo`` beside the alerts API. Every
page needs a session (:mod:`dashboards.console.auth`); every action is a POST carrying the
session's CSRF token and, for acknowledging, commenting and silencing, the operator role. Actions
go to the same alert store as the API, under the user's name, so that the alert's history says
who did what. htmx and uPlot are served from the package (``static/``, their licences beside
them): no request leaves the server, and the Content-Security-Policy is ``default-src 'self'``.

Pages: ``/`` fleet, ``/alerts``, ``/alerts/{id}``, ``/devices/{id}`` (a bolt or a machine with its
chart), ``/quality``; ``/data/series/{id}?range=`` is the chart's JSON. Fragments (``.../part``)
are what the pages poll every :data:`POLL_S` seconds.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final
from urllib.parse import quote

import msgspec
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import (
    HTMLResponse,
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
)
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from alerts.api_guard import BodyLimit, SecurityHeaders
from alerts.api_input import MAX_BODY_BYTES, MAX_NAME_CHARS, ApiError
from alerts.model import AlertState, Silence
from alerts.ratelimit import TokenBuckets
from dashboards.charts import SPECTRA, charts_of
from dashboards.console.auth import LOGIN_COOKIE, SESSION_COOKIE, SESSION_TTL_S, Auth, Session
from dashboards.console.campaign_pages import CampaignPages
from dashboards.console.forms import Form, FormError, path_of, read_form, root_of, safe_next
from dashboards.console.outlook import Forecast, eta_text, trend_text
from dashboards.console.registry_pages import RegistryPages
from dashboards.console.source import DRAWING, RANGES, ConsoleSource, Status
from dashboards.report import ReportError, joint_report, summaries
from detection.cnc import ISO_10816_3_MMS
from detection.events import EventKind, Severity
from sensors.schema import FIELD_INFO, KINDS, DeviceKind

__all__ = ["POLL_S", "create_console"]

POLL_S: Final = 1
"""Pages poll their live parts this often (seconds), so that a reading stored shows within
2 s: the poll, the commit (ingest groups its commits) and the render."""
_HERE: Final = Path(__file__).parent
_log = logging.getLogger(__name__)
_MAX_SILENCE_H: Final = 24 * 366
REPORT_DAYS: Final = 30
"""The joint page's report covers this many days by default."""
_MAX_REPORT_DAYS: Final = 3660
_SEVERITIES: Final = tuple(str(s) for s in Severity)
Handler = Callable[[Request, Session], Awaitable[Response]]


def _when(ms: int | None) -> str:
    if not ms:
        return "—"
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _ago(ms: int | None, now_ms: int) -> str:
    if not ms:
        return "never"
    return f"{_age((now_ms - ms) / 1000)} ago"


def _age(seconds: float) -> str:
    s = max(0, int(seconds))
    for unit, size in (("d", 86_400), ("h", 3_600), ("min", 60)):
        if s >= size:
            return f"{s // size} {unit}"
    return f"{s} s"


def _environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(_HERE / "templates"),
        autoescape=select_autoescape(["html"]),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["when"] = _when
    env.globals["Status"] = Status
    env.globals["POLL_S"] = POLL_S
    env.globals["trend_text"] = trend_text
    env.globals["ago_s"] = _age
    env.globals["eta_text"] = eta_text
    return env


class _Console:
    def __init__(self, source: ConsoleSource, auth: Auth, clock_s: Callable[[], float]) -> None:
        self.source = source
        self.auth = auth
        self.clock_s = clock_s
        self.env = _environment()
        self.failures = TokenBuckets(5 / 60, 5, clock=time.monotonic)

    # -- plumbing -------------------------------------------------------------------------------

    def render(
        self, request: Request, name: str, status_code: int = 200, **context: object
    ) -> HTMLResponse:
        root = root_of(request)
        html = self.env.get_template(name).render(
            root=root, now_ms=self.source.clock(), ago=_ago, **context
        )
        return HTMLResponse(html, status_code=status_code)

    def guard(self, handler: Handler, *, action: bool = False) -> Callable[[Request], Any]:
        """Wrap a page: a session is needed; an action also needs the CSRF token and, unless it
        is logging out, the operator role."""

        async def endpoint(request: Request) -> Response:
            session = self.auth.session(request.cookies.get(SESSION_COOKIE))
            root = root_of(request)
            if session is None:
                if request.headers.get("HX-Request"):
                    return Response(status_code=401, headers={"HX-Redirect": f"{root}/login"})
                if request.method != "GET":
                    return self.refuse(request, 401, "log in first")
                target = quote(
                    request.url.path + ("?" + request.url.query if request.url.query else "")
                )
                return RedirectResponse(f"{root}/login?next={target}", status_code=303)
            if action:
                form = await read_form(request)
                given = request.headers.get("X-CSRF-Token") or form.fields.get("csrf")
                if not self.auth.csrf_ok(session, given):
                    return self.refuse(request, 403, "the form's CSRF token is missing or wrong")
                request.state.form = form
            return await handler(request, session)

        return endpoint

    def refuse(self, request: Request, status: int, why: str) -> Response:
        return self.render(request, "error.html", status_code=status, session=None, message=why)

    # -- login ----------------------------------------------------------------------------------

    async def login_page(self, request: Request) -> Response:
        cookie, field = self.auth.login_nonce()
        response = self.render(
            request,
            "login.html",
            session=None,
            login_csrf=field,
            next=safe_next(request.query_params.get("next", ""), request),
            message="",
        )
        response.set_cookie(
            LOGIN_COOKIE,
            cookie,
            max_age=600,
            httponly=True,
            samesite="strict",
            path=path_of(request),
        )
        return response

    async def login(self, request: Request) -> Response:
        client = request.client.host if request.client else "?"
        form = await read_form(request)
        wait = self.failures.wait_s(client)
        if wait > 0:
            return Response(
                "too many failed logins; wait",
                status_code=429,
                headers={"Retry-After": str(math.ceil(wait))},
            )
        if not self.auth.login_form_ok(request.cookies.get(LOGIN_COOKIE), form.fields.get("csrf")):
            return self.refuse(request, 403, "the login form expired: reload the page")
        user = self.auth.user_for_token(form.fields.get("token", ""))
        if user is None:
            self.failures.acquire(client)
            cookie, field = self.auth.login_nonce()
            response = self.render(
                request,
                "login.html",
                status_code=401,
                session=None,
                login_csrf=field,
                next=safe_next(form.fields.get("next", ""), request),
                message="That token is not valid.",
            )
            response.set_cookie(
                LOGIN_COOKIE,
                cookie,
                max_age=600,
                httponly=True,
                samesite="strict",
                path=path_of(request),
            )
            return response
        return self._open(request, user.name, safe_next(form.fields.get("next", ""), request))

    async def login_once(self, request: Request) -> Response:
        user = self.auth.redeem(request.query_params.get("code", ""))
        if user is None:
            return self.refuse(request, 401, "this login link was used already or has expired")
        return self._open(request, user.name, safe_next("", request))

    def _open(self, request: Request, name: str, target: str) -> Response:
        user = self.auth.user(name)
        if user is None:
            return self.refuse(request, 401, f"no user {name!r}")
        response = RedirectResponse(target, status_code=303)
        response.set_cookie(
            SESSION_COOKIE,
            self.auth.open_session(user),
            max_age=SESSION_TTL_S,
            httponly=True,
            samesite="strict",
            path=path_of(request),
            secure=request.url.scheme == "https",
        )
        response.delete_cookie(LOGIN_COOKIE, path=path_of(request))
        return response

    async def logout(self, request: Request, session: Session) -> Response:
        self.auth.end_session(session)
        response = RedirectResponse(f"{root_of(request)}/login", status_code=303)
        response.delete_cookie(SESSION_COOKIE, path=path_of(request))
        return response

    # -- pages ----------------------------------------------------------------------------------

    def _fleet_args(self, request: Request) -> tuple[str, Status | None]:
        query = request.query_params.get("q", "")[:MAX_NAME_CHARS]
        try:
            status = (
                Status(request.query_params.get("status", ""))
                if request.query_params.get("status")
                else None
            )
        except ValueError:
            status = None
        return query, status

    async def fleet(self, request: Request, session: Session) -> Response:
        query, status = self._fleet_args(request)
        fleet = await run_in_threadpool(self.source.fleet, query, status)
        return self.render(request, "fleet.html", session=session, fleet=fleet, page="fleet")

    async def fleet_part(self, request: Request, session: Session) -> Response:
        query, status = self._fleet_args(request)
        fleet = await run_in_threadpool(self.source.fleet, query, status)
        return self.render(request, "_fleet.html", session=session, fleet=fleet)

    def _alert_args(self, request: Request) -> dict[str, str | None]:
        q = request.query_params
        state = q.get("state", "open")
        severity = q.get("severity", "")
        return {
            "state": state if state in ("pending", "active", "cleared", "open") else "open",
            "site": q.get("site", "")[:MAX_NAME_CHARS] or None,
            "kind": q.get("kind", "")[:MAX_NAME_CHARS] or None,
            "severity": severity if severity in _SEVERITIES else None,
        }

    def _alerts(self, args: dict[str, str | None]) -> list[Any]:
        state = args["state"]
        worst = Severity.parse(args["severity"]) if args["severity"] else None
        found = self.source.alert_list(
            state=None if state == "open" else state,
            site=args["site"],
            kind=args["kind"],
            min_severity=worst,
        )
        if state == "open":
            found = [a for a in found if a.state is not AlertState.CLEARED]
        return found

    async def alerts(self, request: Request, session: Session) -> Response:
        args = self._alert_args(request)
        found = await run_in_threadpool(self._alerts, args)
        return self.render(
            request,
            "alerts.html",
            session=session,
            alerts=found,
            args=args,
            kinds=[k.value for k in EventKind],
            severities=_SEVERITIES,
            page="alerts",
        )

    async def alerts_part(self, request: Request, session: Session) -> Response:
        found = await run_in_threadpool(self._alerts, self._alert_args(request))
        return self.render(request, "_alerts.html", session=session, alerts=found)

    async def alert(self, request: Request, session: Session) -> Response:
        alert_id = int(request.path_params["alert_id"])
        found = await run_in_threadpool(self.source.alerts.get, alert_id)
        if found is None:
            return self.refuse(request, 404, f"no alert {alert_id}")
        history = await run_in_threadpool(self.source.history, alert_id)
        return self.render(
            request,
            "alert.html",
            session=session,
            alert=found.alert,
            history=history,
            page="alerts",
        )

    async def act(self, request: Request, session: Session) -> Response:
        """``POST /alerts/{id}/{ack|unack|comment}`` (operators)."""
        if not session.user.can_act:
            return self.refuse(request, 403, f"{session.user.name} may only read (role read)")
        alert_id = int(request.path_params["alert_id"])
        verb = request.path_params["verb"]
        form: Form = request.state.form
        now = self.source.clock()
        store = self.source.alerts
        who = session.user.name
        try:
            if verb == "ack":
                text = form.text("comment", required=False)
                done = await run_in_threadpool(store.acknowledge, alert_id, who, now, text)
            elif verb == "unack":
                done = await run_in_threadpool(store.unacknowledge, alert_id, who, now)
            elif verb == "comment":
                text = form.text("text")
                done = await run_in_threadpool(store.comment, alert_id, who, now, text)
            else:
                return self.refuse(request, 404, f"no action {verb!r}")
        except FormError as exc:
            return self.refuse(request, 422, str(exc))
        if done is None:
            return self.refuse(request, 404, f"no alert {alert_id}")
        return RedirectResponse(safe_next(form.fields.get("next", ""), request), status_code=303)

    async def silence(self, request: Request, session: Session) -> Response:
        """``POST /silences``: silence a device (or a site, or a kind) for some hours."""
        if not session.user.can_act:
            return self.refuse(request, 403, f"{session.user.name} may only read (role read)")
        form: Form = request.state.form
        try:
            reason, device, site, kind, hours = _silence_fields(form)
        except FormError as exc:
            return self.refuse(request, 422, str(exc))
        now = self.source.clock()
        silence = Silence(
            0, now, now + round(hours * 3_600_000), session.user.name, reason, device, site, kind
        )
        await run_in_threadpool(self.source.alerts.add_silence, silence)
        return RedirectResponse(safe_next(form.fields.get("next", ""), request), status_code=303)

    async def joint(self, request: Request, session: Session) -> Response:
        return await self._joint(request, session, "joint.html")

    async def joint_part(self, request: Request, session: Session) -> Response:
        return await self._joint(request, session, "_joint.html")

    async def _joint(self, request: Request, session: Session, template: str) -> Response:
        joint_id = request.path_params["joint_id"]
        view = await run_in_threadpool(self.source.joint, joint_id)
        if view is None:
            return self.refuse(request, 404, f"no joint {joint_id!r}")
        tracker = self.source.campaigns
        campaigns = None
        if template == "joint.html" and tracker is not None:
            campaigns = await run_in_threadpool(tracker.store.campaigns, joint=joint_id)
        return self.render(
            request,
            template,
            session=session,
            view=view,
            drawing=DRAWING,
            page="fleet",
            campaigns=campaigns,
        )

    async def joint_report(self, request: Request, session: Session) -> Response:
        """``GET /joints/{id}/report.pdf?days=N``: the joint's audit report over the last N days
        (30 by default, 1 to 3660)."""
        joint_id = request.path_params["joint_id"]
        try:
            days = int(request.query_params.get("days", str(REPORT_DAYS)))
        except ValueError:
            return self.refuse(request, 422, "days: a whole number of days")
        if not 1 <= days <= _MAX_REPORT_DAYS:
            return self.refuse(request, 422, f"days: between 1 and {_MAX_REPORT_DAYS}")
        tracker = self.source.campaigns
        to_ms = self.source.clock()

        def work() -> bytes:
            campaigns = summaries(tracker.store.campaigns()) if tracker is not None else []
            return joint_report(self.source, joint_id, to_ms - days * 86_400_000, to_ms, campaigns)

        try:
            pdf = await run_in_threadpool(work)
        except ReportError as exc:
            return self.refuse(request, 404 if exc.key == "joint" else 422, str(exc))
        day = datetime.fromtimestamp(to_ms / 1000, UTC).date().isoformat()
        return Response(
            pdf,
            media_type="application/pdf",
            headers={
                "Content-Disposition": f'attachment; filename="joint-{joint_id}-{day}.pdf"',
                "Cache-Control": "no-store",
            },
        )

    async def device(self, request: Request, session: Session) -> Response:
        device_id = request.path_params["device_id"]
        kind = await run_in_threadpool(self.source.kind_of, device_id)
        if kind is None:
            return self.refuse(request, 404, f"no device {device_id!r}")
        range_name = request.query_params.get("range", "1d")
        if range_name not in RANGES:
            range_name = "1d"
        alerts = await run_in_threadpool(self.source.device_alerts, device_id)
        level = self.source.levels().get(device_id)
        outlook = (await run_in_threadpool(self.source.outlook, [device_id])).get(device_id)
        reg = self.source.registry
        return self.render(
            request,
            "device.html",
            session=session,
            device_id=device_id,
            kind=kind,
            display=KINDS[kind].display_name,
            bolt=reg.bolt(device_id),
            location=reg.locate(device_id),
            history=await run_in_threadpool(self.source.tightenings, device_id),
            editable=self.source.registry_store is not None,
            level=level,
            machine=next((m for m in reg.machines if m.device_id == device_id), None),
            charts=charts_of(kind),
            zones=ISO_10816_3_MMS if kind is DeviceKind.CNC_MILL else (),
            spectrum=kind in SPECTRA,
            chart_poll_s=_chart_poll_s(range_name),
            trend=trend_text(outlook),
            eta=eta_text(outlook, self.source.clock() / 1000.0),
            alerts=alerts,
            range_name=range_name,
            ranges=list(RANGES),
            page="fleet",
        )

    async def series(self, request: Request, session: Session) -> Response:
        device_id = request.path_params["device_id"]
        range_name = request.query_params.get("range", "1d")
        if range_name not in RANGES:
            return JSONResponse({"error": f"range: one of {', '.join(RANGES)}"}, status_code=422)
        kind = await run_in_threadpool(self.source.kind_of, device_id)
        if kind is None:
            return JSONResponse({"error": f"no device {device_id!r}"}, status_code=404)
        series = await run_in_threadpool(self.source.series, device_id, kind, range_name)
        level = self.source.levels().get(device_id)
        lines: dict[str, float] = {}
        if (
            kind is DeviceKind.CBOLT
            and level is not None
            and level.armed
            and math.isfinite(level.baseline_kn)
        ):
            lines = {
                "settled": level.baseline_kn,
                "80 %": 0.8 * level.baseline_kn,
                "70 %": 0.7 * level.baseline_kn,
                "30 %": 0.3 * level.baseline_kn,
            }
        return _json(
            {
                "device_id": device_id,
                "kind": kind.value,
                "source": series.source,
                "t": series.ts_s,
                "fields": series.fields,
                "units": _units(kind),
                "lines": lines,
                "events": [{"t": t, "type": kind} for t, kind in series.events],
                "episodes": [
                    {"from": a, "to": b, "kind": kind, "severity": sev}
                    for a, b, kind, sev in series.episodes
                ],
                "forecast": _forecast_json(series.forecast),
            }
        )

    async def spectrum(self, request: Request, session: Session) -> Response:
        device_id = request.path_params["device_id"]
        kind = await run_in_threadpool(self.source.kind_of, device_id)
        if kind is None:
            return JSONResponse({"error": f"no device {device_id!r}"}, status_code=404)
        sp = await run_in_threadpool(self.source.spectrum, device_id, kind)
        if sp is None:
            return _json({"device_id": device_id, "spectrum": None})
        return _json(
            {
                "device_id": device_id,
                "spectrum": {
                    "t": sp.ts_ms / 1000.0,
                    "field": sp.field,
                    "fs_hz": sp.fs_hz,
                    "samples": sp.samples,
                    "f": sp.f_hz,
                    "psd": sp.psd,
                    "rms": sp.rms,
                    "vib_rms_mms": sp.vib_rms_mms if math.isfinite(sp.vib_rms_mms) else None,
                    "zone": sp.zone,
                },
            }
        )

    async def quality(self, request: Request, session: Session) -> Response:
        q = await run_in_threadpool(self.source.quality)
        return self.render(request, "quality.html", session=session, q=q, page="quality")

    async def quality_part(self, request: Request, session: Session) -> Response:
        q = await run_in_threadpool(self.source.quality)
        return self.render(request, "_quality.html", session=session, q=q)


def _json(body: object) -> Response:
    """A chart's data as JSON: msgspec encodes 8,760 hourly means several times faster than the
    standard library (NaN and infinities become null)."""
    return Response(msgspec.json.encode(body), media_type="application/json")


def _chart_poll_s(range_name: str) -> float:
    """How often a chart of this range asks for its data: every second up to a day of raw
    readings; rollups change once a minute (7 days) or once an hour (longer)."""
    span = RANGES[range_name]
    if span <= RANGES["1d"]:
        return POLL_S
    return 10.0 if span <= RANGES["7d"] else 60.0


def _units(kind: DeviceKind) -> dict[str, str]:
    units = {f.name: f.unit for f in FIELD_INFO[kind]}
    if kind is DeviceKind.CBOLT:
        units["preload_comp_kn"] = "kN"
    return units


def _forecast_json(f: Forecast | None) -> dict[str, object] | None:
    if f is None:
        return None
    return {
        "t": list(f.t_s),
        "kn": list(f.kn),
        "eta": f.eta_s,
        "line_kn": f.line_kn,
        "trend_pct_per_day": f.trend_pct_per_day,
        "text": f.text,
    }


def _silence_fields(form: Form) -> tuple[str, str, str, str, float]:
    """(reason, device, site, kind, hours) of the silence form.

    Raises:
        FormError: A field is missing or wrong (named).
    """
    reason = form.text("reason")
    device = form.text("device_id", MAX_NAME_CHARS, required=False)
    site = form.text("site", MAX_NAME_CHARS, required=False)
    kind = form.text("kind", MAX_NAME_CHARS, required=False)
    if not (device or site or kind):
        raise FormError("device_id: give a device, a site or a kind")
    try:
        hours = float(form.text("hours", 16))
    except ValueError:
        raise FormError("hours: not a number") from None
    if not (0 < hours <= _MAX_SILENCE_H):
        raise FormError(f"hours: between 0 and {_MAX_SILENCE_H}")
    return reason, device, site, kind, hours


def create_console(source: ConsoleSource, auth: Auth) -> Starlette:
    """The console as an ASGI app, to mount at ``/console``.

    Args:
        source: What the pages read and where actions go.
        auth: Users, sessions and CSRF tokens.
    """
    c = _Console(source, auth, time.time)
    g = c.guard
    return Starlette(
        routes=[
            Route("/", g(c.fleet), methods=["GET"]),
            Route("/fleet/part", g(c.fleet_part), methods=["GET"]),
            Route("/login", c.login_page, methods=["GET"]),
            Route("/login", c.login, methods=["POST"]),
            Route("/login/once", c.login_once, methods=["GET"]),
            Route("/logout", g(c.logout, action=True), methods=["POST"]),
            Route("/alerts", g(c.alerts), methods=["GET"]),
            Route("/alerts/part", g(c.alerts_part), methods=["GET"]),
            Route("/alerts/{alert_id:int}", g(c.alert), methods=["GET"]),
            Route("/alerts/{alert_id:int}/{verb:str}", g(c.act, action=True), methods=["POST"]),
            Route("/silences", g(c.silence, action=True), methods=["POST"]),
            Route("/joints/{joint_id:str}", g(c.joint), methods=["GET"]),
            Route("/joints/{joint_id:str}/part", g(c.joint_part), methods=["GET"]),
            Route("/joints/{joint_id:str}/report.pdf", g(c.joint_report), methods=["GET"]),
            Route("/devices/{device_id:str}", g(c.device), methods=["GET"]),
            Route("/data/series/{device_id:str}", g(c.series), methods=["GET"]),
            Route("/data/spectrum/{device_id:str}", g(c.spectrum), methods=["GET"]),
            *CampaignPages(c, g).routes(),
            *RegistryPages(c, g).routes(),
            Route("/quality", g(c.quality), methods=["GET"]),
            Route("/quality/part", g(c.quality_part), methods=["GET"]),
            Mount("/static", StaticFiles(directory=_HERE / "static"), name="static"),
        ],
        middleware=[Middleware(SecurityHeaders), Middleware(BodyLimit, max_bytes=MAX_BODY_BYTES)],
        exception_handlers={ApiError: _api_error, Exception: _internal_error},
    )


async def _api_error(_: Request, exc: Exception) -> Response:
    status = exc.status if isinstance(exc, ApiError) else 400
    return PlainTextResponse(f"error: {exc}", status_code=status)


async def _internal_error(request: Request, exc: Exception) -> Response:
    _log.exception("console: %s %s failed", request.method, request.url.path, exc_info=exc)
    return PlainTextResponse("error: internal error (logged)", status_code=500)
