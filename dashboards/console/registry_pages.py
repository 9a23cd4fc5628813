"""The registry on the console: read it, edit one entry, record a bolt's tightening by hand.

Pages: ``/registry`` (the version in force, each table's entries, the newest audit lines),
``/registry/{table}/{key}`` (one entry as JSON with its audit history). Actions (operators,
CSRF): ``POST /registry/{table}/{key}`` puts the edited entry (or removes it with
``remove=1``), ``POST /registry/{table}`` adds one, ``POST /devices/{bolt}/tightenings`` records
a tightening done by hand as an installation record (and retightens the bolt's open campaign
task). Every change goes through :func:`sensors.registry_store.edit` — the whole registry
validated, an invalid entry refused with its field named and nothing changed — and is written as
a new version with its audit lines under the user's name; ``boltwatch run`` applies it within
seconds. A console whose service runs from a registry file (``registry.path``) shows the
registry read-only.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime
from typing import Any, Final

import msgspec
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from alerts.campaigns import CampaignError
from dashboards.console.auth import Session
from dashboards.console.campaign_pages import Pages
from dashboards.console.forms import Form, FormError, root_of
from sensors.errors import RegistryError
from sensors.registry import RegistryFile
from sensors.registry_store import TABLES, Change, RegistryStore, edit, entry_key, key_of

__all__ = ["RegistryPages"]

_MAX_ENTRY_CHARS: Final = 64_000
_HISTORY_SHOWN: Final = 50


class RegistryPages:
    """The registry routes of the console.

    Args:
        pages: The console (render, refuse, source).
        guard: Wraps a handler: a session needed; ``action=True``: a POST with its CSRF token.

    The registry's database is the source's ``registry_store`` (None: read-only, the service
    runs from a registry file).
    """

    def __init__(self, pages: Pages, guard: Callable[..., Callable[[Request], object]]) -> None:
        self.pages = pages
        self.guard = guard

    @property
    def store(self) -> RegistryStore | None:
        return self.pages.source.registry_store

    def routes(self) -> list[Route]:
        """``/registry...`` and the bolt page's tightening form."""
        g = self.guard
        return [
            Route("/registry", g(self.index), methods=["GET"]),
            Route("/registry/{table:str}", g(self.add, action=True), methods=["POST"]),
            Route("/registry/{table:str}/{key:str}", g(self.entry), methods=["GET"]),
            Route("/registry/{table:str}/{key:str}", g(self.put, action=True), methods=["POST"]),
            Route(
                "/devices/{device_id:str}/tightenings",
                g(self.tightening, action=True),
                methods=["POST"],
            ),
        ]

    def _file(self) -> RegistryFile:
        return self.pages.source.registry.file

    async def index(self, request: Request, session: Session) -> Response:
        """``GET /registry``."""
        history: list[Change] = []
        version = 0
        if self.store is not None:
            history = (await run_in_threadpool(self.store.history))[-_HISTORY_SHOWN:][::-1]
            version = await run_in_threadpool(self.store.version)
        return self.pages.render(
            request,
            "registry.html",
            session=session,
            tables=_entries(self._file()),
            history=history,
            version=version,
            editable=self.store is not None,
            page="registry",
        )

    async def entry(self, request: Request, session: Session) -> Response:
        """``GET /registry/{table}/{key}``."""
        table, key = _where(request)
        found = _find(self._file(), table, key)
        if found is None:
            return self.pages.refuse(request, 404, f"no entry {key!r} in {table}")
        history = await run_in_threadpool(self.store.history, table, key) if self.store else []
        return self._entry_page(
            request, session, table=table, key=key, text=_pretty(found), history=history
        )

    async def put(self, request: Request, session: Session) -> Response:
        """``POST /registry/{table}/{key}``: the entry edited (``entry``) or removed."""
        table, key = _where(request)
        form: Form = request.state.form
        remove = form.fields.get("remove") == "1"
        return await self._apply(request, session, table, key, None if remove else form)

    async def add(self, request: Request, session: Session) -> Response:
        """``POST /registry/{table}``: a new entry (``entry``, its key inside it)."""
        table = str(request.path_params["table"])
        if table not in TABLES:
            return self.pages.refuse(request, 404, f"no table {table[:64]!r}")
        form: Form = request.state.form
        try:
            data = _entry(form)
            key = key_of(table, data)
        except (FormError, RegistryError) as exc:
            return self.pages.refuse(request, 422, str(exc))
        if _find(self._file(), table, key) is not None:
            return self.pages.refuse(request, 422, f"{table}[{key}]: already there (edit it)")
        return await self._apply(request, session, table, key, form)

    async def tightening(self, request: Request, session: Session) -> Response:
        """``POST /devices/{bolt}/tightenings``: a tightening done by hand, as an installation
        record; the bolt's open campaign task is retightened with it."""
        device_id = str(request.path_params["device_id"])
        if self.pages.source.registry.bolt(device_id) is None:
            return self.pages.refuse(request, 404, f"{device_id!r} is not a registered bolt")
        form: Form = request.state.form
        try:
            record, ms, torque, preload = _installation(form, device_id, self.pages.source.clock())
        except FormError as exc:
            return self.pages.refuse(request, 422, str(exc))
        refused = self._may_edit(request, session)
        if refused is not None:
            return refused
        try:
            key = key_of("installations", record)
            await self._write(session, "installations", key, record)
            tracker = self.pages.source.campaigns
            if tracker is not None:
                await run_in_threadpool(
                    lambda: tracker.retightened(
                        device_id,
                        ms=ms,
                        by=str(record["operator"]),
                        torque_nm=torque,
                        preload_kn=preload,
                    )
                )
        except (RegistryError, CampaignError) as exc:
            return self.pages.refuse(request, 422, str(exc))
        return RedirectResponse(f"{root_of(request)}/devices/{device_id}", status_code=303)

    async def _apply(
        self, request: Request, session: Session, table: str, key: str, form: Form | None
    ) -> Response:
        refused = self._may_edit(request, session)
        if refused is not None:
            return refused
        text = form.fields.get("entry", "") if form is not None else ""
        try:
            data = _entry(form) if form is not None else None
            await self._write(session, table, key, data)
        except (FormError, RegistryError) as exc:
            # The page again, with the text as typed and the error naming the field.
            history = await run_in_threadpool(self.store.history, table, key) if self.store else []
            return self._entry_page(
                request,
                session,
                table=table,
                key=key,
                text=text,
                history=history,
                error=str(exc),
                status=422,
            )
        if form is None:
            return RedirectResponse(f"{root_of(request)}/registry", status_code=303)
        return RedirectResponse(f"{root_of(request)}/registry/{table}/{key}", status_code=303)

    async def _write(self, session: Session, table: str, key: str, data: object | None) -> None:
        store = self.store
        assert store is not None  # noqa: S101 - checked by _may_edit

        def work() -> None:
            current = store.current()
            file = current.file if current is not None else RegistryFile()
            registry = edit(file, table, key, data)
            what = "remove" if data is None else "put"
            store.put(registry, author=session.user.name, source=f"console {what} {table}/{key}")
            self.pages.source.registry = registry  # the page after the redirect shows it

        await run_in_threadpool(work)

    def _may_edit(self, request: Request, session: Session) -> Response | None:
        if not session.user.can_act:
            return self.pages.refuse(request, 403, f"{session.user.name} may only read (role read)")
        if self.store is None:
            return self.pages.refuse(
                request,
                409,
                "the service runs from a registry file (registry.path): edit the file, or "
                "`boltwatch registry import` it and drop registry.path",
            )
        return None

    def _entry_page(
        self,
        request: Request,
        session: Session,
        *,
        table: str,
        key: str,
        text: str,
        history: list[Change],
        error: str = "",
        status: int = 200,
    ) -> Response:
        return self.pages.render(
            request,
            "registry_entry.html",
            status_code=status,
            session=session,
            table=table,
            key=key,
            text=text,
            history=history[::-1],
            error=error,
            editable=self.store is not None,
            page="registry",
        )


def _where(request: Request) -> tuple[str, str]:
    return str(request.path_params["table"]), str(request.path_params["key"])


def _find(file: RegistryFile, table: str, key: str) -> msgspec.Struct | None:
    if table not in TABLES:
        return None
    for e in getattr(file, table):
        if entry_key(table, e) == key:
            found: msgspec.Struct = e
            return found
    return None


def _entries(file: RegistryFile) -> list[tuple[str, list[str]]]:
    return [(t, [entry_key(t, e) for e in getattr(file, t)]) for t in TABLES]


def _pretty(entry: msgspec.Struct) -> str:
    return msgspec.json.format(msgspec.json.encode(entry), indent=2).decode()


def _entry(form: Form) -> Any:  # noqa: ANN401 - JSON of any shape, validated by edit()
    text = form.text("entry", _MAX_ENTRY_CHARS)
    try:
        data = msgspec.json.decode(text)
    except msgspec.DecodeError as exc:
        raise FormError(f"entry: not JSON ({exc})") from None
    if not isinstance(data, dict):
        raise FormError("entry: a JSON object ({...})")
    return data


def _installation(
    form: Form, device_id: str, now_ms: int
) -> tuple[dict[str, object], int, float, float]:
    """An installation record from the bolt page's form, with its time (epoch ms), torque and
    preload."""
    torque = form.number("torque_nm", 0.0, 100_000.0) or 0.0
    preload = form.number("preload_kn", 0.0, 100_000.0) or 0.0
    tool = form.text("tool", 128)
    operator = form.text("operator", 128)
    calibrated_text = form.text("tool_calibrated", 10)
    try:
        calibrated = date.fromisoformat(calibrated_text)
    except ValueError:
        raise FormError("tool_calibrated: a date as YYYY-MM-DD") from None
    passes = form.number("tightening_pass", 0.0, 100.0, required=False)
    when_text = form.text("ts", 32, required=False)
    try:
        ts = (
            datetime.fromisoformat(when_text).replace(tzinfo=UTC)
            if when_text
            else datetime.fromtimestamp(now_ms / 1000, UTC)
        )
    except ValueError:
        raise FormError("ts: a date and time as YYYY-MM-DDTHH:MM") from None
    record: dict[str, object] = {
        "device_id": device_id,
        "ts": ts.isoformat(),
        "torque_nm": torque,
        "preload_kn": preload,
        "tool": tool,
        "tool_calibrated": calibrated.isoformat(),
        "operator": operator,
        "tightening_pass": int(passes) if passes is not None else 2,
    }
    serial = form.text("tool_serial", 128, required=False)
    if serial:
        record["tool_serial"] = serial
    note = form.text("note", 2000, required=False)
    if note:
        record["note"] = note
    return record, round(ts.timestamp() * 1000), torque, preload
