"""The registry through the HTTP API: read it, put or remove one entry, read its audit history.

Routes (behind the API's token, like every ``/api`` route):

* ``GET /api/registry`` — ``{"version", "registry"}`` (the registry in force; version 0 and an
  empty registry before the first import)
* ``PUT /api/registry/{table}/{key}`` — the entry's fields as a JSON object (its key among
  them): added or replaced, the whole registry validated; ``{"version", "changes"}``. 422 with
  the field named (``joints[splice-1].pattern: ...``) and nothing changed when it is invalid.
* ``DELETE /api/registry/{table}/{key}`` — removed (422 when something still refers to it,
  404 when there is no such entry).
* ``GET /api/registry/history?table=&key=`` — ``{"changes": [...]}``, oldest first.

Every change is written by :class:`sensors.registry_store.RegistryStore` as a new version with
its audit lines, author ``api``. ``boltwatch run`` applies the registry in force to itself within
seconds, unless its config names a registry file (that file wins); ``applies`` in the response
says which.
"""

from __future__ import annotations

from typing import Any, Final

import msgspec
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from alerts.api_input import MAX_NAME_CHARS, ApiError, json_body, only_query, query_str
from sensors.errors import RegistryError
from sensors.registry import RegistryFile
from sensors.registry_store import TABLES, Change, NoSuchEntryError, RegistryStore, edit

__all__ = ["APPLIES", "AUTHOR", "registry_routes"]

AUTHOR: Final = "api"
"""The author the audit history records for a change made through the API token."""
APPLIES: Final = "the registry in force in the store: boltwatch run uses it from its next start"
"""What an edit's response says when no running service follows the store."""


def registry_routes(store: RegistryStore, applies: str = APPLIES) -> list[Route]:
    """The registry's routes, reading and writing ``store``; ``applies`` says in each edit's
    response when the running service uses the edit."""
    h = _Handlers(store, applies)
    return [
        Route("/api/registry", h.show, methods=["GET"]),
        Route("/api/registry/history", h.history, methods=["GET"]),
        Route("/api/registry/{table}/{key}", h.put, methods=["PUT"]),
        Route("/api/registry/{table}/{key}", h.delete, methods=["DELETE"]),
    ]


class _Handlers:
    def __init__(self, store: RegistryStore, applies: str) -> None:
        self.store = store
        self.applies = applies

    async def show(self, request: Request) -> Response:
        only_query(request)
        registry = await run_in_threadpool(self.store.current)
        versions = await run_in_threadpool(self.store.versions)
        file = registry.file if registry is not None else RegistryFile()
        return JSONResponse(
            {
                "version": versions[-1].version if versions else 0,
                "registry": msgspec.to_builtins(file),
            }
        )

    async def history(self, request: Request) -> Response:
        only_query(request, "table", "key")
        table = query_str(request, "table") or None
        key = query_str(request, "key") or None
        if table is not None and table not in TABLES:
            raise ApiError(422, f"no table {table[:64]!r} (one of: {', '.join(TABLES)})", "table")
        if key is not None and len(key) > MAX_NAME_CHARS * 4:
            raise ApiError(422, "too long", "key")
        changes = await run_in_threadpool(self.store.history, table, key)
        return JSONResponse({"changes": [_change(c) for c in changes]})

    async def put(self, request: Request) -> Response:
        only_query(request)
        table, key = _where(request)
        body = await json_body(request)
        return await self._apply(table, key, body)

    async def delete(self, request: Request) -> Response:
        only_query(request)
        table, key = _where(request)
        return await self._apply(table, key, None)

    async def _apply(self, table: str, key: str, entry: dict[str, Any] | None) -> Response:
        def work() -> tuple[int, list[Change]]:
            current = self.store.current()
            file = current.file if current is not None else RegistryFile()
            registry = edit(file, table, key, entry)
            what = "remove" if entry is None else "put"
            return self.store.put(registry, author=AUTHOR, source=f"api {what} {table}/{key}")

        try:
            version, changes = await run_in_threadpool(work)
        except NoSuchEntryError as exc:
            raise ApiError(404, exc.reason, exc.key) from exc
        except RegistryError as exc:
            raise ApiError(422, exc.reason, exc.key) from exc
        return JSONResponse(
            {"version": version, "changes": [_change(c) for c in changes], "applies": self.applies}
        )


def _where(request: Request) -> tuple[str, str]:
    table = str(request.path_params["table"])
    key = str(request.path_params["key"])
    if table not in TABLES:
        raise ApiError(404, f"no table {table[:64]!r} (one of: {', '.join(TABLES)})", "table")
    if not key or len(key) > MAX_NAME_CHARS * 4:
        raise ApiError(404, "no such entry", "key")
    return table, key


def _change(c: Change) -> dict[str, Any]:
    return {
        "version": c.version,
        "ms": c.ms,
        "author": c.author,
        "what": c.what,
        "table": c.table,
        "key": c.key,
        "before": c.before,
        "after": c.after,
    }
