"""Reading: readings as columns, events, devices, dead letters and the counts of
:meth:`~ingest.store.Store.stats`."""

from __future__ import annotations

import math
import re
from typing import Any, Final

import msgspec
import numpy as np

from ingest.store.records import DeadLetter, DeviceRecord, StoreStats
from ingest.store.schema import _Layout
from ingest.store.sealed import _Sealed, conditions
from sensors.codec import ReadingColumns
from sensors.schema import DeviceKind

_INDEX: Final = re.compile(r"\[\d+\]")


def reason_key(field: str) -> str:
    """The dead-letter reason a field counts under, array indexes removed
    (``$.readings[3].ts`` → ``$.readings[].ts``): the keys of
    :attr:`StoreStats.dead_letters_by_reason`."""
    return _INDEX.sub("[]", field)


class _Queries(_Sealed):
    """The reads of :class:`~ingest.store.Store`."""

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
        waveforms: bool = True,
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
            waveforms: Read the waveform fields too (False: their lists are all None; a chart of
                a day of a mill's vibration RMS need not read a day of waveforms).

        Returns:
            Columns as the decoder makes them: NaN where a field was not reported; waveforms
            as float64 arrays of the stored float32 samples; ``message`` is the row number.
        """
        layout = self._layout(kind)
        with self._snapshot() as conn:
            tail = self._tail_readings(
                layout, device_id, site, since_ms, until_ms, late, limit, waveforms=waveforms
            )
            floor = self._seal_floor(conn)
            if floor is None or (since_ms is not None and since_ms >= floor):
                return tail
            sealed = self._sealed_readings(
                layout,
                device_id=device_id,
                site=site,
                since_ms=since_ms,
                until_ms=until_ms,
                late=late,
                waveforms=waveforms,
            )
        if sealed is None:
            return tail
        both = ReadingColumns.concat([sealed, tail])
        order = np.lexsort((both.seq, both.device_id.astype(str), both.ts_ms))
        if limit is not None:
            order = order[:limit]
        out = both.select(order)
        out.message[:] = np.arange(len(out), dtype=np.int64)
        return out

    def _tail_readings(  # noqa: PLR0917 - readings()'s filters, in its order
        self,
        layout: _Layout,
        device_id: str | None,
        site: str | None,
        since_ms: int | None,
        until_ms: int | None,
        late: bool | None,
        limit: int | None,
        *,
        waveforms: bool,
    ) -> ReadingColumns:
        """The readings of the tail table that match (see :meth:`readings`)."""
        where, params = self._filters(device_id, site, since_ms, until_ms)
        if late is not None:
            where.append("late = ?")
            params.append(int(late))
        select = layout.select
        if not waveforms and layout.arrays:
            nulls = ", ".join(["NULL"] * len(layout.arrays))
            select = ", ".join(f'"{c}"' for c in ("device_id", "ts_ms", "seq", "site"))
            select += ", " + ", ".join(f'"{c}"' for c in layout.floats) + ", " + nulls
        sql = f'SELECT {select} FROM "{layout.table}"'  # noqa: S608 - see _IDENT
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

    def latest_waveform(
        self, kind: DeviceKind, device_id: str, name: str
    ) -> tuple[int, np.ndarray[Any, np.dtype[np.float64]], dict[str, float]] | None:
        """The device's newest reading that carries the waveform ``name``: (epoch ms, samples,
        its numeric fields, NaN where not reported); None when it has none.

        Raises:
            KeyError: ``name`` is not a waveform field of ``kind``.
        """
        layout = self._layout(kind)
        if name not in layout.arrays:
            raise KeyError(name)
        floats = ", ".join(f'"{c}"' for c in layout.floats)
        row = (
            self._conn()
            .execute(
                f'SELECT ts_ms, "{name}", {floats} FROM "{layout.table}"'  # noqa: S608 - _IDENT
                f' WHERE device_id = ? AND "{name}" IS NOT NULL ORDER BY ts_ms DESC LIMIT 1',
                (device_id,),
            )
            .fetchone()
        )
        floor = self._seal_floor(self._conn())
        if floor is not None and (row is None or row[0] < floor):
            sealed = self._latest_sealed_waveform(layout, device_id, name)
            if sealed is not None and (row is None or sealed[0] > row[0]):
                return sealed
        if row is None:
            return None
        samples = np.frombuffer(row[1], dtype="<f4").astype(np.float64)
        values = {
            f: math.nan if v is None else float(v)
            for f, v in zip(layout.floats, row[2:], strict=True)
        }
        return int(row[0]), samples, values

    def _latest_sealed_waveform(
        self, layout: _Layout, device_id: str, name: str
    ) -> tuple[int, np.ndarray[Any, np.dtype[np.float64]], dict[str, float]] | None:
        """:meth:`latest_waveform` among the device's sealed chunks, newest day first."""
        for dev, start, _, data in reversed(
            self._chunks(self._conn(), layout, device_id, None, None)
        ):
            rows = self._decode(layout, bytes(data), dev, start, (name,))
            have = [(i, w) for i, w in enumerate(rows.arrays[name]) if w is not None]
            if have:
                i, wave = have[-1]
                values = {f: float(v[i]) for f, v in rows.values.items()}
                return int(rows.ts_ms[i]), wave, values
        return None

    @staticmethod
    def _filters(
        device_id: str | None, site: str | None, since_ms: int | None, until_ms: int | None
    ) -> tuple[list[str], list[Any]]:
        return conditions(
            ("device_id = ?", device_id),
            ("site = ?", site),
            ("ts_ms >= ?", since_ms),
            ("ts_ms < ?", until_ms),
        )

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

    def fields(self, kind: DeviceKind) -> tuple[str, ...]:
        """The numeric fields stored for a kind (the ``values`` keys of :meth:`readings`)."""
        return self._layout(kind).floats

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

    def last_seen(self) -> dict[str, tuple[str, str, int | None]]:
        """Every device known: id -> (kind, site, newest reading's epoch ms or None); the cheap
        part of :meth:`devices` (a fleet page of 10,000 bolts reads it every second)."""
        rows = self._conn().execute("SELECT device_id, kind, site, last_seen_ms FROM device_state")
        return {d: (k, s, seen) for d, k, s, seen in rows}

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
            key = reason_key(field)
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
