"""Queries of what only the SQLite files hold: device state, events and dead letters (the
store, :data:`~dashboards.grafana.sources.STORE`), alerts, their history and silences (the alert
store, :data:`~dashboards.grafana.sources.ALERTS`).

The SQL follows the tables the writers create (``ingest/store/schema.py``, ``alerts/store.py``);
the tests run every query of every dashboard against files those writers filled. Thresholds come
from the code that uses them: how long each kind may stay silent (``sensors.schema.KINDS``), the
severities and alert kinds (``detection.events``), the preload lines (``PreloadParams``).
"""

from __future__ import annotations

from typing import Final

from dashboards.grafana.queries import SQLiteBuilder
from dashboards.grafana.series import DEVICE_VAR, JOINT_VAR, SITE_VAR, Query, Scope
from dashboards.grafana.sources import ALERTS, STORE
from dashboards.grafana.sqlite import in_list
from detection.events import EventKind, Severity
from detection.preload import PreloadParams
from sensors.schema import KINDS, DeviceKind

__all__ = [
    "LINES",
    "SEVERITY_TEXT",
    "alert_counts",
    "alert_episodes",
    "alert_history",
    "alert_transitions",
    "alerts_table",
    "baseline_lines",
    "dead_letters",
    "dead_letters_over_time",
    "device_events",
    "devices_table",
    "event_annotations",
    "ingest_lag",
    "ingest_rate",
    "preload_level",
    "silences",
]

_PRELOAD: Final = PreloadParams()
LINES: Final[dict[str, float]] = {
    "line_80": _PRELOAD.warning_ratio,
    "line_70": _PRELOAD.alarm_ratio,
    "line_30": _PRELOAD.critical_ratio,
}
"""The preload lines drawn under the settled baseline: the detector's warning, alarm and
critical fractions (80, 70 and 30 % by default)."""

SEVERITY_TEXT: Final = (
    "CASE severity "
    + " ".join(f"WHEN {int(s)} THEN '{s}'" for s in Severity)
    + " ELSE 'unknown' END"
)
"""The severity column (an integer) as its name."""

_FAULT: Final = f"('{EventKind.SENSOR_FAULT.value}', '{EventKind.INTERNAL_ERROR.value}')"
_SILENT: Final = f"'{EventKind.NO_DATA.value}'"
_PRELOAD_KINDS: Final = f"('{EventKind.LOOSENING.value}', '{EventKind.PRELOAD_LOW.value}')"
_SILENT_AFTER_MS: Final = (
    "CASE kind "
    + " ".join(f"WHEN '{k.value}' THEN {round(s.silent_after_s * 1000)}" for k, s in KINDS.items())
    + " ELSE NULL END"
)


def _store(sql: str) -> SQLiteBuilder:
    return SQLiteBuilder(sql).datasource(STORE)


def _alerts(sql: str) -> SQLiteBuilder:
    return SQLiteBuilder(sql).datasource(ALERTS)


def _scope(scope: Scope, site_column: str = "site") -> str:
    if scope is Scope.DEVICE:
        return f"device_id = '${DEVICE_VAR}'"
    if scope is Scope.JOINT:
        return in_list(JOINT_VAR, "device_id")
    return in_list(SITE_VAR, site_column)


# -- the store ---------------------------------------------------------------------------------


def devices_table(kinds: tuple[DeviceKind, ...] = tuple(DeviceKind)) -> Query:
    """Every device of ``kinds`` at the selected site(s): state, newest reading, how long it has
    been silent at the range's end and how long its kind may be before ``no_data``."""
    names = ", ".join(f"'{k.value}'" for k in kinds)
    sql = (
        "SELECT device_id, kind, site, state, last_seen_ms / 1000.0 AS last_seen, "
        "($__to - last_seen_ms) / 1000.0 AS silent_s, "
        f"({_SILENT_AFTER_MS}) / 1000.0 AS silent_after_s, "
        "CASE WHEN last_seen_ms IS NULL THEN 'never reported' "
        f"WHEN $__to - last_seen_ms > ({_SILENT_AFTER_MS}) THEN 'silent' "
        "ELSE 'reporting' END AS status, fw_version "
        f"FROM device_state WHERE kind IN ({names}) AND {in_list(SITE_VAR, 'site')} "
        "ORDER BY status = 'reporting', silent_s DESC, device_id"
    )
    return _store(sql).time_columns("last_seen")


def device_events() -> Query:
    """The selected device's events, newest first, whatever the range (the installation record
    is often older): tightening (torque, preload, tool, operator), battery swaps, jobs, faults."""
    sql = (
        "SELECT ts_ms / 1000.0 AS time, type, "
        "json_extract(json, '$.torque_nm') AS torque_nm, "
        "json_extract(json, '$.preload_kn') AS preload_kn, "
        "json_extract(json, '$.tool') AS tool, json_extract(json, '$.operator') AS operator, "
        "json AS event FROM events "
        f"WHERE device_id = '${DEVICE_VAR}' ORDER BY ts_ms DESC LIMIT 200"
    )
    return _store(sql)


def event_annotations() -> Query:
    """The selected device's events in the range, as annotations (``time``, ``text``, ``tags``)."""
    sql = (
        "SELECT ts_ms / 1000.0 AS time, type || ': ' || json AS text, type AS tags FROM events "
        f"WHERE device_id = '${DEVICE_VAR}' AND ts_ms BETWEEN $__from AND $__to ORDER BY ts_ms"
    )
    return _store(sql)


def dead_letters() -> Query:
    """Dead letters of the range by the field that was wrong: count, newest, and the newest's
    reason, topic and payload (SQLite takes bare columns from the ``max`` row): its first 200
    characters when it is JSON, else its first 64 bytes in hex (a binary payload, Sparkplug's
    protobuf or garbage, is no text)."""
    sql = (
        "SELECT field, count(*) AS messages, max(received_ms) / 1000.0 AS last_time, reason, "
        "topic, CASE WHEN json_valid(CAST(payload AS TEXT)) "
        "THEN substr(CAST(payload AS TEXT), 1, 200) "
        "ELSE 'hex ' || hex(substr(payload, 1, 64)) END AS sample, "
        "sum(replayed_ms IS NULL) AS pending "
        "FROM dead_letters WHERE received_ms BETWEEN $__from AND $__to "
        "GROUP BY field ORDER BY messages DESC"
    )
    return _store(sql).time_columns("last_time")


def dead_letters_over_time() -> Query:
    """Dead letters per hour."""
    sql = (
        "SELECT (received_ms / 3600000) * 3600.0 AS time, count(*) AS dead_letters "
        "FROM dead_letters WHERE received_ms BETWEEN $__from AND $__to GROUP BY 1 ORDER BY 1"
    )
    return _store(sql).time_series()


def ingest_rate() -> Query:
    """Readings per hour by kind, from the hourly rollups (by reading time, once rolled up): per
    device and hour the field with the most readings counts them (every device has hourly
    rollups; 1-minute ones only those sampled faster than a minute)."""
    sql = (
        "SELECT bucket_ms / 1000.0 AS time, kind, sum(n) AS readings FROM "
        "(SELECT kind, device_id, bucket_ms, max(n) AS n FROM rollup_1h "
        "WHERE bucket_ms BETWEEN $__from AND $__to GROUP BY kind, device_id, bucket_ms) "
        "GROUP BY bucket_ms, kind ORDER BY 1"
    )
    return _store(sql).time_series()


def ingest_lag() -> Query:
    """Per kind, over each device's newest reading at the selected site(s): how long after its
    own timestamp it was stored (mean and worst), and how many arrived late (backfilled)."""
    parts = [
        f"SELECT '{k.value}' AS kind, count(r.ts_ms) AS devices, "
        "avg(r.received_ms - r.ts_ms) / 1000.0 AS mean_lag_s, "
        "max(r.received_ms - r.ts_ms) / 1000.0 AS max_lag_s, sum(r.late) AS late "
        f'FROM device_state AS d JOIN "readings_{k.value}" AS r '
        "ON r.device_id = d.device_id AND r.ts_ms = d.last_seen_ms "
        f"WHERE d.kind = '{k.value}' AND {in_list(SITE_VAR, 'd.site')}"
        for k in DeviceKind
    ]
    return _store("\nUNION ALL\n".join(parts))


# -- the alert store ---------------------------------------------------------------------------


def alert_counts(scope: Scope = Scope.SITE) -> Query:
    """Active alerts at the selected site(s): critical, major, warning, silent, sensor fault."""
    sql = (
        f"SELECT coalesce(sum(severity = {int(Severity.CRITICAL)} AND kind NOT IN {_FAULT} "
        f"AND kind != {_SILENT}), 0) AS critical, "
        f"coalesce(sum(severity = {int(Severity.MAJOR)} AND kind NOT IN {_FAULT} "
        f"AND kind != {_SILENT}), 0) AS major, "
        f"coalesce(sum(severity <= {int(Severity.WARNING)} AND kind NOT IN {_FAULT} "
        f"AND kind != {_SILENT}), 0) AS warning, "
        f"coalesce(sum(kind = {_SILENT}), 0) AS silent, "
        f"coalesce(sum(kind IN {_FAULT}), 0) AS sensor_fault "
        f"FROM alerts WHERE state = 'active' AND {_scope(scope)}"
    )
    return _alerts(sql)


def alerts_table(scope: Scope, extra: str = "", *, open_only: bool = False) -> Query:
    """Alerts of the scope, worst and newest first: who, what, since when, acknowledged by whom.

    Args:
        scope: Which devices.
        extra: More conditions (``AND ...``) on the ``alerts`` table.
        open_only: Only pending and active alerts (not cleared).
    """
    state = " AND state != 'cleared'" if open_only else ""
    sql = (
        "SELECT id, device_id, device_kind, site, grp AS joint, kind, "
        f"{SEVERITY_TEXT} AS severity, state, first_ms / 1000.0 AS since, "
        "last_event_ms / 1000.0 AS last_event, "
        "CASE WHEN acknowledged THEN ack_by ELSE '' END AS acknowledged_by, "
        "json_array_length(comments) AS comments, explanation FROM alerts "
        f"WHERE {_scope(scope)}{state}{extra} "
        "ORDER BY state = 'cleared', alerts.severity DESC, last_event_ms DESC LIMIT 500"
    )
    return _alerts(sql).time_columns("since", "last_event")


def alert_history(extra: str = "") -> Query:
    """What happened to the alerts of the selected site(s) in the range, and who did it
    (acknowledgements and comments carry their author in the detail)."""
    sql = (
        "SELECT h.ms / 1000.0 AS time, a.device_id, a.kind, h.what, h.detail "
        "FROM alert_history AS h JOIN alerts AS a ON a.id = h.alert_id "
        f"WHERE h.ms BETWEEN $__from AND $__to AND {in_list(SITE_VAR, 'a.site')}{extra} "
        "ORDER BY h.ms DESC LIMIT 1000"
    )
    return _alerts(sql)


def alert_transitions() -> Query:
    """Alert history lines per hour by what happened (events, activations, clears, acks)."""
    sql = (
        "SELECT (h.ms / 3600000) * 3600.0 AS time, h.what, count(*) AS n "
        "FROM alert_history AS h JOIN alerts AS a ON a.id = h.alert_id "
        f"WHERE h.ms BETWEEN $__from AND $__to AND {in_list(SITE_VAR, 'a.site')} "
        "GROUP BY 1, h.what ORDER BY 1"
    )
    return _alerts(sql).time_series()


def silences() -> Query:
    """Silences that overlap the range: who, why, what they match, whether in force now."""
    now = "CAST(strftime('%s', 'now') AS INTEGER) * 1000"
    sql = (
        "SELECT id, starts_ms / 1000.0 AS starts, ends_ms / 1000.0 AS ends, author, reason, "
        "device_id, site, kind, "
        f"CASE WHEN starts_ms > {now} THEN 'scheduled' WHEN ends_ms > {now} THEN 'in force' "
        "ELSE 'ended' END AS status "
        "FROM silences WHERE ends_ms >= $__from AND starts_ms <= $__to ORDER BY starts_ms DESC"
    )
    return _alerts(sql).time_columns("starts", "ends")


def alert_episodes(scope: Scope = Scope.DEVICE) -> Query:
    """Each alert's current episode that overlaps the range, as region annotations (``time``,
    ``timeEnd``: cleared, or the range's end while open)."""
    sql = (
        "SELECT first_ms / 1000.0 AS time, "
        "(CASE WHEN cleared_ms > 0 THEN cleared_ms ELSE $__to END) / 1000.0 AS timeEnd, "
        f"kind || ' [' || {SEVERITY_TEXT} || '] ' || explanation AS text, kind AS tags "
        f"FROM alerts WHERE {_scope(scope)} AND first_ms <= $__to "
        "AND (cleared_ms = 0 OR cleared_ms >= $__from) ORDER BY first_ms"
    )
    return _alerts(sql).time_columns("time", "timeEnd")


def _last_preload_data() -> str:
    return (
        f"FROM alerts WHERE device_id = '${DEVICE_VAR}' AND kind IN {_PRELOAD_KINDS} "
        "AND json_extract(data, '$.baseline_kn') IS NOT NULL "
        "ORDER BY last_event_ms DESC LIMIT 1"
    )


def baseline_lines() -> Query:
    """The bolt's settled baseline and the 80/70/30 % lines across the range, as time series.

    The baseline is the preload detector's, as its newest ``loosening`` or ``preload_low``
    alert recorded it (``data.baseline_kn``): a bolt that never raised one has no line here
    (the console shows the running detector's).
    """
    lines = ", ".join(f"{ratio!r} * b.baseline_kn AS {name}" for name, ratio in LINES.items())
    sql = (
        "SELECT t.time, b.baseline_kn, "
        f"{lines} FROM "
        "(SELECT $__from / 1000.0 AS time UNION ALL SELECT $__to / 1000.0) AS t, "
        f"(SELECT json_extract(data, '$.baseline_kn') AS baseline_kn {_last_preload_data()}) "
        "AS b ORDER BY t.time"
    )
    return _alerts(sql).time_series()


def preload_level() -> Query:
    """The bolt's level as its newest preload alert saw it: settled baseline, level in % of it,
    trend in %/day and hours to the alarm line."""
    sql = (
        "SELECT last_event_ms / 1000.0 AS time, "
        "json_extract(data, '$.baseline_kn') AS baseline_kn, "
        "100.0 * json_extract(data, '$.ratio') AS level_pct, "
        "json_extract(data, '$.slope_pct_per_day') AS trend_pct_per_day, "
        f"json_extract(data, '$.hours_to_alarm_line') AS hours_to_alarm_line {_last_preload_data()}"
    )
    return _alerts(sql)
