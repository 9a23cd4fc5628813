"""The console's retightening campaigns: open one from a joint's page, follow it, record each
bolt's retightening from a phone, cancel it.

Pages: ``/campaigns`` (the list), ``/campaigns/{id}`` (its tasks with before / retightened /
after / settled, a form per bolt still to do, its log). Actions (operators, CSRF):
``POST /campaigns`` opens one (the joint page's form: bolts ticked, title, reason, assignee,
due date; the open alerts of the chosen bolts are linked; each bolt's current level is frozen
as its *before*), ``POST /campaigns/{id}/tasks/{bolt}`` records a retightening by hand,
``POST /campaigns/{id}/cancel``. The work behind them is :mod:`alerts.campaigns` and
:mod:`alerts.campaign_tracker`, the same the running service follows the bolts with.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import UTC, date, datetime, time
from typing import Final, Protocol

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from alerts.campaign_tracker import CampaignTracker
from alerts.campaigns import CAMPAIGN_STATES, MAX_BOLTS, Campaign, CampaignError
from dashboards.console.auth import Session
from dashboards.console.forms import Form, FormError, root_of
from dashboards.console.source import ConsoleSource

__all__ = ["CampaignPages"]

_MAX_TORQUE_NM: Final = 100_000.0
_MAX_PRELOAD_KN: Final = 100_000.0


class Pages(Protocol):
    """What the campaign pages use of the console (its ``_Console``)."""

    source: ConsoleSource

    def render(
        self, request: Request, name: str, status_code: int = 200, **context: object
    ) -> HTMLResponse:
        """A page from a template."""
        ...

    def refuse(self, request: Request, status: int, why: str) -> Response:
        """The error page."""
        ...


class CampaignPages:
    """The campaign routes of the console.

    Args:
        pages: The console (render, refuse, source).
        guard: Wraps a handler: a session needed; ``action=True``: a POST with its CSRF token.
    """

    def __init__(self, pages: Pages, guard: Callable[..., Callable[[Request], object]]) -> None:
        self.pages = pages
        self.guard = guard

    def routes(self) -> list[Route]:
        """``/campaigns...``."""
        g = self.guard
        return [
            Route("/campaigns", g(self.list_page), methods=["GET"]),
            Route("/campaigns", g(self.open, action=True), methods=["POST"]),
            Route("/campaigns/{cid:int}", g(self.page), methods=["GET"]),
            Route("/campaigns/{cid:int}/cancel", g(self.cancel, action=True), methods=["POST"]),
            Route(
                "/campaigns/{cid:int}/tasks/{device_id:str}",
                g(self.record, action=True),
                methods=["POST"],
            ),
        ]

    @property
    def tracker(self) -> CampaignTracker | None:
        return self.pages.source.campaigns

    async def list_page(self, request: Request, session: Session) -> Response:
        """``GET /campaigns?state=``."""
        tracker = self.tracker
        state = request.query_params.get("state") or None
        if state not in (None, *CAMPAIGN_STATES):
            state = None
        found = await run_in_threadpool(tracker.store.campaigns, state=state) if tracker else []
        return self.pages.render(
            request,
            "campaigns.html",
            session=session,
            campaigns=found,
            state=state or "",
            states=CAMPAIGN_STATES,
            enabled=tracker is not None,
            page="campaigns",
        )

    async def page(self, request: Request, session: Session) -> Response:
        """``GET /campaigns/{id}``."""
        tracker = self.tracker
        cid = int(request.path_params["cid"])
        found = await run_in_threadpool(tracker.store.get, cid) if tracker else None
        if tracker is None or found is None:
            return self.pages.refuse(request, 404, f"no campaign #{cid}")
        log = await run_in_threadpool(tracker.store.log, cid)
        return self.pages.render(
            request, "campaign.html", session=session, c=found, log=log, page="campaigns"
        )

    async def open(self, request: Request, session: Session) -> Response:
        """``POST /campaigns``: open a campaign for the ticked bolts."""
        tracker = self._may_act(request, session)
        if isinstance(tracker, Response):
            return tracker
        form: Form = request.state.form
        source = self.pages.source
        try:
            title = form.text("title", 200)
            reason = form.text("reason", 2000, required=False)
            assignee = form.text("assignee", 200, required=False)
            scope = form.text("scope", 200, required=False) or "bolts"
            due_ms = _due_ms(form.text("due", 10, required=False))
            devices = list(dict.fromkeys(form.lists.get("bolt", [])))[: MAX_BOLTS + 1]
        except FormError as exc:
            return self.pages.refuse(request, 422, str(exc))
        unknown = [d for d in devices if source.registry.bolt(d) is None]
        if unknown:
            return self.pages.refuse(request, 422, f"bolt: {unknown[0]!r} is not a registered bolt")
        joint = scope.removeprefix("joint:") if scope.startswith("joint:") else None
        if joint is not None and any(
            (b := source.registry.bolt(d)) is None or b.joint.id != joint for d in devices
        ):
            return self.pages.refuse(request, 422, f"bolt: every bolt must be of joint {joint}")

        def work() -> Campaign:
            outlook = source.outlook(devices)
            before = {
                d: (o.level_kn, round(o.t_last_s * 1000))
                for d, o in outlook.items()
                if math.isfinite(o.level_kn)
            }
            chosen = set(devices)
            alert_ids = [
                s.alert.id for s in source.alerts.open_alerts() if s.alert.device_id in chosen
            ]
            return tracker.store.open(
                title=title,
                devices=devices,
                before=before,
                by=session.user.name,
                ms=source.clock(),
                reason=reason,
                scope=scope,
                assignee=assignee,
                due_ms=due_ms,
                alert_ids=alert_ids,
            )

        try:
            made = await run_in_threadpool(work)
        except CampaignError as exc:
            return self.pages.refuse(request, 422, str(exc))
        return RedirectResponse(f"{root_of(request)}/campaigns/{made.id}", status_code=303)

    async def record(self, request: Request, session: Session) -> Response:
        """``POST /campaigns/{id}/tasks/{bolt}``: a technician's retightening of one bolt."""
        tracker = self._may_act(request, session)
        if isinstance(tracker, Response):
            return tracker
        cid = int(request.path_params["cid"])
        device_id = str(request.path_params["device_id"])
        form: Form = request.state.form
        try:
            torque = form.number("torque_nm", 0.0, _MAX_TORQUE_NM)
            preload = form.number("preload_kn", 0.0, _MAX_PRELOAD_KN, required=False)
            operator = form.text("operator", 128, required=False) or session.user.name
        except FormError as exc:
            return self.pages.refuse(request, 422, str(exc))

        def work() -> int:
            moved = tracker.retightened(
                device_id,
                ms=self.pages.source.clock(),
                by=operator,
                torque_nm=torque,
                preload_kn=preload,
                campaign_id=cid,
            )
            return len(moved)

        try:
            moved = await run_in_threadpool(work)
        except CampaignError as exc:
            return self.pages.refuse(request, 422, str(exc))
        if not moved:
            return self.pages.refuse(
                request, 404, f"campaign #{cid} has no open task for {device_id!r}"
            )
        return RedirectResponse(f"{root_of(request)}/campaigns/{cid}", status_code=303)

    async def cancel(self, request: Request, session: Session) -> Response:
        """``POST /campaigns/{id}/cancel``."""
        tracker = self._may_act(request, session)
        if isinstance(tracker, Response):
            return tracker
        cid = int(request.path_params["cid"])
        form: Form = request.state.form
        try:
            reason = form.text("reason", 2000, required=False)
        except FormError as exc:
            return self.pages.refuse(request, 422, str(exc))

        def work() -> None:
            done = tracker.store.cancel(
                cid, by=session.user.name, ms=self.pages.source.clock(), reason=reason
            )
            tracker.cancelled(done)

        try:
            await run_in_threadpool(work)
        except CampaignError as exc:
            return self.pages.refuse(request, 404, str(exc))
        return RedirectResponse(f"{root_of(request)}/campaigns/{cid}", status_code=303)

    def _may_act(self, request: Request, session: Session) -> CampaignTracker | Response:
        if not session.user.can_act:
            return self.pages.refuse(request, 403, f"{session.user.name} may only read (role read)")
        if self.tracker is None:
            return self.pages.refuse(request, 404, "campaigns are not kept by this console")
        return self.tracker


def _due_ms(text: str) -> int:
    """A due date (``YYYY-MM-DD``, the end of that day UTC) in epoch ms; 0 when empty."""
    if not text:
        return 0
    try:
        day = date.fromisoformat(text)
    except ValueError:
        raise FormError("due: a date as YYYY-MM-DD") from None
    end = datetime.combine(day, time(23, 59, 59), tzinfo=UTC)
    return round(end.timestamp() * 1000)
