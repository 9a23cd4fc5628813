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
from collections.abc import Iterator
from datetime import UTC, datetime
from functools import partial
from typing import Final

import numpy as np

from ingest.store.chunks import ChunkRows, encode_chunk
from ingest.store.records import SealResult, StoreError
from ingest.store.rollups import _Rollups, _slice
from ingest.store.schema import DAY_MS, _Layout

_PER_TRANSACTION: Final = 50_000
"""Readings moved per transaction: ingest's next commit waits for at most one of them."""
_CHUNK_READINGS: Final = 50_000
"""A device's days join its chunk of the same month while it holds fewer readings than this (a
bolt's month at 5 minutes is 8,640; a year then reads from 12 chunks)."""
_CHUNK_MAX: Final = 1_000_000
"""A chunk never holds more (a day of a device sampled faster is cut in pieces)."""


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

    def seal(self, *, now_ms: int, max_readings: int = 500_000) -> SealResult:
        """Move the readings of every UTC day older than ``tail_days`` into sealed chunks.

        Touched rollups are computed first (from the rows about to move). Works through at most
        ``max_readings`` readings, so that one call never holds the store for long; the result
        says whether anything is left.

        Args:
            now_ms: The current time (epoch ms UTC).
            max_readings: Stop after moving about this many readings.

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
        batch: list[tuple[_Layout, str, int, int]] = []
        pending = 0
        for item, count in todo:
            if moved + pending >= max_readings:
                break
            batch.append(item)
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
                    f'FROM "{layout.table}" WHERE device_id = ? AND ts_ms < ? GROUP BY day',
                    (device, limit),
                ).fetchall()
                for day, count in days:
                    yield (layout, device, int(day), min(int(day) + DAY_MS, limit)), int(count)

    def _seal_days(
        self, conn: sqlite3.Connection, items: list[tuple[_Layout, str, int, int]]
    ) -> int:
        """Seal each (device, day) given, up to its ``until``; returns the readings moved."""
        moved = 0
        for layout, device, day, until in items:
            rows = self._tail_chunk(conn, layout, device, day, until)
            if rows is None:
                continue
            self._append(conn, layout, device, rows)
            conn.execute(
                f'DELETE FROM "{layout.table}" WHERE device_id = ? AND ts_ms >= ? AND ts_ms < ?',  # noqa: S608 - _IDENT
                (device, day, until),
            )
            if layout.floats:
                # The sealed hours' rollups are computed when read; the day's is kept, exact.
                self._forget_hours(conn, layout, [(device, day, until)])
                self._rollup_day(conn, layout, device, day, sealed=True)
            moved += len(rows)
        return moved

    def _append(
        self, conn: sqlite3.Connection, layout: _Layout, device: str, rows: ChunkRows
    ) -> None:
        """Add one day's rows of a device to its chunks: into the chunk before them when that one
        is of the same UTC month and stays under :data:`_CHUNK_READINGS` (or already spans the
        day: late readings), else as a new chunk. Chunks never overlap: each spans from its
        start to its last reading, before the next one's start."""
        first = int(rows.ts_ms[0])
        prev = conn.execute(
            f'SELECT start_ms, n, last_ms, data FROM "{layout.chunks}" '  # noqa: S608 - _IDENT
            "WHERE device_id = ? AND start_ms <= ? ORDER BY start_ms DESC LIMIT 1",
            (device, first),
        ).fetchone()
        start = first
        if prev is not None:
            p_start, p_n, p_last = int(prev[0]), int(prev[1]), int(prev[2])
            inside = first <= p_last
            same_month = _month(p_start) == _month(first)
            if inside or (same_month and p_n + len(rows) <= _CHUNK_READINGS):
                old = self._decode(layout, bytes(prev[3]), device, p_start, layout.arrays)
                rows = _merge([old, rows])
                start = p_start
        for at in range(0, len(rows), _CHUNK_MAX):
            part = _slice(rows, at, at + _CHUNK_MAX)
            key = start if at == 0 else int(part.ts_ms[0])
            conn.execute(
                f'INSERT OR REPLACE INTO "{layout.chunks}" '  # noqa: S608 - _IDENT
                "(device_id, start_ms, n, first_ms, last_ms, data) VALUES (?, ?, ?, ?, ?, ?)",
                (
                    device,
                    key,
                    len(part),
                    int(part.ts_ms[0]),
                    int(part.ts_ms[-1]),
                    encode_chunk(part),
                ),
            )

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
