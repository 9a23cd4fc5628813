"""Rollups and retention: 1-minute and 1-hour statistics of the touched buckets, reading them
back, and deleting raw readings past the retention horizon."""

from __future__ import annotations

import sqlite3
from typing import Any, Literal

from ingest.store.records import Rollup
from ingest.store.schema import DAY_MS, HOUR_MS, MINUTE_MS, _Layout
from ingest.store.writer import _Writer
from sensors.schema import DeviceKind


class _Rollups(_Writer):
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
