"""Reading rollups back: stored rows, and what is computed from the raw readings when asked.

Stored: ``rollup_1h`` and ``rollup_1d`` for every device, ``rollup_1m`` only for the hours of a
device sampled faster than a minute (:data:`FAST_PER_HOUR`). Computed when read, from the raw
readings (so every reader sees the same rollups either way):

* the 1-minute buckets of the other hours (a bolt reporting every 5 minutes would get a rollup row
  per reading, bigger than the reading itself);
* the 1-minute and 1-hour buckets of sealed days: sealing drops their rows (a day of a bolt's
  hourly rollups took three times the bytes of its compressed readings) and keeps the day's
  ``rollup_1d`` row, which is what long ranges draw.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Final, Literal

import numpy as np

from ingest.store.queries import _Queries
from ingest.store.records import Rollup
from ingest.store.schema import DAY_MS, HOUR_MS, MINUTE_MS, _Layout
from ingest.store.sealed import conditions
from sensors.codec import ReadingColumns
from sensors.schema import DeviceKind

Resolution = Literal["1m", "1h", "1d"]
WIDTH_MS: Final[dict[str, int]] = {"1m": MINUTE_MS, "1h": HOUR_MS, "1d": DAY_MS}
"""Bucket width of each resolution."""
FAST_PER_HOUR: Final = 60
"""An hour of a device with more readings than this gets stored 1-minute rollups."""
_MAX_GAPS: Final = 64
"""Past this many separate spans without stored 1-minute rollups, one filtered read instead."""


class _RollupReads(_Queries):
    """The rollup reads of :class:`~ingest.store.Store`."""

    def rollups(
        self,
        kind: DeviceKind,
        *,
        resolution: Resolution = "1m",
        device_id: str | None = None,
        field: str | None = None,
        since_ms: int | None = None,
        until_ms: int | None = None,
    ) -> list[Rollup]:
        """Rolled-up statistics, by device, field and bucket.

        Args:
            kind: Device kind.
            resolution: ``"1m"``, ``"1h"`` or ``"1d"`` (UTC days) buckets.
            device_id: Only this device.
            field: Only this field.
            since_ms: Only buckets starting at or after this time (epoch ms UTC).
            until_ms: Only buckets starting before this time (epoch ms UTC).
        """
        if resolution not in WIDTH_MS:
            raise ValueError(f"resolution must be '1m', '1h' or '1d', got {resolution!r}")
        layout = self._layout(kind)
        with self._snapshot():
            stored = self._stored_rollups(layout, resolution, device_id, field, since_ms, until_ms)
            if resolution == "1d" or not layout.floats:
                return stored
            fields = (
                layout.floats if field is None else tuple(f for f in layout.floats if f == field)
            )
            if resolution == "1m":
                computed = self._minutes_from_raw(
                    layout,
                    fields,
                    device_id=device_id,
                    since_ms=since_ms,
                    until_ms=until_ms,
                    stored=stored,
                )
            else:
                computed = self._sealed_buckets(
                    layout, fields, HOUR_MS, device_id, since_ms, until_ms, stored
                )
        if not computed:
            return stored
        return sorted([*stored, *computed], key=lambda r: (r.device_id, r.field, r.bucket_ms))

    def _stored_rollups(  # noqa: PLR0917 - rollups()'s filters, in its order
        self,
        layout: _Layout,
        resolution: Resolution,
        device_id: str | None,
        field: str | None,
        since_ms: int | None,
        until_ms: int | None,
    ) -> list[Rollup]:
        where, params = conditions(
            ("kind = ?", layout.kind.value),
            ("device_id = ?", device_id),
            ("field = ?", field),
            ("bucket_ms >= ?", since_ms),
            ("bucket_ms < ?", until_ms),
        )
        rows = self._conn().execute(
            f"SELECT device_id, field, bucket_ms, n, min, mean, max FROM rollup_{resolution} "  # noqa: S608 - checked by the caller
            f"WHERE {' AND '.join(where)} ORDER BY device_id, field, bucket_ms",
            params,
        )
        return [Rollup(layout.kind, *row) for row in rows]

    def _sealed_buckets(  # noqa: PLR0917 - one call site
        self,
        layout: _Layout,
        fields: tuple[str, ...],
        width_ms: int,
        device_id: str | None,
        since_ms: int | None,
        until_ms: int | None,
        stored: list[Rollup],
    ) -> list[Rollup]:
        """Buckets of sealed days without a stored row, from the sealed readings."""
        floor = self._seal_floor(self._conn())
        if floor is None or not fields or (since_ms is not None and since_ms >= floor):
            return []
        # Whole buckets, as the stored ones: those starting in [since, until).
        since = None if since_ms is None else -(-since_ms // width_ms) * width_ms
        until = floor if until_ms is None else min(-(-until_ms // width_ms) * width_ms, floor)
        cols = self.readings(
            layout.kind, device_id=device_id, since_ms=since, until_ms=until, waveforms=False
        )
        covered = {(r.device_id, r.bucket_ms - r.bucket_ms % HOUR_MS) for r in stored}
        return buckets(cols, fields, covered, width_ms)

    def rollup_means(
        self,
        kind: DeviceKind,
        device_id: str,
        *,
        resolution: Resolution = "1h",
        since_ms: int | None = None,
        until_ms: int | None = None,
    ) -> tuple[
        np.ndarray[Any, np.dtype[np.int64]], dict[str, np.ndarray[Any, np.dtype[np.float64]]]
    ]:
        """One device's mean of every field per bucket, as columns for a chart: the bucket starts
        (sorted) and, per field, the means aligned with them (NaN where the field has none).
        What :meth:`rollups` gives, without an object per value: a year of a bolt's days reads
        in a few milliseconds."""
        layout = self._layout(kind)
        per_field: dict[str, tuple[np.ndarray[Any, np.dtype[np.int64]], np.ndarray[Any, Any]]] = {}
        if resolution == "1m":
            rows = self.rollups(
                kind, resolution="1m", device_id=device_id, since_ms=since_ms, until_ms=until_ms
            )
        else:
            rows = []
            with self._snapshot() as conn:
                extra, params = "", []
                if since_ms is not None:
                    extra += " AND bucket_ms >= ?"
                    params.append(since_ms)
                if until_ms is not None:
                    extra += " AND bucket_ms < ?"
                    params.append(until_ms)
                for f in layout.floats:
                    # Along the primary key (kind, device, field, bucket): one range each, in order.
                    got = conn.execute(
                        f"SELECT bucket_ms, mean FROM rollup_{resolution} "  # noqa: S608 - Literal
                        f"WHERE kind = ? AND device_id = ? AND field = ?{extra} ORDER BY bucket_ms",
                        [layout.kind.value, device_id, f, *params],
                    ).fetchall()
                    if got:
                        arr = np.array(got, dtype=np.float64)
                        per_field[f] = (arr[:, 0].astype(np.int64), arr[:, 1])
                if resolution == "1h":
                    stored = [
                        Rollup(layout.kind, device_id, f, int(b), 1, 0.0, 0.0, 0.0)
                        for f, (starts, _) in per_field.items()
                        for b in starts.tolist()
                    ]
                    rows = self._sealed_buckets(
                        layout, layout.floats, HOUR_MS, device_id, since_ms, until_ms, stored
                    )
        for f in layout.floats:
            mine = [(r.bucket_ms, r.mean) for r in rows if r.field == f]
            if mine:
                b, m = zip(*mine, strict=True)
                extra_b, extra_m = np.array(b, np.int64), np.array(m, np.float64)
                if f in per_field:
                    extra_b = np.concatenate([per_field[f][0], extra_b])
                    extra_m = np.concatenate([per_field[f][1], extra_m])
                    order = np.argsort(extra_b, kind="stable")
                    extra_b, extra_m = extra_b[order], extra_m[order]
                per_field[f] = (extra_b, extra_m)
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
            return buckets(cols, fields, covered, MINUTE_MS)
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
            out.extend(buckets(cols, fields, covered, MINUTE_MS))
        return out


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


def buckets(
    cols: ReadingColumns, fields: Iterable[str], covered: set[tuple[str, int]], width_ms: int
) -> list[Rollup]:
    """n / min / mean / max per device, field and bucket of ``width_ms`` (a minute, an hour or
    a day) of the raw readings given, leaving out the (device, hour) pairs of ``covered``."""
    kind, ts_ms, values = cols.kind, cols.ts_ms, cols.values
    if ts_ms.size == 0:
        return []
    devices, dev_index = np.unique(cols.device_id.astype(str), return_inverse=True)
    dev_index = dev_index.reshape(-1).astype(np.int64)
    # One int64 key per (device, bucket): the device in the high bits, the bucket's number low.
    key = (dev_index << 34) | (ts_ms // width_ms)
    keep = np.ones(ts_ms.size, bool)
    if covered:
        slot = {d: i for i, d in enumerate(devices.tolist())}
        hours = np.array(
            [(slot[d] << 34) | (h // HOUR_MS) for d, h in covered if d in slot], np.int64
        )
        keep = ~np.isin((dev_index << 34) | (ts_ms // HOUR_MS), hours)
    names = devices.tolist()
    out: list[Rollup] = []
    for f in fields:
        v = values.get(f)
        if v is None:
            continue
        ok = keep & np.isfinite(v)
        if not ok.any():
            continue
        groups, inverse, counts = np.unique(key[ok], return_inverse=True, return_counts=True)
        inverse = inverse.reshape(-1)
        x = v[ok]
        sums = np.bincount(inverse, weights=x, minlength=groups.size)
        lows = np.full(groups.size, np.inf)
        highs = np.full(groups.size, -np.inf)
        np.minimum.at(lows, inverse, x)
        np.maximum.at(highs, inverse, x)
        out.extend(
            Rollup(kind, names[g >> 34], f, (g & ((1 << 34) - 1)) * width_ms, n, lo, s / n, hi)
            for g, n, lo, s, hi in zip(
                groups.tolist(),
                counts.tolist(),
                lows.tolist(),
                sums.tolist(),
                highs.tolist(),
                strict=True,
            )
        )
    return out
