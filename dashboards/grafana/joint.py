"""Joint: the instrumented bolts of one joint (a flange, a splice) side by side.

Maintenance teams think in joints: a bolt losing preload among healthy neighbours under the
same weather is loosening, not temperature. Here:

* **Preload of the joint's bolts** over the range, one line per bolt, and their
  **temperatures**;
* **the bolts' newest readings**, each linking to its bolt dashboard;
* **findings**: the joint rules' ``joint`` alerts (k of n low, uneven preload, asymmetry) and
  every other alert of its bolts, with the alert episodes as annotations.

``$joint`` holds the joint's bolts as device ids joined by ``|``. Exported with the registry
(``boltwatch dashboards export --registry``), it lists the registry's joints by name; without
one, the bolts are picked by hand among the site's.
"""

from __future__ import annotations

from typing import Any, Final

from dashboards.grafana import tables
from dashboards.grafana.bolt import UID as BOLT_UID
from dashboards.grafana.panels import (
    annotation,
    device_link,
    finish,
    joint_variable,
    new_dashboard,
    site_variable,
    table_panel,
    timeseries_panel,
    unit_of,
)
from dashboards.grafana.series import Scope, Series
from sensors.registry import Registry
from sensors.schema import DeviceKind

__all__ = ["UID", "build"]

UID: Final = "boltwatch-joint"
_BOLT: Final = DeviceKind.CBOLT


def build(series: Series, registry: Registry | None = None) -> dict[str, Any]:
    """The joint dashboard, reading readings through ``series``; its joints from ``registry``
    (None: bolts picked by hand)."""
    board = new_dashboard(
        UID,
        "boltwatch / joint",
        "The bolts of one joint side by side: preload, temperature, the joint rules' findings.",
    )
    board.time("now-7d", "now")
    board.with_variable(site_variable(series, _BOLT))
    board.with_variable(joint_variable(series, registry))
    board.annotation(annotation("alerts", tables.alert_episodes(Scope.JOINT), "red"))

    board.with_panel(
        timeseries_panel(
            "Preload of the joint's bolts",
            "One line per bolt: a bolt drifting away from its neighbours is loosening.",
            [series.over_time(_BOLT, "preload_kn", Scope.JOINT)],
            unit=unit_of(_BOLT, "preload_kn"),
            by_device=True,
            span=24,
            height=11,
        )
    )
    latest = series.latest(_BOLT, ["preload_kn", "temp_c", "battery_v"], Scope.JOINT)
    board.with_panel(
        table_panel(
            "The bolts' newest readings",
            "Click a bolt for its dashboard.",
            latest.targets,
            transformations=latest.transformations,
            links={"device_id": device_link(BOLT_UID)},
        )
    )
    board.with_panel(
        timeseries_panel(
            "Temperature of the joint's bolts",
            "Bolts of one joint share the weather: a preload change they all show with the "
            "temperature is thermal, one bolt's alone is not.",
            [series.over_time(_BOLT, "temp_c", Scope.JOINT)],
            unit=unit_of(_BOLT, "temp_c"),
            by_device=True,
        )
    )
    board.with_panel(
        table_panel(
            "Findings: joint rules and the bolts' alerts",
            "Alerts of kind joint (k of n low, uneven preload, asymmetry) and every other alert "
            "of the joint's bolts, open ones first.",
            [tables.alerts_table(Scope.JOINT)],
            links={"device_id": device_link(BOLT_UID)},
            span=24,
        )
    )
    return finish(board)
