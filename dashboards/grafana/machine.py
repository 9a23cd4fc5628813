"""Machine detail: one dashboard per machine kind (and one for gateways), with its channels.

Each kind's channels are drawn the way its detectors read them: a 3D printer's hotend and bed
against their targets with the heater duty, a laser cutter's chiller water with its flow, a CNC
mill's vibration severity in the ISO 10816-3 zones with the spindle's current and speed, and so
on (:data:`dashboards.charts.CHANNELS`, which the web console draws too). Below: the machine's
newest reading, its alerts and its events (jobs, faults, thread breaks), with alert episodes and
events as annotations. (The CNC mill's Welch
spectrum is computed from a waveform the time series databases do not hold; the console draws
it.)

Uids are ``boltwatch-{kind}`` (``boltwatch-printer3d``...), like the bolt's, so a table of
devices of any kind links each to its dashboard. Variables: ``$site`` and ``$device``.
"""

from __future__ import annotations

from typing import Any

from grafana_foundation_sdk.builders import common, timeseries
from grafana_foundation_sdk.models.common import GraphThresholdsStyleMode

from dashboards.charts import CHANNELS, Channel
from dashboards.grafana import tables
from dashboards.grafana.panels import (
    annotation,
    device_variable,
    finish,
    new_dashboard,
    right_axis,
    site_variable,
    table_panel,
    thresholds,
    timeseries_panel,
    unit_of,
)
from dashboards.grafana.series import Query, Scope, Series
from detection.cnc import ISO_10816_3_MMS
from sensors.schema import FIELD_INFO, KINDS, DeviceKind

__all__ = ["build", "build_all", "uid_of"]


def uid_of(kind: DeviceKind) -> str:
    """The uid of a kind's dashboard."""
    return f"boltwatch-{kind.value}"


def _channel_panel(series: Series, kind: DeviceKind, channel: Channel) -> timeseries.Panel:
    queries: list[Query] = [
        series.over_time(kind, name, Scope.DEVICE) for name in (*channel.left, *channel.right)
    ]
    panel = timeseries_panel(
        channel.title,
        channel.description or channel.title,
        queries,
        unit=unit_of(kind, channel.left[0]),
    )
    if channel.right:
        letters = "ABCDEFGH"[len(channel.left) : len(channel.left) + len(channel.right)]
        right_axis(panel, list(letters), unit_of(kind, channel.right[0]))
    if "vib_rms_mms" in channel.left:
        zones = zip(ISO_10816_3_MMS, ("yellow", "orange", "red"), strict=True)
        panel.thresholds(thresholds("green", *zones))
        panel.thresholds_style(
            common.GraphThresholdsStyleConfig().mode(GraphThresholdsStyleMode.AREA)
        )
    return panel


def build(series: Series, kind: DeviceKind) -> dict[str, Any]:
    """The dashboard of one machine kind (or gateways), reading through ``series``."""
    name = KINDS[kind].display_name
    board = new_dashboard(
        uid_of(kind),
        f"boltwatch / {name}",
        f"One {name}: its channels, newest reading, alerts and events.",
    )
    board.with_variable(site_variable(series, kind))
    board.with_variable(device_variable(series, kind, name))
    board.annotation(annotation("alerts", tables.alert_episodes(Scope.DEVICE), "red"))
    board.annotation(annotation("events", tables.event_annotations(), "blue"))
    for channel in CHANNELS[kind]:
        board.with_panel(_channel_panel(series, kind, channel))
    fields = [f.name for f in FIELD_INFO[kind] if f.name not in ("vib_ms2", "fs_hz")]
    latest = series.latest(kind, fields, Scope.DEVICE)
    board.with_panel(
        table_panel(
            "Newest reading",
            f"The {name}'s newest reading in the range, every field.",
            latest.targets,
            transformations=latest.transformations,
            span=24,
            height=5,
        )
    )
    board.with_panel(
        table_panel(
            f"Alerts of the {name}",
            "Every alert of the device (one per kind; its history keeps earlier episodes).",
            [tables.alerts_table(Scope.DEVICE)],
        )
    )
    board.with_panel(
        table_panel(
            "Events",
            "Jobs started and ended, firmware faults, thread breaks: newest first.",
            [tables.device_events()],
        )
    )
    return finish(board)


def build_all(series: Series) -> list[dict[str, Any]]:
    """The dashboards of every kind of :data:`dashboards.charts.CHANNELS`."""
    return [build(series, kind) for kind in CHANNELS]
