"""Writing: the group commit of a decoded batch (duplicates ignored by the primary keys), dead
letters, and the transaction every write runs in, which keeps the WAL bounded after each commit.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import time
from collections.abc import Callable, Iterable, Sequence
from itertools import chain, islice, repeat
from typing import Any, Final, TypeVar

import msgspec
import numpy as np

from ingest.store.records import DeadLetter, StoreError, WriteResult
from ingest.store.schema import _BUSY_TIMEOUT_MS, HOUR_MS, _Layout
from ingest.store.sealed import _Sealed
from sensors.codec import DecodedBatch, DeviceEvent, ReadingColumns
from sensors.schema import DeviceKind

_log = logging.getLogger("boltwatch.ingest")
_ROWS_PER_INSERT: Final = (64, 8, 1)  # multi-row INSERT sizes, largest first; 1 must be last
_WAL_RESTART_BYTES: Final = 256 * 1024 * 1024
"""A WAL this large after a commit is checkpointed with ``TRUNCATE``. The automatic (passive)
checkpoint never resets the WAL while readers keep overlapping (the chaos overload's progress
polls did): measured, a 37.8 GB WAL after 16 million readings, and ``SQLITE_FULL`` errors."""
_WAL_WAIT_MS: Final = 200  # how long that checkpoint waits for readers of older snapshots
_WAL_RETRY_S: Final = 5.0  # and how soon it is tried again when they were still there
_T = TypeVar("_T")


def _with_nulls(
    values: np.ndarray[Any, np.dtype[np.float64]], missing: np.ndarray[Any, np.dtype[np.bool_]]
) -> list[float | None]:
    """A float column as Python values with ``None`` where ``missing`` (NaN: not reported)."""
    boxed = values.astype(object)
    boxed[missing] = None
    return boxed.tolist()  # type: ignore[no-any-return]


def _blobs(arrays: Sequence[np.ndarray[Any, np.dtype[np.float64]] | None]) -> list[bytes | None]:
    return [None if a is None else np.asarray(a, "<f4").tobytes() for a in arrays]


class _Writer(_Sealed):
    """Transactions, the WAL bound, and the write path of :class:`~ingest.store.Store`."""

    _wal_warned: bool
    _wal_next_try: float

    # -- transactions -----------------------------------------------------------------------------

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
        cols = self._drop_sealed(conn, layout, cols)
        if len(cols) == 0:
            return 0
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
