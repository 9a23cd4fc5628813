"""Alerts: active and recent alerts, who did what and when, and the silences.

Everything here is read from the alert store (``alerts.db``, through the SQLite plugin), the
store the HTTP API and the console act on: acknowledging, commenting and silencing stay there
(``boltwatch alerts ...``, the console); Grafana shows them.

* **Active alerts** by severity;
* **alerts** filtered by site, kind, minimum severity and state, worst and newest first, each
  with who acknowledged it and how many comments it has, linking to its device's dashboard;
* **history**: every transition in the range (events, activations, clears, acknowledgements,
  comments with their author), and their count per hour;
* **silences** overlapping the range: author, reason, matchers, in force or not.

Variables: ``$site``, ``$kind`` and ``$state`` (several or All), ``$severity`` (at least).
"""

from __future__ import annotations

from typing import Any, Final

from grafana_foundation_sdk.builders import dashboard
from grafana_foundation_sdk.models.dashboard import VariableOption

from alerts.model import AlertState
from dashboards.grafana import tables
from dashboards.grafana.fleet import device_dashboard_link
from dashboards.grafana.panels import (
    finish,
    new_dashboard,
    query_variable,
    stat_panel,
    table_panel,
    thresholds,
    timeseries_panel,
)
from dashboards.grafana.series import SITE_VAR, Scope
from dashboards.grafana.sources import ALERTS
from dashboards.grafana.sqlite import in_list
from detection.events import Severity

__all__ = ["UID", "build"]

UID: Final = "boltwatch-alerts"
KIND_VAR: Final = "kind"
STATE_VAR: Final = "state"
SEVERITY_VAR: Final = "severity"
_ALL: Final = VariableOption(selected=True, text="All", value="$__all")


def _variables(board: dashboard.Dashboard) -> None:
    for name, sql in (
        (SITE_VAR, "SELECT DISTINCT site FROM alerts ORDER BY site"),
        (KIND_VAR, "SELECT DISTINCT kind FROM alerts ORDER BY kind"),
    ):
        board.with_variable(
            query_variable(name, name, ALERTS, sql).multi(True).include_all(True).current(_ALL)
        )
    states = [VariableOption(selected=False, text=s.value, value=s.value) for s in AlertState]
    board.with_variable(
        dashboard.CustomVariable(STATE_VAR)
        .label("state")
        .values(",".join(s.value for s in AlertState))
        .options(states)
        .multi(True)
        .include_all(True)
        .current(_ALL)
    )
    severities = [VariableOption(selected=False, text=str(s), value=str(int(s))) for s in Severity]
    severities[0].selected = True
    board.with_variable(
        dashboard.CustomVariable(SEVERITY_VAR)
        .label("severity at least")
        .values(", ".join(f"{s.text} : {s.value}" for s in severities))
        .options(severities)
        .current(severities[0])
    )


def build() -> dict[str, Any]:
    """The alerts dashboard (alert store only: no series datasource)."""
    board = new_dashboard(
        UID,
        "boltwatch / alerts",
        "Active and recent alerts, their history (who acknowledged, commented) and silences.",
    )
    board.time("now-7d", "now")
    _variables(board)
    filters = (
        f" AND {in_list(KIND_VAR, 'kind')} AND {in_list(STATE_VAR, 'state')}"
        f" AND severity >= ${SEVERITY_VAR}"
    )

    counts = stat_panel(
        "Active alerts",
        "Active alerts of the site(s) by severity; silent devices and sensor faults apart.",
        [tables.alert_counts(Scope.SITE)],
        span=24,
        height=4,
    )
    board.with_panel(counts.thresholds(thresholds("green", (1, "red"))))
    board.with_panel(
        table_panel(
            "Alerts",
            "Filtered by site, kind, state and minimum severity: open ones first, then worst "
            "and newest. Click a device for its dashboard.",
            [tables.alerts_table(Scope.SITE, filters)],
            links={"device_id": device_dashboard_link("device_kind")},
            span=24,
            height=10,
        )
    )
    board.with_panel(
        table_panel(
            "History: who did what, and when",
            "Every transition of the filtered alerts in the range; acknowledgements and comments "
            "name their author.",
            [tables.alert_history(f" AND {in_list(KIND_VAR, 'a.kind')}")],
            span=24,
            height=10,
        )
    )
    board.with_panel(
        timeseries_panel(
            "Alert history per hour",
            "Detection events, activations, clears and operators' actions per hour.",
            [tables.alert_transitions()],
        )
    )
    board.with_panel(
        table_panel(
            "Silences",
            "Silences and maintenance windows overlapping the range: matching alerts are not "
            "notified while one is in force.",
            [tables.silences()],
        )
    )
    return finish(board)
