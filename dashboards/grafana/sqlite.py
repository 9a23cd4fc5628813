"""Readings straight from the embedded store, through the ``frser-sqlite-datasource`` plugin.

The store (``ingest/store``) keeps one table per kind, ``readings_{kind}`` (primary key
``device_id, ts_ms, seq``; one ``REAL`` column per field), the newest reading of each device in
``device_state.last_seen_ms``, and 1-minute and 1-hour min/mean/max of every field in
``rollup_1m`` and ``rollup_1h`` (1-minute rollups only for the hours of a device sampled faster
than a minute). Queries here pick the devices first (through ``device_state``, so SQLite walks
the primary key device by device) and read, like the console does, raw readings for a range up to
a day, 1-minute means up to a week (the raw readings of the hours without them) and hourly means
beyond: a year of a bolt draws from 8,760 rows. Rollups are written by ingest's periodic rollup,
so the newest minutes of a long range appear once rolled up. Days older than the store's tail
(``store.tail_days``) are sealed into compressed chunks that SQL cannot read: every range draws
their daily means, one point at noon each (the console reads the sealed readings themselves).

Grafana replaces ``$__from`` and ``$__to`` by the range in epoch milliseconds, the store's unit;
times go back to Grafana in epoch seconds (``ts_ms / 1000.0 AS time``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from dashboards.grafana.queries import SQLiteBuilder
from dashboards.grafana.series import DEVICE_VAR, JOINT_VAR, SITE_VAR, Latest, Query, Scope, Series
from dashboards.grafana.sources import STORE
from ingest.store import DAY_MS, HOUR_MS
from sensors.schema import DeviceKind

__all__ = ["RAW_UP_TO_MS", "ROLLUP_1M_UP_TO_MS", "SQLiteSeries", "in_list"]

RAW_UP_TO_MS: Final = DAY_MS
"""Ranges up to this long draw raw readings."""
ROLLUP_1M_UP_TO_MS: Final = 7 * DAY_MS
"""Longer ranges up to this draw 1-minute means; beyond, hourly means."""


def in_list(variable: str, column: str) -> str:
    """``column`` is one of the ``|``-joined values of a template variable.

    SQLite has no regular expressions; ``${var:pipe}`` gives the selected values joined by
    ``|`` (every value for "All"), and ids of the telemetry contract never contain one.
    """
    return f"instr('|' || '${{{variable}:pipe}}' || '|', '|' || {column} || '|') > 0"


def _state_filter(scope: Scope, kind: DeviceKind, alias: str = "") -> str:
    """Devices of ``kind`` in ``scope``, as a condition on ``device_state`` (named ``alias``)."""
    col = f"{alias}." if alias else ""
    if scope is Scope.DEVICE:
        return f"{col}device_id = '${DEVICE_VAR}'"
    if scope is Scope.JOINT:
        return f"{col}kind = '{kind.value}' AND {in_list(JOINT_VAR, col + 'device_id')}"
    return f"{col}kind = '{kind.value}' AND {in_list(SITE_VAR, col + 'site')}"


def _devices(scope: Scope, kind: DeviceKind) -> str:
    """``device_id`` condition of a readings or rollup table."""
    if scope is Scope.DEVICE:
        return f"device_id = '${DEVICE_VAR}'"
    return f"device_id IN (SELECT device_id FROM device_state WHERE {_state_filter(scope, kind)})"


def _span(lo_ms: int | None, hi_ms: int | None) -> str:
    """Condition on the dashboard's range length (``$__to - $__from``)."""
    parts = []
    if lo_ms is not None:
        parts.append(f"$__to - $__from > {lo_ms}")
    if hi_ms is not None:
        parts.append(f"$__to - $__from <= {hi_ms}")
    return " AND ".join(parts)


class SQLiteSeries(Series):
    """Readings from the store's SQLite file (raw, or rollups for long ranges)."""

    ref = STORE

    def over_time(self, kind: DeviceKind, name: str, scope: Scope) -> Query:
        """Raw readings, 1-minute or hourly means, by the range's length; daily means (at noon)
        for the sealed days, in every range."""
        device = "" if scope is Scope.DEVICE else "device_id, "
        devices = _devices(scope, kind)
        floor = "(SELECT coalesce(max(value), 0) FROM meta WHERE key = 'seal_floor_ms')"
        raw = (
            f'SELECT ts_ms / 1000.0 AS time, {device}"{name}" AS {name} '
            f'FROM "readings_{kind.value}" WHERE {devices} '
            f'AND ts_ms BETWEEN $__from AND $__to AND ts_ms >= {floor} AND "{name}" IS NOT NULL '
            f"AND {_span(None, RAW_UP_TO_MS)}"
        )
        # Hours of a device sampled no faster than a minute have no stored 1-minute rollups
        # (the store computes them when asked): their raw readings stand for them.
        minutes_raw = (
            f'SELECT ts_ms / 1000.0 AS time, {device}"{name}" AS {name} '
            f'FROM "readings_{kind.value}" WHERE {devices} '
            f'AND ts_ms BETWEEN $__from AND $__to AND ts_ms >= {floor} AND "{name}" IS NOT NULL '
            f"AND {_span(RAW_UP_TO_MS, ROLLUP_1M_UP_TO_MS)} "
            f"AND (device_id, ts_ms - ts_ms % {HOUR_MS}) NOT IN "
            f"(SELECT device_id, bucket_ms - bucket_ms % {HOUR_MS} FROM rollup_1m "
            f"WHERE kind = '{kind.value}' AND field = '{name}' AND {devices} "
            "AND bucket_ms BETWEEN $__from AND $__to)"
        )
        parts = [raw, minutes_raw]
        for table, lo, hi in (
            ("rollup_1m", RAW_UP_TO_MS, ROLLUP_1M_UP_TO_MS),
            ("rollup_1h", ROLLUP_1M_UP_TO_MS, None),
        ):
            parts.append(
                f"SELECT bucket_ms / 1000.0 AS time, {device}mean AS {name} FROM {table} "
                f"WHERE kind = '{kind.value}' AND field = '{name}' AND {devices} "
                f"AND bucket_ms BETWEEN $__from AND $__to AND bucket_ms >= {floor} "
                f"AND {_span(lo, hi)}"
            )
        # Days older than the store's tail are sealed into compressed chunks SQL cannot read:
        # their daily means, drawn at noon, stand for them.
        parts.append(
            f"SELECT (bucket_ms + {DAY_MS // 2}) / 1000.0 AS time, {device}mean AS {name} "
            f"FROM rollup_1d WHERE kind = '{kind.value}' AND field = '{name}' AND {devices} "
            f"AND bucket_ms BETWEEN $__from - {DAY_MS // 2} AND $__to - {DAY_MS // 2} "
            f"AND bucket_ms < {floor}"
        )
        sql = "\nUNION ALL\n".join(parts) + "\nORDER BY time"
        return SQLiteBuilder(sql).time_series().datasource(self.ref)

    def latest(self, kind: DeviceKind, names: Sequence[str], scope: Scope) -> Latest:
        """Each device's newest reading (``device_state.last_seen_ms``) within the range."""
        selected = ", ".join(f'r."{n}" AS {n}' for n in names)
        sql = (
            f"SELECT d.device_id, r.ts_ms / 1000.0 AS time, {selected} "
            f'FROM device_state AS d JOIN "readings_{kind.value}" AS r '
            "ON r.device_id = d.device_id AND r.ts_ms = d.last_seen_ms "
            f"WHERE {_state_filter(scope, kind, 'd')} "
            "AND d.last_seen_ms BETWEEN $__from AND $__to ORDER BY d.device_id"
        )
        return Latest([SQLiteBuilder(sql).datasource(self.ref)])

    def sites(self, kind: DeviceKind | None) -> str:
        """Distinct sites of ``device_state``."""
        where = "" if kind is None else f" WHERE kind = '{kind.value}'"
        return f"SELECT DISTINCT site FROM device_state{where} ORDER BY site"

    def devices(self, kind: DeviceKind) -> str:
        """Devices of ``kind`` at the selected site(s)."""
        return (
            f"SELECT device_id FROM device_state WHERE kind = '{kind.value}' "
            f"AND {in_list(SITE_VAR, 'site')} ORDER BY device_id"
        )
