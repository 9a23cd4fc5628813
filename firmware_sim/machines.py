"""Physics-based fablab machine simulators with labelled faults.

`simulate_machine` turns a `MachineSpec` (machine kind, faults, parameter overrides) and a time
grid into the values of that kind's reading schema (`sensors.schema`), the job and firmware events,
and the ground-truth interval of every fault. `cnc_waveform` synthesises the waveform a CNC spindle
accelerometer would record, from the same vibration model that gives the mill's ``vib_rms_mms``
readings (`cnc_vib_rms_mms`).

Common conventions
------------------
* Time is in seconds from an arbitrary origin; ``t_s`` is any strictly increasing grid.
* Randomness comes from three independent streams derived from the caller's generator: schedule,
  sensor noise, fault randomness. Faults never change the draws, so a healthy and a faulty run with
  the same seed differ only by the faults' effects (and by what those effects delay: a printer
  whose heat-up timed out starts later jobs later).
* Jobs arrive as a renewal process (log-uniform job lengths and idle gaps; no day/night pattern).
* A fault is present for ``onset_s <= t < onset_s + duration_s`` (``duration_s=None``: to the end).
  Its `FaultInterval` is that span clipped to ``[t_s[0], t_s[-1]]``; faults outside the run get no
  interval. Faults of one kind combine by their largest severity. Faults whose effect grows
  (``tool_wear``, ``blade_wear``) ramp from 0 at the onset to full severity at the interval's end
  (the run's end when ``duration_s`` is None); the worn part is replaced when the interval ends.
* Outside fault intervals the machine is healthy, but states with inertia relax back with the
  model's own time constants once a fault clears: a re-attached hotend thermistor reads the
  overheated block cooling back to target (minutes), a chiller's water cools back to its set point.
* Every value is clipped to its `sensors.schema.FIELD_INFO` range (sensors saturate).
* ``ambient_c`` varies by ±1.5 °C over a 24 h sine of random phase.

Models and constants
--------------------
**printer3d** (simulated on an internal 1 s grid, read by sample-and-hold; ~0.6 s CPU per day):

* Hotend block: C = 12 J/K, loss 0.08 W/K to ambient + 0.02 W/K at 100 % part fan, heater 40 W
  (``heater_w``). Melting filament takes 3 ± 1 W at 200 K above ambient while printing
  (proportional to the temperature rise; Ornstein-Uhlenbeck, τ = 120 s). Full power would settle
  500 K above ambient: the runaway ceiling.
* Bed: C = 650 J/K, loss 1.4 W/K, heater 200 W (60 °C in ~2.5 min, 100 °C in ~6 min).
* Thermistors: first-order lag 2 s (hotend) / 3 s (bed), white noise 0.25 °C / 0.1 °C.
* Control: Klipper-style PID on the measured temperature with conditional integration
  (anti-windup), duty clamped to 0..1. Hotend kp = 0.04 /K, ki = 0.0008 /(K·s), kd = 0.15 s/K; bed
  kp = 0.1 /K, ki = 0.0008 /(K·s), kd = 0.8 s/K; derivative of the measurement smoothed (EMA 0.5).
  Healthy: ±2 °C while printing (±3 °C as the fan starts), ~2.5 °C/s heat-up, duty ~50-65 %.
* Jobs: gap 10 min-3 h; heat-up until both temperatures are within 2 °C for 10 s (or 20 min have
  passed: the simulated firmware has no heating-failed abort); a print of 1-6 h (``print_h``);
  then heaters and fan off. Material per job (±5 °C): PLA 205/60 °C fan 100 %, PETG 240/80 °C fan
  50 %, ABS 245/100 °C fan 15 %, TPU 225/55 °C fan 60 %, kept within 190-250 / 55-100 °C
  (``hotend_target_c``, ``bed_target_c``, ``fan_pct``); the part fan starts 60 s into the print.
  ``job_start`` at the start of heat-up, ``job_end`` at the end of the print.
* Chamber: air relaxes (τ = 900 s) towards ambient + 12 % of (bed - ambient).
* ``thermistor_detached``: the thermistor's coupling to the block falls to 5 % (severity 1) and
  its lag grows to 20 s, so the reading falls towards ambient, the PID saturates at 100 % and the
  true block temperature runs away towards ~420-520 °C (not reported).
* ``heater_failure``: heater power · (1 - severity): the temperature falls / never reaches the
  target while the duty saturates.
* ``fan_failure``: fan speed · (1 - severity) (``fan_pct`` is the tachometer reading): the fan reads
  0 while printing and the hotend duty drops by ~9 points.

**laser_cutter** (internal 1 s grid): CO2 tube current = ``tube_max_ma`` (28 mA) · power % while
lasing (cut moves of mean 6 s, travel of mean 2 s; job power 20-85 %, jobs 3-45 min, gaps
5 min-2 h). Heat into the water: 22 W per mA (25 kV, ~12 % efficiency). Water loop: tube jacket
(1.6 kJ/K, 0.5 W/K to ambient, measured at the tube outlet = ``chiller_water_c``, capped at 100 °C
by boiling) and reservoir (25 kJ/K, 6 W/K to ambient, 50 W pump heat), exchanging 69.8 W/K per
L/min of flow (``flow_lpm``, default 2.0 L/min ± 1 %). Chiller: on/off compressor of ``chiller_w``
(800 W) with a ±0.5 °C band around ``chiller_set_c`` (20 °C).

* ``flow_loss``: flow · (1 - severity · (1 - e^(-t/3 s))), recovering likewise: near 0 within
  seconds; the jacket then heats at ~0.2-0.4 K/s while lasing.
* ``chiller_failure``: compressor capacity · (1 - severity): the water warms steadily (~7 K/h
  idle, up to ~60 K/h lasing; towards ambient + 8 K when idle).

**cnc_mill** (vectorised on ``t_s``): each run has 4 part programs (20 min-2 h of operations of
2-15 min, 20 s tool changes); a job runs one of them (gaps 15 min-4 h), so equal operations recur.
An operation has a spindle speed of 8 000-18 000 rpm, a chip load of 0.02-0.07 mm/tooth (feed =
chip · ``teeth`` · rpm) and a depth factor of 0.8-3 A. Spin-up takes 4 s (+2.5 A). Spindle current
= 1.2 + 0.6 (rpm/18 000)² A (no load) + depth · feed/2400 · (chip/0.05)^-0.25 (specific cutting
energy), +5 % wear over each operation, ±6 % engagement noise. ``fs_hz`` is NaN (summary readings).

Vibration model (acceleration, shared by `cnc_waveform` and ``vib_rms_mms``), f_r = rpm/60:

* Rotor lines at 1, 2, 3 · f_r of velocity 0.6 · (f_r/200 Hz) · (1, 0.3, 0.12) mm/s RMS.
* Tooth-passing lines at k · ``teeth`` · f_r (k = 1..3) while cutting, the first of velocity
  0.5 · (chip/0.05)^0.75 mm/s RMS, then acceleration ratios 0.5, 0.25.
* White acceleration noise, one-sided PSD 2.5e-5 (m/s²)²/Hz (0.16 of it with the spindle off).
* ``chatter`` (cutting only): a line near the structural mode (``chatter_hz``, 750 Hz), at
  (⌊mode/f_r⌋ + 0.4) f_r so never on a harmonic of f_r, of velocity 5 mm/s · severity, amplitude
  modulated ±20 % at 2 Hz, with sidebands at ± tooth-passing frequency (0.25 · its velocity).
* ``bearing_outer`` / ``bearing_inner``: impacts of 25 m/s² · severity at BPFO / BPFI (±0.5 %
  jitter, ±10 % amplitude) ringing an 8 kHz housing resonance (damping ratio 0.06, zero-DC
  band-pass response), amplitude-modulated at f_r by 30 % (outer: rotating unbalance load) / 80 %
  (inner: the defect passes through the load zone); plus looseness: 3 mm/s · severity added to the
  1-3 · f_r lines, and the noise floor · (1 + 0.5 severity)².
* ``tool_wear``: spindle current · (1 + 0.3 s) while cutting, tooth-passing lines · (1 + 0.6 s),
  noise amplitude · (1 + 0.5 s), with s = severity · progress through the interval.

``vib_rms_mms`` is the velocity RMS over 10-1000 Hz of that model (the in-band lines' powers,
impulse trains by their Fourier series, plus the noise PSD integrated as S/(2πf)²), read with ±3 %
estimation noise. Cutting at 8 000-18 000 rpm: healthy ~0.6-1.0 mm/s (ISO 10816-3 zone A),
tool_wear up to ~1.1-1.3, bearing faults ~3.4-3.9 (zone C), chatter ~5.3 (zone D).

**vinyl_cutter** (vectorised): jobs 1-20 min, gaps 5 min-2 h; cut moves (mean 5 s) and travel
(mean 1.5 s). Per job: cut speed 50-400 mm/s (``cut_speed_mm_s``), blade force 60-250 g
(``blade_force_g``). Motor current 0.5 A + 0.0025 A per mm/s + 0.002 A per g of blade force while
cutting (travel at 1.5 · speed, blade up), 0.1 A holding when idle. ``duty_pct`` is the blade-down
share of the last 60 s (a stall keeps the blade down).

* ``blade_wear``: blade force · (1 + 0.6 s), drag current · (1 + 0.5 s), s = severity · progress.
* ``motor_stall`` (in a job): speed 0, current (1.2 + 1.8 severity) A with a decaying spike at the
  stall; a ``fault`` event (code ``motor_stall``) 0.5 s after each stall begins.

**embroidery** (vectorised): jobs 10-90 min, gaps 10 min-3 h; colour blocks of 2-12 min separated
by 8-30 s stops (trim, needle change; 6 needles). Stitch rate 500-1000 spm per job
(``stitch_rate_spm``) · ~0.95, motor current 0.25 + 0.0011 A per spm, upper-thread tension
90-130 g per job (``tension_g``) ± 4 %, NaN when not stitching. Thread breaks: Poisson at
``break_rate_per_h`` (0.3 /h) of stitching time (thinning of a 40 /h process); each stops stitching
for 45-150 s (re-threading).

* ``tension_fault``: break rate · (1 + 20 severity) (capped at 40 /h), tension noise
  · (1 + 4 severity) plus offsets of ±35 % · severity redrawn every 20 s.
* ``motor_overload``: current · (1 + 0.9 severity), stitch rate · (1 - 0.35 severity).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final

import numpy as np
import numpy.typing as npt
from scipy import signal

from sensors.schema import FIELD_INFO, DeviceKind

__all__ = [
    "DEFAULT_BEARING",
    "DEFAULT_CHATTER_MODE_HZ",
    "FAULT_KINDS",
    "MACHINE_PARAMS",
    "BearingGeometry",
    "FaultInterval",
    "MachineEvent",
    "MachineFault",
    "MachineRun",
    "MachineSpec",
    "cnc_vib_rms_mms",
    "cnc_waveform",
    "simulate_machine",
]

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
"""Accepted ``MachineSpec.params`` per kind: name -> (min, max). Defaults in the module docs."""

DEFAULT_CHATTER_MODE_HZ: Final = 750.0
"""Structural mode of the spindle-tool system near which chatter appears, Hz."""

# Integration step of the closed-loop (thermal) simulators, s.
_DT_S: Final = 1.0
_DAY_S: Final = 86_400.0
_AMBIENT_SWING_C: Final = 1.5
_HOUR_S: Final = 3600.0

# Reading fields that are not float columns (CNC waveforms are attached by callers).
_NON_FLOAT_FIELDS: Final = frozenset({"vib_ms2"})


# ---------------------------------------------------------------------------------------------
# Public data types


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


# ---------------------------------------------------------------------------------------------
# Helpers shared by the simulators


def _loguniform(rng: np.random.Generator, lo: float, hi: float, size: int) -> FloatArray:
    return np.exp(rng.uniform(math.log(lo), math.log(hi), size))


def _renewal(
    rng: np.random.Generator,
    t0: float,
    t1: float,
    *,
    dur_s: tuple[float, float],
    gap_s: tuple[float, float],
    first_gap_max_s: float,
) -> tuple[FloatArray, FloatArray]:
    """Job (start, end) arrays: log-uniform durations and gaps, first start in a short gap."""
    starts: list[float] = []
    ends: list[float] = []
    t = t0 + float(rng.uniform(0.0, first_gap_max_s))
    while t <= t1:
        d = float(_loguniform(rng, *dur_s, 1)[0])
        starts.append(t)
        ends.append(t + d)
        t += d + float(_loguniform(rng, *gap_s, 1)[0])
    return np.asarray(starts, dtype=np.float64), np.asarray(ends, dtype=np.float64)


def _alternating(
    rng: np.random.Generator, start: float, end: float, on_mean_s: float, off_mean_s: float
) -> tuple[FloatArray, FloatArray]:
    """On-segments of an alternating renewal process (exponential on/off) within [start, end)."""
    span = end - start
    n = int(span / (on_mean_s + off_mean_s) * 1.5) + 8
    while True:
        on = np.maximum(rng.exponential(on_mean_s, n), 0.3)
        off = np.maximum(rng.exponential(off_mean_s, n), 0.3)
        cycle = on + off
        if cycle.sum() >= span:
            break
        n *= 2
    s = start + np.concatenate(([0.0], np.cumsum(cycle)[:-1]))
    keep = s < end
    return s[keep], np.minimum(s[keep] + on[keep], end)


def _lookup(starts: FloatArray, ends: FloatArray, t: FloatArray) -> tuple[IntArray, BoolArray]:
    """Index of the segment containing each t (clipped to 0) and whether t is inside one."""
    if starts.size == 0:
        return np.zeros(t.size, dtype=np.intp), np.zeros(t.size, dtype=bool)
    k = np.searchsorted(starts, t, side="right") - 1
    kc = np.clip(k, 0, None)
    return kc, (k >= 0) & (t < ends[kc])


def _on_time(starts: FloatArray, ends: FloatArray, t: FloatArray) -> FloatArray:
    """Cumulative time spent inside the (sorted, disjoint) segments up to each t, s."""
    if starts.size == 0:
        return np.zeros(t.size)
    dur = ends - starts
    cum = np.concatenate(([0.0], np.cumsum(dur)))
    k = np.searchsorted(starts, t, side="right")
    km1 = np.clip(k - 1, 0, None)
    partial = np.clip(t - starts[km1], 0.0, dur[km1])
    return np.where(k >= 1, cum[km1] + partial, 0.0)


def _duty_pct(starts: FloatArray, ends: FloatArray, t: FloatArray, window_s: float) -> FloatArray:
    """Share of the trailing window spent inside the segments, %."""
    on = _on_time(starts, ends, t) - _on_time(starts, ends, t - window_s)
    return np.clip(100.0 * on / window_s, 0.0, 100.0)


def _severity(faults: tuple[MachineFault, ...], kind: str, t: FloatArray) -> FloatArray:
    """Severity of a fault kind at each t (0 when absent; largest of overlapping faults)."""
    out = np.zeros(t.size)
    for f in faults:
        if f.kind == kind:
            m = (t >= f.onset_s) & (t < f.end_s)
            out[m] = np.maximum(out[m], f.severity)
    return out


def _ramped(
    faults: tuple[MachineFault, ...], kind: str, t: FloatArray, t_last: float
) -> FloatArray:
    """Severity · progress through the fault interval (0 at onset, 1 at its end or run end)."""
    out = np.zeros(t.size)
    for f in faults:
        if f.kind == kind:
            end = min(f.end_s, t_last)
            m = (t >= f.onset_s) & (t < f.end_s)
            span = max(end - f.onset_s, 1e-9)
            prog = np.clip((t[m] - f.onset_s) / span, 0.0, 1.0)
            out[m] = np.maximum(out[m], f.severity * prog)
    return out


def _ou(rng: np.random.Generator, n: int, dt_s: float, tau_s: float) -> FloatArray:
    """Unit-variance Ornstein-Uhlenbeck samples on a uniform grid."""
    a = math.exp(-dt_s / tau_s)
    w = rng.standard_normal(n)
    x = signal.lfilter([math.sqrt(1 - a * a)], [1.0, -a], w)
    return np.asarray(x, dtype=np.float64)


def _internal_grid(t: FloatArray) -> tuple[FloatArray, IntArray]:
    """Uniform `_DT_S` grid covering ``t`` and, per sample, the index of the latest grid step."""
    t0 = float(t[0])
    n = math.floor((float(t[-1]) - t0) / _DT_S + 1e-9) + 1
    tau = t0 + _DT_S * np.arange(n, dtype=np.float64)
    idx = np.clip(np.floor((t - t0) / _DT_S + 1e-9).astype(np.intp), 0, n - 1)
    return tau, idx


def _ambient(rng: np.random.Generator, mean_c: float, t: FloatArray) -> FloatArray:
    phase = float(rng.uniform(0.0, 2 * math.pi))
    return mean_c + _AMBIENT_SWING_C * np.sin(2 * math.pi * t / _DAY_S + phase)


def _job_events(
    device_id: str, starts: FloatArray, ends: FloatArray, t_last: float
) -> list[MachineEvent]:
    events: list[MachineEvent] = []
    for k, (s, e) in enumerate(zip(starts.tolist(), ends.tolist(), strict=True)):
        job_id = f"{device_id}-{k + 1:04d}"
        events.append(MachineEvent(s, "job_start", {"job_id": job_id}))
        if e <= t_last:
            events.append(MachineEvent(e, "job_end", {"job_id": job_id, "ok": True}))
    return events


Values = dict[str, FloatArray]
Streams = tuple[np.random.Generator, np.random.Generator, np.random.Generator]


# ---------------------------------------------------------------------------------------------
# 3D printer

_HOT_C_J_K: Final = 12.0
_HOT_LOSS_W_K: Final = 0.08
_HOT_FAN_W_K: Final = 0.02
_HOT_SENSOR_TAU_S: Final = 2.0
_HOT_NOISE_C: Final = 0.25
_HOT_GAINS: Final = (0.04, 0.0008, 0.15)
_BED_C_J_K: Final = 650.0
_BED_LOSS_W_K: Final = 1.4
_BED_HEATER_W: Final = 200.0
_BED_SENSOR_TAU_S: Final = 3.0
_BED_NOISE_C: Final = 0.1
_BED_GAINS: Final = (0.1, 0.0008, 0.8)
_MELT_W: Final = (3.0, 1.0, 120.0)  # mean, sd, correlation time
_DETACHED_COUPLING: Final = 0.05
_DETACHED_TAU_S: Final = 20.0
_CHAMBER_SHARE: Final = 0.12
_CHAMBER_TAU_S: Final = 900.0
_HEAT_TIMEOUT_S: Final = 1200.0
# (name, hotend °C, bed °C, fan %, probability)
_MATERIALS: Final = (
    ("PLA", 205.0, 60.0, 100.0, 0.55),
    ("PETG", 240.0, 80.0, 50.0, 0.25),
    ("ABS", 245.0, 100.0, 15.0, 0.12),
    ("TPU", 225.0, 55.0, 60.0, 0.08),
)

_IDLE, _HEAT, _PRINT = 0, 1, 2


def _pid(
    target: float,
    meas: float,
    deriv: float,
    integ: float,
    gains: tuple[float, float, float],
) -> tuple[float, float]:
    """One Klipper-style PID step (dt = 1 s): (duty 0..1, new integral)."""
    if target <= 0.0:
        return 0.0, 0.0
    kp, ki, kd = gains
    err = target - meas
    new_integ = min(max(integ + err * _DT_S, 0.0), 1.0 / ki)
    co = kp * err + ki * new_integ - kd * deriv
    duty = min(max(co, 0.0), 1.0)
    # Conditional integration: keep the integral only while the output is not saturated.
    return duty, (new_integ if duty == co else integ)


@dataclass(slots=True)
class _PrintJobs:
    """The printer firmware's job sequence: idle -> heat-up -> print -> idle (targets, fan)."""

    device_id: str
    gaps_s: list[float]
    prints_s: list[float]
    hot_c: list[float]
    bed_c: list[float]
    fan_pct: list[float]
    next_start: float
    events: list[MachineEvent] = field(default_factory=list)
    phase: int = _IDLE
    j: int = 0
    hot_t: float = 0.0
    bed_t: float = 0.0
    fan_cmd: float = 0.0
    heat_start: float = 0.0
    print_start: float = 0.0
    print_end: float = 0.0
    settle: float = 0.0

    def step(self, ti: float, mh: float, mb: float) -> None:
        """Advance to time ``ti`` given the measured hotend and bed temperatures, °C."""
        if self.phase == _IDLE:
            if ti >= self.next_start and self.j < len(self.gaps_s):
                self.phase = _HEAT
                self.hot_t, self.bed_t = self.hot_c[self.j], self.bed_c[self.j]
                self.heat_start, self.settle = ti, 0.0
                self.events.append(MachineEvent(ti, "job_start", {"job_id": self._job_id()}))
        elif self.phase == _HEAT:
            # M190/M109: wait until both are within 2 °C for 10 s (no heating-failed abort).
            near = abs(mh - self.hot_t) <= 2.0 and (
                self.bed_t <= 0.0 or abs(mb - self.bed_t) <= 2.0
            )
            self.settle = self.settle + _DT_S if near else 0.0
            if self.settle >= 10.0 or ti - self.heat_start >= _HEAT_TIMEOUT_S:
                self.phase = _PRINT
                self.print_start, self.print_end = ti, ti + self.prints_s[self.j]
        elif ti >= self.print_end:
            self.phase = _IDLE
            self.events.append(MachineEvent(ti, "job_end", {"job_id": self._job_id(), "ok": True}))
            self.hot_t = self.bed_t = 0.0
            self.j += 1
            self.next_start = ti + (self.gaps_s[self.j] if self.j < len(self.gaps_s) else math.inf)
        printing = self.phase == _PRINT
        # The part fan starts after the first layer.
        self.fan_cmd = self.fan_pct[self.j] if printing and ti - self.print_start >= 60.0 else 0.0

    def _job_id(self) -> str:
        return f"{self.device_id}-{self.j + 1:04d}"


def _printer_jobs(spec: MachineSpec, rng: np.random.Generator, t0: float, t1: float) -> _PrintJobs:
    """Draw the job sequence (gaps, print lengths, materials), applying parameter overrides."""
    prm = spec.params
    n_jobs = int((t1 - t0) / (600.0 + 3600.0)) + 2
    gaps = _loguniform(rng, 600.0, 3 * _HOUR_S, n_jobs)
    gaps[0] = rng.uniform(0.0, _HOUR_S)
    prints = _loguniform(rng, _HOUR_S, 6 * _HOUR_S, n_jobs)
    probs = np.array([m[4] for m in _MATERIALS])
    mat = rng.choice(len(_MATERIALS), size=n_jobs, p=probs / probs.sum())
    hot_jit = rng.choice([-5.0, 0.0, 5.0], size=n_jobs)
    bed_jit = rng.choice([-5.0, 0.0, 5.0], size=n_jobs)
    hot = np.clip(np.array([_MATERIALS[m][1] for m in mat]) + hot_jit, 190.0, 250.0)
    bed = np.clip(np.array([_MATERIALS[m][2] for m in mat]) + bed_jit, 55.0, 100.0)
    fan = np.array([_MATERIALS[m][3] for m in mat])
    for key, arr, scale in (
        ("print_h", prints, _HOUR_S),
        ("hotend_target_c", hot, 1.0),
        ("bed_target_c", bed, 1.0),
        ("fan_pct", fan, 1.0),
    ):
        if key in prm:
            arr[:] = prm[key] * scale
    return _PrintJobs(
        device_id=spec.device_id,
        gaps_s=gaps.tolist(),
        prints_s=prints.tolist(),
        hot_c=hot.tolist(),
        bed_c=bed.tolist(),
        fan_pct=fan.tolist(),
        next_start=t0 + float(gaps[0]),
    )


def _sim_printer(
    spec: MachineSpec, t: FloatArray, streams: Streams
) -> tuple[Values, list[MachineEvent]]:
    r_sched, r_noise, _ = streams
    tau, idx = _internal_grid(t)
    n = tau.size
    amb = _ambient(r_sched, spec.params.get("ambient_c", 22.0), tau).tolist()
    jobs = _printer_jobs(spec, r_sched, float(t[0]), float(t[-1]))
    heater_w = spec.params.get("heater_w", 40.0)

    nh = r_noise.normal(0.0, _HOT_NOISE_C, n).tolist()
    nb = r_noise.normal(0.0, _BED_NOISE_C, n).tolist()
    melt = np.maximum(_MELT_W[0] + _MELT_W[1] * _ou(r_noise, n, _DT_S, _MELT_W[2]), 0.0).tolist()
    out_noise = r_noise.standard_normal((2, t.size))

    s_det = np.minimum(_severity(spec.faults, "thermistor_detached", tau), 1.0)
    coupling = (1.0 - (1.0 - _DETACHED_COUPLING) * s_det).tolist()
    tau_m = _HOT_SENSOR_TAU_S + (_DETACHED_TAU_S - _HOT_SENSOR_TAU_S) * s_det
    alpha_m = (1.0 - np.exp(-_DT_S / tau_m)).tolist()
    heat_k = (1.0 - np.minimum(_severity(spec.faults, "heater_failure", tau), 1.0)).tolist()
    fan_k = (1.0 - np.minimum(_severity(spec.faults, "fan_failure", tau), 1.0)).tolist()
    alpha_bed = 1.0 - math.exp(-_DT_S / _BED_SENSOR_TAU_S)
    alpha_ch = 1.0 - math.exp(-_DT_S / _CHAMBER_TAU_S)
    bed_decay = math.exp(-_DT_S * _BED_LOSS_W_K / _BED_C_J_K)

    # Columns: hotend, hotend target, hotend duty, bed, bed target, bed duty, fan, chamber.
    rows: list[tuple[float, ...]] = []
    times = tau.tolist()
    th = tm = tb = tbm = tch = amb[0]
    sm_h = sm_b = th
    ih = ib = 0.0
    for i in range(n):
        a = amb[i]
        mh = tm + nh[i]
        mb = tbm + nb[i]
        jobs.step(times[i], mh, mb)
        # Controllers, derivative on the smoothed measurement.
        sm_h_new = sm_h + 0.5 * (mh - sm_h)
        sm_b_new = sm_b + 0.5 * (mb - sm_b)
        uh, ih = _pid(jobs.hot_t, mh, sm_h_new - sm_h, ih, _HOT_GAINS)
        ub, ib = _pid(jobs.bed_t, mb, sm_b_new - sm_b, ib, _BED_GAINS)
        sm_h, sm_b = sm_h_new, sm_b_new
        fan_act = jobs.fan_cmd * fan_k[i]
        rows.append((mh, jobs.hot_t, 100.0 * uh, mb, jobs.bed_t, 100.0 * ub, fan_act, tch))

        # Plant: exact first-order steps for inputs constant over dt.
        loss = _HOT_LOSS_W_K + _HOT_FAN_W_K * fan_act / 100.0
        # Melting filament takes heat in proportion to how far it is heated (nominal at 200 K).
        melt_w = melt[i] * max(th - a, 0.0) / 200.0 if jobs.phase == _PRINT else 0.0
        teq = a + (heater_w * uh * heat_k[i] - melt_w) / loss
        th = teq + (th - teq) * math.exp(-_DT_S * loss / _HOT_C_J_K)
        tm += (a + coupling[i] * (th - a) - tm) * alpha_m[i]
        beq = a + _BED_HEATER_W * ub / _BED_LOSS_W_K
        tb = beq + (tb - beq) * bed_decay
        tbm += (tb - tbm) * alpha_bed
        tch += (a + _CHAMBER_SHARE * (tb - a) - tch) * alpha_ch

    cols = np.asarray(rows, dtype=np.float64).T[:, idx]
    names = ("hotend_c", "hotend_target_c", "hotend_duty_pct", "bed_c", "bed_target_c")
    values: Values = {name: cols[c] for c, name in enumerate(names)}
    values["bed_duty_pct"] = cols[5]
    values["fan_pct"] = np.where(cols[6] > 0, cols[6] * (1 + 0.01 * out_noise[0]), 0.0)
    values["chamber_c"] = cols[7] + 0.1 * out_noise[1]
    return values, jobs.events


# ---------------------------------------------------------------------------------------------
# Laser cutter

_TUBE_HEAT_W_PER_MA: Final = 22.0
_JACKET_C_J_K: Final = 1600.0
_JACKET_UA_W_K: Final = 0.5
_RESERVOIR_C_J_K: Final = 25_000.0
_RESERVOIR_UA_W_K: Final = 6.0
_PUMP_HEAT_W: Final = 50.0
_FLOW_W_K_PER_LPM: Final = 4186.0 / 60.0
_CHILLER_BAND_C: Final = 0.5
_FLOW_TAU_S: Final = 3.0
_BOILING_C: Final = 100.0


def _flow_factor(faults: tuple[MachineFault, ...], t: FloatArray) -> FloatArray:
    """Remaining flow share: falls with a 3 s time constant at onset, recovers likewise."""
    out = np.ones(t.size)
    for f in faults:
        if f.kind != "flow_loss":
            continue
        s = min(f.severity, 1.0)
        dt_on = np.maximum(t - f.onset_s, 0.0)
        g = np.where(t < f.onset_s, 0.0, 1.0 - np.exp(-dt_on / _FLOW_TAU_S))
        if math.isfinite(f.end_s):
            g_end = 1.0 - math.exp(-(f.end_s - f.onset_s) / _FLOW_TAU_S)
            after = t >= f.end_s
            g[after] = g_end * np.exp(-(t[after] - f.end_s) / _FLOW_TAU_S)
        out *= 1.0 - s * g
    return out


def _sim_laser(
    spec: MachineSpec, t: FloatArray, streams: Streams
) -> tuple[Values, list[MachineEvent]]:
    r_sched, r_noise, _ = streams
    prm = spec.params
    tau, idx = _internal_grid(t)
    n = tau.size
    t0, t1 = float(t[0]), float(t[-1])
    amb = _ambient(r_sched, prm.get("ambient_c", 22.0), tau)
    starts, ends = _renewal(
        r_sched, t0, t1, dur_s=(180.0, 2700.0), gap_s=(300.0, 7200.0), first_gap_max_s=1800.0
    )
    seg_s: list[FloatArray] = []
    seg_e: list[FloatArray] = []
    seg_p: list[FloatArray] = []
    for s, e in zip(starts.tolist(), ends.tolist(), strict=True):
        power = round(float(r_sched.uniform(20.0, 85.0)))
        a, b = _alternating(r_sched, s, e, 6.0, 2.0)
        seg_s.append(a)
        seg_e.append(b)
        seg_p.append(np.full(a.size, float(power)))
    ss = np.concatenate([np.empty(0), *seg_s])
    se = np.concatenate([np.empty(0), *seg_e])
    sp = np.concatenate([np.empty(0), *seg_p])
    k, lasing = _lookup(ss, se, tau)
    power_pct = np.where(lasing, sp[k] if sp.size else 0.0, 0.0)
    current_ma = prm.get("tube_max_ma", 28.0) * power_pct / 100.0
    heat_w = (_TUBE_HEAT_W_PER_MA * current_ma).tolist()

    q_nom = prm.get("flow_lpm", 2.0)
    flow = q_nom * (1.0 + 0.01 * _ou(r_noise, n, _DT_S, 30.0)) * _flow_factor(spec.faults, tau)
    flow = np.maximum(flow, 0.0)
    g_w_k = (_FLOW_W_K_PER_LPM * flow).tolist()
    chill = (
        prm.get("chiller_w", 800.0)
        * (1.0 - np.minimum(_severity(spec.faults, "chiller_failure", tau), 1.0))
    ).tolist()
    out_noise = r_noise.standard_normal((4, t.size))
    set_c = prm.get("chiller_set_c", 20.0)
    amb_l = amb.tolist()

    o_water = [0.0] * n
    tr = tj = set_c
    comp_on = False
    for i in range(n):
        a = amb_l[i]
        o_water[i] = tj
        g = g_w_k[i]
        # Tube jacket: exact step towards its equilibrium with the reservoir and the room.
        h = g + _JACKET_UA_W_K
        teq = (heat_w[i] + g * tr + _JACKET_UA_W_K * a) / h
        tj = min(teq + (tj - teq) * math.exp(-_DT_S * h / _JACKET_C_J_K), _BOILING_C)
        # Reservoir with a thermostatic on/off compressor.
        if comp_on and tr < set_c - _CHILLER_BAND_C:
            comp_on = False
        elif not comp_on and tr > set_c + _CHILLER_BAND_C:
            comp_on = True
        q_out = chill[i] if comp_on else 0.0
        tr += (
            _DT_S
            * (g * (tj - tr) + _RESERVOIR_UA_W_K * (a - tr) + _PUMP_HEAT_W - q_out)
            / _RESERVOIR_C_J_K
        )

    cur = current_ma[idx]
    values: Values = {
        "chiller_water_c": np.asarray(o_water)[idx] + 0.05 * out_noise[0],
        "flow_lpm": np.maximum(flow[idx] + 0.02 * out_noise[1], 0.0),
        "tube_current_ma": np.where(cur > 0, np.maximum(cur + 0.15 * out_noise[2], 0.0), 0.0),
        "laser_power_pct": power_pct[idx],
        "ambient_c": amb[idx] + 0.1 * out_noise[3],
    }
    return values, _job_events(spec.device_id, starts, ends, t1)


# ---------------------------------------------------------------------------------------------
# CNC mill: vibration model shared by readings and waveforms

_ROTOR_V_MMS: Final = 0.6  # 1x velocity RMS at f_r = 200 Hz
_ROTOR_SHARES: Final = (1.0, 0.3, 0.12)
_LOOSE_V_MMS: Final = 3.0
_LOOSE_SHARES: Final = (0.7, 0.55, 0.45)
_TP_V_MMS: Final = 0.5
_TP_HARMONICS: Final = (1.0, 0.5, 0.25)
_NOMINAL_CHIP_MM: Final = 0.05
_NOISE_PSD: Final = 2.5e-5  # (m/s^2)^2/Hz, one-sided
_CHATTER_V_MMS: Final = 5.0
_CHATTER_AM: Final = (0.2, 2.0)  # depth, frequency Hz
_CHATTER_SIDEBAND: Final = 0.25
_BEARING_RES_HZ: Final = 8000.0
_BEARING_ZETA: Final = 0.06
_BEARING_PEAK_MS2: Final = 25.0
_BEARING_MOD: Final = {"bearing_outer": 0.3, "bearing_inner": 0.8}
_BAND_HZ: Final = (10.0, 1000.0)
_WAVE_FS_MIN_HZ: Final = 25_600.0
_CNC_FAULTS: Final = FAULT_KINDS[DeviceKind.CNC_MILL]

# Normalise the looseness shares to unit RSS so _LOOSE_V_MMS is the added velocity RMS.
_LOOSE_NORM: Final = math.sqrt(sum(s * s for s in _LOOSE_SHARES))


@dataclass(frozen=True, slots=True)
class _Line:
    """A sinusoidal component: frequency, Hz, and acceleration amplitude, m/s² (per sample)."""

    freq: FloatArray
    amp: FloatArray
    am: bool = False


def _vel_amp(freq: FloatArray, v_rms_mms: FloatArray) -> FloatArray:
    """Acceleration amplitude (m/s²) of a sinusoid of the given velocity RMS (mm/s)."""
    return np.asarray(v_rms_mms * 1e-3 * math.sqrt(2) * 2 * math.pi * freq, dtype=np.float64)


def _ring_gain(freq: FloatArray) -> FloatArray:
    """|H(2πf)| of one bearing impact's ring, s.

    The housing's acceleration rings a resonance as a second-order band-pass with zero DC gain:
    h(t) = e^(-sigmat)(cos ω_d t - (sigma/ω_d) sin ω_d t), H(s) = s / ((s + sigma)² + ω_d²).
    """
    wn = 2 * math.pi * _BEARING_RES_HZ
    sigma = _BEARING_ZETA * wn
    wd = wn * math.sqrt(1 - _BEARING_ZETA**2)
    jw = 1j * 2 * math.pi * freq
    return np.asarray(np.abs(jw / ((sigma + jw) ** 2 + wd**2)), dtype=np.float64)


def _vib_model(
    rpm: FloatArray,
    chip_mm: FloatArray,
    sev: Mapping[str, FloatArray],
    *,
    teeth: int,
    bearing: BearingGeometry,
    mode_hz: float,
    bearing_lines: bool,
) -> tuple[list[_Line], FloatArray]:
    """Lines and white-noise PSD ((m/s²)²/Hz) of the vibration model at each sample.

    With ``bearing_lines`` the bearing impulse trains are included as their Fourier series (for
    band RMS); without, the caller synthesises them in time.
    """
    fr = rpm / 60.0
    running = rpm > 0
    cutting = running & (chip_mm > 0)
    s_ch = np.where(cutting, sev["chatter"], 0.0)
    s_tw = np.where(cutting, sev["tool_wear"], 0.0)
    s_b = np.where(running, sev["bearing_outer"] + sev["bearing_inner"], 0.0)
    chip_ratio = np.where(cutting, chip_mm, 0.0) / _NOMINAL_CHIP_MM

    # Everything at integer multiples of f_r adds coherently: one line per order.
    orders: dict[int, FloatArray] = {}
    for k in range(1, 4):
        v = _ROTOR_V_MMS * (fr / 200.0) * _ROTOR_SHARES[k - 1]
        v = v + _LOOSE_V_MMS * s_b * _LOOSE_SHARES[k - 1] / _LOOSE_NORM
        orders[k] = _vel_amp(k * fr, v)
    tp1 = _vel_amp(teeth * fr, _TP_V_MMS * chip_ratio**0.75 * (1 + 0.6 * s_tw))
    for k, ratio in enumerate(_TP_HARMONICS, start=1):
        order = k * teeth
        orders[order] = orders.get(order, np.zeros(rpm.size)) + ratio * tp1
    lines = [_Line(o * fr, amp) for o, amp in sorted(orders.items())]

    # Chatter: near the structural mode, 0.4 f_r away from every harmonic of f_r.
    safe_fr = np.where(running, fr, 1.0)
    fc = np.where(running, (np.floor(mode_hz / safe_fr) + 0.4) * safe_fr, 0.0)
    ac = _vel_amp(fc, _CHATTER_V_MMS * s_ch)
    lines.append(_Line(fc, ac, am=True))
    lines.extend(
        _Line(f_sb, _vel_amp(f_sb, _CHATTER_SIDEBAND * _CHATTER_V_MMS * s_ch))
        for f_sb in (fc + teeth * fr, np.abs(fc - teeth * fr))
    )

    if bearing_lines:
        for kind, mod in _BEARING_MOD.items():
            s = np.where(running, sev[kind], 0.0)
            if not np.any(s > 0):
                continue
            fd = np.asarray(
                bearing.bpfo_hz(1.0) * fr if kind == "bearing_outer" else bearing.bpfi_hz(1.0) * fr
            )
            a = _BEARING_PEAK_MS2 * s
            lines.append(_Line(fr, mod * a * fd * _ring_gain(fr)))  # modulation of the mean
            k_max = int(np.ceil((_BAND_HZ[1] + fr.max()) / max(float(fd[s > 0].min()), 1.0)))
            for k in range(1, k_max + 1):
                f = k * fd
                lines.append(_Line(f, 2 * a * fd * _ring_gain(f)))
                lines.append(_Line(f + fr, mod * a * fd * _ring_gain(f + fr)))
                lines.append(_Line(np.abs(f - fr), mod * a * fd * _ring_gain(np.abs(f - fr))))

    psd = _NOISE_PSD * np.where(running, 1.0, 0.16) * ((1 + 0.5 * s_tw) * (1 + 0.5 * s_b)) ** 2
    return lines, np.asarray(psd, dtype=np.float64)


def _band_velocity_ms(lines: list[_Line], psd: FloatArray) -> FloatArray:
    """Velocity mean square over 10-1000 Hz, (mm/s)²."""
    lo, hi = _BAND_HZ
    ms = psd * (1 / lo - 1 / hi) / (4 * math.pi**2)
    for line in lines:
        in_band = (line.freq >= lo) & (line.freq <= hi)
        safe_f = np.where(in_band, line.freq, 1.0)
        v = np.where(in_band, line.amp / (2 * math.pi * safe_f), 0.0)
        gain = 1 + _CHATTER_AM[0] ** 2 / 2 if line.am else 1.0
        ms = ms + v * v / 2 * gain
    return np.asarray(ms * 1e6, dtype=np.float64)


def _check_cnc_args(rpm: float, teeth: int, active_faults: frozenset[str], severity: float) -> None:
    if not (math.isfinite(rpm) and rpm >= 0):
        raise ValueError("rpm must be finite and >= 0")
    if teeth < 1:
        raise ValueError("teeth must be >= 1")
    unknown = sorted(set(active_faults) - set(_CNC_FAULTS))
    if unknown:
        raise ValueError(f"unknown cnc_mill fault kind {unknown[0]!r}")
    if not (math.isfinite(severity) and severity >= 0):
        raise ValueError("severity must be finite and >= 0")


def _chip(rpm: float, teeth: int, feed_mm_min: float | None) -> float:
    if rpm <= 0:
        return 0.0
    if feed_mm_min is None:
        return _NOMINAL_CHIP_MM
    return max(feed_mm_min, 0.0) / (teeth * rpm)


def cnc_vib_rms_mms(
    *,
    rpm: float,
    teeth: int = 4,
    active_faults: frozenset[str] = frozenset(),
    severity: float = 1.0,
    bearing: BearingGeometry = DEFAULT_BEARING,
    feed_mm_min: float | None = None,
    chatter_mode_hz: float = DEFAULT_CHATTER_MODE_HZ,
) -> float:
    """Velocity RMS (10-1000 Hz) of the spindle vibration model, mm/s (no estimation noise).

    Args:
        rpm: Spindle speed, 1/min (0: spindle off, only the noise floor remains).
        teeth: Cutter teeth.
        active_faults: Active ``cnc_mill`` fault kinds.
        severity: Severity applied to every active fault.
        bearing: Spindle bearing geometry.
        feed_mm_min: Feed rate, mm/min; None means cutting at a 0.05 mm/tooth chip load, 0 means
            not cutting.
        chatter_mode_hz: Structural mode near which chatter appears, Hz.

    Returns:
        Velocity RMS, mm/s: the quantity ISO 10816-3 zones are defined on.
    """
    _check_cnc_args(rpm, teeth, active_faults, severity)
    sev = {k: np.array([severity if k in active_faults else 0.0]) for k in _CNC_FAULTS}
    chip = np.array([_chip(rpm, teeth, feed_mm_min)])
    lines, psd = _vib_model(
        np.array([float(rpm)]),
        chip,
        sev,
        teeth=teeth,
        bearing=bearing,
        mode_hz=chatter_mode_hz,
        bearing_lines=True,
    )
    return float(np.sqrt(_band_velocity_ms(lines, psd))[0])


def _impulse_train(
    *,
    n: int,
    fs_hz: float,
    t_first_s: float,
    fd_hz: float,
    fr_hz: float,
    peak_ms2: float,
    mod: float,
    rng: np.random.Generator,
) -> FloatArray:
    """Impulses at ``fd_hz`` (0.5 % jitter) ringing the bearing resonance, amplitude-modulated."""
    wn = 2 * math.pi * _BEARING_RES_HZ
    sigma = _BEARING_ZETA * wn
    wd = wn * math.sqrt(1 - _BEARING_ZETA**2)
    ring = math.ceil(7.0 / sigma * fs_hz)  # e^-7: the ring has died out
    t_start = t_first_s - ring / fs_hz
    t_stop = t_first_s + n / fs_hz
    j = np.arange(math.floor(t_start * fd_hz), math.ceil(t_stop * fd_hz) + 1, dtype=np.float64)
    phase0 = float(rng.uniform(0.0, 1.0))
    tj = (j + phase0 + 0.005 * rng.standard_normal(j.size)) / fd_hz
    psi = float(rng.uniform(0.0, 2 * math.pi))
    amps = peak_ms2 * (1 + mod * np.cos(2 * math.pi * fr_hz * tj + psi))
    amps = amps * (1 + 0.1 * rng.standard_normal(j.size))
    pos = np.round((tj - t_start) * fs_hz).astype(np.intp)
    keep = (pos >= 0) & (pos < n + ring)
    e = np.zeros(n + ring)
    np.add.at(e, pos[keep], amps[keep])
    # Impulse-invariant ring h[k] = r^k (cos kθ - c sin kθ), the sampled band-pass response of
    # `_ring_gain`, with h[0] halved (trapezoidal correction) so its DC gain stays ~0.
    r = math.exp(-sigma / fs_hz)
    theta = wd / fs_hz
    c = sigma / wd
    b = [0.5, -c * r * math.sin(theta), -0.5 * r * r]
    y = signal.lfilter(b, [1.0, -2 * r * math.cos(theta), r * r], e)
    return np.asarray(y[ring:], dtype=np.float64)


def cnc_waveform(
    *,
    rpm: float,
    fs_hz: float,
    n: int,
    rng: np.random.Generator,
    teeth: int = 4,
    active_faults: frozenset[str] = frozenset(),
    severity: float = 1.0,
    bearing: BearingGeometry = DEFAULT_BEARING,
    feed_mm_min: float | None = None,
    chatter_mode_hz: float = DEFAULT_CHATTER_MODE_HZ,
) -> FloatArray:
    """Spindle-housing acceleration waveform from the shared vibration model, m/s².

    Below 25.6 kHz the signal is synthesised at an integer multiple of ``fs_hz`` and decimated with
    an anti-aliasing filter, as a sensor's ADC would.

    Args:
        rpm: Spindle speed, 1/min (f_r = rpm/60).
        fs_hz: Sampling rate, Hz.
        n: Number of samples.
        rng: Source of phases, noise and impulse jitter.
        teeth: Cutter teeth (tooth-passing frequency = teeth · f_r).
        active_faults: Active ``cnc_mill`` fault kinds (``chatter``, ``bearing_outer``,
            ``bearing_inner``, ``tool_wear``).
        severity: Severity applied to every active fault (for ``tool_wear``: the wear reached).
        bearing: Spindle bearing geometry (BPFO, BPFI).
        feed_mm_min: Feed rate, mm/min; None means cutting at a 0.05 mm/tooth chip load, 0 means
            the spindle turns without cutting.
        chatter_mode_hz: Structural mode near which chatter appears, Hz.

    Returns:
        Acceleration, m/s², ``n`` samples at ``fs_hz``.

    Raises:
        ValueError: Unknown fault kind or a non-physical argument.
    """
    _check_cnc_args(rpm, teeth, active_faults, severity)
    if not (math.isfinite(fs_hz) and fs_hz > 0) or n < 1:
        raise ValueError("fs_hz must be > 0 and n >= 1")
    m = max(1, math.ceil(_WAVE_FS_MIN_HZ / fs_hz))
    fs_int = fs_hz * m
    pad = 64 * m if m > 1 else 0
    n_int = n * m + 2 * pad
    tt = (np.arange(n_int, dtype=np.float64) - pad) / fs_int
    sev = {k: np.array([severity if k in active_faults else 0.0]) for k in _CNC_FAULTS}
    chip = np.array([_chip(rpm, teeth, feed_mm_min)])
    lines, psd = _vib_model(
        np.array([float(rpm)]),
        chip,
        sev,
        teeth=teeth,
        bearing=bearing,
        mode_hz=chatter_mode_hz,
        bearing_lines=False,
    )
    x = np.zeros(n_int)
    for line in lines:
        f, a = float(line.freq[0]), float(line.amp[0])
        phase = float(rng.uniform(0.0, 2 * math.pi))
        if a <= 0 or f <= 0 or f >= 0.45 * fs_int:
            continue
        wave = a * np.cos(2 * math.pi * f * tt + phase)
        if line.am:
            depth, f_am = _CHATTER_AM
            am_phase = float(rng.uniform(0.0, 2 * math.pi))
            wave *= 1 + depth * np.sin(2 * math.pi * f_am * tt + am_phase)
        x += wave
    x += math.sqrt(float(psd[0]) * fs_int / 2) * rng.standard_normal(n_int)
    fr = rpm / 60.0
    for kind, mod in _BEARING_MOD.items():
        if kind in active_faults and severity > 0 and rpm > 0:
            fd = bearing.bpfo_hz(fr) if kind == "bearing_outer" else bearing.bpfi_hz(fr)
            x += _impulse_train(
                n=n_int,
                fs_hz=fs_int,
                t_first_s=float(tt[0]),
                fd_hz=fd,
                fr_hz=fr,
                peak_ms2=_BEARING_PEAK_MS2 * severity,
                mod=mod,
                rng=rng,
            )
    if m > 1:
        x = np.asarray(signal.resample_poly(x, 1, m), dtype=np.float64)[pad // m : pad // m + n]
    return np.asarray(x, dtype=np.float64)


# ---------------------------------------------------------------------------------------------
# CNC mill: runs

_CNC_PROGRAMS: Final = 4
_TOOL_CHANGE_S: Final = 20.0
_SPINUP_S: Final = 4.0
_SPINUP_A: Final = 2.5
_TOOL_WEAR_CURRENT: Final = 0.3


def _sim_cnc(
    spec: MachineSpec, t: FloatArray, streams: Streams
) -> tuple[Values, list[MachineEvent]]:
    r_sched, r_noise, _ = streams
    prm = spec.params
    teeth = int(prm.get("teeth", 4.0))
    mode_hz = prm.get("chatter_hz", DEFAULT_CHATTER_MODE_HZ)
    t0, t1 = float(t[0]), float(t[-1])

    # Part programs: operations (duration, rpm, chip load, depth factor).
    programs: list[FloatArray] = []
    for _ in range(_CNC_PROGRAMS):
        total = float(_loguniform(r_sched, 1200.0, 7200.0, 1)[0])
        durs = _loguniform(r_sched, 120.0, 900.0, int(total / 120.0) + 1)
        n_ops = max(1, int(np.searchsorted(np.cumsum(durs), total)))
        ops = np.column_stack(
            (
                durs[:n_ops],
                np.round(r_sched.uniform(8000.0, 18000.0, n_ops), -2),
                r_sched.uniform(0.02, 0.07, n_ops),
                r_sched.uniform(0.8, 3.0, n_ops),
            )
        )
        programs.append(ops)

    job_s: list[float] = []
    job_e: list[float] = []
    op_rows: list[list[float]] = []
    tj = t0 + float(r_sched.uniform(0.0, 1800.0))
    while tj <= t1:
        prog = programs[int(r_sched.integers(_CNC_PROGRAMS))]
        job_s.append(tj)
        cursor = tj
        for dur, rpm, chip, depth in prog.tolist():
            op_rows.append([cursor, cursor + dur, rpm, chip, depth])
            cursor += dur + _TOOL_CHANGE_S
        job_e.append(cursor - _TOOL_CHANGE_S)
        tj = job_e[-1] + float(_loguniform(r_sched, 900.0, 4 * _HOUR_S, 1)[0])
    ops_a = np.asarray(op_rows, dtype=np.float64).reshape(-1, 5)
    noise = r_noise.standard_normal((4, t.size))

    k, inside = _lookup(ops_a[:, 0], ops_a[:, 1], t)
    if ops_a.shape[0] == 0:
        ops_a = np.zeros((1, 5))
    op_s, op_e, op_rpm, op_chip, op_depth = (ops_a[k, c] for c in range(5))
    since = t - op_s
    spinup = inside & (since < _SPINUP_S)
    cutting = inside & ~spinup
    rpm = np.where(inside, op_rpm * np.minimum(since / _SPINUP_S, 1.0), 0.0)
    feed = np.where(cutting, op_chip * teeth * op_rpm, 0.0)
    chip = np.where(cutting, op_chip, 0.0)

    wear = 1.0 + 0.05 * np.clip(since / np.maximum(op_e - op_s, 1.0), 0.0, 1.0)
    i_cut = (
        op_depth
        * (feed / 2400.0)
        * (np.maximum(chip, 1e-6) / _NOMINAL_CHIP_MM) ** -0.25
        * wear
        * (1 + 0.06 * noise[0])
    )
    i_nl = 1.2 + 0.6 * (rpm / 18000.0) ** 2
    tool_wear = _ramped(spec.faults, "tool_wear", t, t1)
    current = np.where(
        cutting,
        (i_nl + np.maximum(i_cut, 0.0)) * (1 + _TOOL_WEAR_CURRENT * tool_wear),
        i_nl + _SPINUP_A,
    )
    current = np.where(inside, np.maximum(current * (1 + 0.01 * noise[1]), 0.0), 0.0)

    sev = {kind: _severity(spec.faults, kind, t) for kind in _CNC_FAULTS}
    sev["tool_wear"] = tool_wear
    lines, psd = _vib_model(
        rpm, chip, sev, teeth=teeth, bearing=DEFAULT_BEARING, mode_hz=mode_hz, bearing_lines=True
    )
    vib = np.sqrt(_band_velocity_ms(lines, psd)) * (1 + 0.03 * noise[2])

    values: Values = {
        "spindle_rpm": np.maximum(rpm * (1 + 0.001 * noise[3]), 0.0),
        "spindle_a": current,
        "vib_rms_mms": np.maximum(vib, 0.0),
        "feed_mm_min": feed,
        "fs_hz": np.full(t.size, np.nan),
    }
    events = _job_events(spec.device_id, np.asarray(job_s, dtype=np.float64), np.asarray(job_e), t1)
    return values, events


# ---------------------------------------------------------------------------------------------
# Vinyl cutter

_VINYL_IDLE_A: Final = 0.1
_VINYL_BASE_A: Final = 0.5
_VINYL_A_PER_MM_S: Final = 0.0025
_VINYL_A_PER_G: Final = 0.002
_VINYL_STALL_A: Final = (1.2, 1.8)
_DUTY_WINDOW_S: Final = 60.0


def _sim_vinyl(
    spec: MachineSpec, t: FloatArray, streams: Streams
) -> tuple[Values, list[MachineEvent]]:
    r_sched, r_noise, _ = streams
    prm = spec.params
    t0, t1 = float(t[0]), float(t[-1])
    starts, ends = _renewal(
        r_sched, t0, t1, dur_s=(60.0, 1200.0), gap_s=(300.0, 7200.0), first_gap_max_s=1800.0
    )
    n_jobs = starts.size
    speed = np.round(_loguniform(r_sched, 50.0, 400.0, n_jobs), -1)
    force = np.round(r_sched.uniform(60.0, 250.0, n_jobs))
    if "cut_speed_mm_s" in prm:
        speed[:] = prm["cut_speed_mm_s"]
    if "blade_force_g" in prm:
        force[:] = prm["blade_force_g"]
    cuts = [_alternating(r_sched, s, e, 5.0, 1.5) for s, e in zip(starts, ends, strict=True)]
    cs = np.concatenate([np.empty(0), *(c[0] for c in cuts)])
    ce = np.concatenate([np.empty(0), *(c[1] for c in cuts)])
    noise = r_noise.standard_normal((4, t.size))
    corner = r_noise.uniform(0.8, 1.0, t.size)

    job_k, in_job = _lookup(starts, ends, t)
    _, blade_down = _lookup(cs, ce, t)
    v_set = speed[job_k] if n_jobs else np.zeros(t.size)
    f_set = force[job_k] if n_jobs else np.zeros(t.size)
    wear = _ramped(spec.faults, "blade_wear", t, t1)
    stall = np.where(in_job, np.minimum(_severity(spec.faults, "motor_stall", t), 1.0), 0.0)
    stalled = stall > 0

    f_applied = f_set * (1 + 0.6 * wear)
    cut_speed = np.where(blade_down & in_job, v_set * corner, 0.0)
    travel_speed = np.where(in_job & ~blade_down, np.minimum(1.5 * v_set, 600.0), 0.0)
    drag = _VINYL_A_PER_G * f_applied * (1 + 0.5 * wear)
    motor = np.where(
        blade_down,
        _VINYL_BASE_A + _VINYL_A_PER_MM_S * cut_speed + drag,
        _VINYL_BASE_A + _VINYL_A_PER_MM_S * travel_speed,
    )
    motor = np.where(in_job, motor, _VINYL_IDLE_A) * (1 + 0.03 * noise[0])

    # A stall: the carriage stops with the blade in the material, the motor draws stall current.
    stall_start = np.full(t.size, np.nan)
    events: list[MachineEvent] = []
    stall_segments = _stall_segments(spec.faults, starts, ends, t0, t1)
    for s, e in stall_segments:
        m = (t >= s) & (t < e)
        stall_start[m] = s
        events.append(
            MachineEvent(
                s + 0.5,
                "fault",
                {"code": "motor_stall", "message": "cutter motor stalled; carriage stopped"},
            )
        )
    spike = np.where(stalled, np.exp(-np.nan_to_num(t - stall_start) / 2.0), 0.0)
    i_stall = (_VINYL_STALL_A[0] + _VINYL_STALL_A[1] * stall) * (1 + 0.5 * spike)
    motor = np.where(stalled, i_stall * (1 + 0.05 * noise[1]), motor)
    cut_speed = np.where(stalled, 0.0, cut_speed)
    down = blade_down | stalled
    blade = np.where(in_job & down, f_applied * (1 + 0.03 * noise[2]), 0.0)

    ds, de = _union(cs, ce, stall_segments)
    values: Values = {
        "motor_a": np.maximum(motor, 0.0),
        "blade_force_g": np.maximum(blade, 0.0),
        "cut_speed_mm_s": cut_speed,
        "duty_pct": _duty_pct(ds, de, t, _DUTY_WINDOW_S),
    }
    events += _job_events(spec.device_id, starts, ends, t1)
    return values, [ev for ev in events if ev.t_s <= t1]


def _union(
    starts: FloatArray, ends: FloatArray, extra: list[tuple[float, float]]
) -> tuple[FloatArray, FloatArray]:
    """Sorted disjoint union of segments and extra (start, end) spans."""
    if not extra:
        return starts, ends
    spans = sorted([*zip(starts.tolist(), ends.tolist(), strict=True), *extra])
    out_s: list[float] = []
    out_e: list[float] = []
    for s, e in spans:
        if out_e and s <= out_e[-1]:
            out_e[-1] = max(out_e[-1], e)
        else:
            out_s.append(s)
            out_e.append(e)
    return np.asarray(out_s, dtype=np.float64), np.asarray(out_e, dtype=np.float64)


def _stall_segments(
    faults: tuple[MachineFault, ...], starts: FloatArray, ends: FloatArray, t0: float, t1: float
) -> list[tuple[float, float]]:
    """Overlaps of motor_stall faults with jobs, clipped to the run, merged where they touch."""
    spans = sorted(
        (max(f.onset_s, s, t0), min(f.end_s, e, t1))
        for f in faults
        if f.kind == "motor_stall" and f.severity > 0
        for s, e in zip(starts.tolist(), ends.tolist(), strict=True)
    )
    merged: list[tuple[float, float]] = []
    for s, e in spans:
        if e <= s:
            continue
        if merged and s <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], e))
        else:
            merged.append((s, e))
    return merged


# ---------------------------------------------------------------------------------------------
# Embroidery machine

_BREAK_RATE_MAX_PER_H: Final = 40.0
_TENSION_BREAK_GAIN: Final = 20.0
_RETHREAD_S: Final = (45.0, 150.0)
_EMB_A: Final = (0.25, 0.0011)
_OVERLOAD: Final = (0.9, 0.35)
_N_NEEDLES: Final = 6


def _subtract(
    starts: FloatArray, ends: FloatArray, cut_s: list[float], cut_e: list[float]
) -> tuple[FloatArray, FloatArray]:
    """Segments minus the (sorted, disjoint) cut windows."""
    out_s: list[float] = []
    out_e: list[float] = []
    ci = 0
    for s, e in zip(starts.tolist(), ends.tolist(), strict=True):
        cur = s
        while ci < len(cut_s) and cut_e[ci] <= cur:
            ci += 1
        cj = ci
        while cj < len(cut_s) and cut_s[cj] < e:
            if cut_s[cj] > cur:
                out_s.append(cur)
                out_e.append(cut_s[cj])
            cur = max(cur, cut_e[cj])
            cj += 1
        if cur < e:
            out_s.append(cur)
            out_e.append(e)
    return np.asarray(out_s, dtype=np.float64), np.asarray(out_e, dtype=np.float64)


def _colour_blocks(
    rng: np.random.Generator, starts: FloatArray, ends: FloatArray
) -> tuple[FloatArray, FloatArray, IntArray]:
    """Colour blocks of each job (2-12 min, 8-30 s stops between) and their needles."""
    blk_s: list[float] = []
    blk_e: list[float] = []
    blk_needle: list[int] = []
    for s, e in zip(starts.tolist(), ends.tolist(), strict=True):
        cur = s
        while cur < e:
            d = float(_loguniform(rng, 120.0, 720.0, 1)[0])
            blk_s.append(cur)
            blk_e.append(min(cur + d, e))
            blk_needle.append(int(rng.integers(1, _N_NEEDLES + 1)))
            cur += d + float(rng.uniform(8.0, 30.0))
    return (
        np.asarray(blk_s, dtype=np.float64),
        np.asarray(blk_e, dtype=np.float64),
        np.asarray(blk_needle, dtype=np.intp),
    )


def _thread_breaks(
    spec: MachineSpec,
    rng: np.random.Generator,
    blocks: tuple[FloatArray, FloatArray, IntArray],
    run: tuple[float, float],
) -> tuple[list[float], list[float], list[MachineEvent]]:
    """Thread breaks and the re-threading stops they cause.

    Thinning of a Poisson process at the maximum rate over the whole run: the candidates do not
    depend on the faults, so a faulty run's breaks extend a healthy run's with the same seed.
    """
    bs, be, needles = blocks
    t0, t1 = run
    lam0 = spec.params.get("break_rate_per_h", 0.3)
    n_cand = int(rng.poisson(_BREAK_RATE_MAX_PER_H * (t1 - t0) / _HOUR_S))
    cand = np.sort(rng.uniform(t0, t1, n_cand))
    u = rng.uniform(0.0, 1.0, cand.size)
    rethread = rng.uniform(*_RETHREAD_S, cand.size)
    s_tension = _severity(spec.faults, "tension_fault", cand)
    lam = np.minimum(lam0 * (1 + _TENSION_BREAK_GAIN * s_tension), _BREAK_RATE_MAX_PER_H)
    _, stitching = _lookup(bs, be, cand)
    accept = stitching & (u < lam / _BREAK_RATE_MAX_PER_H)
    cut_s: list[float] = []
    cut_e: list[float] = []
    events: list[MachineEvent] = []
    for i in np.flatnonzero(accept).tolist():
        tb = float(cand[i])
        if cut_e and tb < cut_e[-1]:
            continue  # the machine is already stopped for re-threading
        cut_s.append(tb)
        cut_e.append(tb + float(rethread[i]))
        blk = int(np.searchsorted(bs, tb, side="right") - 1)
        events.append(MachineEvent(tb, "thread_break", {"needle": int(needles[blk])}))
    return cut_s, cut_e, events


def _sim_embroidery(
    spec: MachineSpec, t: FloatArray, streams: Streams
) -> tuple[Values, list[MachineEvent]]:
    r_sched, r_noise, r_fault = streams
    prm = spec.params
    t0, t1 = float(t[0]), float(t[-1])
    starts, ends = _renewal(
        r_sched, t0, t1, dur_s=(600.0, 5400.0), gap_s=(600.0, 3 * _HOUR_S), first_gap_max_s=1800.0
    )
    n_jobs = starts.size
    rate = np.round(r_sched.uniform(500.0, 1000.0, n_jobs), -1)
    tension = r_sched.uniform(90.0, 130.0, n_jobs)
    if "stitch_rate_spm" in prm:
        rate[:] = prm["stitch_rate_spm"]
    if "tension_g" in prm:
        tension[:] = prm["tension_g"]
    bs, be, needles = _colour_blocks(r_sched, starts, ends)
    cut_s, cut_e, events = _thread_breaks(spec, r_fault, (bs, be, needles), (t0, t1))
    ss, se = _subtract(bs, be, cut_s, cut_e)
    span = t1 - t0

    noise = r_noise.standard_normal((3, t.size))
    dens = np.clip(r_noise.normal(0.95, 0.03, t.size), 0.8, 1.0)
    # Erratic tension: offsets redrawn every 20 s (fault randomness, drawn for every run).
    n_steps = int(span // 20.0) + 2
    offsets = r_fault.uniform(-1.0, 1.0, n_steps)
    off = offsets[np.clip(((t - t0) // 20.0).astype(np.intp), 0, n_steps - 1)]

    job_k, _ = _lookup(starts, ends, t)
    _, stitching = _lookup(ss, se, t)
    s_mo = _severity(spec.faults, "motor_overload", t)
    s_tf = _severity(spec.faults, "tension_fault", t)
    r_set = rate[job_k] if n_jobs else np.zeros(t.size)
    spm = np.where(stitching, r_set * dens * np.maximum(1 - _OVERLOAD[1] * s_mo, 0.0), 0.0)
    motor = (_EMB_A[0] + _EMB_A[1] * spm) * (1 + _OVERLOAD[0] * s_mo) * (1 + 0.03 * noise[0])
    motor = np.where(stitching, np.maximum(motor, 0.0), 0.0)
    t_set = tension[job_k] if n_jobs else np.zeros(t.size)
    ten = t_set * (1 + 0.04 * (1 + 4 * s_tf) * noise[1] + 0.35 * s_tf * off)
    ten = np.where(stitching, np.maximum(ten, 0.0), np.nan)

    values: Values = {
        "motor_a": motor,
        "stitch_rate_spm": spm,
        "duty_pct": _duty_pct(ss, se, t, _DUTY_WINDOW_S),
        "thread_tension_g": ten,
    }
    events += _job_events(spec.device_id, starts, ends, t1)
    return values, events


# ---------------------------------------------------------------------------------------------
# Entry point

_SIMULATORS: Final = {
    DeviceKind.PRINTER3D: _sim_printer,
    DeviceKind.LASER_CUTTER: _sim_laser,
    DeviceKind.CNC_MILL: _sim_cnc,
    DeviceKind.VINYL_CUTTER: _sim_vinyl,
    DeviceKind.EMBROIDERY: _sim_embroidery,
}


def simulate_machine(
    spec: MachineSpec, t_s: npt.NDArray[np.float64], rng: np.random.Generator
) -> MachineRun:
    """Simulate one fablab machine over a time grid.

    Args:
        spec: Machine kind, device id, faults and parameter overrides.
        t_s: Strictly increasing sample times, s (1 s for printers and lasers, 1-10 s for the
            others is typical; runs of hours to days).
        rng: Source of all randomness; the same seed gives the same run.

    Returns:
        The readings (one float array per field of the kind's schema, NaN where not reported),
        the ground-truth fault intervals and the machine's events.

    Raises:
        ValueError: ``t_s`` empty, not 1-D, not finite or not strictly increasing.
    """
    t = np.asarray(t_s, dtype=np.float64)
    if t.ndim != 1 or t.size == 0:
        raise ValueError("t_s must be a non-empty 1-D array")
    if not np.all(np.isfinite(t)):
        raise ValueError("t_s must be finite")
    if t.size > 1 and np.any(np.diff(t) <= 0):
        raise ValueError("t_s must be strictly increasing")
    seeds = rng.integers(0, 2**62, size=3).tolist()
    streams: Streams = (
        np.random.default_rng(seeds[0]),
        np.random.default_rng(seeds[1]),
        np.random.default_rng(seeds[2]),
    )
    values, events = _SIMULATORS[spec.kind](spec, t, streams)

    for info in FIELD_INFO[spec.kind]:
        if info.name in _NON_FLOAT_FIELDS:
            continue
        values[info.name] = np.clip(
            np.asarray(values[info.name], dtype=np.float64), info.lo, info.hi
        )
    t0, t1 = float(t[0]), float(t[-1])
    intervals = [
        FaultInterval(f.kind, max(f.onset_s, t0), min(f.end_s, t1))
        for f in spec.faults
        if f.onset_s <= t1 and f.end_s >= t0
    ]
    events.sort(key=lambda ev: ev.t_s)
    return MachineRun(spec=spec, t_s=t, values=values, intervals=intervals, events=events)
