"""The machine simulator's data types: specs, faults, runs, events, bearing geometry.

`FAULT_KINDS` and `MACHINE_PARAMS` say which machine kinds exist, which faults each can simulate
and which model parameters a `MachineSpec` may override (defaults: each machine module's docs).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final

import numpy as np
import numpy.typing as npt

from sensors.schema import DeviceKind

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]
IntArray = npt.NDArray[np.intp]

FAULT_KINDS: Final[dict[DeviceKind, tuple[str, ...]]] = {
    DeviceKind.PRINTER3D: ("thermistor_detached", "heater_failure", "fan_failure"),
    DeviceKind.LASER_CUTTER: ("flow_loss", "chiller_failure"),
    DeviceKind.CNC_MILL: ("chatter", "bearing_outer", "bearing_inner", "tool_wear"),
    DeviceKind.VINYL_CUTTER: ("blade_wear", "motor_stall"),
    DeviceKind.EMBROIDERY: ("tension_fault", "motor_overload"),
}
"""The fault kinds each machine kind can simulate (its keys are the machine kinds)."""

MACHINE_PARAMS: Final[dict[DeviceKind, dict[str, tuple[float, float]]]] = {
    DeviceKind.PRINTER3D: {
        "ambient_c": (0.0, 40.0),
        "hotend_target_c": (150.0, 270.0),
        "bed_target_c": (0.0, 110.0),
        "fan_pct": (0.0, 100.0),
        "print_h": (0.05, 48.0),
        "heater_w": (20.0, 80.0),
    },
    DeviceKind.LASER_CUTTER: {
        "ambient_c": (0.0, 40.0),
        "chiller_set_c": (10.0, 30.0),
        "flow_lpm": (0.5, 10.0),
        "tube_max_ma": (5.0, 40.0),
        "chiller_w": (100.0, 5000.0),
    },
    DeviceKind.CNC_MILL: {
        "teeth": (1.0, 12.0),
        "chatter_hz": (200.0, 950.0),
    },
    DeviceKind.VINYL_CUTTER: {
        "blade_force_g": (10.0, 1000.0),
        "cut_speed_mm_s": (10.0, 1000.0),
    },
    DeviceKind.EMBROIDERY: {
        "stitch_rate_spm": (100.0, 1500.0),
        "break_rate_per_h": (0.0, 30.0),
        "tension_g": (20.0, 500.0),
    },
}
"""Accepted ``MachineSpec.params`` per kind: name -> (min, max).

Defaults are in each machine module's docs."""

DEFAULT_CHATTER_MODE_HZ: Final = 750.0
"""Structural mode of the spindle-tool system near which chatter appears, Hz."""


@dataclass(frozen=True, slots=True)
class MachineFault:
    """A fault to inject.

    Attributes:
        kind: One of ``FAULT_KINDS[spec.kind]``.
        onset_s: Start, seconds on the run's time axis.
        duration_s: Length in seconds; None means until the end of the run.
        severity: Scale of the effect, 0 (none) .. 1 (full); some effects extrapolate above 1.
    """

    kind: str
    onset_s: float
    duration_s: float | None = None
    severity: float = 1.0

    def __post_init__(self) -> None:
        """Reject non-finite times and negative severities."""
        if not math.isfinite(self.onset_s):
            raise ValueError(f"fault {self.kind!r}: onset_s must be finite")
        if self.duration_s is not None and not (
            math.isfinite(self.duration_s) and self.duration_s > 0
        ):
            raise ValueError(f"fault {self.kind!r}: duration_s must be > 0 or None")
        if not (math.isfinite(self.severity) and self.severity >= 0):
            raise ValueError(f"fault {self.kind!r}: severity must be finite and >= 0")

    @property
    def end_s(self) -> float:
        """End of the fault, s (infinite when ``duration_s`` is None)."""
        return math.inf if self.duration_s is None else self.onset_s + self.duration_s


@dataclass(frozen=True, slots=True)
class MachineSpec:
    """What to simulate.

    Attributes:
        kind: A machine kind (a key of `FAULT_KINDS`).
        device_id: The device's id (used in job ids).
        faults: Faults to inject; each kind must be in ``FAULT_KINDS[kind]``.
        params: Overrides of model parameters; accepted names and ranges in `MACHINE_PARAMS`.

    Raises:
        ValueError: Unknown kind, fault kind or parameter (the message names it), or a parameter
            outside its range.
    """

    kind: DeviceKind
    device_id: str
    faults: tuple[MachineFault, ...] = ()
    params: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        """Validate kind, faults and params; freeze params."""
        try:
            kind = DeviceKind(self.kind)
        except ValueError:
            raise ValueError(f"unknown device kind {self.kind!r}") from None
        if kind not in FAULT_KINDS:
            raise ValueError(
                f"{kind.value!r} is not a machine kind; expected one of "
                f"{sorted(k.value for k in FAULT_KINDS)}"
            )
        object.__setattr__(self, "kind", kind)
        object.__setattr__(self, "faults", tuple(self.faults))
        for fault in self.faults:
            if fault.kind not in FAULT_KINDS[kind]:
                raise ValueError(
                    f"fault kind {fault.kind!r} is not defined for {kind.value}; "
                    f"expected one of {list(FAULT_KINDS[kind])}"
                )
        ranges = MACHINE_PARAMS[kind]
        params: dict[str, float] = {}
        for key, raw in self.params.items():
            if key not in ranges:
                raise ValueError(
                    f"unknown param {key!r} for {kind.value}; expected one of {sorted(ranges)}"
                )
            value = float(raw)
            lo, hi = ranges[key]
            if not lo <= value <= hi:
                raise ValueError(f"param {key!r} = {value:g} outside [{lo:g}, {hi:g}]")
            if key == "teeth" and value != round(value):
                raise ValueError(f"param 'teeth' must be an integer, got {value:g}")
            params[key] = value
        object.__setattr__(self, "params", MappingProxyType(params))


@dataclass(frozen=True, slots=True)
class FaultInterval:
    """Ground truth: when a fault is physically present (clipped to the run).

    Attributes:
        kind: The fault kind.
        start_s: First instant, s.
        end_s: Last instant, s.
    """

    kind: str
    start_s: float
    end_s: float


@dataclass(frozen=True, slots=True)
class MachineEvent:
    """An event the machine publishes.

    Attributes:
        t_s: When, s.
        type: ``job_start``, ``job_end``, ``thread_break`` or ``fault``.
        fields: The event's fields as in `sensors.schema` (``job_id``, ``ok``, ``needle``,
            ``code``, ``message``).
    """

    t_s: float
    type: str
    fields: Mapping[str, object]


@dataclass(slots=True)
class MachineRun:
    """A simulated run.

    Attributes:
        spec: What was simulated.
        t_s: The time grid, s.
        values: One array per float field of the kind's reading schema (units in the names); NaN
            where the machine does not report the value at that time.
        intervals: Ground-truth fault intervals, in the order of ``spec.faults``.
        events: Events sorted by time.
    """

    spec: MachineSpec
    t_s: FloatArray
    values: dict[str, FloatArray]
    intervals: list[FaultInterval]
    events: list[MachineEvent]


@dataclass(frozen=True, slots=True)
class BearingGeometry:
    """Rolling-element bearing geometry for defect frequencies.

    Attributes:
        n_balls: Number of rolling elements.
        ball_d_mm: Ball diameter d, mm.
        pitch_d_mm: Pitch diameter D, mm.
        contact_deg: Contact angle φ, degrees.
    """

    n_balls: int
    ball_d_mm: float
    pitch_d_mm: float
    contact_deg: float

    def __post_init__(self) -> None:
        """Reject impossible geometries."""
        if self.n_balls < 3 or not 0 < self.ball_d_mm < self.pitch_d_mm:
            raise ValueError("bearing needs n_balls >= 3 and 0 < ball_d_mm < pitch_d_mm")
        if not 0 <= self.contact_deg < 90:
            raise ValueError("bearing contact_deg must be in [0, 90)")

    def _ratio(self) -> float:
        return self.ball_d_mm / self.pitch_d_mm * math.cos(math.radians(self.contact_deg))

    def bpfo_hz(self, shaft_hz: float) -> float:
        """Ball-pass frequency of the outer race, (n/2)·f_r·(1 - (d/D)·cos φ), Hz."""
        return self.n_balls / 2 * shaft_hz * (1 - self._ratio())

    def bpfi_hz(self, shaft_hz: float) -> float:
        """Ball-pass frequency of the inner race, (n/2)·f_r·(1 + (d/D)·cos φ), Hz."""
        return self.n_balls / 2 * shaft_hz * (1 + self._ratio())


DEFAULT_BEARING: Final = BearingGeometry(
    n_balls=14, ball_d_mm=6.35, pitch_d_mm=36.0, contact_deg=15.0
)
"""A 7005-size angular-contact spindle bearing: BPFO ≈ 5.81 f_r, BPFI ≈ 8.19 f_r."""
