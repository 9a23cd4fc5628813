"""Example messages of the wire contract, valid and invalid, for every device kind.

The same examples appear in ``docs/telemetry.md`` (a test keeps the two in step), drive
``boltwatch demo``'s contract tour, and seed the codec tests.
"""

from __future__ import annotations

from typing import Final, NamedTuple

__all__ = ["EXAMPLES", "Example"]

# 2026-03-01T00:05:00Z in epoch milliseconds.
T0: Final = 1_772_323_500_000


class Example(NamedTuple):
    """One message: its topic, payload, and why it is rejected (empty when valid)."""

    title: str
    topic: str
    payload: bytes
    rejected_because: str = ""


EXAMPLES: Final[tuple[Example, ...]] = (
    Example(
        "Smart bolt: one reading",
        "boltwatch/v1/bridge-a/cbolt/bolt-0007/telemetry",
        b'{"ts": 1772323500000, "seq": 1841, "preload_kn": 61.84, "temp_c": 11.5,'
        b' "battery_v": 3.58, "rssi_dbm": -97}',
    ),
    Example(
        "Smart bolt: RFC 3339 timestamp, only the required field",
        "boltwatch/v1/bridge-a/cbolt/bolt-0007/telemetry",
        b'{"ts": "2026-03-01T00:10:00Z", "seq": 1842, "preload_kn": 61.80}',
    ),
    Example(
        "Smart bolt: store-and-forward replay as a batch",
        "boltwatch/v1/bridge-a/cbolt/bolt-0007/telemetry",
        b'{"readings": [{"ts": 1772324100000, "seq": 1843, "preload_kn": 61.79},'
        b' {"ts": 1772324400000, "seq": 1844, "preload_kn": 61.77, "temp_c": 11.1}]}',
    ),
    Example(
        "Smart bolt: tightened at installation or retightening",
        "boltwatch/v1/bridge-a/cbolt/bolt-0007/event",
        b'{"type": "tightened", "ts": 1772323200000, "seq": 1840, "torque_nm": 2350,'
        b' "preload_kn": 326.4, "tool": "HYTORC-XLCT-4", "operator": "j.martin",'
        b' "tightening_pass": 2}',
    ),
    Example(
        "Smart bolt: battery swapped",
        "boltwatch/v1/bridge-a/cbolt/bolt-0007/event",
        b'{"type": "battery_swap", "ts": 1772323560000, "seq": 1845, "battery_v": 3.67}',
    ),
    Example(
        "Smart bolt: birth message (retained)",
        "boltwatch/v1/bridge-a/cbolt/bolt-0007/status",
        b'{"state": "online", "boot_id": "7f3a9c", "fw_version": "2.4.1", "interval_s": 600}',
    ),
    Example(
        "Smart bolt: last will",
        "boltwatch/v1/bridge-a/cbolt/bolt-0007/status",
        b'{"state": "offline"}',
    ),
    Example(
        "Gateway: readings of several bolts, and its own health",
        "boltwatch/v1/bridge-a/gateway/gw-span-3/telemetry",
        b'{"readings": ['
        b'{"kind": "cbolt", "device_id": "bolt-0011", "ts": 1772323500000, "seq": 77,'
        b' "preload_kn": 58.2, "temp_c": 10.9},'
        b' {"kind": "cbolt", "device_id": "bolt-0012", "ts": 1772323500000, "seq": 80,'
        b' "preload_kn": 60.1, "temp_c": 10.9},'
        b' {"kind": "gateway", "ts": 1772323500000, "seq": 5120, "rssi_dbm": -71,'
        b' "backlog_readings": 0, "connected_devices": 24}]}',
    ),
    Example(
        "3D printer",
        "boltwatch/v1/fablab/printer3d/prusa-mk4-2/telemetry",
        b'{"ts": 1772323500000, "seq": 90211, "hotend_c": 214.6, "hotend_target_c": 215,'
        b' "hotend_duty_pct": 41.0, "bed_c": 59.8, "bed_target_c": 60, "fan_pct": 100}',
    ),
    Example(
        "Laser cutter",
        "boltwatch/v1/fablab/laser_cutter/co2-100w/telemetry",
        b'{"ts": 1772323500000, "seq": 3310, "chiller_water_c": 18.4, "flow_lpm": 2.1,'
        b' "tube_current_ma": 18.0, "laser_power_pct": 60}',
    ),
    Example(
        "CNC mill: summary values",
        "boltwatch/v1/fablab/cnc_mill/mill-1/telemetry",
        b'{"ts": 1772323500000, "seq": 501, "spindle_rpm": 12000, "spindle_a": 4.2,'
        b' "vib_rms_mms": 1.9, "feed_mm_min": 800}',
    ),
    Example(
        "CNC mill: a vibration waveform (m/s^2) with its sampling rate",
        "boltwatch/v1/fablab/cnc_mill/mill-1/telemetry",
        b'{"ts": 1772323501000, "seq": 502, "spindle_rpm": 12000, "fs_hz": 25600,'
        b' "vib_ms2": [0.12, -0.31, 0.44, -0.08, 0.27, -0.19, 0.05, -0.33]}',
    ),
    Example(
        "Vinyl cutter",
        "boltwatch/v1/fablab/vinyl_cutter/cameo-1/telemetry",
        b'{"ts": 1772323500000, "seq": 44, "motor_a": 0.8, "blade_force_g": 120,'
        b' "cut_speed_mm_s": 150, "duty_pct": 35}',
    ),
    Example(
        "Embroidery machine",
        "boltwatch/v1/fablab/embroidery/brother-pr1x/telemetry",
        b'{"ts": 1772323500000, "seq": 7, "motor_a": 1.6, "stitch_rate_spm": 850,'
        b' "duty_pct": 70, "thread_tension_g": 95}',
    ),
    Example(
        "Embroidery machine: thread break",
        "boltwatch/v1/fablab/embroidery/brother-pr1x/event",
        b'{"type": "thread_break", "ts": 1772323512000, "seq": 8, "needle": 3}',
    ),
    Example(
        "Rejected: not JSON",
        "boltwatch/v1/bridge-a/cbolt/bolt-0007/telemetry",
        b'{"ts": 1772323500000, "seq": 1846, "preload_kn": 61.7',
        "not valid JSON",
    ),
    Example(
        "Rejected: required field missing",
        "boltwatch/v1/bridge-a/cbolt/bolt-0007/telemetry",
        b'{"ts": 1772323500000, "seq": 1846, "temp_c": 11.0}',
        "missing required field `preload_kn`",
    ),
    Example(
        "Rejected: wrong type",
        "boltwatch/v1/bridge-a/cbolt/bolt-0007/telemetry",
        b'{"ts": 1772323500000, "seq": 1846, "preload_kn": "61.7"}',
        "$.preload_kn",
    ),
    Example(
        "Rejected: unit mistake (newtons sent as kilonewtons)",
        "boltwatch/v1/bridge-a/cbolt/bolt-0007/telemetry",
        b'{"ts": 1772323500000, "seq": 1846, "preload_kn": 61700}',
        "$.preload_kn",
    ),
    Example(
        "Rejected: infinite value",
        "boltwatch/v1/bridge-a/cbolt/bolt-0007/telemetry",
        b'{"ts": 1772323500000, "seq": 1846, "preload_kn": 1e999}',
        "$.preload_kn",
    ),
    Example(
        "Rejected: unknown field (a typo would otherwise be lost silently)",
        "boltwatch/v1/bridge-a/cbolt/bolt-0007/telemetry",
        b'{"ts": 1772323500000, "seq": 1846, "preload_kn": 61.7, "temp_C": 11.0}',
        "unknown field `temp_C`",
    ),
    Example(
        "Rejected: spoofed device_id",
        "boltwatch/v1/bridge-a/cbolt/bolt-0007/telemetry",
        b'{"ts": 1772323500000, "seq": 1846, "device_id": "bolt-0008", "preload_kn": 61.7}',
        "spoofed",
    ),
    Example(
        "Rejected: timestamp in seconds instead of milliseconds",
        "boltwatch/v1/bridge-a/cbolt/bolt-0007/telemetry",
        b'{"ts": 1772323500, "seq": 1846, "preload_kn": 61.7}',
        "before 2000-01-01",
    ),
    Example(
        "Rejected: RFC 3339 time without offset",
        "boltwatch/v1/bridge-a/cbolt/bolt-0007/telemetry",
        b'{"ts": "2026-03-01T00:05:00", "seq": 1846, "preload_kn": 61.7}',
        "timezone",
    ),
    Example(
        "Rejected: gateway reading without its device",
        "boltwatch/v1/bridge-a/gateway/gw-span-3/telemetry",
        b'{"readings": [{"kind": "cbolt", "ts": 1772323500000, "seq": 78, "preload_kn": 58.1}]}',
        "must name the device",
    ),
    Example(
        "Rejected: unknown kind in the topic",
        "boltwatch/v1/bridge-a/toaster/t-1/telemetry",
        b'{"ts": 1772323500000, "seq": 1}',
        "unknown device kind",
    ),
)
