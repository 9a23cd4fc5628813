"""Rollups and retention: computing the 1-minute, 1-hour and 1-day statistics of the touched
buckets, and deleting raw readings past the retention horizon (reading rollups back is
:mod:`ingest.store.rollup_reads`).

1-minute rollups are stored only for the hours of a device that hold more than
:data:`FAST_PER_HOUR` readings (sampling faster than a minute): a bolt reporting every 5 minutes
would get one rollup row per field for each reading, bigger than the reading itself (272 of the
381 bytes a reading took). The 1-minute and 1-hour rollups of sealed days are computed from the
sealed readings when read; their day's ``rollup_1d`` row stays. Retention keeps rollups: the
hours of a sealed day are written back to ``rollup_1h`` before its readings go.
"""

from __future__ import annotations

import sqlite3
from typing import Final

import numpy as np

from ingest.store.chunks import ChunkRows, encode_chunk
from ingest.store.records import Rollup
from ingest.store.rollup_reads import FAST_PER_HOUR, _RollupReads, buckets
from ingest.store.schema import DAY_MS, HOUR_MS, MINUTE_MS, _Layout
from ingest.store.sealed import as_columns
from ingest.store.writer import _Writer

_RETENTION_CHUNKS: Final = 200
"""Chunks trimmed per kind and call of enforce_retention (each has its hours archived and the
rest of its month encoded again: a few milliseconds): under a second of the store's thread; the
rest goes at the next upkeep (a day of 10,000 bolts in under an hour)."""
_INSERT_ROLLUP: Final = (
    "INSERT OR REPLACE INTO {table} (kind, device_id, field, bucket_ms, n, min, mean, max) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)


def _rows(rollups: list[Rollup]) -> list[tuple[str, str, str, int, int, float, float, float]]:
    return [
        (r.kind.value, r.device_id, r.field, r.bucket_ms, r.n, r.min, r.mean, r.max)
        for r in rollups
    ]


def _slice(rows: ChunkRows, lo: int, hi: int) -> ChunkRows:
    """Rows ``lo`` to ``hi`` of a chunk's."""
    if lo == 0 and hi >= len(rows):
        return rows
    part = slice(lo, hi)
    return ChunkRows(
        ts_ms=rows.ts_ms[part],
        seq=rows.seq[part],
        site=rows.site[part],
        received_ms=rows.received_ms[part],
        late=rows.late[part],
        values={k: v[part] for k, v in rows.values.items()},
        arrays={k: v[part] for k, v in rows.arrays.items()},
    )


def put_chunk(conn: sqlite3.Connection, layout: _Layout, device: str, rows: ChunkRows) -> None:
    """Store rows of a device as one chunk, keyed by its first reading's time."""
    conn.execute(
        f'INSERT INTO "{layout.chunks}" '  # noqa: S608 - _IDENT
        "(device_id, start_ms, n, first_ms, last_ms, data) VALUES (?, ?, ?, ?, ?, ?)",
        (
            device,
            int(rows.ts_ms[0]),
            len(rows),
            int(rows.ts_ms[0]),
            int(rows.ts_ms[-1]),
            encode_chunk(rows),
        ),
    )


class _Rollups(_Writer, _RollupReads):
    """Rollups and retention of :class:`~ingest.store.Store` (they write through
    :meth:`_Writer._transaction`)."""

    # -- rollups and retention --------------------------------------------------------------------

    def rollup(self, *, now_ms: int) -> int:
        """(Re)compute 1-minute, 1-hour and 1-day min/mean/max of every numeric field, for the
        buckets touched by writes since the last rollup.

        Writes record the (device, hour) pairs they touch; this recomputes those hours from the
        raw readings (so late and backfilled readings are included exactly) and records ``now_ms``
        as the watermark (:attr:`StoreStats.rollup_watermark_ms`).

        Args:
            now_ms: The current time (epoch ms UTC).

        Returns:
            Number of rollup rows written (one per field, device and bucket, every resolution).
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
                    floor = self._seal_floor(conn)
                    live = [(d, h) for d, h in dirty if floor is None or h >= floor]
                    # Hours of sealed days (a late reading came in): computed when read.
                    self._forget_hours(
                        conn,
                        layout,
                        [(d, h, h + HOUR_MS) for d, h in dirty if floor is not None and h < floor],
                    )
                    for width, table in ((MINUTE_MS, "rollup_1m"), (HOUR_MS, "rollup_1h")):
                        written += self._rollup_kind(conn, layout, live, width, table)
                    for device, day in sorted({(d, h - h % DAY_MS) for d, h in dirty}):
                        sealed = floor is not None and day < floor
                        written += self._rollup_day(conn, layout, device, day, sealed=sealed)
                conn.execute("DELETE FROM rollup_dirty WHERE kind = ?", (kind,))
            conn.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES ('rollup_watermark_ms', ?)",
                (now_ms,),
            )
            return written

        return self._transaction(work, "rollup")

    @staticmethod
    def _forget_hours(
        conn: sqlite3.Connection, layout: _Layout, spans: list[tuple[str, int, int]]
    ) -> None:
        """Drop the stored 1-minute and 1-hour rollups of the whole hours of each (device,
        start, end): what is sealed there is rolled up when read. An hour that ``end`` cuts
        keeps its rows (stored rows stand for their whole hour; they were computed from all of
        it)."""
        spans = [(d, a, b - b % HOUR_MS) for d, a, b in spans]
        for table, width in (("rollup_1m", MINUTE_MS), ("rollup_1h", HOUR_MS)):
            conn.executemany(
                f"DELETE FROM {table} WHERE kind = ? AND device_id = ? "  # noqa: S608 - our table
                f"AND bucket_ms >= ? AND bucket_ms + {width} <= ?",
                [(layout.kind.value, d, a, b) for d, a, b in spans],
            )

    def _rollup_day(
        self, conn: sqlite3.Connection, layout: _Layout, device: str, day: int, *, sealed: bool
    ) -> int:
        """(Re)compute one device's day: from its hourly rows, or from its readings when the day
        may be sealed (its hours have no rows there)."""
        kind = layout.kind.value
        if sealed:
            cols = self.readings(
                layout.kind, device_id=device, since_ms=day, until_ms=day + DAY_MS, waveforms=False
            )
            rows = _rows(buckets(cols, layout.floats, set(), DAY_MS))
        else:
            got = conn.execute(
                "SELECT field, sum(n), min(min), sum(mean * n) / sum(n), max(max) FROM rollup_1h "
                "WHERE kind = ? AND device_id = ? AND bucket_ms >= ? AND bucket_ms < ? "
                "GROUP BY field",
                (kind, device, day, day + DAY_MS),
            ).fetchall()
            rows = [(kind, device, f, day, n, lo, mean, hi) for f, n, lo, mean, hi in got]
        conn.execute(
            "DELETE FROM rollup_1d WHERE kind = ? AND device_id = ? AND bucket_ms = ?",
            (kind, device, day),
        )
        conn.executemany(_INSERT_ROLLUP.format(table="rollup_1d"), rows)
        return len(rows)

    @staticmethod
    def _insert_rollups(conn: sqlite3.Connection, table: str, rollups: list[Rollup]) -> None:
        conn.executemany(_INSERT_ROLLUP.format(table=table), _rows(rollups))

    def _rollup_kind(
        self,
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
            f"SELECT ts_ms - ts_ms % {width_ms} AS bucket, count(*), {aggregates} "  # noqa: S608 - _IDENT
            f'FROM "{layout.table}" WHERE device_id = ? AND ts_ms >= ? AND ts_ms < ? '
            "GROUP BY bucket"
        )
        kind = layout.kind.value
        out: list[tuple[str, str, str, int, int, float, float, float]] = []
        slow: list[tuple[str, str, int, int]] = []
        for device, hour_ms in dirty:
            rows = conn.execute(sql, (device, hour_ms, hour_ms + HOUR_MS)).fetchall()
            if width_ms == MINUTE_MS and sum(r[1] for r in rows) <= FAST_PER_HOUR:
                slow.append((kind, device, hour_ms, hour_ms + HOUR_MS))
                continue
            for row in rows:
                bucket = row[0]
                for j, f in enumerate(layout.floats):
                    n, lo, mean, hi = row[2 + 4 * j : 6 + 4 * j]
                    if n:
                        out.append((kind, device, f, bucket, n, lo, mean, hi))
        # A slow hour's minutes are computed when read (rows of an older store go).
        conn.executemany(
            f"DELETE FROM {table} WHERE kind = ? AND device_id = ? "  # noqa: S608 - our table
            "AND bucket_ms >= ? AND bucket_ms < ?",
            slow,
        )
        conn.executemany(_INSERT_ROLLUP.format(table=table), out)
        return len(out)

    def enforce_retention(self, *, now_ms: int) -> int:
        """Delete raw readings older than ``retention_days``; rollups, events and dead letters stay.

        Pending rollups are computed first, so no touched bucket loses its raw data unrolled.
        Deletion goes device by device along the primary key, so it never scans the whole table.
        Sealed readings go a whole UTC day at a time, once all of the day is past the horizon,
        from at most :data:`_RETENTION_CHUNKS` chunks per kind and call (the rest at the next
        call); their hours are written to ``rollup_1h`` first, as the rows of an unsealed day
        would have stayed.
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
                deleted += self._drop_sealed_days(conn, layout, cutoff - cutoff % DAY_MS)
            return deleted

        return self._transaction(work, "enforce_retention")

    def _drop_sealed_days(self, conn: sqlite3.Connection, layout: _Layout, keep_from: int) -> int:
        """Delete the sealed readings before ``keep_from``, a UTC midnight (at most
        :data:`_RETENTION_CHUNKS` chunks), their hours archived in ``rollup_1h`` first (a stored
        hour, complete, is kept as it is); a chunk that also holds later days keeps those.
        Returns the readings deleted."""
        chunks = conn.execute(
            f'SELECT device_id, start_ms, data FROM "{layout.chunks}" WHERE start_ms < ? '  # noqa: S608 - _IDENT
            "ORDER BY start_ms LIMIT ?",
            (keep_from, _RETENTION_CHUNKS),
        ).fetchall()
        dropped = 0
        archive = _INSERT_ROLLUP.format(table="rollup_1h").replace("OR REPLACE", "OR IGNORE")
        for device, start, data in chunks:
            rows = self._decode(layout, bytes(data), device, start, layout.arrays)
            gone = rows.ts_ms < keep_from
            cols = as_columns(layout, device, rows, np.flatnonzero(gone))
            conn.executemany(archive, _rows(buckets(cols, layout.floats, set(), HOUR_MS)))
            conn.execute(
                f'DELETE FROM "{layout.chunks}" WHERE device_id = ? AND start_ms = ?',  # noqa: S608 - _IDENT
                (device, start),
            )
            if not gone.all():
                put_chunk(conn, layout, device, _slice(rows, int(gone.sum()), len(rows)))
            dropped += int(gone.sum())
        if dropped:
            conn.execute(
                "UPDATE reading_counts SET n = n - ? WHERE kind = ?", (dropped, layout.kind.value)
            )
        return dropped
