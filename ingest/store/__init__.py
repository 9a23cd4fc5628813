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
* ``chunks_{kind}`` — the *sealed* readings: once a UTC day is older than ``tail_days``,
  :meth:`Store.seal` moves each device's rows of that day into its chunk of the month, a row
  ``(device_id, start_ms, n, first_ms, last_ms, data)`` of compressed columns
  (:mod:`ingest.store.chunks`); chunks of a device never overlap. A reading is in the tail or in
  a chunk, never both; ``meta.seal_floor_ms`` is the midnight before which readings may be
  sealed. Every read here merges both, so callers never see the difference.
* ``events``, ``device_state``, ``dead_letters``, ``rollup_1m`` (only the hours of a device with
  more than 60 readings: the others' minutes are computed when read), ``rollup_1h`` and
  ``rollup_1d`` (sealed days keep only their daily row: their minutes and hours are computed from
  the chunk when read); bookkeeping in
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

import os
import sqlite3
from pathlib import Path
from types import TracebackType
from typing import Self

from ingest.store.export import _Export
from ingest.store.queries import _Queries, reason_key
from ingest.store.records import (
    DeadLetter,
    DeviceRecord,
    Rollup,
    SealResult,
    StoreError,
    StoreStats,
    WriteResult,
)
from ingest.store.schema import (
    APPLICATION_ID,
    DAY_MS,
    DB_FILE,
    HOUR_MS,
    MINUTE_MS,
    SCHEMA_VERSION,
    _kind_layout,
    _Layout,
)
from ingest.store.seal import _Seal
from ingest.store.writer import _Writer
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
    "SealResult",
    "Store",
    "StoreError",
    "StoreStats",
    "WriteResult",
    "reason_key",
]


# One part per module: sealing, rollups and retention (which write through the writer's
# transactions), writing, export (which filters as the reads do), reading, the sealed chunks'
# reads; all on schema._Schema, which holds the steps that open the file.
class Store(_Seal, _Writer, _Export, _Queries):
    """Readings, events, device state, dead letters and rollups in one SQLite file.

    Args:
        path: Folder of the store; created if missing. The database is ``path/boltwatch.sqlite3``.
        durable: ``synchronous=FULL`` (an acknowledged write survives power loss) when true;
            ``synchronous=NORMAL`` (faster, may lose the last commits on power loss) when false.
        retention_days: Raw readings older than this many days are deleted by
            :meth:`enforce_retention`; rollups, events and dead letters are kept.
        tail_days: Readings of the UTC days older than this many days are sealed into
            compressed chunks by :meth:`seal` (the newer ones stay rows of the tail table).

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
        tail_days: int = 1,
    ) -> None:
        if retention_days < 1:
            raise ValueError(f"retention_days must be at least 1, got {retention_days}")
        if tail_days < 1:
            raise ValueError(f"tail_days must be at least 1, got {tail_days}")
        self.tail_days = tail_days
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
