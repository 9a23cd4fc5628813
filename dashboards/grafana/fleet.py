"""Fleet overview: what needs attention across the site(s), and every device at a glance.

* **Active alerts** by severity (critical, major, warning; silent devices and sensor faults
  apart), and the open alerts themselves, worst first, each linking to its device's dashboard.
* **Bolts**: each bolt's newest preload, temperature, battery and signal, and every bolt's
  preload over the range.
* **Devices**: every device with its state, newest reading and whether it has fallen silent
  (longer than its kind reports, as ingest's silence watcher counts).

Variable: ``$site`` (All by default).
"""

from __future__ import annotations

from typing import Any, Final

from grafana_foundation_sdk.builders import dashboard

from dashboards.grafana import tables
from dashboards.grafana.bolt import UID as BOLT_UID
from dashboards.grafana.panels import (
    device_link,
    finish,
    new_dashboard,
    site_variable,
    stat_panel,
    table_panel,
    thresholds,
    timeseries_panel,
    unit_of,
)
from dashboards.grafana.series import Scope, Series
from sensors.schema import DeviceKind

__all__ = ["UID", "build", "device_dashboard_link"]

UID: Final = "boltwatch-fleet"
_BOLT: Final = DeviceKind.CBOLT


def device_dashboard_link(kind_column: str) -> str:
    """URL of the clicked device's own dashboard (``boltwatch-{kind}``), its kind read from
    the row's ``kind_column``."""
    return (
        f"/d/boltwatch-${{__data.fields.{kind_column}}}"
        "?var-device=${__value.raw}&${__url_time_range}"
    )


def build(series: Series) -> dict[str, Any]:
    """The fleet overview dashboard, reading readings through ``series``."""
    board = new_dashboard(
        UID,
        "boltwatch / fleet",
        "Active alerts, every bolt's preload and every device's state, by site.",
    )
    board.with_variable(site_variable(series, None))

    board.with_row(dashboard.Row("Alerts"))
    counts = stat_panel(
        "Active alerts",
        "Active alerts by severity; silent devices (no_data) and sensor faults counted apart.",
        [tables.alert_counts(Scope.SITE)],
        span=24,
        height=4,
    )
    board.with_panel(counts.thresholds(thresholds("green", (1, "red"))))
    board.with_panel(
        table_panel(
            "Open alerts",
            "Pending and active alerts, worst first. Click a device for its dashboard.",
            [tables.alerts_table(Scope.SITE, open_only=True)],
            links={"device_id": device_dashboard_link("device_kind")},
            span=24,
            height=8,
        )
    )

    board.with_row(dashboard.Row("Bolts"))
    latest = series.latest(_BOLT, ["preload_kn", "temp_c", "battery_v", "rssi_dbm"], Scope.SITE)
    board.with_panel(
        table_panel(
            "Bolts: newest reading",
            "Each bolt's newest preload, temperature, battery and signal in the range.",
            latest.targets,
            transformations=latest.transformations,
            links={"device_id": device_link(BOLT_UID)},
        )
    )
    board.with_panel(
        timeseries_panel(
            "Preload of every bolt",
            "One line per bolt of the site(s).",
            [series.over_time(_BOLT, "preload_kn", Scope.SITE)],
            unit=unit_of(_BOLT, "preload_kn"),
            by_device=True,
        )
    )

    board.with_row(dashboard.Row("Devices"))
    board.with_panel(
        table_panel(
            "Devices",
            "Every device of the site(s): silent ones first (silent longer than its kind "
            "reports, at the range's end). Click a device for its dashboard.",
            [tables.devices_table()],
            links={"device_id": device_dashboard_link("kind")},
            span=24,
            height=10,
        )
    )
    return finish(board)
