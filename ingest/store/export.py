"""Export: stored readings as a ``boltwatch replay`` CSV file."""

from __future__ import annotations

import csv
import math
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from itertools import chain
from typing import Any, Final, TextIO

import msgspec
import numpy as np

from ingest.store.queries import _Queries
from ingest.store.schema import DAY_MS, _Layout
from sensors.codec import ReadingColumns
from sensors.schema import DeviceKind

_EXPORT_CHUNK: Final = 10_000
_CBOLT_EXPORT: Final = ("preload_kn", "temp_c", "torque_nm", "battery_v")
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)


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


class _Export(_Queries):
    """The CSV export of :class:`~ingest.store.Store` (it filters as the reads do)."""

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
        with self._snapshot() as conn:  # sealed days and tail as of one moment
            return self._export_csv(conn, out, self._layout(kind), device_id, since_ms, until_ms)

    def _export_csv(  # noqa: PLR0917 - export_csv's arguments, in its order
        self,
        conn: sqlite3.Connection,
        out: TextIO,
        layout: _Layout,
        device_id: str | None,
        since_ms: int | None,
        until_ms: int | None,
    ) -> int:
        is_bolt = layout.kind is DeviceKind.CBOLT
        fields = _CBOLT_EXPORT if is_bolt else layout.floats
        stored = [f for f in fields if f != "torque_nm"] if is_bolt else list(fields)
        floor = self._seal_floor(conn)
        sealed_until = None
        since_tail: int | None = since_ms
        if floor is not None and (since_ms is None or since_ms < floor):
            sealed_until = floor if until_ms is None else min(floor, until_ms)
            since_tail = floor if since_ms is None else max(floor, since_ms)
        where, params = self._filters(device_id, None, since_tail, until_ms)
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
        sealed = (
            []
            if sealed_until is None
            else self._sealed_days(layout, device_id, since_ms, sealed_until, stored)
        )
        cursor = conn.execute(sql, params)
        for chunk in chain(sealed, iter(lambda: cursor.fetchmany(_EXPORT_CHUNK), [])):
            lines: list[list[str]] = []
            for ts, dev, seq, *values in chunk:
                cells = [number(v) for v in values]
                if is_bolt:
                    cells.insert(2, number(torque.get((dev, ts, seq))))
                lines.append([_rfc3339(ts, stamps), dev, *cells])
            writer.writerows(lines)
            rows += len(lines)
        return rows

    def _sealed_days(
        self,
        layout: _Layout,
        device_id: str | None,
        since_ms: int | None,
        until_ms: int,
        fields: list[str],
    ) -> Iterator[list[tuple[Any, ...]]]:
        """Rows ``(ts_ms, device_id, seq, *fields)`` before the seal floor: the sealed chunks with
        the tail's late readings, in export order. One device's in one read (a year of a bolt is
        105,120 readings); a fleet's a day at a time, so that memory stays bounded (each day
        decodes the chunks that hold it)."""
        conn = self._conn()
        # The tail's rows before the floor (late readings, each device's newest): read once.
        late = self._tail_readings(
            layout, device_id, None, since_ms, until_ms, None, None, waveforms=False
        )
        if device_id is not None:
            windows: list[tuple[int | None, int]] = [(since_ms, until_ms)]
        else:
            days = {int(d) for d in np.unique(late.ts_ms - late.ts_ms % DAY_MS)}
            for _, start, last, _ in self._chunks(conn, layout, device_id, since_ms, until_ms):
                days.update(range(start - start % DAY_MS, last + 1, DAY_MS))
            windows = [
                (day if since_ms is None else max(day, since_ms), min(day + DAY_MS, until_ms))
                for day in sorted(days)
            ]
        for lo, hi in windows:
            sealed = self._sealed_readings(
                layout,
                device_id=device_id,
                site=None,
                since_ms=lo,
                until_ms=hi,
                late=None,
                waveforms=False,
            )
            mine = late.ts_ms < hi
            if lo is not None:
                mine &= late.ts_ms >= lo
            parts = [p for p in (sealed, late.select(mine)) if p is not None and len(p)]
            if not parts:
                continue
            cols = ReadingColumns.concat(parts)
            cols = cols.select(np.lexsort((cols.seq, cols.device_id.astype(str), cols.ts_ms)))
            if len(cols) == 0:
                continue
            values = [
                [None if math.isnan(v) else v for v in cols.values[f].tolist()] for f in fields
            ]
            yield list(
                zip(
                    cols.ts_ms.tolist(),
                    cols.device_id.tolist(),
                    cols.seq.tolist(),
                    *values,
                    strict=True,
                )
            )

    def _torque_rows(
        self, conn: sqlite3.Connection, layout: _Layout, device_id: str | None, until_ms: int | None
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
        torque: dict[tuple[str, int, int], float] = {}
        for dev, ts, text in conn.execute(sql, params).fetchall():
            value = msgspec.json.decode(text).get("torque_nm")
            if value is None:
                continue
            hit = self._first_at_or_after(conn, layout, dev, ts)
            if hit is not None:
                torque[dev, hit[0], hit[1]] = float(value)  # a later event on the same row wins
        return torque

    def _first_at_or_after(
        self, conn: sqlite3.Connection, layout: _Layout, device_id: str, ts_ms: int
    ) -> tuple[int, int] | None:
        """``(ts_ms, seq)`` of the device's first reading at or after ``ts_ms``, in the tail or
        in its sealed chunks."""
        hit = conn.execute(
            f'SELECT ts_ms, seq FROM "{layout.table}" WHERE device_id = ? AND ts_ms >= ? '  # noqa: S608 - _IDENT
            "ORDER BY ts_ms, seq LIMIT 1",
            (device_id, ts_ms),
        ).fetchone()
        found = None if hit is None else (int(hit[0]), int(hit[1]))
        floor = self._seal_floor(conn)
        if floor is None or ts_ms >= floor:
            return found
        for dev, start, _, data in self._chunks(conn, layout, device_id, ts_ms, floor):
            rows = self._decode(layout, bytes(data), dev, start, ())
            at = np.flatnonzero(rows.ts_ms >= ts_ms)
            if at.size:
                first = (int(rows.ts_ms[at[0]]), int(rows.seq[at[0]]))
                return first if found is None else min(first, found)
        return found
