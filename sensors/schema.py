"""Reading, event, status and command schemas of every device kind.

Field names carry their unit (``preload_kn``, ``temp_c``, ``vib_rms_mms``); each numeric field has a
valid range enforced while decoding (msgspec ``Meta`` constraints, checked in C), so a reading
outside the physically plausible range is rejected with the field's path in the message. Optional
measurements default to NaN ("not reported") so they land in float columns without a per-value
branch; ``null`` on the wire is accepted and means the same.

Readings on a device's own topic may omit ``kind`` and ``device_id`` (the topic says them); readings
relayed by a gateway carry both. Each reading class is a msgspec *tagged* struct (tag field
``kind``), so a gateway batch mixing kinds decodes in one pass.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Final, Literal

import msgspec
from msgspec import Meta

from sensors.limits import MAX_SEQ, MAX_TS_MS

__all__ = [
    "ANY_READING",
    "DEVICE_ID_PATTERN",
    "EVENT_TYPES",
    "FIELD_INFO",
    "KINDS",
    "MAX_WAVEFORM_SAMPLES",
    "READING_TYPES",
    "REQUIRED_FIELDS",
    "AnyEvent",
    "AnyReading",
    "BatteryLowEvent",
    "BatterySwapEvent",
    "CboltReading",
    "Channel",
    "CncMillReading",
    "Command",
    "DeviceKind",
    "EmbroideryReading",
    "FaultEvent",
    "FieldInfo",
    "GatewayReading",
    "JobEndEvent",
    "JobStartEvent",
    "KindSpec",
    "LaserCutterReading",
    "Printer3dReading",
    "Reading",
    "RequestTighteningRecord",
    "SetInterval",
    "Status",
    "ThreadBreakEvent",
    "TightenedEvent",
    "VinylCutterReading",
    "fields_markdown",
]

NAN: Final = math.nan

DEVICE_ID_PATTERN: Final = r"^[A-Za-z0-9_-]{1,64}$"
"""Site and device ids: 1 to 64 of ``A-Z a-z 0-9 _ -`` (safe in topics, file names, URLs)."""

MAX_WAVEFORM_SAMPLES: Final = 65_536
"""Longest waveform one reading may carry (``vib_ms2``)."""


class DeviceKind(StrEnum):
    """The kinds of device boltwatch knows. The value is the topic segment."""

    CBOLT = "cbolt"
    GATEWAY = "gateway"
    PRINTER3D = "printer3d"
    LASER_CUTTER = "laser_cutter"
    CNC_MILL = "cnc_mill"
    VINYL_CUTTER = "vinyl_cutter"
    EMBROIDERY = "embroidery"

    # Hash as the string it equals (Enum's own hash is Python code, hashes the name instead of
    # the value, and is on the hot path of every per-kind dict lookup).
    __hash__ = str.__hash__


class Channel(StrEnum):
    """The last topic segment: what the message is."""

    TELEMETRY = "telemetry"
    EVENT = "event"
    STATUS = "status"
    CMD = "cmd"


# Length here (cheap, in C); the characters are checked once per distinct id by the codec, which
# is twice as fast as a regex per reading.
DeviceId = Annotated[str, Meta(min_length=1, max_length=64)]
EpochMs = Annotated[int, Meta(ge=0, le=MAX_TS_MS)]
"""Milliseconds since 1970-01-01 UTC, at most year 9999 (so it fits int64 and a datetime).
Plausibility (not far in the future) is checked per batch."""
Rfc3339 = Annotated[datetime, Meta(tz=True)]
"""An RFC 3339 timestamp string; its UTC offset is required (``Z`` or ``+01:00``)."""
Timestamp = EpochMs | Rfc3339
Seq = Annotated[int, Meta(ge=0, le=MAX_SEQ)]


# Physically plausible ranges: wide enough for every real sensor, narrow enough to reject a unit
# mistake (newtons sent as kilonewtons) or garbage. Kept in one place so docs and simulator agree.
PreloadKn = Annotated[float, Meta(ge=-50.0, le=10_000.0)]
TorqueNm = Annotated[float, Meta(ge=0.0, le=100_000.0)]
TempC = Annotated[float, Meta(ge=-60.0, le=600.0)]
BatteryV = Annotated[float, Meta(ge=0.0, le=60.0)]
RssiDbm = Annotated[float, Meta(ge=-200.0, le=30.0)]
Pct = Annotated[float, Meta(ge=0.0, le=100.0)]
Amps = Annotated[float, Meta(ge=0.0, le=1_000.0)]
Nonneg = Annotated[float, Meta(ge=0.0, le=1e9)]
Count = Annotated[float, Meta(ge=0.0, le=1e6)]
FlowLpm = Annotated[float, Meta(ge=0.0, le=1_000.0)]
Rpm = Annotated[float, Meta(ge=0.0, le=200_000.0)]
VibMms = Annotated[float, Meta(ge=0.0, le=1_000.0)]
FeedMmMin = Annotated[float, Meta(ge=0.0, le=200_000.0)]
SpeedMmS = Annotated[float, Meta(ge=0.0, le=10_000.0)]
Grams = Annotated[float, Meta(ge=0.0, le=20_000.0)]
StitchesPerMin = Annotated[float, Meta(ge=0.0, le=5_000.0)]
Accel = Annotated[float, Meta(ge=-1e5, le=1e5)]


class Reading(msgspec.Struct, kw_only=True, gc=False, forbid_unknown_fields=True):
    """Fields every reading has.

    Attributes:
        ts: Epoch milliseconds UTC (integer) or an RFC 3339 string with offset.
        seq: Per-device counter; with the device id it makes a reading unique.
        device_id: The source device. Optional on the device's own topic (must then equal the
            topic's), required in a gateway's batch.
    """

    ts: Timestamp
    seq: Seq
    device_id: DeviceId | None = None


class CboltReading(Reading, tag_field="kind", tag="cbolt"):
    """Smart bolt telemetry: axial preload (tension) and housekeeping."""

    preload_kn: PreloadKn
    temp_c: TempC | None = NAN
    battery_v: BatteryV | None = NAN
    rssi_dbm: RssiDbm | None = NAN


class GatewayReading(Reading, tag_field="kind", tag="gateway"):
    """A gateway's own health: uplink, backlog of buffered readings, supply."""

    rssi_dbm: RssiDbm | None = NAN
    battery_v: BatteryV | None = NAN
    cpu_temp_c: TempC | None = NAN
    uptime_s: Nonneg | None = NAN
    connected_devices: Count | None = NAN
    backlog_readings: Nonneg | None = NAN


class Printer3dReading(Reading, tag_field="kind", tag="printer3d"):
    """FDM printer: hotend and bed temperatures, their targets, heater duty, part fan."""

    hotend_c: TempC | None = NAN
    hotend_target_c: TempC | None = NAN
    hotend_duty_pct: Pct | None = NAN
    bed_c: TempC | None = NAN
    bed_target_c: TempC | None = NAN
    bed_duty_pct: Pct | None = NAN
    fan_pct: Pct | None = NAN
    chamber_c: TempC | None = NAN


class LaserCutterReading(Reading, tag_field="kind", tag="laser_cutter"):
    """CO2 laser: chiller water temperature and flow, tube current and power."""

    chiller_water_c: TempC | None = NAN
    flow_lpm: FlowLpm | None = NAN
    tube_current_ma: Amps | None = NAN
    laser_power_pct: Pct | None = NAN
    ambient_c: TempC | None = NAN


class CncMillReading(Reading, tag_field="kind", tag="cnc_mill"):
    """CNC mill: spindle speed and current, vibration (RMS, or a waveform with its rate)."""

    spindle_rpm: Rpm | None = NAN
    spindle_a: Amps | None = NAN
    vib_rms_mms: VibMms | None = NAN
    feed_mm_min: FeedMmMin | None = NAN
    fs_hz: Annotated[float, Meta(gt=0.0, le=1e7)] | None = NAN
    vib_ms2: Annotated[list[Accel], Meta(max_length=MAX_WAVEFORM_SAMPLES)] | None = None


class VinylCutterReading(Reading, tag_field="kind", tag="vinyl_cutter"):
    """Vinyl cutter: carriage motor current, blade force, cutting speed, duty cycle."""

    motor_a: Amps | None = NAN
    blade_force_g: Grams | None = NAN
    cut_speed_mm_s: SpeedMmS | None = NAN
    duty_pct: Pct | None = NAN


class EmbroideryReading(Reading, tag_field="kind", tag="embroidery"):
    """Embroidery machine: main motor current, stitch rate, duty cycle, thread tension."""

    motor_a: Amps | None = NAN
    stitch_rate_spm: StitchesPerMin | None = NAN
    duty_pct: Pct | None = NAN
    thread_tension_g: Grams | None = NAN


AnyReading = (
    CboltReading
    | GatewayReading
    | Printer3dReading
    | LaserCutterReading
    | CncMillReading
    | VinylCutterReading
    | EmbroideryReading
)


@dataclass(frozen=True, slots=True)
class KindSpec:
    """Everything boltwatch knows about a device kind, declared once (in :data:`KINDS`).

    Attributes:
        kind: The topic segment (a :class:`DeviceKind`).
        reading: The reading schema (a tagged struct whose tag is the kind).
        display_name: What people call it, for help texts, docs and dashboards.
        silent_after_s: How long a device of the kind may stay silent before ingest reports it
            as ``no_data`` (its reporting interval, with room for a missed report or two).
    """

    kind: DeviceKind
    reading: type[Reading]
    display_name: str
    silent_after_s: float


KINDS: Final[dict[DeviceKind, KindSpec]] = {
    spec.kind: spec
    for spec in (
        KindSpec(DeviceKind.CBOLT, CboltReading, "smart bolt", 3 * 3_600.0),
        KindSpec(DeviceKind.GATEWAY, GatewayReading, "gateway", 15 * 60.0),
        KindSpec(DeviceKind.PRINTER3D, Printer3dReading, "3D printer", 10 * 60.0),
        KindSpec(DeviceKind.LASER_CUTTER, LaserCutterReading, "laser cutter", 10 * 60.0),
        KindSpec(DeviceKind.CNC_MILL, CncMillReading, "CNC mill", 10 * 60.0),
        KindSpec(DeviceKind.VINYL_CUTTER, VinylCutterReading, "vinyl cutter", 30 * 60.0),
        KindSpec(DeviceKind.EMBROIDERY, EmbroideryReading, "embroidery machine", 30 * 60.0),
    )
}
"""The one place a kind is registered: a new kind is its :class:`DeviceKind` member, its reading
class above and one line here; ingest, the store, the codecs and the docs derive the rest."""

READING_TYPES: Final[dict[DeviceKind, type[Reading]]] = {k: s.reading for k, s in KINDS.items()}
"""The reading schema of each kind (derived from :data:`KINDS`)."""

ANY_READING: Final = AnyReading

REQUIRED_FIELDS: Final[dict[DeviceKind, tuple[str, ...]]] = {
    kind: tuple(
        f.name for f in msgspec.structs.fields(cls) if f.required and f.name not in ("ts", "seq")
    )
    for kind, cls in READING_TYPES.items()
}


# ---------------------------------------------------------------------------------------------
# Events (channel `event`): tagged by `type`.


class Event(msgspec.Struct, kw_only=True, gc=False, forbid_unknown_fields=True):
    """Fields every event has; ``device_id`` and ``kind`` as for readings."""

    ts: Timestamp
    seq: Seq
    device_id: DeviceId | None = None
    kind: DeviceKind | None = None


class TightenedEvent(Event, tag_field="type", tag="tightened"):
    """A bolt was installed or retightened: the torque applied and the preload measured."""

    torque_nm: TorqueNm
    preload_kn: PreloadKn
    tool: Annotated[str, Meta(max_length=128)] | None = None
    operator: Annotated[str, Meta(max_length=128)] | None = None
    tightening_pass: Annotated[int, Meta(ge=1, le=100)] | None = None


class BatterySwapEvent(Event, tag_field="type", tag="battery_swap"):
    """The node's battery was replaced (expect an offset step in the sensor)."""

    battery_v: BatteryV | None = None


class BatteryLowEvent(Event, tag_field="type", tag="battery_low"):
    """The node reports its battery below its own threshold."""

    battery_v: BatteryV | None = None


class ThreadBreakEvent(Event, tag_field="type", tag="thread_break"):
    """An embroidery machine detected a broken thread."""

    needle: Annotated[int, Meta(ge=0, le=64)] | None = None


class JobStartEvent(Event, tag_field="type", tag="job_start"):
    """A machine started a job (print, cut, mill, embroidery)."""

    job_id: Annotated[str, Meta(max_length=128)] | None = None


class JobEndEvent(Event, tag_field="type", tag="job_end"):
    """A machine finished or aborted a job."""

    job_id: Annotated[str, Meta(max_length=128)] | None = None
    ok: bool = True


class FaultEvent(Event, tag_field="type", tag="fault"):
    """The device's own firmware reported a fault (e.g. Marlin's THERMAL RUNAWAY)."""

    code: Annotated[str, Meta(max_length=64)]
    message: Annotated[str, Meta(max_length=1024)] | None = None


AnyEvent = (
    TightenedEvent
    | BatterySwapEvent
    | BatteryLowEvent
    | ThreadBreakEvent
    | JobStartEvent
    | JobEndEvent
    | FaultEvent
)

EVENT_TYPES: Final[dict[str, type[Event]]] = {
    "tightened": TightenedEvent,
    "battery_swap": BatterySwapEvent,
    "battery_low": BatteryLowEvent,
    "thread_break": ThreadBreakEvent,
    "job_start": JobStartEvent,
    "job_end": JobEndEvent,
    "fault": FaultEvent,
}


# ---------------------------------------------------------------------------------------------
# Status (retained birth message, last will) and commands.


class Status(msgspec.Struct, kw_only=True, gc=False, forbid_unknown_fields=True):
    """The ``status`` channel: retained birth message (``online``) and last will (``offline``).

    Attributes:
        state: ``online`` or ``offline``.
        ts: When the device said it, if it knows the time.
        boot_id: Changes at every boot; lets ingest tell a reboot (``seq`` restarts) from a replay.
        fw_version: Firmware version string.
        interval_s: The node's current reporting interval.
    """

    state: Literal["online", "offline"]
    ts: Timestamp | None = None
    boot_id: Annotated[str, Meta(max_length=64)] | None = None
    fw_version: Annotated[str, Meta(max_length=64)] | None = None
    interval_s: Annotated[float, Meta(gt=0.0, le=86_400.0 * 7)] | None = None


class SetInterval(msgspec.Struct, kw_only=True, tag_field="cmd", tag="set_interval"):
    """Command: report every ``interval_s`` seconds from now on."""

    id: Annotated[str, Meta(max_length=64)]
    interval_s: Annotated[float, Meta(gt=0.0, le=86_400.0 * 7)]


class RequestTighteningRecord(
    msgspec.Struct, kw_only=True, tag_field="cmd", tag="request_tightening_record"
):
    """Command: publish the stored installation/tightening record again as a ``tightened`` event."""

    id: Annotated[str, Meta(max_length=64)]


Command = SetInterval | RequestTighteningRecord


class FieldInfo(msgspec.Struct, frozen=True):
    """What a reading field means, for docs and validators: unit and valid range."""

    name: str
    unit: str
    lo: float
    hi: float
    required: bool


_UNITS: Final = {
    "_kn": "kN",
    "_nm": "N·m",
    "_c": "°C",
    "_v": "V",
    "_dbm": "dBm",
    "_pct": "%",
    "_a": "A",
    "_ma": "mA",
    "_lpm": "L/min",
    "_rpm": "1/min",
    "_mms": "mm/s",
    "_mm_min": "mm/min",
    "_mm_s": "mm/s",
    "_hz": "Hz",
    "_ms2": "m/s²",
    "_g": "g",
    "_spm": "stitches/min",
    "_s": "s",
    "_devices": "count",
    "_readings": "count",
}


def _unit(name: str) -> str:
    for suffix in sorted(_UNITS, key=len, reverse=True):
        if name.endswith(suffix):
            return _UNITS[suffix]
    return ""


def _field_info(cls: type[Reading]) -> tuple[FieldInfo, ...]:
    info = msgspec.inspect.type_info(cls)
    assert isinstance(info, msgspec.inspect.StructType)  # noqa: S101 - invariant of our own types
    out: list[FieldInfo] = []
    for f in info.fields:
        if f.name in ("ts", "seq", "device_id"):
            continue
        t = f.type
        if isinstance(t, msgspec.inspect.UnionType):
            t = next(x for x in t.types if not isinstance(x, msgspec.inspect.NoneType))
        if isinstance(t, msgspec.inspect.ListType):
            t = t.item_type
        lo = getattr(t, "ge", None)
        if lo is None:
            lo = getattr(t, "gt", None)
        hi = getattr(t, "le", None)
        out.append(
            FieldInfo(
                name=f.name,
                unit=_unit(f.name),
                lo=float(lo) if lo is not None else -math.inf,
                hi=float(hi) if hi is not None else math.inf,
                required=f.required,
            )
        )
    return tuple(out)


FIELD_INFO: Final[dict[DeviceKind, tuple[FieldInfo, ...]]] = {
    kind: _field_info(cls) for kind, cls in READING_TYPES.items()
}
"""Unit and valid range of every reading field, per kind (derived from the schemas above)."""


def _duration(seconds: float) -> str:
    minutes = round(seconds / 60)
    return f"{minutes // 60} h" if minutes % 60 == 0 else f"{minutes} min"


def fields_markdown() -> str:
    """Markdown tables of every kind's reading fields (``docs/telemetry.md`` embeds this text)."""
    lines: list[str] = []
    for kind in DeviceKind:
        spec = KINDS[kind]
        lines += [
            f"#### `{kind.value}`",
            "",
            f"{spec.display_name[0].upper()}{spec.display_name[1:]}; reported as `no_data` after "
            f"{_duration(spec.silent_after_s)} of silence.",
            "",
            "| field | unit | min | max | required |",
            "|---|---|---:|---:|---|",
        ]
        lines += [
            f"| `{f.name}` | {f.unit} | {f.lo:g} | {f.hi:g} | {'yes' if f.required else ''} |"
            for f in FIELD_INFO[kind]
        ]
        lines.append("")
    return "\n".join(lines)
