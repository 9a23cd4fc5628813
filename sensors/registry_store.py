"""The device registry kept in a database, with every change in an audit history.

The TOML file (:mod:`sensors.registry`) stays the way to bootstrap a registry and to review it;
:class:`RegistryStore` keeps the registry that is in force in SQLite (``registry.db`` beside the
readings store), as versions: each import or edit that changes something writes a new version
(the whole document, validated by :class:`~sensors.registry.Registry` first) and one audit line
per entity added, changed or removed (who, when, what, before, after). Importing the same file
twice changes nothing the second time and says so. :func:`to_toml` writes a registry back as a
TOML file that :func:`~sensors.registry.load_registry` reads to the same registry.

Entities are compared by their key: sites, structures, bolt profiles and joints by ``id``;
machines and gateways by ``device_id``; installation records by (``device_id``, ``ts``,
``tightening_pass``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any, Final

import msgspec
import tomli_w

from sensors.errors import RegistryError
from sensors.registry import Registry, RegistryFile, _translate
from sensors.sqlite_file import SqliteFile

__all__ = [
    "REGISTRY_DB",
    "TABLES",
    "Change",
    "NoSuchEntryError",
    "RegistryStore",
    "Version",
    "diff",
    "edit",
    "entry_key",
    "key_of",
    "to_toml",
]

REGISTRY_DB: Final = "registry.db"
"""The registry's database file, in the store's folder."""

_TABLES: Final[dict[str, Callable[[Any], str]]] = {
    "sites": lambda e: e.id,
    "structures": lambda e: e.id,
    "bolt_profiles": lambda e: e.id,
    "joints": lambda e: e.id,
    "installations": lambda e: f"{e.device_id}@{e.ts.isoformat()}#{e.tightening_pass}",
    "machines": lambda e: e.device_id,
    "gateways": lambda e: e.device_id,
}
"""Each table of the registry and the key of its entries."""
TABLES: Final = tuple(_TABLES)
"""The registry's tables, as :func:`edit` and the audit name them."""


class NoSuchEntryError(RegistryError):
    """An entry to remove is not there."""


_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS registry_versions (
    version INTEGER PRIMARY KEY,
    ms INTEGER NOT NULL,
    author TEXT NOT NULL,
    source TEXT NOT NULL,
    doc TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS registry_changes (
    version INTEGER NOT NULL,
    ms INTEGER NOT NULL,
    author TEXT NOT NULL,
    what TEXT NOT NULL,
    tbl TEXT NOT NULL,
    key TEXT NOT NULL,
    before TEXT,
    after TEXT
);
CREATE INDEX IF NOT EXISTS registry_changes_key ON registry_changes (tbl, key, version);
"""


@dataclass(frozen=True, slots=True)
class Change:
    """One entity added, changed or removed.

    Attributes:
        what: ``added``, ``changed`` or ``removed``.
        table: The registry table (``joints``, ``machines``...).
        key: The entity's key in it.
        before: Its JSON before (None when added).
        after: Its JSON after (None when removed).
        version: The version that made the change (0 before it is written).
        ms: When, epoch ms (0 before it is written).
        author: Who (empty before it is written).
    """

    what: str
    table: str
    key: str
    before: str | None
    after: str | None
    version: int = 0
    ms: int = 0
    author: str = ""

    def __str__(self) -> str:
        return f"{self.what} {self.table.removesuffix('s')} {self.key}"


@dataclass(frozen=True, slots=True)
class Version:
    """A version of the registry.

    Attributes:
        version: Its number, from 1.
        ms: When it was written, epoch ms.
        author: Who wrote it.
        source: What it came from (``import FILE``, ``api``...).
    """

    version: int
    ms: int
    author: str
    source: str


def diff(old: RegistryFile, new: RegistryFile) -> list[Change]:
    """What changes from ``old`` to ``new``, table by table, entries by key (sorted)."""
    out: list[Change] = []
    for table, key_of in _TABLES.items():
        before = {key_of(e): _json(e) for e in getattr(old, table)}
        after = {key_of(e): _json(e) for e in getattr(new, table)}
        for key in sorted(before.keys() | after.keys()):
            b, a = before.get(key), after.get(key)
            if b == a:
                continue
            what = "added" if b is None else "removed" if a is None else "changed"
            out.append(Change(what, table, key, b, a))
    return out


def entry_key(table: str, entry: msgspec.Struct) -> str:
    """The key of an entry of ``table`` as the registry holds it (no validation: it is valid).

    Raises:
        RegistryError: The table is unknown (key ``table``).
    """
    get = _TABLES.get(table)
    if get is None:
        raise RegistryError("table", f"no table {table!r} (one of: {', '.join(TABLES)})")
    return get(entry)


def key_of(table: str, entry: object) -> str:
    """The key of an entry of ``table`` given as JSON data (``id``, a machine's ``device_id``,
    an installation's ``device_id@ts#pass``).

    Raises:
        RegistryError: The table is unknown (key ``table``) or the entry is invalid (key
            ``TABLE[0].FIELD``).
    """
    get = _TABLES.get(table)
    if get is None:
        raise RegistryError("table", f"no table {table!r} (one of: {', '.join(TABLES)})")
    data = {table: [entry]}
    try:
        one = msgspec.convert(data, RegistryFile)
    except msgspec.ValidationError as exc:
        raise RegistryError(*_translate(str(exc), data)) from exc
    return get(getattr(one, table)[0])


def edit(file: RegistryFile, table: str, key: str, entry: object | None) -> Registry:
    """The registry with one entry put or removed, validated as a whole.

    Args:
        file: The registry now.
        table: One of :data:`TABLES`.
        key: The entry's key in it (``id``, a machine's ``device_id``...).
        entry: The entry's fields as JSON data (its key among them), or None to remove it.

    Raises:
        NoSuchEntryError: ``entry`` is None and there is no such entry.
        RegistryError: The table is unknown (key ``table``), the entry is invalid (key
            ``TABLE[KEY].FIELD``), its key is not ``key``, or the registry it makes is (a
            reference that breaks, a device declared twice: the key names it).
    """
    key_of = _TABLES.get(table)
    if key_of is None:
        raise RegistryError("table", f"no table {table!r} (one of: {', '.join(TABLES)})")
    entries = list(getattr(file, table))
    index = next((i for i, e in enumerate(entries) if key_of(e) == key), None)
    if entry is None:
        if index is None:
            raise NoSuchEntryError(f"{table}[{key}]", "no such entry")
        del entries[index]
    else:
        data = {table: [entry]}
        try:
            one = msgspec.convert(data, RegistryFile)
        except msgspec.ValidationError as exc:
            where, reason = _translate(str(exc), data)
            raise RegistryError(where.replace(f"{table}[0]", f"{table}[{key}]", 1), reason) from exc
        new = getattr(one, table)[0]
        if key_of(new) != key:
            raise RegistryError(
                f"{table}[{key}]", f"the entry's key is {key_of(new)!r}, not the path's {key!r}"
            )
        if index is None:
            index = len(entries)
            entries.append(new)
        else:
            entries[index] = new
    try:
        return Registry(msgspec.structs.replace(file, **{table: tuple(entries)}))
    except RegistryError as exc:
        at = f"{table}[{index}]"
        if entry is not None and (exc.key == at or exc.key.startswith((at + ".", at + "["))):
            raise RegistryError(f"{table}[{key}]" + exc.key[len(at) :], exc.reason) from exc
        raise


def to_toml(file: RegistryFile) -> str:
    """The registry as a TOML document that :func:`~sensors.registry.load_registry` reads back
    to the same registry (unset optional fields left out; comments are not kept)."""
    data = msgspec.to_builtins(file, builtin_types=(datetime, date))
    return tomli_w.dumps(_drop_none(data))


class RegistryStore(SqliteFile):
    """The registry in force and its history, in SQLite.

    Args:
        folder: The store's folder (``store.path``); the database is :data:`REGISTRY_DB` in it
            (the folder is created).
        clock: Epoch ms.
    """

    def __init__(self, folder: str | Path, *, clock: Callable[[], int] | None = None) -> None:
        super().__init__(Path(folder) / REGISTRY_DB, _SCHEMA)
        self.clock = clock or (lambda: time.time_ns() // 1_000_000)

    def current(self) -> Registry | None:
        """The registry in force; None before the first import."""
        with self._lock:
            row = self._db.execute(
                "SELECT doc FROM registry_versions ORDER BY version DESC LIMIT 1"
            ).fetchone()
        if row is None:
            return None
        return Registry(msgspec.json.decode(row[0], type=RegistryFile))

    def put(self, registry: Registry, *, author: str, source: str) -> tuple[int, list[Change]]:
        """Make ``registry`` (already validated) the one in force, if it differs.

        Returns:
            The version in force afterwards (0: none yet), and the changes written (none: the
            registry was already that one, and no version was written).

        Raises:
            RegistryError: ``author`` or ``source`` is empty.
        """
        if not author.strip():
            raise RegistryError("author", "say who makes the change")
        if not source.strip():
            raise RegistryError("source", "say where the change comes from")
        with self._tx() as db:
            row = db.execute(
                "SELECT version, doc FROM registry_versions ORDER BY version DESC LIMIT 1"
            ).fetchone()
            version = int(row[0]) if row else 0
            old = msgspec.json.decode(row[1], type=RegistryFile) if row else RegistryFile()
            changes = diff(old, registry.file)
            if not changes and row is not None:
                return version, []
            version += 1
            ms = self.clock()
            db.execute(
                "INSERT INTO registry_versions VALUES (?, ?, ?, ?, ?)",
                (version, ms, author, source, msgspec.json.encode(registry.file).decode()),
            )
            db.executemany(
                "INSERT INTO registry_changes VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [(version, ms, author, c.what, c.table, c.key, c.before, c.after) for c in changes],
            )
        return version, [
            Change(c.what, c.table, c.key, c.before, c.after, version, ms, author) for c in changes
        ]

    def version(self) -> int:
        """The version in force (0: none yet)."""
        with self._lock:
            (v,) = self._db.execute(
                "SELECT coalesce(max(version), 0) FROM registry_versions"
            ).fetchone()
        return int(v)

    def versions(self) -> list[Version]:
        """Every version, oldest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT version, ms, author, source FROM registry_versions ORDER BY version"
            ).fetchall()
        return [Version(int(v), int(ms), a, s) for v, ms, a, s in rows]

    def history(self, table: str | None = None, key: str | None = None) -> list[Change]:
        """Audit lines, oldest first: of one table, or one entity of it."""
        sql = "SELECT what, tbl, key, before, after, version, ms, author FROM registry_changes"
        where, args = [], []
        if table is not None:
            where.append("tbl = ?")
            args.append(table)
        if key is not None:
            where.append("key = ?")
            args.append(key)
        if where:
            sql += " WHERE " + " AND ".join(where)
        with self._lock:
            rows = self._db.execute(sql + " ORDER BY version, rowid", args).fetchall()
        return [Change(w, t, k, b, a, int(v), int(ms), au) for w, t, k, b, a, v, ms, au in rows]


def _json(entity: msgspec.Struct) -> str:
    return msgspec.json.encode(entity).decode()


def _drop_none(value: Any) -> Any:  # noqa: ANN401 - TOML data of any shape
    """TOML has no null: an unset optional field is left out."""
    if isinstance(value, dict):
        return {k: _drop_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list | tuple):
        return [_drop_none(v) for v in value]
    return value
