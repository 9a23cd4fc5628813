"""Rollups and retention: 1-minute and 1-hour statistics of the touched buckets, reading them
back, and deleting raw readings past the retention horizon.

1-minute rollups are stored only for the hours of a device that hold more than
:data:`FAST_PER_HOUR` readings (sampling faster than a minute): a bolt reporting every 5 minutes
would get one rollup row per field for each reading, bigger than the reading itself (272 of the
381 bytes a reading took). For the other hours :meth:`~_Rollups.rollups` computes the 1-minute
buckets from the raw readings when asked, so every reader sees the same rollups either way.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from typing import Any, Final, Literal

import numpy as np

from ingest.store.queries import _Queries
from ingest.store.records import Rollup
from ingest.store.schema import DAY_MS, HOUR_MS, MINUTE_MS, _Layout
from ingest.store.writer import _Writer
from sensors.codec import ReadingColumns
from sensors.schema import DeviceKind

FAST_PER_HOUR: Final = 60
"""An hour of a device with more readings than this gets stored 1-minute rollups."""
_MAX_GAPS: Final = 64
"""Past this many separate spans without stored 1-minute rollups, one filtered read instead."""


class _Rollups(_Writer, _Queries):
    """Rollups and retention of :class:`~ingest.store.Store` (they write through
    :meth:`_Writer._transaction`)."""

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
                    floor = self._seal_floor(conn)
                    for width, table in ((MINUTE_MS, "rollup_1m"), (HOUR_MS, "rollup_1h")):
                        written += self._rollup_kind(conn, layout, dirty, width, table, floor)
                conn.execute("DELETE FROM rollup_dirty WHERE kind = ?", (kind,))
            conn.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES ('rollup_watermark_ms', ?)",
                (now_ms,),
            )
            return written

        return self._transaction(work, "rollup")

    def _rollup_kind(  # noqa: PLR0917 - one call site, all positional
        self,
        conn: sqlite3.Connection,
        layout: _Layout,
        dirty: list[tuple[str, int]],
        width_ms: int,
        table: str,
        floor: int | None,
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
            if floor is not None and hour_ms < floor:
                # An hour that may be sealed (a late reading came in): chunks and tail together.
                cols = self.readings(
                    layout.kind,
                    device_id=device,
                    since_ms=hour_ms,
                    until_ms=hour_ms + HOUR_MS,
                    waveforms=False,
                )
                rows = _aggregate(cols, layout.floats, width_ms)
            else:
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
        stored = [Rollup(layout.kind, *row) for row in rows]
        if resolution == "1h" or not layout.floats:
            return stored
        fields = layout.floats if field is None else tuple(f for f in layout.floats if f == field)
        computed = self._minutes_from_raw(
            layout,
            fields,
            device_id=device_id,
            since_ms=since_ms,
            until_ms=until_ms,
            stored=stored,
        )
        if not computed:
            return stored
        return sorted([*stored, *computed], key=lambda r: (r.device_id, r.field, r.bucket_ms))

    def rollup_means(
        self,
        kind: DeviceKind,
        device_id: str,
        *,
        resolution: Literal["1m", "1h"] = "1h",
        since_ms: int | None = None,
        until_ms: int | None = None,
    ) -> tuple[
        np.ndarray[Any, np.dtype[np.int64]], dict[str, np.ndarray[Any, np.dtype[np.float64]]]
    ]:
        """One device's mean of every field per bucket, as columns for a chart: the bucket starts
        (sorted) and, per field, the means aligned with them (NaN where the field has none).
        What :meth:`rollups` gives, without an object per value: a year of a bolt's hours reads
        in half the time."""
        layout = self._layout(kind)
        per_field: dict[str, tuple[np.ndarray[Any, np.dtype[np.int64]], np.ndarray[Any, Any]]] = {}
        if resolution == "1m":
            rows = self.rollups(
                kind, resolution="1m", device_id=device_id, since_ms=since_ms, until_ms=until_ms
            )
            for f in layout.floats:
                mine = [(r.bucket_ms, r.mean) for r in rows if r.field == f]
                if mine:
                    b, m = zip(*mine, strict=True)
                    per_field[f] = (np.array(b, np.int64), np.array(m, np.float64))
        else:
            extra, params = "", []
            if since_ms is not None:
                extra += " AND bucket_ms >= ?"
                params.append(since_ms)
            if until_ms is not None:
                extra += " AND bucket_ms < ?"
                params.append(until_ms)
            conn = self._conn()
            for f in layout.floats:
                # Along the primary key (kind, device, field, bucket): one range each, in order.
                got = conn.execute(
                    "SELECT bucket_ms, mean FROM rollup_1h WHERE kind = ? AND device_id = ? "  # noqa: S608 - fixed text
                    f"AND field = ?{extra} ORDER BY bucket_ms",
                    [layout.kind.value, device_id, f, *params],
                ).fetchall()
                if got:
                    arr = np.array(got, dtype=np.float64)
                    per_field[f] = (arr[:, 0].astype(np.int64), arr[:, 1])
        if not per_field:
            return np.zeros(0, np.int64), {}
        starts = np.unique(np.concatenate([b for b, _ in per_field.values()]))
        out: dict[str, np.ndarray[Any, np.dtype[np.float64]]] = {}
        for f, (field_starts, field_means) in per_field.items():
            col = np.full(starts.size, np.nan)
            col[np.searchsorted(starts, field_starts)] = field_means
            out[f] = col
        return starts, out

    def _minutes_from_raw(
        self,
        layout: _Layout,
        fields: tuple[str, ...],
        *,
        device_id: str | None,
        since_ms: int | None,
        until_ms: int | None,
        stored: list[Rollup],
    ) -> list[Rollup]:
        """1-minute rollups of the hours without stored ones, from the raw readings."""
        if not fields:
            return []
        covered = {(r.device_id, r.bucket_ms - r.bucket_ms % HOUR_MS) for r in stored}
        if device_id is None or not covered:
            cols = self.readings(
                layout.kind,
                device_id=device_id,
                since_ms=since_ms,
                until_ms=until_ms,
                waveforms=False,
            )
            return _minute_buckets(cols, fields, covered)
        # One device with stored rollups for some hours: read the raw readings of the others.
        spans = [
            span
            for span in self._conn().execute(
                f'SELECT min(ts_ms), max(ts_ms) FROM "{layout.table}" WHERE device_id = ? '  # noqa: S608 - _IDENT
                f'UNION ALL SELECT min(first_ms), max(last_ms) FROM "{layout.chunks}" '
                "WHERE device_id = ?",
                (device_id, device_id),
            )
            if span[0] is not None
        ]
        if not spans:
            return []
        first, last = min(a for a, _ in spans), max(b for _, b in spans)
        lo = max(since_ms, first) if since_ms is not None else first
        hi = min(until_ms, last + 1) if until_ms is not None else last + 1
        gaps = _gaps(sorted(h for _, h in covered), lo, hi)
        if len(gaps) > _MAX_GAPS:
            gaps = [(lo, hi)]  # one read; the covered hours are left out as they are bucketed
        out: list[Rollup] = []
        for start, end in gaps:
            cols = self.readings(
                layout.kind, device_id=device_id, since_ms=start, until_ms=end, waveforms=False
            )
            out.extend(_minute_buckets(cols, fields, covered))
        return out

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
                # Sealed readings go a whole day at a time, once all of the day is past.
                horizon = cutoff - DAY_MS
                (sealed,) = conn.execute(
                    f'SELECT coalesce(sum(n), 0) FROM "{layout.chunks}" WHERE day_ms <= ?',  # noqa: S608 - _IDENT
                    (horizon,),
                ).fetchone()
                if sealed:
                    conn.execute(
                        f'DELETE FROM "{layout.chunks}" WHERE day_ms <= ?',  # noqa: S608 - _IDENT
                        (horizon,),
                    )
                    conn.execute(
                        "UPDATE reading_counts SET n = n - ? WHERE kind = ?",
                        (sealed, layout.kind.value),
                    )
                    deleted += sealed
            return deleted

        return self._transaction(work, "enforce_retention")


def _gaps(hours: list[int], lo: int, hi: int) -> list[tuple[int, int]]:
    """The spans of ``[lo, hi)`` outside the given hours (sorted hour starts)."""
    out: list[tuple[int, int]] = []
    at = lo
    for h in hours:
        if h > at:
            out.append((at, min(h, hi)))
        at = max(at, h + HOUR_MS)
        if at >= hi:
            break
    if at < hi:
        out.append((at, hi))
    return [(a, b) for a, b in out if a < b]


def _minute_buckets(
    cols: ReadingColumns, fields: Iterable[str], covered: set[tuple[str, int]]
) -> list[Rollup]:
    """n / min / mean / max per device, field and minute of the raw readings given, leaving out
    the hours that have stored rollups."""
    kind, ts_ms, values = cols.kind, cols.ts_ms, cols.values
    if ts_ms.size == 0:
        return []
    devices, dev_index = np.unique(cols.device_id.astype(str), return_inverse=True)
    bucket = ts_ms - ts_ms % MINUTE_MS
    keep = np.ones(ts_ms.size, bool)
    if covered:
        hour = bucket - bucket % HOUR_MS
        keep = np.array(
            [
                (devices[d], h) not in covered
                for d, h in zip(dev_index.tolist(), hour.tolist(), strict=True)
            ]
        )
    out: list[Rollup] = []
    for f in fields:
        v = values.get(f)
        if v is None:
            continue
        ok = keep & np.isfinite(v)
        if not ok.any():
            continue
        key = np.stack([dev_index[ok], bucket[ok]], axis=1)
        groups, inverse, counts = np.unique(key, axis=0, return_inverse=True, return_counts=True)
        inverse = inverse.reshape(-1)
        x = v[ok]
        sums = np.bincount(inverse, weights=x, minlength=len(groups))
        lows = np.full(len(groups), np.inf)
        highs = np.full(len(groups), -np.inf)
        np.minimum.at(lows, inverse, x)
        np.maximum.at(highs, inverse, x)
        for g, (d, b) in enumerate(groups.tolist()):
            out.append(
                Rollup(
                    kind,
                    str(devices[d]),
                    f,
                    int(b),
                    int(counts[g]),
                    float(lows[g]),
                    float(sums[g] / counts[g]),
                    float(highs[g]),
                )
            )
    return out


def _aggregate(
    cols: ReadingColumns, fields: tuple[str, ...], width_ms: int
) -> list[tuple[Any, ...]]:
    """What the rollup's SQL gives for one device's readings: per bucket of ``width_ms``,
    ``(bucket, count, then count, min, mean, max of each field)`` (None where a field has no
    value), in bucket order."""
    if len(cols) == 0:
        return []
    bucket = cols.ts_ms - cols.ts_ms % width_ms
    starts, inverse, counts = np.unique(bucket, return_inverse=True, return_counts=True)
    out: list[list[Any]] = [[int(b), int(c)] for b, c in zip(starts, counts, strict=True)]
    for f in fields:
        v = cols.values[f]
        ok = np.isfinite(v)
        n = np.bincount(inverse[ok], minlength=starts.size)
        sums = np.bincount(inverse[ok], weights=v[ok], minlength=starts.size)
        lows = np.full(starts.size, np.inf)
        highs = np.full(starts.size, -np.inf)
        np.minimum.at(lows, inverse[ok], v[ok])
        np.maximum.at(highs, inverse[ok], v[ok])
        for g, row in enumerate(out):
            if n[g]:
                row += [int(n[g]), float(lows[g]), float(sums[g] / n[g]), float(highs[g])]
            else:
                row += [0, None, None, None]
    return [tuple(r) for r in out]
