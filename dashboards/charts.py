"""The charts of each machine kind: which channels are drawn together, and on which axis.

One declaration for both faces: the Grafana machine dashboards (:mod:`dashboards.grafana.machine`)
and the web console's machine page draw these. Each kind's channels are grouped the way its
detectors read them: a 3D printer's hotend against its target with the heater duty, a laser
cutter's chiller water with its flow, a CNC mill's vibration severity in the ISO 10816-3 zones
(:data:`detection.cnc.ISO_10816_3_MMS`) with the spindle's current and speed. A kind without an
entry (a new one) gets one chart per field.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from sensors.schema import FIELD_INFO, DeviceKind

__all__ = ["CHANNELS", "SPECTRA", "Channel", "charts_of"]


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


def charts_of(kind: DeviceKind) -> tuple[Channel, ...]:
    """The charts of a kind: its entry in :data:`CHANNELS`, else one per numeric field."""
    if kind in CHANNELS:
        return CHANNELS[kind]
    return tuple(
        Channel(f.name, (f.name,)) for f in FIELD_INFO.get(kind, ()) if f.name != "vib_ms2"
    )


SPECTRA: Final[dict[DeviceKind, tuple[str, str]]] = {DeviceKind.CNC_MILL: ("vib_ms2", "fs_hz")}
"""Kinds whose readings may carry a waveform: (waveform field, its sampling-rate field). The
console draws the Welch spectrum of the newest one."""
