"""The embedded time-series store of the ingest service: one SQLite file in WAL mode.

Layout of the database ``{path}/boltwatch.sqlite3``:

* ``readings_{kind}`` — one table per device kind, generated from
  :data:`sensors.schema.READING_TYPES` (a new kind, or a new field of a kind, needs no code here:
  the table or column is added when the store is opened). ``WITHOUT ROWID``, primary key
  ``(device_id, ts_ms, seq)``: a redelivered reading is ignored, while a reading after a reboot
  (``seq`` restarted, a new ``ts``) is kept — the timestamp is the guard against ``seq`` resets.
  Columns: ``device_id, ts_ms, seq, site, received_ms, late`` then one ``REAL`` per numeric field
  (``NULL`` = not reported) and one ``BLOB`` per waveform field (float32 little-endian; its
  sampling rate is the kind's ``fs_hz`` field).
* ``events``, ``device_state``, ``dead_letters``, ``rollup_1m``, ``rollup_1h``; bookkeeping in
  ``schema_version``, ``meta``, ``reading_counts`` and ``rollup_dirty`` (the buckets touched since
  the last rollup).

Durability: :meth:`Store.write` is one transaction — the group commit; ingest acknowledges the
batch's messages to the broker after it returns. With ``durable=True`` (the default) the store runs
``synchronous=FULL``: the WAL is fsynced at every commit, so an acknowledged reading survives a
power cut or kernel crash. ``durable=False`` runs ``synchronous=NORMAL``: commits survive a crash of
the process but the last ones may be lost on power loss, which breaks at-least-once (the broker
was told they were stored); it is for demos and benchmarks.

Threads: a :class:`Store` is used from one thread at a time — ingest runs its commits in one worker
thread (``asyncio.to_thread``). The connection is opened with ``check_same_thread=False`` so that
the thread may change between calls, but calls must never overlap. Other processes (dashboards) may
read the file at the same time through their own connections: WAL lets readers and the writer work
concurrently.
"""

from __future__ import annotations

import contextlib
import csv
import logging
import os
import re
import sqlite3
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import chain, islice, repeat
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Literal, Self, TextIO, TypeVar

import msgspec
import numpy as np

from sensors.codec import DecodedBatch, DeviceEvent, ReadingColumns
from sensors.schema import READING_TYPES, DeviceKind

__all__ = [
    "APPLICATION_ID",
    "DAY_MS",
    "DB_FILE",
    "HOUR_MS",
    "MINUTE_MS",
    "SCHEMA_VERSION",
    "DeadLetter",
    "DeviceRecord",
    "Rollup",
    "Store",
    "StoreError",
    "StoreStats",
    "WriteResult",
]

DB_FILE: Final = "boltwatch.sqlite3"
"""Name of the database file inside the store's folder."""
SCHEMA_VERSION: Final = 1
"""Version of the fixed tables this code writes; a newer store is refused, an older one migrated."""
APPLICATION_ID: Final = 0x626F6C74
"""SQLite ``application_id`` of a boltwatch store (ASCII ``bolt``), telling it from other files."""

MINUTE_MS: Final = 60_000
HOUR_MS: Final = 3_600_000
DAY_MS: Final = 86_400_000

_log = logging.getLogger("boltwatch.ingest")
_CACHE_KIB: Final = 65_536  # page cache of the connection: 64 MiB
_PAGE_BYTES: Final = 16_384
_ROWS_PER_INSERT: Final = (64, 8, 1)  # multi-row INSERT sizes, largest first; 1 must be last
_JOURNAL_LIMIT_BYTES: Final = 64 * 1024 * 1024  # WAL file truncated back to this after checkpoints
# The WAL is checkpointed into the database once it holds this much (SQLite's default of 1,000
# pages is 4 MiB with its default 4 KiB pages, but 16 MiB with ours): on a disk with less free
# space than that, the WAL took it all and could no longer be checkpointed (the database file
# must grow to take its pages), so ingest stayed stuck after a full disk even once space returned.
_WAL_CHECKPOINT_BYTES: Final = 4 * 1024 * 1024
_WAL_RESTART_BYTES: Final = 256 * 1024 * 1024
"""A WAL this large after a commit is checkpointed with ``TRUNCATE``. The automatic (passive)
checkpoint never resets the WAL while readers keep overlapping (the chaos overload's progress
polls did): measured, a 37.8 GB WAL after 16 million readings, and ``SQLITE_FULL`` errors."""
_WAL_WAIT_MS: Final = 200  # how long that checkpoint waits for readers of older snapshots
_WAL_RETRY_S: Final = 5.0  # and how soon it is tried again when they were still there
_BUSY_TIMEOUT_MS: Final = 5_000  # wait this long for another process's write lock
_EXPORT_CHUNK: Final = 10_000
_IDENT: Final = re.compile(r"^[a-z][a-z0-9_]*$")
_INDEX: Final = re.compile(r"\[\d+\]")
_FIXED_COLUMNS: Final = ("device_id", "ts_ms", "seq", "site", "received_ms", "late")
_CBOLT_EXPORT: Final = ("preload_kn", "temp_c", "torque_nm", "battery_v")
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_T = TypeVar("_T")


class StoreError(Exception):
    """The store cannot be opened or written.

    Attributes:
        path: The folder or database file concerned.
        reason: What is wrong, in words an operator can act on.
    """

    def __init__(self, path: str | os.PathLike[str], reason: str) -> None:
        super().__init__(f"{os.fspath(path)}: {reason}")
        self.path = Path(path)
        self.reason = reason

    def __reduce__(self) -> tuple[type[StoreError], tuple[Path, str]]:
        return (type(self), (self.path, self.reason))


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A rejected message, kept with its raw bytes so that it can be inspected and replayed.

    Attributes:
        topic: The MQTT topic it arrived on.
        payload: The payload, byte for byte.
        field: Where the problem is (``PayloadError.field``: ``"topic"``, ``"$.preload_kn"``).
        reason: Why it was rejected.
        received_ms: When ingest received it (epoch milliseconds UTC).
        id: Its number in the store (``None`` until stored).
        replayed_ms: When it was replayed (epoch milliseconds UTC), ``None`` if not yet.
    """

    topic: str
    payload: bytes
    field: str
    reason: str
    received_ms: int
    id: int | None = None
    replayed_ms: int | None = None


@dataclass(frozen=True, slots=True)
class WriteResult:
    """What one :meth:`Store.write` committed.

    Attributes:
        stored: Readings inserted (new rows).
        duplicates: Readings and events that were already stored (attempted minus inserted).
        events: Events inserted.
        dead_letters: Dead letters inserted.
        by_kind: Readings inserted per device kind (only kinds present in the batch).
    """

    stored: int
    duplicates: int
    events: int
    dead_letters: int
    by_kind: dict[str, int]


@dataclass(frozen=True, slots=True)
class DeviceRecord:
    """What the store knows about one device.

    Attributes:
        device_id: The device.
        kind: Its kind (the latest seen).
        site: Its site (the latest seen).
        state: ``online``/``offline`` from its last status message; ``None`` if it never sent one
            (e.g. a bolt relayed by a gateway).
        boot_id: Boot id of its last status message that had one.
        fw_version: Firmware version of its last status message that had one.
        last_seen_ms: Largest reading timestamp stored (epoch ms UTC), ``None`` if no reading yet.
        last_status_ms: When its last status message was received (epoch ms UTC).
        updated_ms: When this record last changed (the ``received_ms`` of that write).
    """

    device_id: str
    kind: DeviceKind
    site: str
    state: Literal["online", "offline"] | None
    boot_id: str | None
    fw_version: str | None
    last_seen_ms: int | None
    last_status_ms: int | None
    updated_ms: int


@dataclass(frozen=True, slots=True)
class Rollup:
    """Statistics of one field of one device over one bucket.

    Attributes:
        kind: Device kind.
        device_id: Device.
        field: Reading field (e.g. ``preload_kn``), in its own unit.
        bucket_ms: Start of the bucket (epoch ms UTC); the bucket is 1 minute or 1 hour long.
        n: Number of readings that reported the field in the bucket.
        min: Smallest value.
        mean: Arithmetic mean.
        max: Largest value.
    """

    kind: DeviceKind
    device_id: str
    field: str
    bucket_ms: int
    n: int
    min: float
    mean: float
    max: float


@dataclass(frozen=True, slots=True)
class StoreStats:
    """Counts for ``/metrics`` and the console.

    Attributes:
        readings: Raw readings stored, all kinds.
        readings_by_kind: Raw readings per kind (every known kind, zero included).
        devices: Devices known.
        events: Events stored.
        dead_letters: Dead letters stored (replayed ones included).
        dead_letters_pending: Dead letters not yet replayed.
        dead_letters_by_reason: Dead letters per ``field``, array indexes removed
            (``$.readings[3].ts`` counts as ``$.readings[].ts``).
        rollup_watermark_ms: ``now_ms`` of the last :meth:`Store.rollup`, ``None`` if never.
    """

    readings: int
    readings_by_kind: dict[str, int]
    devices: int
    events: int
    dead_letters: int
    dead_letters_pending: int
    dead_letters_by_reason: dict[str, int]
    rollup_watermark_ms: int | None


@dataclass(frozen=True, slots=True)
class _Layout:
    """The table of one device kind and the SQL that reads and writes it."""

    kind: DeviceKind
    table: str
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


_MIGRATIONS: Final[dict[int, Callable[[sqlite3.Connection], None]]] = {1: _migrate_to_1}
"""``version -> step`` that brings a store from ``version - 1`` to ``version`` (0 = empty file)."""


# -- formatting -----------------------------------------------------------------------------------


def _rfc3339(ts_ms: int, cache: dict[int, str]) -> str:
    """RFC 3339 UTC with ``Z``; milliseconds only when not zero (as ``boltwatch simulate`` does)."""
    sec, ms = divmod(ts_ms, 1000)
    text = cache.get(sec)
    if text is None:
        if len(cache) > 65_536:
            cache.clear()
        text = cache[sec] = (_EPOCH + timedelta(seconds=sec)).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{text}.{ms:03d}Z" if ms else f"{text}Z"


def _number(value: float | None) -> str:
    """Shortest text that reads back as the same float; integral values without ``.0``."""
    if value is None:
        return ""
    text = repr(value)
    return text[:-2] if text.endswith(".0") else text


def _with_nulls(
    values: np.ndarray[Any, np.dtype[np.float64]], missing: np.ndarray[Any, np.dtype[np.bool_]]
) -> list[float | None]:
    """A float column as Python values with ``None`` where ``missing`` (NaN: not reported)."""
    boxed = values.astype(object)
    boxed[missing] = None
    return boxed.tolist()  # type: ignore[no-any-return]


def _blobs(arrays: Sequence[np.ndarray[Any, np.dtype[np.float64]] | None]) -> list[bytes | None]:
    return [None if a is None else np.asarray(a, "<f4").tobytes() for a in arrays]


# -- the store ------------------------------------------------------------------------------------


class Store:
    """Readings, events, device state, dead letters and rollups in one SQLite file.

    Args:
        path: Folder of the store; created if missing. The database is ``path/boltwatch.sqlite3``.
        durable: ``synchronous=FULL`` (an acknowledged write survives power loss) when true;
            ``synchronous=NORMAL`` (faster, may lose the last commits on power loss) when false.
        retention_days: Raw readings older than this many days are deleted by
            :meth:`enforce_retention`; rollups, events and dead letters are kept.

    Raises:
        StoreError: The folder cannot be created or written, the file is not a boltwatch store,
            or it was written by a newer boltwatch (schema version above :data:`SCHEMA_VERSION`).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        durable: bool = True,
        retention_days: int = 400,
    ) -> None:
        if retention_days < 1:
            raise ValueError(f"retention_days must be at least 1, got {retention_days}")
        self.path = Path(path)
        self.file = self.path / DB_FILE
        self._wal_warned = False
        self._wal_next_try = 0.0
        self.durable = durable
        self.retention_days = retention_days
        self._layouts: dict[DeviceKind, _Layout] = {k: _kind_layout(k) for k in READING_TYPES}
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except FileExistsError as exc:
            raise StoreError(self.path, "exists and is not a folder") from exc
        except OSError as exc:
            raise StoreError(self.path, f"cannot create the store folder: {exc}") from exc
        if not os.access(self.path, os.W_OK | os.X_OK):
            raise StoreError(self.path, "the store folder is not writable")
        try:
            conn = sqlite3.connect(
                self.file, isolation_level=None, check_same_thread=False, cached_statements=256
            )
        except sqlite3.Error as exc:
            raise self._open_error(exc) from exc
        try:
            self._configure(conn)
            self._migrate(conn)
            self._ensure_kind_tables(conn)
        except sqlite3.Error as exc:
            conn.close()
            raise self._open_error(exc) from exc
        except StoreError:
            conn.close()
            raise
        self._db: sqlite3.Connection | None = conn

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

    def _transaction(self, work: Callable[[sqlite3.Connection], _T], what: str) -> _T:
        """Run ``work`` in one ``BEGIN IMMEDIATE`` transaction; roll back on any failure."""
        conn = self._conn()
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                result = work(conn)
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            if getattr(exc, "sqlite_errorname", "") == "SQLITE_FULL":
                self._release_wal(conn)
            raise StoreError(self.file, f"{what} failed: {exc}") from exc
        self._bound_wal(conn)
        return result

    def _bound_wal(self, conn: sqlite3.Connection) -> None:
        """Past :data:`_WAL_RESTART_BYTES`, checkpoint the WAL and truncate it (readers that
        began earlier are waited for :data:`_WAL_WAIT_MS`; new ones read the database file).
        Best effort: a checkpoint still blocked says so once and is tried again after
        :data:`_WAL_RETRY_S` (waiting the busy timeout at every commit stalled ingest)."""
        try:
            size = os.stat(f"{self.file}-wal").st_size
        except OSError:
            return
        now = time.monotonic()
        if size <= _WAL_RESTART_BYTES or now < self._wal_next_try:
            return
        # A short wait for the readers, not the busy timeout: commits must not stall on them.
        conn.execute(f"PRAGMA busy_timeout = {_WAL_WAIT_MS}")
        try:
            busy, _, _ = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        except sqlite3.Error as exc:
            busy = 1
            reason = str(exc)
        else:
            reason = "readers still use it"
        finally:
            conn.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
        self._wal_next_try = now + _WAL_RETRY_S if busy else 0.0
        if busy and not self._wal_warned:
            self._wal_warned = True
            _log.warning(
                "store WAL is %.0f MB and could not be checkpointed (%s); trying again at the "
                "next commit",
                size / 1e6,
                reason,
            )
        elif not busy:
            self._wal_warned = False

    def _release_wal(self, conn: sqlite3.Connection) -> None:
        """After a write failed on a full disk: checkpoint the WAL and truncate it to zero.

        The failed transaction's frames keep their disk space in the WAL file; truncating gives
        it back (to the retry, and to the other files of the store) as soon as the checkpoint can
        run. Best effort: on a disk still full the checkpoint fails too, and the next failed
        attempt tries again. May wait up to the busy timeout for readers of older snapshots.
        """
        with contextlib.suppress(sqlite3.Error):
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()

    # -- writing ----------------------------------------------------------------------------------

    def write(
        self,
        batch: DecodedBatch,
        dead: Sequence[DeadLetter] = (),
        *,
        received_ms: int,
        late_after_ms: int = 3_600_000,
    ) -> WriteResult:
        """Store a decoded batch and its dead letters in ONE transaction (the group commit).

        When this returns, everything is committed (durably with ``durable=True``) and the batch's
        messages may be acknowledged; when it raises, nothing of the batch was stored.

        Args:
            batch: Readings (columns per kind), events and statuses from the decoder.
            dead: Rejected messages of the same batch.
            received_ms: When ingest received the batch (epoch ms UTC).
            late_after_ms: A reading is flagged ``late`` when it arrives more than this many
                milliseconds after its own timestamp (backfilled after an outage).

        Returns:
            Counts of what was inserted and of the duplicates ignored.

        Raises:
            StoreError: SQLite failed (disk full, store closed, ...); the transaction was rolled
                back.
        """

        def work(conn: sqlite3.Connection) -> WriteResult:
            by_kind: dict[str, int] = {}
            attempted = 0
            for kind, cols in batch.telemetry.items():
                n = len(cols)
                if n == 0:
                    continue
                attempted += n
                by_kind[kind.value] = self._insert_readings(
                    conn, self._layout(kind), cols, received_ms, late_after_ms
                )
            events = self._insert_events(conn, batch.events, received_ms)
            self._update_statuses(conn, batch, received_ms)
            dead_count = self._insert_dead_letters(conn, dead)
            stored = sum(by_kind.values())
            return WriteResult(
                stored=stored,
                duplicates=(attempted - stored) + (len(batch.events) - events),
                events=events,
                dead_letters=dead_count,
                by_kind=by_kind,
            )

        return self._transaction(work, "write")

    def _insert_readings(
        self,
        conn: sqlite3.Connection,
        layout: _Layout,
        cols: ReadingColumns,
        received_ms: int,
        late_after_ms: int,
    ) -> int:
        """Insert the rows of one kind, note their devices' activity and the buckets they touch;
        returns how many rows were new."""
        names, columns = self._reading_columns(layout, cols, received_ms, late_after_ms)
        before = conn.total_changes
        # Not strict: `received_ms` is an endless `repeat`; every list has len(cols) items.
        rows = zip(*columns, strict=False)
        width = len(names)
        left = len(cols)
        # Several rows per INSERT: executing a statement costs about as much as binding a
        # row, so 64 rows per statement make the insert twice as fast (measured).
        for per in _ROWS_PER_INSERT:
            count = left // per
            if count == 0:
                continue
            sql = layout.insert(names, per)
            if per == 1:
                conn.executemany(sql, islice(rows, count))
            else:
                # Flatten the next count * per rows, then cut them into groups of `per` rows (one
                # shared iterator, taken `width * per` values at a time).
                flat = chain.from_iterable(islice(rows, count * per))
                conn.executemany(sql, zip(*[flat] * (width * per), strict=False))
            left -= count * per
        inserted = conn.total_changes - before
        conn.execute(
            "UPDATE reading_counts SET n = n + ? WHERE kind = ?", (inserted, layout.kind.value)
        )
        self._touch_devices(conn, layout.kind, cols, received_ms)
        return inserted

    @staticmethod
    def _reading_columns(
        layout: _Layout, cols: ReadingColumns, received_ms: int, late_after_ms: int
    ) -> tuple[tuple[str, ...], list[Iterable[Any]]]:
        """The columns to insert and their values as Python objects (``None`` for NaN)."""
        ts = cols.ts_ms
        names = ["device_id", "ts_ms", "seq", "site", "received_ms"]
        columns: list[Iterable[Any]] = [
            cols.device_id.tolist(),
            ts.tolist(),
            cols.seq.tolist(),
            cols.site.tolist(),
            repeat(received_ms),
        ]
        # A column that no row of the batch has is left out of the INSERT and takes its default
        # (NULL; 0 for `late`): each bound parameter costs about a quarter of a microsecond a row,
        # a fifth of the whole insert for a typical bolt batch.
        late = (received_ms - ts) > late_after_ms
        if late.any():
            names.append("late")
            columns.append(late.view(np.int8).tolist())
        for f in layout.floats:
            values = cols.values.get(f)
            if values is None:
                continue
            missing = np.isnan(values)
            if missing.all():
                continue
            names.append(f)
            columns.append(_with_nulls(values, missing) if missing.any() else values.tolist())
        for f in layout.arrays:
            arrays = cols.arrays.get(f)
            if arrays is None or all(a is None for a in arrays):
                continue
            names.append(f)
            columns.append(_blobs(arrays))
        return tuple(names), columns

    @staticmethod
    def _touch_devices(
        conn: sqlite3.Connection, kind: DeviceKind, cols: ReadingColumns, received_ms: int
    ) -> None:
        """Raise each device's ``last_seen_ms`` and mark the (device, hour) buckets to roll up."""
        ts = cols.ts_ms
        order = None
        if len(cols) > 1 and bool((ts[1:] < ts[:-1]).any()):
            order = np.argsort(ts, kind="stable")
        by_time = cols.device_id if order is None else cols.device_id[order]
        devices: list[str] = by_time.tolist()
        # dict() keeps the last value of each key: in time order, the latest reading's.
        last_seen = dict(zip(devices, (ts if order is None else ts[order]).tolist(), strict=True))
        site_of = dict(
            zip(devices, (cols.site if order is None else cols.site[order]).tolist(), strict=True)
        )
        conn.executemany(
            "INSERT INTO device_state (device_id, kind, site, last_seen_ms, updated_ms) "
            "VALUES (?, ?, ?, ?, ?) ON CONFLICT (device_id) DO UPDATE SET "
            "kind = excluded.kind, site = excluded.site, "
            "last_seen_ms = max(coalesce(last_seen_ms, excluded.last_seen_ms), "
            "excluded.last_seen_ms), updated_ms = excluded.updated_ms",
            [(d, kind.value, site_of[d], t, received_ms) for d, t in last_seen.items()],
        )
        hours = ts // HOUR_MS
        lo, hi = int(hours.min()), int(hours.max())
        if lo == hi:
            touched = [(kind.value, d, lo * HOUR_MS) for d in last_seen]
        else:
            touched = [
                (kind.value, d, h * HOUR_MS)
                for h in np.unique(hours).tolist()
                for d in set(cols.device_id[hours == h].tolist())
            ]
        conn.executemany(
            "INSERT OR IGNORE INTO rollup_dirty (kind, device_id, hour_ms) VALUES (?, ?, ?)",
            touched,
        )

    def _insert_events(
        self, conn: sqlite3.Connection, events: Sequence[DeviceEvent], received_ms: int
    ) -> int:
        """Insert events (a redelivered one is ignored); returns how many were new."""
        if not events:
            return 0
        encode = msgspec.json.encode
        before = conn.total_changes
        conn.executemany(
            "INSERT OR IGNORE INTO events "
            "(site, kind, device_id, ts_ms, seq, type, json, received_ms) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    e.site,
                    e.kind.value,
                    e.device_id,
                    e.ts_ms,
                    e.event.seq,
                    e.event.__struct_config__.tag,
                    encode(e.event).decode(),
                    received_ms,
                )
                for e in events
            ],
        )
        return conn.total_changes - before

    def _update_statuses(
        self, conn: sqlite3.Connection, batch: DecodedBatch, received_ms: int
    ) -> None:
        """Apply status messages in arrival order (the broker's order is the truth: a retained
        birth message delivered again after a restart is the device's current state)."""
        if not batch.statuses:
            return
        conn.executemany(
            "INSERT INTO device_state (device_id, kind, site, state, boot_id, fw_version, "
            "last_status_ms, updated_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (device_id) DO UPDATE SET kind = excluded.kind, site = excluded.site, "
            "state = excluded.state, boot_id = coalesce(excluded.boot_id, boot_id), "
            "fw_version = coalesce(excluded.fw_version, fw_version), "
            "last_status_ms = excluded.last_status_ms, updated_ms = excluded.updated_ms",
            [
                (
                    s.device_id,
                    s.kind.value,
                    s.site,
                    s.status.state,
                    s.status.boot_id,
                    s.status.fw_version,
                    received_ms,
                    received_ms,
                )
                for s in batch.statuses
            ],
        )

    def _insert_dead_letters(self, conn: sqlite3.Connection, dead: Sequence[DeadLetter]) -> int:
        if not dead:
            return 0
        conn.executemany(
            "INSERT INTO dead_letters (received_ms, topic, payload, field, reason, replayed_ms) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            [(d.received_ms, d.topic, d.payload, d.field, d.reason, d.replayed_ms) for d in dead],
        )
        return len(dead)

    def mark_replayed(self, ids: Sequence[int], *, at_ms: int) -> None:
        """Record that dead letters were replayed (they leave the default listing).

        Args:
            ids: Their :attr:`DeadLetter.id`.
            at_ms: When (epoch ms UTC).
        """

        def work(conn: sqlite3.Connection) -> None:
            conn.executemany(
                "UPDATE dead_letters SET replayed_ms = ? WHERE id = ?", [(at_ms, i) for i in ids]
            )

        self._transaction(work, "mark_replayed")

    # -- reading ----------------------------------------------------------------------------------

    def readings(
        self,
        kind: DeviceKind,
        *,
        device_id: str | None = None,
        site: str | None = None,
        since_ms: int | None = None,
        until_ms: int | None = None,
        late: bool | None = None,
        limit: int | None = None,
    ) -> ReadingColumns:
        """Stored readings of one kind as columns, ordered by timestamp, then device, then seq.

        Args:
            kind: Device kind.
            device_id: Only this device.
            site: Only this site.
            since_ms: Only readings at or after this time (epoch ms UTC).
            until_ms: Only readings before this time (epoch ms UTC).
            late: Only late (true) or only timely (false) readings.
            limit: At most this many rows (the earliest).

        Returns:
            Columns as the decoder makes them: NaN where a field was not reported; waveforms
            as float64 arrays of the stored float32 samples; ``message`` is the row number.
        """
        layout = self._layout(kind)
        where, params = self._filters(device_id, site, since_ms, until_ms)
        if late is not None:
            where.append("late = ?")
            params.append(int(late))
        sql = f'SELECT {layout.select} FROM "{layout.table}"'  # noqa: S608 - see _IDENT
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY ts_ms, device_id, seq"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        rows = self._conn().execute(sql, params).fetchall()
        n = len(rows)
        columns: list[tuple[Any, ...]] = (
            list(zip(*rows, strict=True)) if rows else [()] * (4 + len(layout.floats))
        )
        nf = len(layout.floats)
        return ReadingColumns(
            kind=layout.kind,
            site=np.array(columns[3], dtype=object),
            device_id=np.array(columns[0], dtype=object),
            ts_ms=np.array(columns[1], dtype=np.int64),
            seq=np.array(columns[2], dtype=np.int64),
            values={
                f: np.array(columns[4 + j], dtype=np.float64) for j, f in enumerate(layout.floats)
            },
            arrays={
                f: [
                    None
                    if b is None
                    else np.frombuffer(b, dtype="<f4").astype(np.float64)  # one copy, owned
                    for b in (columns[4 + nf + j] if rows else ())
                ]
                for j, f in enumerate(layout.arrays)
            },
            message=np.arange(n, dtype=np.int64),
        )

    @staticmethod
    def _filters(
        device_id: str | None, site: str | None, since_ms: int | None, until_ms: int | None
    ) -> tuple[list[str], list[Any]]:
        where: list[str] = []
        params: list[Any] = []
        if device_id is not None:
            where.append("device_id = ?")
            params.append(device_id)
        if site is not None:
            where.append("site = ?")
            params.append(site)
        if since_ms is not None:
            where.append("ts_ms >= ?")
            params.append(since_ms)
        if until_ms is not None:
            where.append("ts_ms < ?")
            params.append(until_ms)
        return where, params

    def events(
        self,
        *,
        device_id: str | None = None,
        site: str | None = None,
        kind: DeviceKind | None = None,
        event_type: str | None = None,
        since_ms: int | None = None,
        until_ms: int | None = None,
        limit: int | None = None,
    ) -> list[dict[str, object]]:
        """Stored events, ordered by timestamp, then device, then seq.

        Args:
            device_id: Only this device.
            site: Only this site.
            kind: Only devices of this kind.
            event_type: Only this ``type`` (``tightened``, ``battery_swap``, ...).
            since_ms: Only events at or after this time (epoch ms UTC).
            until_ms: Only events before this time (epoch ms UTC).
            limit: At most this many (the earliest).

        Returns:
            One dict per event: ``site, kind, device_id, ts_ms, seq, type, received_ms`` and
            ``event`` (the event's fields as received, e.g. ``torque_nm``).
        """
        where, params = self._filters(device_id, site, since_ms, until_ms)
        if kind is not None:
            where.append("kind = ?")
            params.append(DeviceKind(kind).value)
        if event_type is not None:
            where.append("type = ?")
            params.append(event_type)
        sql = "SELECT site, kind, device_id, ts_ms, seq, type, json, received_ms FROM events"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY ts_ms, device_id, seq, type"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        decode = msgspec.json.decode
        return [
            {
                "site": s,
                "kind": DeviceKind(k),
                "device_id": d,
                "ts_ms": t,
                "seq": q,
                "type": ty,
                "received_ms": r,
                "event": decode(j),
            }
            for s, k, d, t, q, ty, j, r in self._conn().execute(sql, params)
        ]

    def devices(self) -> list[DeviceRecord]:
        """Every device known (from its readings or its status messages), by device id."""
        rows = self._conn().execute(
            "SELECT device_id, kind, site, state, boot_id, fw_version, last_seen_ms, "
            "last_status_ms, updated_ms FROM device_state ORDER BY device_id"
        )
        return [
            DeviceRecord(d, DeviceKind(k), s, st, b, fw, seen, status, upd)
            for d, k, s, st, b, fw, seen, status, upd in rows
        ]

    def dead_letters(
        self, *, limit: int = 100, reason: str | None = None, include_replayed: bool = False
    ) -> list[DeadLetter]:
        """Dead letters, oldest first.

        Args:
            limit: At most this many.
            reason: Only those whose ``"{field}: {reason}"`` contains this text (case-sensitive),
                e.g. ``"$.preload_kn"`` or ``"spoofed"``.
            include_replayed: Also those already replayed.
        """
        where: list[str] = []
        params: list[Any] = []
        if not include_replayed:
            where.append("replayed_ms IS NULL")
        if reason is not None:
            where.append("instr(field || ': ' || reason, ?) > 0")
            params.append(reason)
        sql = "SELECT id, received_ms, topic, payload, field, reason, replayed_ms FROM dead_letters"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY id LIMIT ?"
        params.append(limit)
        return [
            DeadLetter(
                topic=topic,
                payload=bytes(payload),
                field=field,
                reason=why,
                received_ms=received,
                id=i,
                replayed_ms=replayed,
            )
            for i, received, topic, payload, field, why, replayed in self._conn().execute(
                sql, params
            )
        ]

    def stats(self) -> StoreStats:
        """Counts of everything stored (readings counted as written, not by a table scan)."""
        conn = self._conn()
        by_kind = {k.value: 0 for k in self._layouts}
        by_kind.update(dict(conn.execute("SELECT kind, n FROM reading_counts").fetchall()))
        by_reason: dict[str, int] = {}
        for field, count in conn.execute("SELECT field, count(*) FROM dead_letters GROUP BY 1"):
            key = _INDEX.sub("[]", field)
            by_reason[key] = by_reason.get(key, 0) + count
        total, pending = conn.execute(
            "SELECT count(*), count(*) - count(replayed_ms) FROM dead_letters"
        ).fetchone()
        watermark = conn.execute(
            "SELECT value FROM meta WHERE key = 'rollup_watermark_ms'"
        ).fetchone()
        return StoreStats(
            readings=sum(by_kind.values()),
            readings_by_kind=by_kind,
            devices=conn.execute("SELECT count(*) FROM device_state").fetchone()[0],
            events=conn.execute("SELECT count(*) FROM events").fetchone()[0],
            dead_letters=total,
            dead_letters_pending=pending,
            dead_letters_by_reason=by_reason,
            rollup_watermark_ms=None if watermark is None else watermark[0],
        )

    # -- rollups and retention --------------------------------------------------------------------

    def rollup(self, *, now_ms: int) -> int:
        """(Re)compute 1-minute and 1-hour min/mean/max of every numeric field, for the buckets
        touched by writes since the last rollup.

        Writes record the (device, hour) pairs they touch; this recomputes those hours from the
        raw readings (so late and backfilled readings are included exactly) and records ``now_ms``
        as the watermark (:attr:`StoreStats.rollup_watermark_ms`).

        Args:
            now_ms: The current time (epoch ms UTC).

        Returns:
            Number of rollup rows written (one per field, device and bucket, both resolutions).
        """

        def work(conn: sqlite3.Connection) -> int:
            written = 0
            for layout in self._layouts.values():
                kind = layout.kind.value
                dirty = conn.execute(
                    "SELECT device_id, hour_ms FROM rollup_dirty WHERE kind = ?", (kind,)
                ).fetchall()
                if not dirty:
                    continue
                if layout.floats:
                    for width, table in ((MINUTE_MS, "rollup_1m"), (HOUR_MS, "rollup_1h")):
                        written += self._rollup_kind(conn, layout, dirty, width, table)
                conn.execute("DELETE FROM rollup_dirty WHERE kind = ?", (kind,))
            conn.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES ('rollup_watermark_ms', ?)",
                (now_ms,),
            )
            return written

        return self._transaction(work, "rollup")

    @staticmethod
    def _rollup_kind(
        conn: sqlite3.Connection,
        layout: _Layout,
        dirty: list[tuple[str, int]],
        width_ms: int,
        table: str,
    ) -> int:
        aggregates = ", ".join(
            f'count("{f}"), min("{f}"), avg("{f}"), max("{f}")' for f in layout.floats
        )
        sql = (
            f"SELECT ts_ms - ts_ms % {width_ms} AS bucket, {aggregates} "  # noqa: S608 - _IDENT
            f'FROM "{layout.table}" WHERE device_id = ? AND ts_ms >= ? AND ts_ms < ? '
            "GROUP BY bucket"
        )
        kind = layout.kind.value
        out: list[tuple[str, str, str, int, int, float, float, float]] = []
        for device, hour_ms in dirty:
            for row in conn.execute(sql, (device, hour_ms, hour_ms + HOUR_MS)):
                bucket = row[0]
                for j, f in enumerate(layout.floats):
                    n, lo, mean, hi = row[1 + 4 * j : 5 + 4 * j]
                    if n:
                        out.append((kind, device, f, bucket, n, lo, mean, hi))
        conn.executemany(
            f"INSERT OR REPLACE INTO {table} "  # noqa: S608 - one of our two rollup tables
            "(kind, device_id, field, bucket_ms, n, min, mean, max) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            out,
        )
        return len(out)

    def rollups(
        self,
        kind: DeviceKind,
        *,
        resolution: Literal["1m", "1h"] = "1m",
        device_id: str | None = None,
        field: str | None = None,
        since_ms: int | None = None,
        until_ms: int | None = None,
    ) -> list[Rollup]:
        """Rolled-up statistics, by device, field and bucket.

        Args:
            kind: Device kind.
            resolution: ``"1m"`` or ``"1h"`` buckets.
            device_id: Only this device.
            field: Only this field.
            since_ms: Only buckets starting at or after this time (epoch ms UTC).
            until_ms: Only buckets starting before this time (epoch ms UTC).
        """
        if resolution not in ("1m", "1h"):
            raise ValueError(f"resolution must be '1m' or '1h', got {resolution!r}")
        layout = self._layout(kind)
        where = ["kind = ?"]
        params: list[Any] = [layout.kind.value]
        for column, value, op in (
            ("device_id", device_id, "="),
            ("field", field, "="),
            ("bucket_ms", since_ms, ">="),
            ("bucket_ms", until_ms, "<"),
        ):
            if value is not None:
                where.append(f"{column} {op} ?")
                params.append(value)
        rows = self._conn().execute(
            f"SELECT device_id, field, bucket_ms, n, min, mean, max FROM rollup_{resolution} "  # noqa: S608 - checked above
            f"WHERE {' AND '.join(where)} ORDER BY device_id, field, bucket_ms",
            params,
        )
        return [Rollup(layout.kind, *row) for row in rows]

    def enforce_retention(self, *, now_ms: int) -> int:
        """Delete raw readings older than ``retention_days``; rollups, events and dead letters stay.

        Pending rollups are computed first, so no touched bucket loses its raw data unrolled.
        Deletion goes device by device along the primary key, so it never scans the whole table.
        A reading backfilled later into an hour older than the horizon has that hour recomputed
        from the raw rows left (its own): rollups there then describe only the late readings.

        Args:
            now_ms: The current time (epoch ms UTC).

        Returns:
            Number of raw readings deleted.
        """
        self.rollup(now_ms=now_ms)
        cutoff = now_ms - self.retention_days * DAY_MS

        def work(conn: sqlite3.Connection) -> int:
            devices = [row[0] for row in conn.execute("SELECT device_id FROM device_state")]
            deleted = 0
            for layout in self._layouts.values():
                before = conn.total_changes
                conn.executemany(
                    f'DELETE FROM "{layout.table}" WHERE device_id = ? AND ts_ms < ?',  # noqa: S608 - _IDENT
                    [(d, cutoff) for d in devices],
                )
                n = conn.total_changes - before
                if n:
                    conn.execute(
                        "UPDATE reading_counts SET n = n - ? WHERE kind = ?",
                        (n, layout.kind.value),
                    )
                deleted += n
            return deleted

        return self._transaction(work, "enforce_retention")

    # -- export -----------------------------------------------------------------------------------

    def export_csv(
        self,
        out: TextIO,
        kind: DeviceKind,
        *,
        device_id: str | None = None,
        since_ms: int | None = None,
        until_ms: int | None = None,
    ) -> int:
        """Write stored readings as a ``boltwatch replay`` input file (ARCHITECTURE.md).

        ``cbolt``: ``timestamp,device_id,preload_kn,temp_c,torque_nm,battery_v``, where
        ``torque_nm`` is the torque of a ``tightened`` event, on the device's first reading at or
        after the event (empty on every other row). Other kinds: ``timestamp,device_id`` and the
        kind's numeric fields (waveforms are not exported). Timestamps are RFC 3339 UTC with
        ``Z``; an unreported value is an empty cell. Rows by timestamp, then device.

        Args:
            out: Text stream to write to (open it with ``newline=""``).
            kind: Device kind.
            device_id: Only this device.
            since_ms: Only readings at or after this time (epoch ms UTC).
            until_ms: Only readings before this time (epoch ms UTC).

        Returns:
            Number of data rows written (the header not counted).
        """
        layout = self._layout(kind)
        conn = self._conn()
        is_bolt = layout.kind is DeviceKind.CBOLT
        fields = _CBOLT_EXPORT if is_bolt else layout.floats
        stored = [f for f in fields if f != "torque_nm"] if is_bolt else list(fields)
        where, params = self._filters(device_id, None, since_ms, until_ms)
        sql = (
            "SELECT ts_ms, device_id, seq"  # noqa: S608 - identifiers checked by _IDENT
            + "".join(f', "{f}"' for f in stored)
            + f' FROM "{layout.table}"'
            + (" WHERE " + " AND ".join(where) if where else "")
            + " ORDER BY ts_ms, device_id, seq"
        )
        torque = self._torque_rows(conn, layout, device_id, until_ms) if is_bolt else {}
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["timestamp", "device_id", *fields])
        stamps: dict[int, str] = {}
        number = _number
        rows = 0
        cursor = conn.execute(sql, params)
        while chunk := cursor.fetchmany(_EXPORT_CHUNK):
            lines: list[list[str]] = []
            for ts, dev, seq, *values in chunk:
                cells = [number(v) for v in values]
                if is_bolt:
                    cells.insert(2, number(torque.get((dev, ts, seq))))
                lines.append([_rfc3339(ts, stamps), dev, *cells])
            writer.writerows(lines)
            rows += len(lines)
        return rows

    @staticmethod
    def _torque_rows(
        conn: sqlite3.Connection, layout: _Layout, device_id: str | None, until_ms: int | None
    ) -> dict[tuple[str, int, int], float]:
        """``(device, ts_ms, seq)`` of the reading carrying each ``tightened`` event's torque."""
        sql = "SELECT device_id, ts_ms, json FROM events WHERE kind = ? AND type = 'tightened'"
        params: list[Any] = [layout.kind.value]
        if device_id is not None:
            sql += " AND device_id = ?"
            params.append(device_id)
        if until_ms is not None:
            sql += " AND ts_ms < ?"
            params.append(until_ms)
        sql += " ORDER BY ts_ms, seq"
        first = (
            f'SELECT ts_ms, seq FROM "{layout.table}" WHERE device_id = ? AND ts_ms >= ? '  # noqa: S608 - _IDENT
            "ORDER BY ts_ms, seq LIMIT 1"
        )
        torque: dict[tuple[str, int, int], float] = {}
        for dev, ts, text in conn.execute(sql, params).fetchall():
            value = msgspec.json.decode(text).get("torque_nm")
            if value is None:
                continue
            hit = conn.execute(first, (dev, ts)).fetchone()
            if hit is not None:
                torque[dev, hit[0], hit[1]] = float(value)  # a later event on the same row wins
        return torque

    # -- lifecycle --------------------------------------------------------------------------------

    def close(self) -> None:
        """Close the database (idempotent); later calls raise :class:`StoreError`."""
        if self._db is not None:
            self._db.close()
            self._db = None

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Store({os.fspath(self.path)!r}, durable={self.durable})"
