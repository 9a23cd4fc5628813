"""The database's shape and how it is opened.

File constants, the table of each device kind (:func:`_kind_layout`), the fixed tables and
their migrations, and :class:`_Schema`: the base of every part of :class:`~ingest.store.Store`,
with the steps that open the file (pragmas, migrations, the kinds' tables).
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

import msgspec

from ingest.store.records import StoreError
from sensors.schema import READING_TYPES, DeviceKind

DB_FILE: Final = "boltwatch.sqlite3"
"""Name of the database file inside the store's folder."""
SCHEMA_VERSION: Final = 2
"""Version of the fixed tables this code writes; a newer store is refused, an older one migrated."""
APPLICATION_ID: Final = 0x626F6C74
"""SQLite ``application_id`` of a boltwatch store (ASCII ``bolt``), telling it from other files."""

MINUTE_MS: Final = 60_000
HOUR_MS: Final = 3_600_000
DAY_MS: Final = 86_400_000

_CACHE_KIB: Final = 32_768  # page cache of the connection: 32 MiB (RSS at 100,000 devices)
_PAGE_BYTES: Final = 16_384
_JOURNAL_LIMIT_BYTES: Final = 64 * 1024 * 1024  # WAL file truncated back to this after checkpoints
# The WAL is checkpointed into the database once it holds this much (SQLite's default of 1,000
# pages is 4 MiB with its default 4 KiB pages, but 16 MiB with ours): on a disk with less free
# space than that, the WAL took it all and could no longer be checkpointed (the database file
# must grow to take its pages), so ingest stayed stuck after a full disk even once space returned.
_WAL_CHECKPOINT_BYTES: Final = 4 * 1024 * 1024
_BUSY_TIMEOUT_MS: Final = 5_000  # wait this long for another process's write lock
_IDENT: Final = re.compile(r"^[a-z][a-z0-9_]*$")
_FIXED_COLUMNS: Final = ("device_id", "ts_ms", "seq", "site", "received_ms", "late")


@dataclass(frozen=True, slots=True)
class _Layout:
    """The table of one device kind and the SQL that reads and writes it."""

    kind: DeviceKind
    table: str
    chunks: str
    floats: tuple[str, ...]
    arrays: tuple[str, ...]
    select: str
    inserts: dict[tuple[tuple[str, ...], int], str]

    def insert(self, columns: tuple[str, ...], rows: int) -> str:
        """``INSERT OR IGNORE`` of ``rows`` rows of these columns (the others take their
        default). Kept per column set and row count, so SQLite's statement cache keeps each one
        prepared."""
        key = (columns, rows)
        sql = self.inserts.get(key)
        if sql is None:
            names = ", ".join(f'"{c}"' for c in columns)
            row = "(" + ", ".join("?" * len(columns)) + ")"
            values = ", ".join([row] * rows)
            sql = self.inserts[key] = (
                f'INSERT OR IGNORE INTO "{self.table}" ({names}) VALUES {values}'  # noqa: S608 - _IDENT
            )
        return sql


def _kind_layout(kind: DeviceKind) -> _Layout:
    """Table layout of a kind, from its reading schema (the same fields the codec decodes)."""
    info = msgspec.inspect.type_info(READING_TYPES[kind])
    if not isinstance(info, msgspec.inspect.StructType):  # pragma: no cover - our own schema
        raise TypeError(f"the reading schema of {kind} is not a struct")
    floats: list[str] = []
    arrays: list[str] = []
    for f in info.fields:
        if f.name in ("ts", "seq", "device_id"):
            continue
        if not _IDENT.fullmatch(f.name) or f.name in _FIXED_COLUMNS:  # pragma: no cover
            raise TypeError(f"field {f.name!r} of {kind} cannot be a column")
        types = f.type.types if isinstance(f.type, msgspec.inspect.UnionType) else (f.type,)
        if any(isinstance(t, msgspec.inspect.ListType) for t in types):
            arrays.append(f.name)
        else:
            floats.append(f.name)
    return _Layout(
        kind=kind,
        table=f"readings_{kind.value}",
        chunks=f"chunks_{kind.value}",
        floats=tuple(floats),
        arrays=tuple(sorted(arrays)),
        select=", ".join(
            f'"{c}"' for c in ("device_id", "ts_ms", "seq", "site", *floats, *sorted(arrays))
        ),
        inserts={},
    )


# -- schema ---------------------------------------------------------------------------------------

_V1: Final = (
    """CREATE TABLE schema_version (
        version INTEGER PRIMARY KEY, applied_ms INTEGER NOT NULL)""",
    """CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER) WITHOUT ROWID""",
    """CREATE TABLE reading_counts (
        kind TEXT PRIMARY KEY, n INTEGER NOT NULL DEFAULT 0) WITHOUT ROWID""",
    """CREATE TABLE events (
        site TEXT NOT NULL, kind TEXT NOT NULL, device_id TEXT NOT NULL,
        ts_ms INTEGER NOT NULL, seq INTEGER NOT NULL, type TEXT NOT NULL,
        json TEXT NOT NULL, received_ms INTEGER NOT NULL,
        PRIMARY KEY (device_id, ts_ms, seq, type)) WITHOUT ROWID""",
    """CREATE TABLE device_state (
        device_id TEXT PRIMARY KEY, kind TEXT NOT NULL, site TEXT NOT NULL,
        state TEXT CHECK (state IN ('online', 'offline')), boot_id TEXT, fw_version TEXT,
        last_seen_ms INTEGER, last_status_ms INTEGER, updated_ms INTEGER NOT NULL) WITHOUT ROWID""",
    """CREATE TABLE dead_letters (
        id INTEGER PRIMARY KEY AUTOINCREMENT, received_ms INTEGER NOT NULL,
        topic TEXT NOT NULL, payload BLOB NOT NULL, field TEXT NOT NULL, reason TEXT NOT NULL,
        replayed_ms INTEGER)""",
    """CREATE INDEX dead_letters_pending ON dead_letters (id) WHERE replayed_ms IS NULL""",
    """CREATE TABLE rollup_1m (
        kind TEXT NOT NULL, device_id TEXT NOT NULL, field TEXT NOT NULL,
        bucket_ms INTEGER NOT NULL, n INTEGER NOT NULL, min REAL, mean REAL, max REAL,
        PRIMARY KEY (kind, device_id, field, bucket_ms)) WITHOUT ROWID""",
    """CREATE TABLE rollup_1h (
        kind TEXT NOT NULL, device_id TEXT NOT NULL, field TEXT NOT NULL,
        bucket_ms INTEGER NOT NULL, n INTEGER NOT NULL, min REAL, mean REAL, max REAL,
        PRIMARY KEY (kind, device_id, field, bucket_ms)) WITHOUT ROWID""",
    """CREATE TABLE rollup_dirty (
        kind TEXT NOT NULL, device_id TEXT NOT NULL, hour_ms INTEGER NOT NULL,
        PRIMARY KEY (kind, device_id, hour_ms)) WITHOUT ROWID""",
)


def _migrate_to_1(conn: sqlite3.Connection) -> None:
    for statement in _V1:
        conn.execute(statement)
    conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")


def _migrate_to_2(conn: sqlite3.Connection) -> None:
    """Version 2 seals old readings into ``chunks_{kind}`` (created with the kinds' tables) and
    keeps daily rollups, the only stored ones of sealed days: a release that knows only version
    1 would not see them, so it must refuse the file."""
    conn.execute(
        """CREATE TABLE rollup_1d (
        kind TEXT NOT NULL, device_id TEXT NOT NULL, field TEXT NOT NULL,
        bucket_ms INTEGER NOT NULL, n INTEGER NOT NULL, min REAL, mean REAL, max REAL,
        PRIMARY KEY (kind, device_id, field, bucket_ms)) WITHOUT ROWID"""
    )
    # The days rolled up so far, from their hours.
    conn.execute(
        "INSERT INTO rollup_1d SELECT kind, device_id, field, bucket_ms - bucket_ms % 86400000, "
        "sum(n), min(min), sum(mean * n) / sum(n), max(max) FROM rollup_1h GROUP BY 1, 2, 3, 4"
    )


_MIGRATIONS: Final[dict[int, Callable[[sqlite3.Connection], None]]] = {
    1: _migrate_to_1,
    2: _migrate_to_2,
}
"""``version -> step`` that brings a store from ``version - 1`` to ``version`` (0 = empty file)."""


class _Schema:
    """The open store every part works on: its state (set by :meth:`Store.__init__`), the steps
    that open the file, and the accessors of the connection and of the kinds' layouts."""

    path: Path
    file: Path
    durable: bool
    retention_days: int
    _layouts: dict[DeviceKind, _Layout]
    _db: sqlite3.Connection | None

    # -- opening ----------------------------------------------------------------------------------

    def _open_error(self, exc: sqlite3.Error) -> StoreError:
        name = getattr(exc, "sqlite_errorname", "")
        if name == "SQLITE_NOTADB":
            return StoreError(self.file, "not a SQLite database, so not a boltwatch store")
        if name in ("SQLITE_CANTOPEN", "SQLITE_READONLY", "SQLITE_PERM", "SQLITE_AUTH"):
            return StoreError(self.file, f"cannot be opened for writing ({exc})")
        return StoreError(self.file, f"cannot be opened: {exc}")

    def _configure(self, conn: sqlite3.Connection) -> None:
        conn.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
        # Only takes effect on a new, empty file (before WAL mode): bigger pages mean fewer page
        # writes per commit when each message's readings are contiguous (measured +40% here).
        conn.execute(f"PRAGMA page_size = {_PAGE_BYTES}")
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise StoreError(self.file, f"cannot switch to WAL mode (journal mode is {mode})")
        conn.execute(f"PRAGMA synchronous = {'FULL' if self.durable else 'NORMAL'}")
        conn.execute("PRAGMA temp_store = MEMORY")
        conn.execute(f"PRAGMA cache_size = -{_CACHE_KIB}")
        conn.execute(f"PRAGMA journal_size_limit = {_JOURNAL_LIMIT_BYTES}")
        page_bytes = int(conn.execute("PRAGMA page_size").fetchone()[0])
        conn.execute(f"PRAGMA wal_autocheckpoint = {max(1, _WAL_CHECKPOINT_BYTES // page_bytes)}")

    def _migrate(self, conn: sqlite3.Connection) -> None:
        conn.execute("BEGIN IMMEDIATE")
        try:
            current = self._schema_version(conn)
            now_ms = int(datetime.now(UTC).timestamp() * 1000)
            for version in range(current + 1, SCHEMA_VERSION + 1):
                _MIGRATIONS[version](conn)
                conn.execute("INSERT INTO schema_version VALUES (?, ?)", (version, now_ms))
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def _schema_version(self, conn: sqlite3.Connection) -> int:
        """Version of the file's fixed tables (0: an empty file); refuses foreign or newer files."""
        app_id = conn.execute("PRAGMA application_id").fetchone()[0]
        tables = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
        if app_id == 0 and tables == 0:
            return 0
        if app_id != APPLICATION_ID:
            raise StoreError(self.file, "a SQLite database of another application, not a store")
        current = int(conn.execute("SELECT max(version) FROM schema_version").fetchone()[0] or 0)
        if current > SCHEMA_VERSION:
            raise StoreError(
                self.file,
                f"schema version {current} was written by a newer boltwatch "
                f"(this one reads up to {SCHEMA_VERSION}): upgrade boltwatch",
            )
        return current

    def _ensure_kind_tables(self, conn: sqlite3.Connection) -> None:
        """Create the table of each kind, and the columns of fields added to a kind since."""
        conn.execute("BEGIN IMMEDIATE")
        try:
            for layout in self._layouts.values():
                table = layout.table
                floats = "".join(f', "{f}" REAL' for f in layout.floats)
                blobs = "".join(f', "{f}" BLOB' for f in layout.arrays)
                conn.execute(
                    f'CREATE TABLE IF NOT EXISTS "{table}" ('
                    "device_id TEXT NOT NULL, ts_ms INTEGER NOT NULL, seq INTEGER NOT NULL, "
                    "site TEXT NOT NULL, received_ms INTEGER NOT NULL, "
                    "late INTEGER NOT NULL DEFAULT 0"
                    f"{floats}{blobs}, PRIMARY KEY (device_id, ts_ms, seq)) WITHOUT ROWID"
                )
                conn.execute(
                    f'CREATE TABLE IF NOT EXISTS "{layout.chunks}" ('
                    "device_id TEXT NOT NULL, start_ms INTEGER NOT NULL, n INTEGER NOT NULL, "
                    "first_ms INTEGER NOT NULL, last_ms INTEGER NOT NULL, data BLOB NOT NULL, "
                    "PRIMARY KEY (device_id, start_ms))"
                )
                chunks = layout.chunks
                conn.execute(
                    f'CREATE INDEX IF NOT EXISTS "{chunks}_start" ON "{chunks}" (start_ms)'
                )
                have = {row[1] for row in conn.execute(f'PRAGMA table_info("{table}")')}
                for f in layout.floats:
                    if f not in have:
                        conn.execute(f'ALTER TABLE "{table}" ADD COLUMN "{f}" REAL')
                for f in layout.arrays:
                    if f not in have:
                        conn.execute(f'ALTER TABLE "{table}" ADD COLUMN "{f}" BLOB')
                conn.execute(
                    "INSERT OR IGNORE INTO reading_counts (kind, n) VALUES (?, 0)",
                    (layout.kind.value,),
                )
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise StoreError(self.file, "the store is closed")
        return self._db

    def _layout(self, kind: DeviceKind | str) -> _Layout:
        try:
            return self._layouts[DeviceKind(kind)]
        except (ValueError, KeyError) as exc:
            raise StoreError(self.file, f"unknown device kind {kind!r}") from exc
