"""Smart-bolt sensor faults, kept apart from loosening.

A stuck value, an isolated spike, a battery swap's offset or a dying battery must never look like a
loose bolt. This module classifies every reading of a bolt's preload before the preload detector
sees it:

* **spikes** — a Hampel filter: a reading further than ``spike_sigma`` robust sigmas (and at least
  ``spike_min_pct`` %) from the median of the device's last ``window`` accepted readings is held
  out. If the next ``shift_readings - 1`` readings confirm it (same side, close to it), they are
  a **level shift** instead: downwards that is a sudden preload loss (for the preload detector
  to judge), upwards an implausible jump (preload does not rise by itself) that re-baselines the
  bolt.
* **stuck** — ``stuck_readings`` identical values in a row (zero variance).
* **battery** — below ``battery_low_v`` a warning; below ``battery_bad_v`` the preload readings are
  not trusted for loosening; a rise of ``battery_swap_rise_v`` is a battery swap, after which the
  sensor's offset may have moved, so the bolt re-learns its baseline.

:func:`quality_step` is the vectorised core, shared with :mod:`detection.preload`;
:class:`SensorFaultDetector` wraps it as a detector of its own (kind ``cbolt``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Final, NamedTuple

import numpy as np
import numpy.typing as npt

from detection.base import (
    ArrayState,
    Bool,
    ConformanceCase,
    Decisions,
    DetectionEvent,
    Detector,
    EventKind,
    Float64,
    Frame,
    Int64,
    Scores,
    Severity,
    steps,
)

__all__ = [
    "QUALITY_STATE",
    "FaultCode",
    "QualityStep",
    "SensorFaultDetector",
    "SensorFaultParams",
    "quality_step",
]

WINDOW: Final = 7
"""Readings in the Hampel window (fixed: it is a trailing dimension of the state arrays)."""
_MAD_PER_ABS_DEV: Final = 1.2533  # sigma of a Gaussian = 1.2533 * mean |x - median|


class FaultCode:
    """Bit flags of a reading's quality (``Scores.extra["quality"]``)."""

    SPIKE: Final = 1
    SHIFT_DOWN: Final = 2
    SHIFT_UP: Final = 4
    STUCK: Final = 8
    BATTERY_LOW: Final = 16
    BATTERY_BAD: Final = 32
    BATTERY_SWAP: Final = 64


@dataclass(frozen=True, slots=True)
class SensorFaultParams:
    """Hyper-parameters of the bolt sensor-fault checks.

    Attributes:
        spike_sigma: Hampel threshold in robust sigmas.
        spike_min_pct: ...and at least this far from the median, in % of it.
        noise_floor_pct: Smallest noise sigma assumed, in % of the level (quantised sensors).
        stuck_readings: Identical readings in a row that make a stuck sensor.
        shift_readings: Outliers in a row, on the same side and close to each other, that make a
            level shift (two random spikes in a row are common at long sampling intervals);
            twice as many while the spike counter is at ``spikes_alert`` or more.
        battery_low_v: Battery warning below this voltage.
        battery_bad_v: Below this, preload readings are too noisy to judge loosening.
        battery_swap_rise_v: A battery voltage rise this large is a battery swap.
        spikes_alert: Spikes within about a day that raise a ``sensor_fault`` event.
        spike_halflife_h: Half-life of the spike counter, hours.
    """

    spike_sigma: float = 6.0
    spike_min_pct: float = 4.0
    noise_floor_pct: float = 0.1
    stuck_readings: int = 12
    shift_readings: int = 3
    battery_low_v: float = 3.2
    battery_bad_v: float = 3.1
    battery_swap_rise_v: float = 0.15
    spikes_alert: float = 3.0
    spike_halflife_h: float = 24.0


QUALITY_STATE: Final[dict[str, tuple[npt.DTypeLike, float, tuple[int, ...]]]] = {
    "q_ring": (np.float64, np.nan, (WINDOW,)),  # last accepted readings, kN
    "q_pos": (np.int16, 0, ()),  # next ring position
    "q_absdev": (np.float64, np.nan, ()),  # EW mean |reading - median|, kN
    "q_last_y": (np.float64, np.nan, ()),
    "q_stuck_n": (np.int32, 0, ()),
    "q_pend_n": (np.int16, 0, ()),
    "q_pend_y": (np.float64, np.nan, ()),
    "q_last_batt": (np.float64, np.nan, ()),
    "q_spikes": (np.float64, 0.0, ()),  # decaying count of spikes
    "q_last_t": (np.float64, np.nan, ()),
}
"""State arrays :func:`quality_step` needs (merged into the preload detector's state)."""


class QualityStep(NamedTuple):
    """Per-row result of :func:`quality_step` (arrays aligned with the step's rows)."""

    code: npt.NDArray[np.int16]
    median: Float64
    sigma: Float64
    spikes: Float64


def quality_step(  # noqa: PLR0915 - one pass over the checks, top to bottom
    st: ArrayState,
    p: SensorFaultParams,
    slots: Int64,
    t: Float64,
    y: Float64,
    batt: Float64,
    reset: npt.NDArray[np.bool_] | None = None,
) -> QualityStep:
    """Classify one reading per device (one step) and update the quality state.

    Args:
        st: State holding the :data:`QUALITY_STATE` arrays.
        p: Parameters.
        slots: Device slots of the step's rows (distinct).
        t: Epoch seconds.
        y: Preload, kN (NaN: not reported).
        batt: Battery voltage (NaN: not reported).
        reset: Rows whose reading follows a known new level (a tightening: torque on the row):
            the reference restarts there, so the rise is neither a spike nor an "implausible"
            jump.

    Returns:
        Bit codes (:class:`FaultCode`), the reference median and noise sigma before the reading,
        and the decayed spike count.
    """
    if reset is not None and reset.any():
        rs = slots[reset]
        st["q_ring"][rs] = np.nan
        st["q_pos"][rs] = 0
        st["q_pend_n"][rs] = 0
    ring = st["q_ring"][slots]
    fill = np.sum(np.isfinite(ring), axis=1)
    med = _median_of_filled(ring, fill)
    absdev = st["q_absdev"][slots]
    floor = np.abs(med) * p.noise_floor_pct / 100.0
    sigma = np.fmax(np.nan_to_num(absdev * _MAD_PER_ABS_DEV, nan=0.0), floor)
    thr = np.fmax(p.spike_sigma * sigma, np.abs(med) * p.spike_min_pct / 100.0)
    finite = np.isfinite(y)
    dev = y - med
    judged = finite & (fill >= 3)
    out = judged & (np.abs(dev) > thr)
    code = np.zeros(slots.shape[0], np.int16)

    # Level shift: an outlier confirmed by the next readings on the same side, each close to the
    # first or further out (a collapse faster than the threshold per reading is a shift too).
    pend_n = st["q_pend_n"][slots]
    pend_y = st["q_pend_y"][slots]
    same = (
        (pend_n > 0)
        & (np.sign(pend_y - med) == np.sign(dev))
        & ((np.abs(y - pend_y) <= thr) | (np.sign(y - pend_y) == np.sign(dev)))
    )
    new_pend = np.where(out, np.where(same, pend_n + 1, 1), 0).astype(np.int16)
    # A sensor that spikes often (a sensor-fault alert's worth within about a day) needs twice as
    # many outliers in a row to confirm a level shift: three spikes on the same side come in a
    # row often enough there to read as a sudden loss.
    need = np.where(st["q_spikes"][slots] >= p.spikes_alert, 2 * p.shift_readings, p.shift_readings)
    shift = out & (new_pend >= need)
    spike = out & ~shift
    code[shift & (dev < 0)] |= FaultCode.SHIFT_DOWN
    code[shift & (dev > 0)] |= FaultCode.SHIFT_UP
    code[spike] |= FaultCode.SPIKE
    st["q_pend_n"][slots] = np.where(shift, 0, new_pend)
    st["q_pend_y"][slots] = np.where(out & ~same, y, pend_y)

    # Accepted readings enter the ring; a shift restarts it at the new level.
    accept = finite & ~out
    pos = st["q_pos"][slots].astype(np.int64)
    if shift.any():
        rs = slots[shift]
        st["q_ring"][rs] = np.nan
        st["q_ring"][rs, 0] = pend_y[shift]
        st["q_ring"][rs, 1] = y[shift]
        st["q_pos"][rs] = 2
    if accept.any():
        ra = slots[accept]
        st["q_ring"][ra, pos[accept] % WINDOW] = y[accept]
        st["q_pos"][ra] = ((pos[accept] + 1) % WINDOW).astype(np.int16)
        d = np.abs(dev[accept])
        old = absdev[accept]
        upd = np.where(np.isfinite(d), np.where(np.isfinite(old), 0.97 * old + 0.03 * d, d), old)
        st["q_absdev"][ra] = upd

    # Stuck: identical values in a row.
    last_y = st["q_last_y"][slots]
    equal = finite & (y == last_y)
    stuck_n = np.where(
        equal, st["q_stuck_n"][slots] + 1, np.where(finite, 0, st["q_stuck_n"][slots])
    )
    st["q_stuck_n"][slots] = stuck_n
    code[stuck_n >= p.stuck_readings - 1] |= FaultCode.STUCK
    st["q_last_y"][slots] = np.where(finite, y, last_y)

    # Battery.
    last_b = st["q_last_batt"][slots]
    bfin = np.isfinite(batt)
    code[bfin & (batt < p.battery_low_v)] |= FaultCode.BATTERY_LOW
    code[bfin & (batt < p.battery_bad_v)] |= FaultCode.BATTERY_BAD
    code[bfin & np.isfinite(last_b) & (batt - last_b >= p.battery_swap_rise_v)] |= (
        FaultCode.BATTERY_SWAP
    )
    st["q_last_batt"][slots] = np.where(bfin, batt, last_b)

    # Spike counter with exponential decay in time.
    last_t = st["q_last_t"][slots]
    dt = np.where(np.isfinite(last_t), np.maximum(t - last_t, 0.0), 0.0)
    decay = np.exp2(-dt / (p.spike_halflife_h * 3600.0))
    spikes = st["q_spikes"][slots] * decay + spike
    st["q_spikes"][slots] = spikes
    st["q_last_t"][slots] = np.fmax(t, np.nan_to_num(last_t, nan=-np.inf))
    return QualityStep(code, med, sigma, spikes)


def _median_of_filled(ring: Float64, fill: npt.NDArray[np.int64]) -> Float64:
    """Row medians of the finite values (NaN sorts last; NaN for an empty row)."""
    srt = np.sort(ring, axis=1)
    hi = np.clip(fill // 2, 0, WINDOW - 1)[:, None]
    lo = np.clip((fill - 1) // 2, 0, WINDOW - 1)[:, None]
    med: Float64 = 0.5 * (
        np.take_along_axis(srt, lo, axis=1)[:, 0] + np.take_along_axis(srt, hi, axis=1)[:, 0]
    )
    return np.where(fill > 0, med, np.nan)


def fault_label(code: int, spikes: float, p: SensorFaultParams) -> tuple[str, Severity] | None:
    """The sensor fault a reading's quality code shows, if any, and its severity."""
    if code & FaultCode.STUCK:
        return "stuck sensor (identical readings)", Severity.MAJOR
    if code & FaultCode.BATTERY_BAD:
        return "battery nearly empty: preload readings unreliable", Severity.MAJOR
    if code & FaultCode.BATTERY_LOW:
        return "battery low", Severity.WARNING
    if code & FaultCode.SHIFT_UP:
        return "implausible upward jump of preload (sensor offset?): re-learning", Severity.WARNING
    if spikes >= p.spikes_alert:
        return f"{spikes:.0f} preload spikes within a day", Severity.WARNING
    return None


class SensorFaultDetector(Detector[SensorFaultParams]):
    """Smart-bolt sensor faults on their own (the preload detector embeds the same checks)."""

    name: ClassVar[str] = "cbolt_sensor"
    kinds: ClassVar[tuple[str, ...]] = ("cbolt",)
    watches_by_default: ClassVar[bool] = False
    params_type: ClassVar[type[Any]] = SensorFaultParams
    state_spec: ClassVar[dict[str, tuple[npt.DTypeLike, float, tuple[int, ...]]]] = {
        **QUALITY_STATE,
        "active": (np.int8, 0, ()),
    }

    def update(self, frame: Frame) -> Scores:
        """Classify every reading; the score is 1 for a faulty reading, else 0."""
        n = len(frame)
        code = np.zeros(n, np.int16)
        spikes = np.zeros(n)
        y = frame.column("preload_kn")
        batt = frame.column("battery_v")
        tightened = np.isfinite(frame.column("torque_nm")) & np.isfinite(y)
        for rows in steps(frame.slot):
            q = quality_step(
                self.state,
                self.params,
                frame.slot[rows],
                frame.ts_s[rows],
                y[rows],
                batt[rows],
                tightened[rows],
            )
            code[rows] = q.code
            spikes[rows] = q.spikes
        faulty = (code & ~np.int16(FaultCode.BATTERY_SWAP)) != 0
        score = np.where(faulty | (spikes >= self.params.spikes_alert), 1.0, 0.0)
        return Scores(score, {"quality": code, "spikes": spikes})

    def decide(self, frame: Frame, scores: Scores) -> Decisions:
        """A ``sensor_fault`` event when a device's fault starts or changes."""
        return decide_sensor(self, frame, scores, self.state["active"])

    @classmethod
    def conformance_case(cls, seed: int) -> ConformanceCase:
        """Healthy bolts, then the same bolts with spikes and a stuck sensor."""
        return bolt_case(seed, with_loss=False)


def decide_sensor(
    det: Detector[Any], frame: Frame, scores: Scores, active: npt.NDArray[np.int8]
) -> Decisions:
    """Sensor-fault edges: an event when a device's fault label appears (``active`` per device)."""
    params: SensorFaultParams = getattr(det, "sensor_params", det.params)
    dec = Decisions.empty(len(frame))
    code = scores.extra["quality"]
    spikes = scores.extra["spikes"]
    late = frame.late_rows()
    # Only rows with a fault, and rows of devices whose fault is active, can change anything.
    faulty = ((code & ~np.int16(FaultCode.BATTERY_SWAP | FaultCode.SHIFT_DOWN)) != 0) | (
        spikes >= params.spikes_alert
    )
    rows = np.flatnonzero(np.isin(frame.slot, frame.slot[faulty | (active[frame.slot] != 0)]))
    for i in map(int, rows):
        found = fault_label(int(code[i]), float(spikes[i]), params)
        s = int(frame.slot[i])
        if found is None:
            active[s] = 0
            continue
        text, sev = found
        dec.alert[i] = EventKind.SENSOR_FAULT.value
        dec.severity[i] = int(sev)
        tag = _fault_tag(int(code[i]), float(spikes[i]), params)
        if active[s] != tag:
            active[s] = tag
            dec.events.append(
                DetectionEvent(
                    device_id=str(frame.device_id[i]),
                    kind=EventKind.SENSOR_FAULT,
                    severity=sev,
                    ts_ms=round(float(frame.ts_s[i]) * 1000),
                    score=float(scores.score[i]),
                    explanation=f"{text} (preload reading {frame.column('preload_kn')[i]:.2f} kN)",
                    detector=det.name,
                    late=bool(late[i]),
                    data={"quality_code": float(code[i]), "spikes": float(spikes[i])},
                )
            )
    return dec


def _fault_tag(code: int, spikes: float, p: SensorFaultParams) -> int:
    """A small integer naming the fault kind (so a change of fault is a new event)."""
    for tag, bit in enumerate(
        (FaultCode.STUCK, FaultCode.BATTERY_BAD, FaultCode.BATTERY_LOW, FaultCode.SHIFT_UP), 1
    ):
        if code & bit:
            return tag
    return 5 if spikes >= p.spikes_alert else 0


def bolt_case(seed: int, *, with_loss: bool) -> ConformanceCase:
    """Three settled bolts for a week, then spikes, a stuck sensor and (optionally) a preload loss.

    Args:
        seed: Random seed.
        with_loss: Whether the third bolt loses half its preload (else it stays healthy).
    """
    rng = np.random.default_rng(seed)
    n_dev, n_t = 3, 2_016  # a week at 5 min
    t0 = 1_772_323_200.0
    level = np.array([50.0, 62.0, 80.0])

    def frame(ts: npt.NDArray[Any], y: npt.NDArray[Any]) -> Frame:
        slot = np.repeat(np.arange(n_dev, dtype=np.int64), ts.shape[0])
        ids = np.array([f"b{int(s)}" for s in slot], dtype=object)
        return Frame(
            slot=slot,
            device_id=ids,
            ts_s=np.tile(ts, n_dev),
            values={
                "preload_kn": y.ravel(),
                "temp_c": np.tile(10.0 + 5.0 * np.sin(ts / 86_400.0 * 2 * np.pi), n_dev),
                "battery_v": np.full(y.size, 3.6),
            },
        )

    ts1 = t0 + 300.0 * np.arange(n_t)
    y1 = level[:, None] * (1 + rng.normal(0, 0.005, (n_dev, n_t)))
    ts2 = ts1[-1] + 300.0 * np.arange(1, 577)
    y2 = level[:, None] * (1 + rng.normal(0, 0.005, (n_dev, ts2.shape[0])))
    anomalous: Bool = np.zeros((n_dev, ts2.shape[0]), np.bool_)
    at = np.arange(50, 576, 60)
    y2[0, at] *= 1.4
    anomalous[0, at] = True
    y2[1, 200:] = y2[1, 200]
    anomalous[1, 211:] = True
    if with_loss:
        y2[2, 300:] *= 0.5
        anomalous[2, 300:] = True
    return ConformanceCase(frame(ts1, y1), frame(ts2, y2), anomalous.ravel())
