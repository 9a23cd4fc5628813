"""Data quality: is every device heard, and is every message stored?

* **Devices**: silent ones first (silent longer than their kind reports, which is when ingest
  raises ``no_data``), with their state and firmware;
* **batteries and signal** of bolts and gateways (newest reading), and each gateway's backlog of
  readings it could not forward yet;
* **dead letters** (messages ingest refused) by the field that was wrong, with the newest one's
  reason, topic and payload, and their count per hour;
* **ingest**: readings per hour by kind, and how long after its own timestamp each device's
  newest reading was stored (the lag; ``late`` readings were backfilled after an outage).

Variable: ``$site`` (All by default).
"""

from __future__ import annotations

from typing import Any, Final

from grafana_foundation_sdk.builders import dashboard

from dashboards.grafana import tables
from dashboards.grafana.bolt import UID as BOLT_UID
from dashboards.grafana.fleet import device_dashboard_link
from dashboards.grafana.machine import uid_of
from dashboards.grafana.panels import (
    device_link,
    finish,
    new_dashboard,
    site_variable,
    table_panel,
    timeseries_panel,
    unit_of,
)
from dashboards.grafana.series import Scope, Series
from sensors.schema import DeviceKind

__all__ = ["UID", "build"]

UID: Final = "boltwatch-quality"
_BOLT: Final = DeviceKind.CBOLT
_GATEWAY: Final = DeviceKind.GATEWAY


def build(series: Series) -> dict[str, Any]:
    """The data quality dashboard, reading readings through ``series``."""
    board = new_dashboard(
        UID,
        "boltwatch / data quality",
        "Silent devices, batteries, signal, gateway backlogs, dead letters, ingest rate and lag.",
    )
    board.with_variable(site_variable(series, None))

    board.with_row(dashboard.Row("Devices"))
    board.with_panel(
        table_panel(
            "Devices, silent first",
            "Silent: no reading for longer than the kind reports (at the range's end).",
            [tables.devices_table()],
            links={"device_id": device_dashboard_link("kind")},
            span=24,
            height=10,
        )
    )
    bolts = series.latest(_BOLT, ["battery_v", "rssi_dbm"], Scope.SITE)
    board.with_panel(
        table_panel(
            "Bolts: battery and signal",
            "Each bolt's newest battery voltage and signal strength in the range.",
            bolts.targets,
            transformations=bolts.transformations,
            links={"device_id": device_link(BOLT_UID)},
        )
    )
    gateways = series.latest(
        _GATEWAY, ["battery_v", "rssi_dbm", "backlog_readings", "connected_devices"], Scope.SITE
    )
    board.with_panel(
        table_panel(
            "Gateways: supply, signal, backlog",
            "Each gateway's newest battery, uplink signal, buffered readings and devices.",
            gateways.targets,
            transformations=gateways.transformations,
            links={"device_id": device_link(uid_of(_GATEWAY))},
        )
    )
    board.with_panel(
        timeseries_panel(
            "Gateway backlog",
            "Readings each gateway holds because it cannot forward them: a rising line is an "
            "uplink or broker problem.",
            [series.over_time(_GATEWAY, "backlog_readings", Scope.SITE)],
            unit=unit_of(_GATEWAY, "backlog_readings"),
            by_device=True,
            span=24,
        )
    )

    board.with_row(dashboard.Row("Ingest"))
    board.with_panel(
        table_panel(
            "Dead letters by field",
            "Messages ingest refused in the range, by the field that was wrong, with the newest "
            "one's reason, topic and first bytes (replay them with boltwatch deadletters).",
            [tables.dead_letters()],
            span=24,
        )
    )
    board.with_panel(
        timeseries_panel(
            "Dead letters per hour", "Refused messages per hour.", [tables.dead_letters_over_time()]
        )
    )
    board.with_panel(
        timeseries_panel(
            "Readings per hour",
            "By kind and reading time, from the hourly rollups (the newest hour appears once "
            "rolled up).",
            [tables.ingest_rate()],
        )
    )
    board.with_panel(
        table_panel(
            "Ingest lag",
            "Per kind, over each device's newest reading: seconds from its timestamp to its "
            "storage (mean and worst), and how many arrived late.",
            [tables.ingest_lag()],
            span=24,
            height=7,
        )
    )
    return finish(board)
