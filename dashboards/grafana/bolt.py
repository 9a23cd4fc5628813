"""Bolt detail: one smart bolt's preload against its settled baseline and the 80/70/30 % lines.

* **Preload**: the bolt's preload (kN) with its temperature on a right axis; the settled
  baseline and the warning, alarm and critical lines (``PreloadParams``: 80, 70, 30 % of the
  baseline) dashed, where the data allows: the baseline is the one the preload detector
  recorded with the bolt's newest ``loosening`` or ``preload_low`` alert. (The temperature-
  compensated preload and the forecast live in the running detector: the console draws them;
  Grafana shows what the stores hold.)
* **Level**: that alert's baseline, level in % of it, trend in %/day and hours to the alarm line.
* **Latest reading**, **battery and signal**, the **installation record and events** (tightening
  with torque and preload, retightening, battery swaps) and the bolt's **alerts**.
* Annotations on every panel: alert episodes (regions) and device events.

Variables: ``$site`` (All by default) and ``$device``, a bolt of the site(s).
"""

from __future__ import annotations

from typing import Any, Final

from grafana_foundation_sdk.models.dashboard import DynamicConfigValue

from dashboards.grafana import tables
from dashboards.grafana.panels import (
    annotation,
    dashed,
    device_variable,
    finish,
    new_dashboard,
    right_axis,
    site_variable,
    stat_panel,
    table_panel,
    thresholds,
    timeseries_panel,
    unit_of,
)
from dashboards.grafana.series import Scope, Series
from sensors.schema import DeviceKind

__all__ = ["UID", "build"]

UID: Final = "boltwatch-cbolt"
"""The bolt dashboard's uid: ``boltwatch-{kind}``, as every device dashboard's."""
KIND: Final = DeviceKind.CBOLT


def build(series: Series) -> dict[str, Any]:
    """The bolt detail dashboard, reading readings through ``series``."""
    board = new_dashboard(
        UID,
        "boltwatch / bolt",
        "One smart bolt: preload against its settled baseline and the 80/70/30 % lines, "
        "temperature, battery, events and alerts.",
    )
    board.time("now-7d", "now")
    board.with_variable(site_variable(series, KIND))
    board.with_variable(device_variable(series, KIND, "bolt"))
    board.annotation(annotation("alerts", tables.alert_episodes(Scope.DEVICE), "red"))
    board.annotation(annotation("events", tables.event_annotations(), "blue"))

    preload = timeseries_panel(
        "Preload, settled baseline and the 80/70/30 % lines",
        "Preload (left, kN) and temperature (right). Dashed: the settled baseline and the "
        "warning, alarm and critical lines, from the detector's newest preload alert of the bolt.",
        [
            series.over_time(KIND, "preload_kn", Scope.DEVICE),
            tables.baseline_lines(),
            series.over_time(KIND, "temp_c", Scope.DEVICE),
        ],
        unit=unit_of(KIND, "preload_kn"),
        span=24,
        height=11,
    )
    right_axis(preload, ["C"], unit_of(KIND, "temp_c"))
    dashed(
        preload,
        {"baseline_kn": "green", "line_80": "yellow", "line_70": "orange", "line_30": "red"},
    )
    board.with_panel(preload)

    level = stat_panel(
        "Level against the settled baseline",
        "As the detector saw it at the bolt's newest preload alert: baseline (kN), level (% of "
        "baseline), trend (%/day) and hours until the alarm line. Empty: no such alert yet.",
        [tables.preload_level()],
        unit="percent",
        span=12,
    )
    lines = tables.LINES
    level.thresholds(
        thresholds("red", (lines["line_70"] * 100, "orange"), (lines["line_80"] * 100, "green"))
    )
    for name, unit in (
        ("baseline_kn", "forcekN"),
        ("trend_pct_per_day", "suffix: %/day"),
        ("hours_to_alarm_line", "h"),
    ):
        level.override_by_name(
            name,
            [
                DynamicConfigValue(id_val="unit", value=unit),
                DynamicConfigValue(id_val="color", value={"mode": "fixed", "fixedColor": "blue"}),
            ],
        )
    board.with_panel(level)
    latest = series.latest(KIND, ["preload_kn", "temp_c", "battery_v", "rssi_dbm"], Scope.DEVICE)
    board.with_panel(
        table_panel(
            "Latest reading",
            "The bolt's newest reading in the range.",
            latest.targets,
            transformations=latest.transformations,
            span=12,
            height=5,
        )
    )
    health = timeseries_panel(
        "Battery and radio",
        "Battery voltage (left) and received signal strength (right).",
        [
            series.over_time(KIND, "battery_v", Scope.DEVICE),
            series.over_time(KIND, "rssi_dbm", Scope.DEVICE),
        ],
        unit=unit_of(KIND, "battery_v"),
    )
    board.with_panel(right_axis(health, ["B"], unit_of(KIND, "rssi_dbm")))
    board.with_panel(
        table_panel(
            "Installation and events",
            "Tightening (torque, preload, tool, operator), retightening, battery swaps: newest "
            "first, whatever the range.",
            [tables.device_events()],
        )
    )
    board.with_panel(
        table_panel(
            "Alerts of the bolt",
            "Every alert of the bolt (one per kind; its history keeps earlier episodes).",
            [tables.alerts_table(Scope.DEVICE)],
            span=24,
        )
    )
    return finish(board)
