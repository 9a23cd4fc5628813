"""Machine detail: one dashboard per machine kind (and one for gateways), with its channels.

Each kind's channels are drawn the way its detectors read them: a 3D printer's hotend and bed
against their targets with the heater duty, a laser cutter's chiller water with its flow, a CNC
mill's vibration severity in the ISO 10816-3 zones with the spindle's current and speed, and so
on (:data:`CHANNELS`). Below: the machine's newest reading, its alerts and its events (jobs,
faults, thread breaks), with alert episodes and events as annotations. (The CNC mill's Welch
spectrum is computed from a waveform the time series databases do not hold; the console draws
it.)

Uids are ``boltwatch-{kind}`` (``boltwatch-printer3d``...), like the bolt's, so a table of
devices of any kind links each to its dashboard. Variables: ``$site`` and ``$device``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from grafana_foundation_sdk.builders import common, timeseries
from grafana_foundation_sdk.models.common import GraphThresholdsStyleMode

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
from sensors.schema import FIELD_INFO, KINDS, DeviceKind

__all__ = ["CHANNELS", "ISO_10816_3_MMS", "Channel", "build", "build_all", "uid_of"]

ISO_10816_3_MMS: Final = (1.4, 2.8, 4.5)
"""Lower edges of zones B, C and D of ISO 10816-3 (medium machines, rigid foundation), velocity
RMS in mm/s: the zones ``detection.cnc.iso_zone`` reports."""


@dataclass(frozen=True, slots=True)
class Channel:
    """One panel of a kind's dashboard.

    Attributes:
        title: The panel's title.
        left: Fields drawn on the left axis (in the first one's unit).
        right: Fields drawn on a right axis (in the first one's unit).
        description: What to look for.
    """

    title: str
    left: tuple[str, ...]
    right: tuple[str, ...] = ()
    description: str = ""


CHANNELS: Final[dict[DeviceKind, tuple[Channel, ...]]] = {
    DeviceKind.PRINTER3D: (
        Channel(
            "Hotend: temperature, target and heater duty",
            ("hotend_c", "hotend_target_c"),
            ("hotend_duty_pct",),
            "A hotend below its target with the heater at 100 % is a thermal runaway or a "
            "failing heater.",
        ),
        Channel(
            "Bed: temperature, target and heater duty", ("bed_c", "bed_target_c"), ("bed_duty_pct",)
        ),
        Channel("Chamber and part fan", ("chamber_c",), ("fan_pct",)),
    ),
    DeviceKind.LASER_CUTTER: (
        Channel(
            "Chiller water, ambient and flow",
            ("chiller_water_c", "ambient_c"),
            ("flow_lpm",),
            "Water warming with the flow steady is a chiller not keeping up; a falling flow, a "
            "pump or a kinked hose.",
        ),
        Channel("Tube current and laser power", ("tube_current_ma",), ("laser_power_pct",)),
    ),
    DeviceKind.CNC_MILL: (
        Channel(
            "Vibration severity (ISO 10816-3 zones)",
            ("vib_rms_mms",),
            (),
            "Velocity RMS; the background shows zones A (green) to D (red).",
        ),
        Channel("Spindle current and speed", ("spindle_a",), ("spindle_rpm",)),
        Channel("Feed", ("feed_mm_min",)),
    ),
    DeviceKind.VINYL_CUTTER: (
        Channel("Carriage motor current and duty", ("motor_a",), ("duty_pct",)),
        Channel("Blade force and cutting speed", ("blade_force_g",), ("cut_speed_mm_s",)),
    ),
    DeviceKind.EMBROIDERY: (
        Channel("Main motor current and duty", ("motor_a",), ("duty_pct",)),
        Channel("Stitch rate and thread tension", ("stitch_rate_spm",), ("thread_tension_g",)),
    ),
    DeviceKind.GATEWAY: (
        Channel("Uplink signal and supply", ("rssi_dbm",), ("battery_v",)),
        Channel(
            "Backlog and connected devices",
            ("backlog_readings",),
            ("connected_devices",),
            "A growing backlog: the gateway buffers readings it cannot forward.",
        ),
        Channel("CPU temperature and uptime", ("cpu_temp_c",), ("uptime_s",)),
    ),
}
"""The panels of each kind with a dashboard here (every kind but ``cbolt``: see ``bolt.py``)."""


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
    """The dashboards of every kind of :data:`CHANNELS`."""
    return [build(series, kind) for kind in CHANNELS]
