"""Sealing: moving each device's readings of a day older than the tail into one compressed chunk.

The tail table ``readings_{kind}`` keeps one row per reading: cheap to insert and to read by SQL,
but about 75 bytes a reading with its key and about 380 with its rollups (issue 17). Once a UTC
day is more than ``tail_days`` old, :meth:`_Seal.seal` rolls up what was touched, then moves
each device's rows of that day into its chunk of the month in ``chunks_{kind}``
(:mod:`ingest.store.chunks`; a chunk holds whole days, up to :data:`_CHUNK_READINGS`), in
transactions of a bounded size: ingest's commits wait at most one of them. A device's newest
reading always stays in the tail (the dashboards' "latest" tables join on it). Readings that
arrive later for a sealed day go to the tail and are merged into the day's chunk by the next seal.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from functools import partial
from typing import Final

import numpy as np

from ingest.store.chunks import ChunkRows
from ingest.store.columns import MAX_VALUES
from ingest.store.records import SealResult, StoreError
from ingest.store.rollup_reads import buckets
from ingest.store.rollups import _Rollups, _slice, put_chunk
from ingest.store.schema import DAY_MS, _Layout
from ingest.store.sealed import as_columns

_PER_TRANSACTION: Final = 10_000
"""Readings moved per transaction (a few tenths of a second): ingest's next commit waits for at
most one of them."""
_CHUNK_READINGS: Final = 50_000
"""A device's days join its chunk of the same month while it holds fewer readings than this (a
bolt's month at 5 minutes is 8,640; a year then reads from 12 chunks)."""
_CHUNK_MAX: Final = 1_000_000
"""A chunk never holds more readings (a day of a device sampled faster is cut in pieces)."""
_WAVE_SAMPLES: Final = MAX_VALUES // 2
"""Nor more samples of one waveform field (a mill's vibration records every minute are cut in
pieces of a few hours)."""


def _runs(
    items: list[tuple[_Layout, str, int, int, int]],
) -> Iterator[list[tuple[_Layout, str, int, int, int]]]:
    """Consecutive days of one device and month, up to :data:`_PER_TRANSACTION` readings
    together (each day alone when the kind has waveforms: a day of a mill's is megabytes)."""
    run: list[tuple[_Layout, str, int, int, int]] = []
    total = 0
    for item in items:
        layout, device, day, _, count = item
        joins = (
            run
            and not layout.arrays
            and (run[-1][0].kind, run[-1][1]) == (layout.kind, device)
            and _month(run[-1][2]) == _month(day)
            and total + count <= _PER_TRANSACTION
        )
        if run and not joins:
            yield run
            run, total = [], 0
        run.append(item)
        total += count
    if run:
        yield run


def _samples(rows: ChunkRows) -> int:
    """The most samples one waveform field of the rows holds."""
    return max(
        (sum(w.size for w in waves if w is not None) for waves in rows.arrays.values()), default=0
    )


def _pieces(rows: ChunkRows) -> list[tuple[int, int]]:
    """``[lo, hi)`` row ranges of at most :data:`_CHUNK_MAX` readings and :data:`_WAVE_SAMPLES`
    samples a waveform field, cut only between different timestamps (a chunk's span never
    shares a millisecond with the next one's)."""
    n = len(rows)
    weight = np.zeros(n, np.int64)
    for waves in rows.arrays.values():
        sizes = np.array([0 if w is None else w.size for w in waves], np.int64)
        weight = np.maximum(weight, sizes)
    out: list[tuple[int, int]] = []
    lo = 0
    while lo < n:
        total = np.cumsum(weight[lo:])
        fits = int(np.searchsorted(total, _WAVE_SAMPLES, side="right"))
        hi = min(n, lo + max(1, min(fits, _CHUNK_MAX)))
        while lo < hi < n and rows.ts_ms[hi] == rows.ts_ms[hi - 1]:
            hi += 1  # never cut inside one millisecond
        out.append((lo, hi))
        lo = hi
    return out


def _month(ms: int) -> tuple[int, int]:
    d = datetime.fromtimestamp(ms / 1000, UTC)
    return d.year, d.month


def _merge(parts: list[ChunkRows]) -> ChunkRows:
    """Chunk rows joined, in ``(ts_ms, seq)`` order."""
    if len(parts) == 1:
        return parts[0]
    ts = np.concatenate([p.ts_ms for p in parts])
    seq = np.concatenate([p.seq for p in parts])
    order = np.lexsort((seq, ts))
    waves = {k: [w for p in parts for w in p.arrays[k]] for k in parts[0].arrays}
    return ChunkRows(
        ts_ms=ts[order],
        seq=seq[order],
        site=np.concatenate([p.site for p in parts])[order],
        received_ms=np.concatenate([p.received_ms for p in parts])[order],
        late=np.concatenate([p.late for p in parts])[order],
        values={k: np.concatenate([p.values[k] for p in parts])[order] for k in parts[0].values},
        arrays={k: [w[i] for i in order.tolist()] for k, w in waves.items()},
    )


class _Seal(_Rollups):
    """Sealing of :class:`~ingest.store.Store` (it writes through the writer's transactions)."""

    tail_days: int

    def seal(
        self, *, now_ms: int, max_readings: int = 500_000, max_seconds: float = 1.0
    ) -> SealResult:
        """Move the readings of every UTC day older than ``tail_days`` into sealed chunks.

        Touched rollups are computed first (from the rows about to move). Works through at most
        ``max_readings`` readings and about ``max_seconds``, so that one call never holds the
        store for long (each device's day rewrites its month's chunk: a few milliseconds); the
        result says whether anything is left.

        Args:
            now_ms: The current time (epoch ms UTC).
            max_readings: Stop after moving about this many readings.
            max_seconds: Stop after the transaction that passes this much time.

        Raises:
            StoreError: SQLite failed; the transaction in progress was rolled back (the rows it
                would have moved stay in the tail, nothing is lost).
        """
        boundary = now_ms - self.tail_days * DAY_MS
        boundary -= boundary % DAY_MS
        self.rollup(now_ms=now_ms)

        def raise_floor(conn: sqlite3.Connection) -> int:
            floor = self._seal_floor(conn)
            if floor is None or boundary > floor:
                conn.execute(
                    "INSERT OR REPLACE INTO meta (key, value) VALUES ('seal_floor_ms', ?)",
                    (boundary,),
                )
                return boundary
            return floor

        floor = self._transaction(raise_floor, "seal")
        if self._sealed_to(floor):
            return SealResult(readings=0, chunks=0, done=True, floor_ms=floor)
        todo = self._days_to_seal(floor)
        moved = chunks = 0
        batch: list[tuple[_Layout, str, int, int, int]] = []
        pending = 0
        deadline = time.monotonic() + max_seconds
        for item, count in todo:
            if moved + pending >= max_readings or time.monotonic() > deadline:
                break
            batch.append((*item, count))
            pending += count
            if pending >= _PER_TRANSACTION:
                moved += self._transaction(partial(self._seal_days, items=batch), "seal")
                chunks += len(batch)
                batch, pending = [], 0
        if batch:
            moved += self._transaction(partial(self._seal_days, items=batch), "seal")
            chunks += len(batch)
        done = next(iter(self._days_to_seal(floor)), None) is None
        if done:

            def note(conn: sqlite3.Connection) -> None:
                conn.execute(
                    "INSERT OR REPLACE INTO meta (key, value) VALUES ('sealed_to_ms', ?)", (floor,)
                )
                conn.execute("DELETE FROM meta WHERE key = 'seal_late'")

            self._transaction(note, "seal")
        return SealResult(readings=moved, chunks=chunks, done=done, floor_ms=floor)

    def _sealed_to(self, floor: int) -> bool:
        """Everything before ``floor`` was sealed, and no reading came in for a sealed day since
        (the write path notes those): nothing to look for, device by device."""
        meta = dict(
            self._conn()
            .execute("SELECT key, value FROM meta WHERE key IN ('sealed_to_ms', 'seal_late')")
            .fetchall()
        )
        return meta.get("sealed_to_ms") == floor and "seal_late" not in meta

    def _days_to_seal(self, floor: int) -> Iterator[tuple[tuple[_Layout, str, int, int], int]]:
        """``((layout, device, day, until), rows)`` of each device's day with tail rows to seal:
        those before the floor, except the device's newest reading."""
        conn = self._conn()
        for layout in self._layouts.values():
            devices = conn.execute(
                "SELECT device_id, last_seen_ms FROM device_state WHERE kind = ?",
                (layout.kind.value,),
            ).fetchall()
            for device, last_seen in devices:
                limit = floor if last_seen is None else min(floor, int(last_seen))
                days = conn.execute(
                    f"SELECT ts_ms - ts_ms % {DAY_MS} AS day, count(*) "  # noqa: S608 - _IDENT
                    f'FROM "{layout.table}" WHERE device_id = ? AND ts_ms < ? '
                    "GROUP BY day ORDER BY day",
                    (device, limit),
                ).fetchall()
                for day, count in days:
                    yield (layout, device, int(day), min(int(day) + DAY_MS, limit)), int(count)

    def _seal_days(
        self, conn: sqlite3.Connection, items: list[tuple[_Layout, str, int, int, int]]
    ) -> int:
        """Seal each (device, day, until, rows) given, up to its ``until``; a device's days of
        one month go into its chunk at once, :data:`_PER_TRANSACTION` readings at most (days
        with waveforms one at a time). Returns the readings moved."""
        moved = 0
        for days in _runs(items):
            layout, device = days[0][0], days[0][1]
            lo, hi = days[0][2], days[-1][3]
            rows = self._tail_chunk(conn, layout, device, lo, hi)
            if rows is None:
                continue
            chunk = self._append(conn, layout, device, rows)
            conn.execute(
                f'DELETE FROM "{layout.table}" WHERE device_id = ? AND ts_ms >= ? AND ts_ms < ?',  # noqa: S608 - _IDENT
                (device, lo, hi),
            )
            if layout.floats:
                # The sealed hours' rollups are computed when read; the days' are kept, exact.
                self._forget_hours(conn, layout, [(device, lo, hi)])
                whole = [day for _, _, day, until, _ in days if until == day + DAY_MS]
                self._write_days(conn, layout, device, whole, chunk)
                for _, _, day, until, _ in days:
                    if until != day + DAY_MS:  # the device's newest reading is still a row
                        self._rollup_day(conn, layout, device, day, sealed=True)
            moved += len(rows)
        return moved

    def _write_days(
        self,
        conn: sqlite3.Connection,
        layout: _Layout,
        device: str,
        days: list[int],
        chunk: ChunkRows,
    ) -> None:
        """The daily rollups of whole days of a device, from its chunk's readings."""
        if not days:
            return
        day_of = chunk.ts_ms - chunk.ts_ms % DAY_MS
        idx = np.flatnonzero(np.isin(day_of, np.array(days, np.int64)))
        cols = as_columns(layout, device, chunk, idx)
        conn.executemany(
            "DELETE FROM rollup_1d WHERE kind = ? AND device_id = ? AND bucket_ms = ?",
            [(layout.kind.value, device, d) for d in days],
        )
        self._insert_rollups(conn, "rollup_1d", buckets(cols, layout.floats, set(), DAY_MS))

    def _append(
        self, conn: sqlite3.Connection, layout: _Layout, device: str, rows: ChunkRows
    ) -> ChunkRows:
        """Add rows of a device to its chunks; returns the rows of the chunk(s) written.

        The rows join every chunk whose span they meet (late readings, a backfill) and the chunk
        before them when it is of the same UTC month and stays under :data:`_CHUNK_READINGS`
        readings and :data:`_WAVE_SAMPLES` samples a waveform; else they start a chunk. So
        chunks never overlap: each spans from its start (its first reading) to its last reading,
        before the next one's start."""
        first, last = int(rows.ts_ms[0]), int(rows.ts_ms[-1])
        chunks = self._conn_chunks(conn, layout, device, first, last)
        parts = [self._decode(layout, data, device, start, layout.arrays) for start, data in chunks]
        prev = conn.execute(
            f'SELECT start_ms, n, data FROM "{layout.chunks}" '  # noqa: S608 - _IDENT
            "WHERE device_id = ? AND start_ms < ? ORDER BY start_ms DESC LIMIT 1",
            (device, first if not chunks else min(start for start, _ in chunks)),
        ).fetchone()
        if (
            prev is not None
            and _month(int(prev[0])) == _month(first)
            and int(prev[1]) + len(rows) + sum(len(p) for p in parts) <= _CHUNK_READINGS
        ):
            before = self._decode(layout, bytes(prev[2]), device, int(prev[0]), layout.arrays)
            if _samples(before) + _samples(rows) <= _WAVE_SAMPLES:
                parts.append(before)
                chunks.append((int(prev[0]), b""))
        merged = _merge([*parts, rows])
        conn.executemany(
            f'DELETE FROM "{layout.chunks}" WHERE device_id = ? AND start_ms = ?',  # noqa: S608 - _IDENT
            [(device, start) for start, _ in chunks],
        )
        for lo, hi in _pieces(merged):
            put_chunk(conn, layout, device, _slice(merged, lo, hi))
        return merged

    @staticmethod
    def _conn_chunks(
        conn: sqlite3.Connection, layout: _Layout, device: str, first: int, last: int
    ) -> list[tuple[int, bytes]]:
        """``(start, data)`` of the device's chunks whose span meets ``[first, last]``."""
        return [
            (int(start), bytes(data))
            for start, data in conn.execute(
                f'SELECT start_ms, data FROM "{layout.chunks}" '  # noqa: S608 - _IDENT
                "WHERE device_id = ? AND start_ms <= ? AND last_ms >= ?",
                (device, last, first),
            )
        ]

    @staticmethod
    def _tail_chunk(
        conn: sqlite3.Connection, layout: _Layout, device: str, since_ms: int, until_ms: int
    ) -> ChunkRows | None:
        """The tail rows of one device in ``[since_ms, until_ms)`` as chunk rows; None: none."""
        names = ("ts_ms", "seq", "site", "received_ms", "late", *layout.floats, *layout.arrays)
        select = ", ".join(f'"{c}"' for c in names)
        got = conn.execute(
            f'SELECT {select} FROM "{layout.table}" WHERE device_id = ? '  # noqa: S608 - _IDENT
            "AND ts_ms >= ? AND ts_ms < ? ORDER BY ts_ms, seq",
            (device, since_ms, until_ms),
        ).fetchall()
        if not got:
            return None
        cols = list(zip(*got, strict=True))
        nf = len(layout.floats)
        return ChunkRows(
            ts_ms=np.array(cols[0], np.int64),
            seq=np.array(cols[1], np.int64),
            site=np.array(cols[2], dtype=object),
            received_ms=np.array(cols[3], np.int64),
            late=np.array(cols[4], bool),
            values={f: np.array(cols[5 + j], np.float64) for j, f in enumerate(layout.floats)},
            arrays={
                f: [
                    None if b is None else np.frombuffer(b, "<f4").astype(np.float64)
                    for b in cols[5 + nf + j]
                ]
                for j, f in enumerate(layout.arrays)
            },
        )

    def compact(self) -> None:
        """Give the space freed by sealing back to the file system: checkpoint the WAL, truncate
        it, and ``VACUUM`` (rewrites the file: needs as much free space as the store takes).

        Raises:
            StoreError: SQLite failed (another process holds a read transaction, a full disk).
        """
        conn = self._conn()
        try:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
            conn.execute("VACUUM")
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        except sqlite3.Error as exc:
            raise StoreError(self.file, f"compacting failed: {exc}") from exc
