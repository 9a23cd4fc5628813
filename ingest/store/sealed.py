"""Reading the sealed chunks: what every read and the write path's duplicate check share.

Readings older than the *seal floor* (``meta.seal_floor_ms``, a UTC midnight) may be in
``chunks_{kind}`` (one row per device and day, :mod:`ingest.store.chunks`) rather than in the
tail table ``readings_{kind}``. A reading is in one or the other, never both: the write path
checks a reading older than the floor against its day's chunk before inserting it into the tail,
and :meth:`~ingest.store.Store.seal` moves rows and writes their chunk in one transaction.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from typing import Any

import numpy as np
import numpy.typing as npt

from ingest.store.chunks import ChunkRows, decode_chunk
from ingest.store.columns import ColumnError
from ingest.store.records import StoreError
from ingest.store.schema import _Layout, _Schema
from sensors.codec import ReadingColumns


def conditions(*pairs: tuple[str, Any]) -> tuple[list[str], list[Any]]:
    """The SQL conditions (``"column op ?"``) whose value is not None, and their parameters."""
    kept = [(sql, value) for sql, value in pairs if value is not None]
    return [sql for sql, _ in kept], [value for _, value in kept]


class _Sealed(_Schema):
    """The chunk reads of :class:`~ingest.store.Store`."""

    @contextlib.contextmanager
    def _snapshot(self) -> Iterator[sqlite3.Connection]:
        """One read transaction around reads of the tail and the chunks: a seal committed by
        another process meanwhile cannot show a reading twice or not at all. Inside a
        transaction already (the writer's own), that one is the snapshot."""
        conn = self._conn()
        if conn.in_transaction:
            yield conn
            return
        conn.execute("BEGIN")
        try:
            yield conn
        finally:
            if conn.in_transaction:
                conn.execute("COMMIT")

    def _seal_floor(self, conn: sqlite3.Connection) -> int | None:
        """Readings before this time (epoch ms) may be sealed; None: nothing sealed yet."""
        row = conn.execute("SELECT value FROM meta WHERE key = 'seal_floor_ms'").fetchone()
        return None if row is None else int(row[0])

    def _decode(
        self, layout: _Layout, data: bytes, device_id: str, start_ms: int, arrays: tuple[str, ...]
    ) -> ChunkRows:
        """A stored chunk's readings (with the waveforms of ``arrays`` only); a corrupt chunk is
        a :class:`StoreError` naming it."""
        try:
            return decode_chunk(data, layout.floats, arrays)
        except ColumnError as exc:
            raise StoreError(
                self.file,
                f"the sealed chunk of {device_id} starting at {start_ms} is corrupt: {exc}",
            ) from exc

    def _chunks(
        self,
        conn: sqlite3.Connection,
        layout: _Layout,
        device_id: str | None,
        since_ms: int | None,
        until_ms: int | None,
    ) -> list[tuple[str, int, int, bytes]]:
        """``(device, start, last reading's time, data)`` of the chunks with readings in the
        range, by start."""
        where, params = conditions(
            ("device_id = ?", device_id), ("last_ms >= ?", since_ms), ("start_ms < ?", until_ms)
        )
        sql = f'SELECT device_id, start_ms, last_ms, data FROM "{layout.chunks}"'  # noqa: S608 - _IDENT
        if where:
            sql += " WHERE " + " AND ".join(where)
        return conn.execute(sql + " ORDER BY start_ms, device_id", params).fetchall()

    def _sealed_readings(
        self,
        layout: _Layout,
        *,
        device_id: str | None,
        site: str | None,
        since_ms: int | None,
        until_ms: int | None,
        late: bool | None,
        waveforms: bool,
    ) -> ReadingColumns | None:
        """The sealed readings that match, as columns (unordered across chunks); None: none."""
        conn = self._conn()
        parts: list[ReadingColumns] = []
        arrays = layout.arrays if waveforms else ()
        for dev, start, _, data in self._chunks(conn, layout, device_id, since_ms, until_ms):
            rows = self._decode(layout, bytes(data), dev, start, arrays)
            keep = np.ones(len(rows), bool)
            if since_ms is not None:
                keep &= rows.ts_ms >= since_ms
            if until_ms is not None:
                keep &= rows.ts_ms < until_ms
            if site is not None:
                keep &= rows.site == site
            if late is not None:
                keep &= rows.late == late
            if not keep.any():
                continue
            parts.append(as_columns(layout, dev, rows, np.flatnonzero(keep)))
        return ReadingColumns.concat(parts) if parts else None

    def _sealed_keys(
        self, conn: sqlite3.Connection, layout: _Layout, device_id: str, ts_ms: int
    ) -> tuple[int, int, set[tuple[int, int]]] | None:
        """The chunk whose span holds ``ts_ms``: its first and last times and the ``(ts_ms,
        seq)`` of its readings; None: no chunk holds that time."""
        row = conn.execute(
            f'SELECT start_ms, last_ms, data FROM "{layout.chunks}" WHERE device_id = ? '  # noqa: S608 - _IDENT
            "AND start_ms <= ? AND last_ms >= ? ORDER BY start_ms DESC LIMIT 1",
            (device_id, ts_ms, ts_ms),
        ).fetchone()
        if row is None:
            return None
        rows = self._decode(layout, bytes(row[2]), device_id, int(row[0]), ())
        return (
            int(row[0]),
            int(row[1]),
            set(zip(rows.ts_ms.tolist(), rows.seq.tolist(), strict=True)),
        )

    def _drop_sealed(
        self, conn: sqlite3.Connection, layout: _Layout, cols: ReadingColumns
    ) -> ReadingColumns:
        """The readings of ``cols`` that are not already sealed (a redelivery of a reading older
        than the seal floor is found in the chunk whose span holds it; each chunk is read once
        a batch)."""
        floor = self._seal_floor(conn)
        if floor is None:
            return cols
        old = np.flatnonzero(cols.ts_ms < floor)
        if old.size == 0:
            return cols
        keep = np.ones(len(cols), bool)
        seen: dict[str, list[tuple[int, int, set[tuple[int, int]]]]] = {}
        devices = cols.device_id[old].tolist()
        stamps = cols.ts_ms[old].tolist()
        seqs = cols.seq[old].tolist()
        for i, dev, ts, seq in zip(old.tolist(), devices, stamps, seqs, strict=True):
            spans = seen.setdefault(dev, [])
            keys = next((k for lo, hi, k in spans if lo <= ts <= hi), None)
            if keys is None:
                found = self._sealed_keys(conn, layout, dev, ts)
                if found is None:
                    continue  # no chunk spans that time: not sealed
                spans.append(found)
                keys = found[2]
            if (ts, seq) in keys:
                keep[i] = False
        if keep[old].any():
            # Readings of sealed days go to the tail: the next seal has work (see Store.seal).
            conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('seal_late', 1)")
        return cols if keep.all() else cols.select(keep)


def as_columns(
    layout: _Layout, device_id: str, rows: ChunkRows, idx: npt.NDArray[np.int64]
) -> ReadingColumns:
    """The rows ``idx`` of one device's chunk as reading columns (waveforms not decoded: None)."""
    return ReadingColumns(
        kind=layout.kind,
        site=rows.site[idx],
        device_id=np.full(idx.size, device_id, dtype=object),
        ts_ms=rows.ts_ms[idx],
        seq=rows.seq[idx],
        values={f: v[idx] for f, v in rows.values.items()},
        arrays={
            f: (
                [rows.arrays[f][i] for i in idx.tolist()] if f in rows.arrays else [None] * idx.size
            )
            for f in layout.arrays
        },
        message=np.zeros(idx.size, np.int64),
    )
