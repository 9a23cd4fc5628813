"""The HTTP face of ``boltwatch run``: the alerts API, and the web console mounted beside it.

:func:`build_web` composes them: ``/console/...`` is the console (:mod:`dashboards.console`),
``/`` redirects to it, everything else is the API's (its guard, rate limits and token apply
there only; the console has its own sessions). The console reads the ingest store through its
own connection (:class:`ingest.store.Store`), closed by :meth:`Web.close`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Mount, Route

from alerts.campaign_tracker import CampaignTracker
from alerts.store import AlertStore
from boltwatch.config import Config
from dashboards.console import Auth, BoltLevel, ConsoleSource, Role, User, create_console
from detection.engine import Engine
from detection.preload import Outlook
from ingest import IngestTotals
from ingest.store import Store
from sensors.registry import Registry
from sensors.registry_store import RegistryStore

__all__ = ["CONSOLE_PATH", "Web", "bolt_levels", "bolt_outlook", "build_web"]

CONSOLE_PATH = "/console"
ADMIN = "admin"
"""The console user of the API token (an operator)."""


def bolt_levels(engine: Engine) -> Callable[[], Mapping[str, BoltLevel]]:
    """Each bolt's level against its settled baseline, from every detector that keeps one."""

    def levels() -> dict[str, BoltLevel]:
        out: dict[str, BoltLevel] = {}
        for det in engine.detectors.values():
            get = getattr(det, "levels", None)
            if get is None:
                continue
            for dev, (ratio, armed, base) in get().items():
                out[dev] = BoltLevel(ratio, armed, base)
        return out

    return levels


def bolt_outlook(engine: Engine) -> Callable[[Sequence[str]], Mapping[str, Outlook]]:
    """The trend and forecast of the bolts asked for, from every detector that makes one."""

    def outlook(device_ids: Sequence[str]) -> dict[str, Outlook]:
        out: dict[str, Outlook] = {}
        for det in engine.detectors.values():
            get = getattr(det, "outlook", None)
            if get is not None:
                out.update(get(device_ids))
        return out

    return outlook


@dataclass
class Web:
    """The composed app, and what the console holds open.

    Attributes:
        app: The ASGI app to serve.
        auth: The console's users and sessions (None: no console).
        reader: The console's connection to the ingest store.
        source: What the console reads.
    """

    app: Starlette
    auth: Auth | None = None
    reader: Store | None = None
    source: ConsoleSource | None = None

    def login_link(self, base_url: str) -> str | None:
        """A one-time login link for the API token's user (``boltwatch demo`` prints it)."""
        if self.auth is None:
            return None
        return f"{base_url}{CONSOLE_PATH}/login/once?code={self.auth.one_time_code(ADMIN)}"

    def close(self) -> None:
        """Close the console's store connection."""
        if self.reader is not None:
            self.reader.close()
            self.reader = None


async def _to_console(_: Request) -> Response:
    return RedirectResponse(f"{CONSOLE_PATH}/", status_code=307)


def build_web(
    config: Config,
    api: Starlette,
    *,
    token: str,
    alerts: AlertStore,
    registry: Registry | None,
    engine: Engine,
    clock_ms: Callable[[], int],
    flow: Callable[[], IngestTotals] | None = None,
    campaigns: CampaignTracker | None = None,
    registry_store: RegistryStore | None = None,
) -> Web:
    """The API alone, or the API with the console (``console.enabled``); ``flow``: ingest's
    counters, when ingest runs in this process (the data-quality page's rate and backlog);
    ``campaigns``: the retightening campaigns the console opens and records;
    ``registry_store``: the registry's database the console edits (None: read-only)."""
    if not config.console.enabled:
        return Web(api)
    users = [
        User(ADMIN, token, Role.OPERATOR),
        *(User(u.name, u.token, Role(u.role)) for u in config.console.users),
    ]
    auth = Auth(users, clock=time.time)
    reader = Store(
        config.store.path,
        retention_days=config.store.retention_days,
        tail_days=config.store.tail_days,
    )
    source = ConsoleSource(
        reader,
        alerts,
        registry,
        clock=clock_ms,
        levels=bolt_levels(engine),
        outlook=bolt_outlook(engine),
        flow=flow,
        campaigns=campaigns,
        registry_store=registry_store,
    )
    app = Starlette(
        routes=[
            Route("/", _to_console, methods=["GET"]),
            Mount(CONSOLE_PATH, create_console(source, auth)),
            Mount("", api),
        ]
    )
    return Web(app, auth, reader, source)
