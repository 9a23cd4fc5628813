"""Bolt preload: loosening long before a fixed line is crossed, and never from settling or weather.

Per bolt, for each reading (vectorised over the bolts of a step):

1. **Quality** — :func:`detection.sensor_faults.quality_step` holds out spikes, flags stuck values
   and a dying battery, and confirms level shifts. A held-out reading never moves the filters.
2. **Temperature-compensated level** — a two-state Kalman filter, ``preload = L + b·(T - T_ref)``:
   the level ``L`` is a random walk (process noise per hour, so irregular sampling and gaps are
   handled by scaling with the real interval) and ``b`` the joint's temperature coefficient
   (kN/°C), estimated online by the same recursion (recursive regression of preload on
   temperature). Steel in aluminium gives about +0.3 %/°C, steel in steel about 0.
3. **Settling-aware baseline** — after a ``tightened`` event (a torque value in the data), when a
   bolt is first seen, after a battery swap or an implausible upward jump, the bolt *learns*. At
   each finished hour it tests whether the embedding has flattened: a robust regression of the
   hourly means whose slope must be *confidently* above ``-settle_pct_per_h`` (a 97.5 % bound
   over a day or more, where the regression also estimates the joint's temperature coefficient
   from the daily cycle; a one-sigma bound, raw and filter-compensated both flat, over a few
   hours, which only a bolt first seen without a tightening may use). It arms after at least
   ``min_learn_h`` once flat, and after ``max_learn_h`` in any case; the baseline ``B`` is the
   compensated mean of the last six hours.
4. **Loosening** — a one-sided (lower) CUSUM on the standardised Kalman innovations,
   ``C = max(0, C - z - k)``, with the level's deficit ``d = 1 - L/B`` against the baseline: a
   ``loosening`` alert when ``C ≥ h`` and ``d ≥ min_loss_pct``, or ``d ≥ loss_pct``. A confirmed
   downward level shift (sudden loss) moves the level at once.
5. **Levels** — ``preload_low`` at 80 / 70 / 30 % of the baseline (warning / alarm / critical).
6. **Trend** — hourly means of the compensated preload in a 48-slot ring; when a bolt looks
   suspicious, a Theil-Sen slope over them forecasts when the 70 % line will be crossed.

State per bolt is about 0.8 KiB (see :meth:`BoltPreloadDetector.state_bytes_per_device`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Final, NamedTuple

import numpy as np
import numpy.typing as npt

from detection.base import (
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
from detection.installation import InstallationParams, check_nut_factor
from detection.joints import JointAnalyzer, JointBoltRef
from detection.sensor_faults import (
    QUALITY_STATE,
    FaultCode,
    SensorFaultParams,
    bolt_case,
    decide_sensor,
    quality_step,
)
from sensors.schema import TightenedEvent

if TYPE_CHECKING:
    from sensors.registry import Registry

__all__ = ["MIN_TREND_HOURS", "BoltPreloadDetector", "Outlook", "PreloadParams", "theil_sen"]

TREND_SLOTS: Final = 48
MIN_TREND_HOURS: Final = 6
"""Fewest hourly means a forecast's slope is drawn from."""
"""Hourly means kept for the trend (two days)."""
_HOUR: Final = 3600.0
_DAY: Final = 86_400.0

# Learning phases.
_NEW: Final = 0
_LEARNING: Final = 1
_ARMED: Final = 2
_PROVISIONAL: Final = 2  # settling: armed on a few hours, the second look still to come
_BEND_SIGMAS: Final = 1.0  # a curve bends down when its curvature is this many SE below 0
_BEND_NOW_SIGMAS: Final = 2.0  # ... and surely so before the second look


@dataclass(frozen=True, slots=True)
class PreloadParams:
    """Hyper-parameters of the bolt preload detector.

    Attributes:
        min_learn_h: Shortest learning after a tightening or first sight, hours.
        max_learn_h: Longest learning: the baseline is taken then even if still settling, hours.
            Three of the longest embedding time constants (24 h, DOMAIN.md) leave at most 5 % of
            an embedding; a bolt that loosens while it learns is blind no longer than this.
        settle_pct_per_h: The bolt is settled when it is confidently (two standard errors)
            losing less than this, % of the level per hour: the embedding still to come is then
            at most about this rate times the longest time constant (24 h), well under
            ``min_loss_pct``.
        settle_window_h: Hours of hourly means the settling regression uses (at most 48).
        tempco_window_h: With at least this many hours, the settling regression estimates the
            joint's temperature coefficient itself (a daily cycle tells it from time).
        level_q_pct_per_sqrt_h: Random-walk process noise of the level, % of the level per √h.
        tempco_q_per_sqrt_h: Process noise of the temperature coefficient, fraction of the
            level per °C per √h.
        cusum_k: CUSUM reference value, in innovation sigmas (diagnostic and score only).
        cusum_h: CUSUM decision interval, in innovation sigmas (diagnostic and score only).
        min_loss_pct: Loosening needs at least this loss of compensated level below the settled
            baseline, %.
        min_rate_pct_per_day: ... and a loss that still goes on: the trend of the hourly means
            since the baseline falls faster than this, % of the baseline per day,
        trend_z: ... by at least this many standard errors of the slope.
        sudden_loss_pct: A confirmed step down this large (% of the baseline) is loosening at
            once (impact, fracture).
        sudden_hold_h: A sudden-loss alert stays on at least this long, hours.
        learning_loss_pct: A confirmed step down this large (% of the level) while the bolt is
            still learning is a sudden loss too: more than any embedding, even across a gap.
        trend_h: Hours of hourly means the Theil-Sen trend uses (at most 48).
        trend_temp_span_c: When the trend's hours span at least this many °C, the loss must also
            go on in a regression of the raw hourly means on time and temperature together (the
            window's own temperature coefficient): a compensation that drifted cannot make a
            flat bolt decline. ``inf`` turns the check off.
        second_look_h: A bolt first seen without a tightening and armed by the few-hour test
            raises a trend loosening before this many hours after first sight only if its curve
            since first sight surely bends down (two standard errors); then the day is
            looked at again, and a bolt still embedding (the day falls, and its curve does not
            bend down as a loosening after a flat stretch does) learns again, waiting for a flat
            day. Sudden losses are judged at once.
        trend_confirm_h: A loss under ``confirm_loss_pct`` is loosening only once the trend fell
            at this many finished hours in a row (1: at the first). Within a few percent of the
            baseline a flat bolt sits where a baseline taken in a cold snap or the embedding of
            a silent retightening leaves it, and there one noisy day of trend is not a loss.
        confirm_loss_pct: From this loss on (% of the baseline), one hour of falling trend is
            enough.
        warning_ratio: ``preload_low`` warning below this fraction of the baseline.
        alarm_ratio: ``preload_low`` alarm below this fraction (also the forecast's line).
        critical_ratio: ``preload_low`` critical below this fraction.
        diameter_mm: Nominal diameter for the nut-factor check when the registry does not give
            one (None: no check unless the registry says).
        sensor: The sensor-fault checks.
        installation: The nut-factor band.
        compiled: Run the recursion compiled along time (numba: a bolt-year in a few hundredths
            of a second, and about 150 MB of memory for the compiler and its code); False runs the
            numpy form, one vectorised step per reading rank (the reference the compiled form is
            tested against; a few thousand readings a second along one bolt's time).
    """

    min_learn_h: float = 6.0
    max_learn_h: float = 72.0
    settle_pct_per_h: float = 0.04
    settle_window_h: float = 24.0
    tempco_window_h: float = 20.0
    level_q_pct_per_sqrt_h: float = 0.05
    tempco_q_per_sqrt_h: float = 1e-6
    cusum_k: float = 0.5
    cusum_h: float = 12.0
    min_loss_pct: float = 3.0
    min_rate_pct_per_day: float = 0.5
    trend_z: float = 3.0
    sudden_loss_pct: float = 10.0
    sudden_hold_h: float = 24.0
    learning_loss_pct: float = 30.0
    trend_h: float = 24.0
    trend_temp_span_c: float = 3.0
    second_look_h: float = 24.0
    trend_confirm_h: int = 3
    confirm_loss_pct: float = 6.0
    warning_ratio: float = 0.80
    alarm_ratio: float = 0.70
    critical_ratio: float = 0.30
    diameter_mm: float | None = None
    sensor: SensorFaultParams = field(default_factory=SensorFaultParams)
    installation: InstallationParams = field(default_factory=InstallationParams)
    compiled: bool = True


_KERNEL_OUT: Final = (
    "quality",
    "spikes",
    "phase",
    "level_kn",
    "baseline_kn",
    "ratio",
    "loss",
    "cusum",
    "tripped",
    "declining",
    "holding",
    "trend_pct_per_day",
    "slope_kn_per_h",
    "tightened",
)
"""Diagnostics the kernel writes per row, in its argument order (then the score)."""

_STATE: Final[dict[str, tuple[npt.DTypeLike, float, tuple[int, ...]]]] = {
    **QUALITY_STATE,
    "phase": (np.int8, _NEW, ()),
    "t_learn": (np.float64, np.nan, ()),  # learning started, epoch s
    # 1: learning after a tightening or a second look (wait for embedding); 2: _PROVISIONAL
    "settling": (np.int8, 0, ()),
    "t_last": (np.float64, np.nan, ()),  # newest reading evaluated, epoch s
    "level": (np.float64, np.nan, ()),  # L, kN
    "tempco": (np.float64, 0.0, ()),  # b, kN/°C
    "t_ref": (np.float64, np.nan, ()),  # T_ref, °C
    "p00": (np.float64, np.nan, ()),
    "p01": (np.float64, 0.0, ()),
    "p11": (np.float64, np.nan, ()),
    "baseline": (np.float64, np.nan, ()),  # B, kN
    "cusum": (np.float64, 0.0, ()),
    "t_shift": (np.float64, np.nan, ()),  # last confirmed sudden loss, epoch s
    "h_armed": (np.float32, np.nan, ()),  # hour the baseline was taken (ring's hour scale)
    "tr_slope": (np.float32, np.nan, ()),  # trend since the baseline, % of baseline per day
    "tr_z": (np.float32, np.nan, ()),  # that slope over its standard error
    "bend_z": (np.float32, np.nan, ()),  # curvature since first sight / its SE (_PROVISIONAL)
    "tr_decl": (np.int16, 0, ()),  # finished hours in a row whose trend fell (armed)
    "diameter_mm": (np.float64, np.nan, ()),  # from the registry (nut-factor check)
    "hr_sum": (np.float64, 0.0, ()),
    "hr_n": (np.int16, 0, ()),
    "hr_tsum": (np.float64, 0.0, ()),
    "hr_idx": (np.float64, np.nan, ()),  # current hour, epoch hours
    "tr_val": (np.float32, np.nan, (TREND_SLOTS,)),  # hourly means of the raw preload, kN
    "tr_temp": (np.float32, np.nan, (TREND_SLOTS,)),  # hourly means of the temperature, °C
    "tr_hour": (np.float32, np.nan, (TREND_SLOTS,)),  # their hour, hours since t_learn's hour
    "tr_pos": (np.int16, 0, ()),
    "act_loose": (np.int8, 0, ()),  # active alert severities (0 = none) for decide()
    "act_low": (np.int8, 0, ()),
    "act_sensor": (np.int8, 0, ()),
}


def theil_sen(x: Float64, y: Float64) -> Float64:
    """Theil-Sen slope per row: the median of all pairwise slopes, NaNs ignored.

    Args:
        x: Abscissae, shape (m, w).
        y: Ordinates, shape (m, w).

    Returns:
        Slope per row (NaN with fewer than two finite points).
    """
    dx = x[:, None, :] - x[:, :, None]
    dy = y[:, None, :] - y[:, :, None]
    iu = np.triu_indices(x.shape[1], 1)
    sx = dx[:, iu[0], iu[1]]
    sy = dy[:, iu[0], iu[1]]
    with np.errstate(all="ignore"):
        s = np.where(sx != 0, sy / sx, np.nan)
    ok = np.isfinite(s)
    out = np.full(x.shape[0], np.nan)
    has = ok.any(axis=1)
    if has.any():
        out[has] = np.nanmedian(s[has], axis=1)
    return out


class BoltPreloadDetector(Detector[PreloadParams]):
    """Loosening, low preload, installation and sensor faults of smart bolts (kind ``cbolt``).

    Frame columns: ``preload_kn`` (required), ``temp_c``, ``torque_nm`` (a tightening),
    ``battery_v``, and optionally ``battery_swap`` (1 at a battery swap event).
    """

    name: ClassVar[str] = "cbolt"
    kinds: ClassVar[tuple[str, ...]] = ("cbolt",)
    params_type: ClassVar[type[Any]] = PreloadParams
    state_spec: ClassVar[dict[str, tuple[npt.DTypeLike, float, tuple[int, ...]]]] = _STATE
    optional_columns: ClassVar[Mapping[str, float]] = {"torque_nm": math.nan}
    event_marks: ClassVar[Mapping[str, str]] = {"battery_swap": "battery_swap"}

    def __init__(self, params: PreloadParams | None = None) -> None:
        super().__init__(params)
        self.registry: Registry | None = None
        self.joints = JointAnalyzer()
        """Joint analytics over the bolts the registry places in joints."""
        self._ids: list[str] = []

    # -- engine hooks ------------------------------------------------------------------------

    def attach(self, registry: Registry | None) -> None:
        """Bolt profiles (nut-factor check) and joints (joint analytics) come from ``registry``
        (again when it changes: the joints are rebuilt as the devices are placed again)."""
        self.registry = registry
        self.joints = JointAnalyzer(self.joints.params)

    def on_new_devices(self, devices: Sequence[tuple[str, int]]) -> None:
        """Place each new bolt: its nominal diameter, and its joint when the registry has it."""
        for dev, slot in devices:
            if slot >= len(self._ids):
                self._ids.extend([""] * (slot + 1 - len(self._ids)))
            self._ids[slot] = dev
            info = None if self.registry is None else self.registry.bolt(dev)
            if info is None:
                continue
            self.set_device_info(
                np.array([slot], np.int64), np.array([info.profile.nominal_diameter_mm])
            )
            self.joints.add_bolt(
                slot, JointBoltRef(info.joint.id, info.position, info.angle_deg, info.site)
            )

    def event_reading(self, event: object) -> Mapping[str, float] | None:
        """A tightening is evaluated as a reading: its preload and torque (re-baseline, nut
        factor)."""
        if isinstance(event, TightenedEvent):
            return {"preload_kn": event.preload_kn, "torque_nm": event.torque_nm}
        return None

    def warm_up(self) -> None:
        """Load (or compile, the first time) the compiled recursion and decision loop (nothing
        for the numpy form)."""
        if self.params.compiled:
            from detection._preload_kernel import warm_up

            warm_up()

    def preload_view(self) -> tuple[Float64, Bool]:
        """Per slot: the preload level as a fraction of the bolt's settled baseline, and whether
        that baseline is settled (the bolt is armed): what joint analytics read."""
        st = self.state
        n = st.size
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = st["level"][:n] / st["baseline"][:n]
        return ratio, st["phase"][:n] == _ARMED

    def levels(self) -> dict[str, tuple[float, bool, float]]:
        """Per bolt seen: (level / settled baseline, armed, settled baseline in kN); what the
        console shows of each bolt."""
        ratio, armed = self.preload_view()
        base = self.state["baseline"][: ratio.shape[0]]
        return {
            dev: (float(ratio[i]), bool(armed[i]), float(base[i]))
            for i, dev in enumerate(self._ids[: ratio.shape[0]])
            if dev
        }

    def batch_events(self, frame: Frame) -> list[DetectionEvent]:
        """Joint events of the joints whose bolts the frame updated."""
        if not self.joints.joints or not len(frame):
            return []
        ratio, armed = self.preload_view()
        ids = self._ids + [""] * max(0, ratio.shape[0] - len(self._ids))
        return self.joints.evaluate(
            np.unique(frame.slot), ratio, armed, ids, round(float(frame.ts_s.max()) * 1000)
        )

    @property
    def sensor_params(self) -> SensorFaultParams:
        """The sensor-fault parameters (what :func:`decide_sensor` reads)."""
        return self.params.sensor

    def state_bytes_per_device(self) -> int:
        """Bytes of learned state per bolt."""
        return self.state.nbytes_per_device()

    def set_device_info(self, slots: Int64, diameter_mm: Float64) -> None:
        """Registry facts per bolt (nominal diameter for the nut-factor check)."""
        self.ensure_devices(int(slots.max()) + 1 if slots.size else 0)
        self.state["diameter_mm"][slots] = diameter_mm

    def update(self, frame: Frame) -> Scores:
        """Evaluate every reading, in time order per bolt.

        Returns:
            Scores with diagnostics per row: ``quality`` (fault bits), ``spikes``, ``phase``,
            ``level_kn``, ``baseline_kn``, ``ratio`` (level / baseline), ``loss`` (1 - ratio),
            ``cusum``, ``slope_kn_per_h`` (Theil-Sen, only where suspicious), ``tightened``
            (1 at a tightening), ``nut_factor`` (K at a tightening, else NaN).
        """
        n = len(frame)
        y_all = frame.column("preload_kn")
        temp_all = frame.column("temp_c")
        torque_all = frame.column("torque_nm")
        batt_all = frame.column("battery_v")
        swap_all = frame.column("battery_swap")
        ex: dict[str, npt.NDArray[Any]] = {
            "quality": np.zeros(n, np.int16),
            "spikes": np.zeros(n),
            "phase": np.zeros(n, np.int8),
            "level_kn": np.full(n, np.nan),
            "baseline_kn": np.full(n, np.nan),
            "ratio": np.full(n, np.nan),
            "loss": np.full(n, np.nan),
            "cusum": np.zeros(n),
            "tripped": np.zeros(n, np.bool_),
            "declining": np.zeros(n, np.bool_),
            "holding": np.zeros(n, np.bool_),
            "trend_pct_per_day": np.full(n, np.nan),
            "slope_kn_per_h": np.full(n, np.nan),
            "tightened": np.zeros(n, np.bool_),
            "nut_factor": np.full(n, np.nan),
        }
        score = np.zeros(n)
        if self.params.compiled:
            self._run_kernel(
                frame.slot, frame.ts_s, y_all, temp_all, torque_all, batt_all, swap_all, ex, score
            )
            return Scores(score, ex)
        for rows in steps(frame.slot):
            self._step(
                rows,
                frame.slot[rows],
                frame.ts_s[rows],
                y_all[rows],
                temp_all[rows],
                torque_all[rows],
                batt_all[rows],
                swap_all[rows],
                ex,
                score,
            )
        return Scores(score, ex)

    def _run_kernel(
        self,
        slot: Int64,
        ts: Float64,
        y: Float64,
        temp: Float64,
        torque: Float64,
        batt: Float64,
        swap: Float64,
        ex: dict[str, npt.NDArray[Any]],
        score: Float64,
    ) -> None:
        """Every row through the compiled recursion, then the nut factor of each tightening."""
        from detection._preload_kernel import KERNEL_STATE, pack_params, run_rows

        s = self.state
        # The kernel does not check bounds: a slot without state must raise here, not corrupt.
        if slot.size and (int(slot.min()) < 0 or int(slot.max()) >= s.size):
            msg = f"slots {int(slot.min())}..{int(slot.max())} outside the {s.size} devices"
            raise IndexError(msg)

        def f64(a: Float64) -> Float64:
            return np.ascontiguousarray(a, np.float64)

        run_rows(
            np.ascontiguousarray(slot, np.int64),
            (f64(ts), f64(y), f64(temp), f64(torque), f64(batt), f64(swap)),
            pack_params(self.params),
            tuple(s[name] for name in KERNEL_STATE),
            (*(ex[name] for name in _KERNEL_OUT), score),
        )
        tightened = ex["tightened"]
        if tightened.any():
            ex["nut_factor"][tightened] = self._nut_factors(
                slot[tightened], torque[tightened], y[tightened]
            )

    def _nut_factors(self, slots: Int64, torque: Float64, preload: Float64) -> Float64:
        """K of each tightening, with the bolt's diameter from the registry (or the default)."""
        p = self.params
        diam = self.state["diameter_mm"][slots]
        if p.diameter_mm is not None:
            diam = np.where(np.isfinite(diam), diam, p.diameter_mm)
        k, _ = check_nut_factor(torque, preload, diam, p.installation)
        return k

    def _step(  # noqa: PLR0915 - one recursion, kept in one place to read top to bottom
        self,
        rows: Int64,
        slots: Int64,
        t: Float64,
        y: Float64,
        temp: Float64,
        torque: Float64,
        batt: Float64,
        swap: Float64,
        ex: dict[str, npt.NDArray[Any]],
        score: Float64,
    ) -> None:
        p = self.params
        s = self.state
        # Re-learning: a tightening, a battery swap, an implausible upward jump; or a new bolt.
        tightened = np.isfinite(torque) & np.isfinite(y)
        q = quality_step(s, p.sensor, slots, t, y, batt, tightened)
        code = q.code
        ex["quality"][rows] = code
        ex["spikes"][rows] = q.spikes

        swapped = ((code & FaultCode.BATTERY_SWAP) != 0) | (np.nan_to_num(swap) > 0)
        jump_up = (code & FaultCode.SHIFT_UP) != 0
        phase = s["phase"][slots]
        relearn = tightened | swapped | jump_up | ((phase == _NEW) & np.isfinite(y))
        if tightened.any():
            ex["tightened"][rows[tightened]] = True
            ex["nut_factor"][rows[tightened]] = self._nut_factors(
                slots[tightened], torque[tightened], y[tightened]
            )
        if relearn.any():
            r = slots[relearn]
            s["phase"][r] = _LEARNING
            # A silent retightening is an upward jump: wait for its embedding as after a torque row.
            s["settling"][r] = (tightened | jump_up)[relearn]
            s["t_learn"][r] = t[relearn]
            s["level"][r] = y[relearn]
            level_var = (y[relearn] * 0.02) ** 2
            s["p00"][r] = level_var
            s["p01"][r] = 0.0
            first = np.isnan(s["p11"][r])
            s["p11"][r] = np.where(first, (y[relearn] * 0.003) ** 2, s["p11"][r])
            s["t_ref"][r] = np.where(np.isfinite(s["t_ref"][r]), s["t_ref"][r], temp[relearn])
            s["baseline"][r] = np.nan
            s["cusum"][r] = 0.0
            s["t_shift"][r] = np.nan
            s["h_armed"][r] = np.nan
            s["tr_slope"][r] = np.nan
            s["tr_decl"][r] = 0
            s["tr_z"][r] = np.nan
            s["hr_n"][r] = 0
            s["hr_sum"][r] = 0.0
            s["hr_tsum"][r] = 0.0
            s["hr_idx"][r] = np.nan
            s["tr_val"][r] = np.nan
            s["tr_temp"][r] = np.nan
            s["tr_hour"][r] = np.nan
            s["tr_pos"][r] = 0
            s["t_ref"][r] = np.where(np.isfinite(s["t_ref"][r]), s["t_ref"][r], 20.0)

        # Which readings move the filters.
        bad = (
            (code & (FaultCode.SPIKE | FaultCode.STUCK | FaultCode.BATTERY_BAD)) != 0
        ) | ~np.isfinite(y)
        use = ~bad & ~relearn
        shift_down = use & ((code & FaultCode.SHIFT_DOWN) != 0)
        self._step_down_while_learning(slots, t, y, shift_down)

        level = s["level"][slots]
        b = s["tempco"][slots]
        p00 = s["p00"][slots]
        p01 = s["p01"][slots]
        p11 = s["p11"][slots]
        t_last = s["t_last"][slots]
        dt_h = np.where(np.isfinite(t_last), np.maximum(t - t_last, 0.0), 0.0) / _HOUR
        u = np.nan_to_num(temp - s["t_ref"][slots], nan=0.0)
        ref = np.abs(np.where(np.isfinite(s["baseline"][slots]), s["baseline"][slots], level))
        sigma = np.fmax(q.sigma, ref * p.sensor.noise_floor_pct / 100.0)
        sigma = np.where(sigma > 0, sigma, np.fmax(np.abs(y) * 0.005, 1e-6))
        r_meas = sigma**2
        learning = s["phase"][slots] == _LEARNING
        # Faster level changes are allowed while settling, and once a loss is under way.
        q_scale = np.where(learning, 25.0, 1.0) * np.where(s["cusum"][slots] > p.cusum_h, 25.0, 1.0)
        p00 = p00 + (ref * p.level_q_pct_per_sqrt_h / 100.0) ** 2 * dt_h * q_scale
        p11 = p11 + (ref * p.tempco_q_per_sqrt_h) ** 2 * dt_h
        # A confirmed sudden loss: the level jumps to the new reading.
        level = np.where(shift_down, y, level)
        p00 = np.where(shift_down, r_meas * 4.0, p00)

        pred = level + b * u
        innov = y - pred
        ph = p00 + u * p01
        p1h = p01 + u * p11
        s_var = ph + u * p1h + r_meas
        k0 = ph / s_var
        k1 = p1h / s_var
        z = innov / np.sqrt(s_var)
        level_n = np.where(use, level + k0 * innov, level)
        b_n = np.where(use, b + k1 * innov, b)
        p00_n = np.where(use, p00 - k0 * ph, p00)
        p01_n = np.where(use, p01 - k0 * p1h, p01)
        p11_n = np.where(use, p11 - k1 * p1h, p11)
        s["level"][slots] = level_n
        s["tempco"][slots] = b_n
        s["p00"][slots] = p00_n
        s["p01"][slots] = p01_n
        s["p11"][slots] = p11_n
        s["t_last"][slots] = np.fmax(t, np.nan_to_num(t_last, nan=-np.inf))

        # Hourly means of the raw preload and the temperature; at each finished hour the
        # settling test (learning bolts) or the trend since the baseline (armed bolts).
        t_ref = s["t_ref"][slots]
        temp_f = np.where(np.isfinite(temp), temp, t_ref)
        self._trend_push(slots, t, y, temp_f, use)
        armed = s["phase"][slots] == _ARMED
        arm = learning & armed  # armed just now by the settling test in _trend_push
        s["t_shift"][slots] = np.where(armed & shift_down, t, s["t_shift"][slots])

        # Lower CUSUM on standardised innovations (armed bolts, trusted readings): a diagnostic
        # and part of the score; the decision needs a loss that goes on (the trend).
        c = s["cusum"][slots]
        c = np.where(armed & use & ~arm, np.maximum(0.0, c - z - p.cusum_k), c)
        s["cusum"][slots] = c

        base = s["baseline"][slots]
        level_now = s["level"][slots]
        ratio = level_now / base
        loss = 1.0 - ratio
        loss_pct = np.nan_to_num(loss, nan=0.0) * 100.0
        slope = s["tr_slope"][slots].astype(np.float64)
        tz = s["tr_z"][slots].astype(np.float64)
        declining = (np.nan_to_num(slope, nan=0.0) <= -p.min_rate_pct_per_day) & (
            np.nan_to_num(tz, nan=0.0) <= -p.trend_z
        )
        # A small loss must fall for trend_confirm_h finished hours in a row.
        declining &= (s["tr_decl"][slots] >= p.trend_confirm_h) | (loss_pct >= p.confirm_loss_pct)
        sudden = (
            armed
            & ((t - s["t_shift"][slots]) <= p.sudden_hold_h * _HOUR)
            & (loss_pct >= p.sudden_loss_pct)
        )
        ex["phase"][rows] = s["phase"][slots]
        ex["level_kn"][rows] = level_now
        ex["baseline_kn"][rows] = base
        ex["ratio"][rows] = ratio
        ex["loss"][rows] = loss
        ex["cusum"][rows] = c
        # A bolt armed on its first hours, not yet looked at again, raises a trend loosening only
        # when its curve since first sight surely bends down (embedding bends up).
        bend = np.nan_to_num(s["bend_z"][slots].astype(np.float64)) <= -_BEND_NOW_SIGMAS
        judged = (s["settling"][slots] != _PROVISIONAL) | bend
        loose = declining & (loss_pct >= p.min_loss_pct) & judged
        ex["tripped"][rows] = armed & (loose | sudden)
        ex["declining"][rows] = armed & declining
        # Hysteresis: an active alert holds while half of each condition still holds.
        ex["holding"][rows] = armed & (
            (
                (loss_pct >= p.min_loss_pct / 2.0)
                & (np.nan_to_num(slope, nan=0.0) <= -p.min_rate_pct_per_day / 2.0)
                & (np.nan_to_num(tz, nan=0.0) <= -p.trend_z / 2.0)
            )
            | (
                ((t - s["t_shift"][slots]) <= p.sudden_hold_h * _HOUR)
                & (loss_pct >= p.sudden_loss_pct / 2.0)
            )
        )
        ex["trend_pct_per_day"][rows] = np.where(armed, slope, np.nan)
        # Score: 0.5 where every condition of the decision just holds, towards 1 beyond.
        strength = np.fmin(
            np.fmin(loss_pct / p.min_loss_pct, -np.nan_to_num(tz, nan=0.0) / p.trend_z),
            -np.nan_to_num(slope, nan=0.0) / p.min_rate_pct_per_day,
        )
        strength = np.where(sudden, np.fmax(strength, loss_pct / p.sudden_loss_pct), strength)
        sc = np.where(armed, 1.0 - np.exp2(-np.maximum(strength, 0.0)), 0.0)
        score[rows] = np.clip(np.nan_to_num(sc, nan=0.0), 0.0, 1.0)

        suspicious = armed & ((loss_pct >= p.min_loss_pct) | declining)
        if suspicious.any():
            ex["slope_kn_per_h"][rows[suspicious]] = self._trend_slope(slots[suspicious])

    def _step_down_while_learning(self, slots: Int64, t: Float64, y: Float64, down: Bool) -> None:
        """A confirmed step down of ``learning_loss_pct`` or more while a bolt learns is a loss,
        not embedding (at most 25 % in all, DOMAIN.md, even across a gap in the data): the bolt
        arms at once with the level before the step as its baseline, so that the step is judged
        as a sudden loss (and a low preload)."""
        s = self.state
        if not down.any():
            return
        before = s["level"][slots]
        with np.errstate(divide="ignore", invalid="ignore"):
            drop = (before - y) / before * 100.0
        early = down & (s["phase"][slots] == _LEARNING) & (drop >= self.params.learning_loss_pct)
        if early.any():
            e = slots[early]
            s["baseline"][e] = before[early]
            s["phase"][e] = _ARMED
            s["settling"][e] = 0
            s["cusum"][e] = 0.0
            s["h_armed"][e] = (
                np.floor(t[early] / _HOUR) - np.floor(s["t_learn"][e] / _HOUR)
            ).astype(np.float32)

    def _trend_push(self, slots: Int64, t: Float64, y: Float64, temp: Float64, use: Bool) -> None:
        """Accumulate hourly means; at each finished hour, test settling or update the trend."""
        s = self.state
        if not use.any():
            return
        sl = slots[use]
        hour = np.floor(t[use] / _HOUR)
        cur = s["hr_idx"][sl]
        done = np.isfinite(cur) & (hour != cur) & (s["hr_n"][sl] > 0)
        if done.any():
            d = sl[done]
            pos = s["tr_pos"][d].astype(np.int64)
            nn = s["hr_n"][d]
            s["tr_val"][d, pos] = (s["hr_sum"][d] / nn).astype(np.float32)
            s["tr_temp"][d, pos] = (s["hr_tsum"][d] / nn).astype(np.float32)
            s["tr_hour"][d, pos] = (cur[done] - np.floor(s["t_learn"][d] / _HOUR)).astype(
                np.float32
            )
            s["tr_pos"][d] = ((pos + 1) % TREND_SLOTS).astype(np.int16)
            self._hour_done(d, t[use][done])
        new = ~np.isfinite(cur) | (hour != cur)
        s["hr_sum"][sl] = np.where(new, y[use], s["hr_sum"][sl] + y[use])
        s["hr_tsum"][sl] = np.where(new, temp[use], s["hr_tsum"][sl] + temp[use])
        s["hr_n"][sl] = np.where(new, 1, s["hr_n"][sl] + 1)
        s["hr_idx"][sl] = hour

    def _hour_done(self, d: Int64, t: Float64) -> None:  # noqa: PLR0915 - both tests in one place
        """Bolts ``d`` just finished an hour: settling test if learning, trend if armed."""
        s = self.state
        p = self.params
        hours = s["tr_hour"][d].astype(np.float64)
        last = np.nanmax(hours, axis=1)
        learning = s["phase"][d] == _LEARNING
        if learning.any():
            dl = d[learning]
            x = hours[learning]
            win = np.isfinite(x) & (x > (last[learning] - p.settle_window_h)[:, None])
            b_now = s["tempco"][dl]
            comp_l = self._ring_comp(dl, b_now)
            # Over a day or more the daily cycle tells temperature from time, and the regression
            # estimates the joint's coefficient itself; over a few hours the two are confounded,
            # so the filter's coefficient compensates instead.
            fit_t = _robust_regress(x, s["tr_val"][dl], s["tr_temp"][dl], win)
            fit_c = _robust_regress(x, comp_l, None, win)
            fit_r = _robust_regress(x, s["tr_val"][dl], None, win)
            first = np.where(win, x, np.inf).min(axis=1)
            long = ((last[learning] - first) >= p.tempco_window_h) & (fit_t.temp_span >= 3.0)
            long &= np.isfinite(fit_t.slope) & np.isfinite(fit_t.tempco)
            age_h = (t[learning] - s["t_learn"][dl]) / _HOUR
            line = -p.settle_pct_per_h / 100.0 * np.abs(fit_r.level)
            # Confidently flat: the slope's lower 97.5 % bound (Student's t, few hours) is above
            # the settling line. Over a day, with the temperature in the regression; over a few
            # hours both raw and compensated by the filter must be flat (a monotonic temperature
            # change can hide embedding in either).
            flat_t = (fit_t.slope - _t975(fit_t.n - 3) * fit_t.slope_se) >= line
            # Over a few hours (a bolt first seen, no tightening), a one-sigma bound: a settled
            # bolt must arm within hours; embedding it missed is caught by the trend test later.
            flat_c = (fit_c.slope - fit_c.slope_se) >= line
            flat_r = (fit_r.slope - fit_r.slope_se) >= line
            # After a tightening the bolt embeds: only a day's regression can tell.
            short_ok = s["settling"][dl] == 0
            flat = np.where(long, flat_t, short_ok & flat_c & flat_r)
            ok = (fit_r.n >= 5) & np.isfinite(fit_r.slope)
            arm = ((age_h >= p.min_learn_h) & ok & flat) | (age_h >= p.max_learn_h)
            if arm.any():
                da = dl[arm]
                tc = np.where(long[arm], fit_t.tempco[arm], b_now[arm])
                s["tempco"][da] = tc
                recent = np.isfinite(x[arm]) & (x[arm] > (last[learning][arm] - 6.0)[:, None])
                comp = self._ring_comp(da, tc)
                with np.errstate(all="ignore"):
                    base = np.nanmean(np.where(recent, comp, np.nan), axis=1)
                base = np.where(np.isfinite(base), base, s["level"][da])
                s["phase"][da] = _ARMED
                s["baseline"][da] = base
                s["level"][da] = base
                s["p00"][da] = (base * 0.005) ** 2
                s["p01"][da] = 0.0
                s["cusum"][da] = 0.0
                s["h_armed"][da] = last[learning][arm]
                # Armed by the few-hour test: a second look once a day is known.
                prov = ~long[arm] & (s["settling"][da] == 0) & (age_h[arm] < p.max_learn_h)
                s["settling"][da[prov]] = _PROVISIONAL
        look = (s["phase"][d] == _ARMED) & (s["settling"][d] == _PROVISIONAL)
        look &= last >= p.second_look_h
        if look.any():
            dk = d[look]
            s["settling"][dk] = 0
            again = dk[self._still_embedding(dk, hours[look])]
            s["phase"][again] = _LEARNING
            s["settling"][again] = 1
            s["baseline"][again] = np.nan
            s["h_armed"][again] = np.nan
            s["cusum"][again] = 0.0
            s["tr_slope"][again] = np.nan
            s["tr_decl"][again] = 0
            s["tr_z"][again] = np.nan
        prov = (s["phase"][d] == _ARMED) & (s["settling"][d] == _PROVISIONAL)
        if prov.any():
            dp = d[prov]
            c, c_se = _curvature(
                hours[prov], s["tr_val"][dp], s["tr_temp"][dp], np.isfinite(hours[prov])
            )
            with np.errstate(all="ignore"):
                s["bend_z"][dp] = c / c_se
        armed = s["phase"][d] == _ARMED
        if armed.any():
            dm = d[armed]
            x = hours[armed]
            win = (
                np.isfinite(x)
                & (x >= s["h_armed"][dm][:, None])
                & (x > (last[armed] - self.params.trend_h)[:, None])
            )
            comp = self._ring_comp(dm, s["tempco"][dm])
            fit = _robust_regress(x, comp, None, win)
            # The same hours, raw, on time and temperature together: where the temperature moved,
            # a loss must show in both (a compensation learnt on other weather can drift).
            fj = _robust_regress(x, s["tr_val"][dm], s["tr_temp"][dm], win)
            base = s["baseline"][dm]
            ok = fit.n >= 6
            both = (fj.n >= 7) & np.isfinite(fj.tempco) & (fj.temp_span >= p.trend_temp_span_c)
            both &= fit.slope <= 0.0  # the check can only raise a falling slope
            with np.errstate(all="ignore"):
                slope = np.where(both, np.fmax(fit.slope, fj.slope), fit.slope)
                z = fit.slope / fit.slope_se
                z = np.where(both, np.fmax(z, fj.slope / fj.slope_se), z)
                s["tr_slope"][dm] = np.where(ok, slope * 24.0 / base * 100.0, np.nan)
                s["tr_z"][dm] = np.where(ok, z, np.nan)
            falls = (s["tr_slope"][dm].astype(np.float64) <= -p.min_rate_pct_per_day) & (
                s["tr_z"][dm].astype(np.float64) <= -p.trend_z
            )
            s["tr_decl"][dm] = np.where(falls, np.minimum(s["tr_decl"][dm] + 1, 10000), 0)

    def _still_embedding(self, d: Int64, hours: Float64) -> Bool:
        """The second look at bolts ``d`` armed on their first few hours, a day later: is the
        day since first sight still falling (the day's regression with temperature, 97.5 %), and
        its curve not bending down (:func:`_curvature` at least one standard error below zero)?
        Then the bolt was still embedding when first seen (an exponential approach slows down:
        it bends up), and learns again. A loosening that began after a flat stretch bends down,
        and keeps its baseline; so does a curve too noisy to tell, as long as it leans that way.
        """
        s = self.state
        p = self.params
        win = np.isfinite(hours)
        vals = s["tr_val"][d]
        temps = s["tr_temp"][d]
        ft = _robust_regress(hours, vals, temps, win)
        fr = _robust_regress(hours, vals, None, win)
        use_t = np.isfinite(ft.tempco) & (ft.temp_span >= p.trend_temp_span_c)
        slope = np.where(use_t, ft.slope, fr.slope)
        se = np.where(use_t, ft.slope_se, fr.slope_se)
        n = np.where(use_t, ft.n - 3, fr.n - 2)
        line = -p.settle_pct_per_h / 100.0 * np.abs(ft.level)
        falling = (slope + _t975(n) * se) < line
        c, c_se = _curvature(hours, vals, temps, win)
        with np.errstate(invalid="ignore"):
            out: Bool = falling & ~(c < -_BEND_SIGMAS * c_se)
        return out

    def _ring_comp(self, slots: Int64, tempco: Float64) -> Float64:
        """The bolts' hourly means compensated to ``T_ref`` with ``tempco`` (kN/°C), kN."""
        s = self.state
        comp: Float64 = s["tr_val"][slots].astype(np.float64) - tempco[:, None] * (
            s["tr_temp"][slots].astype(np.float64) - s["t_ref"][slots][:, None]
        )
        return comp

    def _trend_points(self, slots: Int64) -> tuple[Float64, Float64]:
        """The bolts' compensated hourly means (kN) of the last ``trend_h`` hours since the
        baseline, current hour included, and their hours (NaN where none)."""
        s = self.state
        b = s["tempco"][slots]
        t_ref = s["t_ref"][slots]
        vals = self._ring_comp(slots, b)
        hours = s["tr_hour"][slots].astype(np.float64)
        cur_h = s["hr_idx"][slots] - np.floor(s["t_learn"][slots] / _HOUR)
        n = np.maximum(s["hr_n"][slots], 1)
        cur_v = np.where(
            s["hr_n"][slots] > 0,
            s["hr_sum"][slots] / n - b * (s["hr_tsum"][slots] / n - t_ref),
            np.nan,
        )
        x = np.concatenate([hours, cur_h[:, None]], axis=1)
        v = np.concatenate([vals, cur_v[:, None]], axis=1)
        # The trend of the last day only, and only since the baseline.
        recent = (x >= (cur_h - self.params.trend_h)[:, None]) & (x >= s["h_armed"][slots][:, None])
        v = np.where(np.isfinite(x) & recent, v, np.nan)
        x = np.where(np.isfinite(v), x, np.nan)
        return x, v

    def _trend_slope(self, slots: Int64) -> Float64:
        """Theil-Sen slope (kN/h) of the bolts' compensated hourly means, current hour included."""
        return theil_sen(*self._trend_points(slots))

    def outlook(self, device_ids: Iterable[str]) -> dict[str, Outlook]:
        """Where each of these bolts' preload is heading (bolts this detector has not seen are
        left out): what the console draws on a bolt's chart and in a joint's table.

        The slope is the Theil-Sen slope of the compensated hourly means since the baseline
        (the last ``trend_h`` hours, at least :data:`MIN_TREND_HOURS` of them), the one the
        loosening alerts quote; the forecast extends the filtered level along it to the alarm
        line (``alarm_ratio`` of the settled baseline). A bolt losing less than
        ``min_rate_pct_per_day`` is steady: no ETA.
        """
        index = {d: i for i, d in enumerate(self._ids) if d}
        ids = [d for d in device_ids if d in index]
        slots = np.array([index[d] for d in ids], np.int64)
        s = self.state
        p = self.params
        armed = s["phase"][slots] == _ARMED
        slope = np.full(slots.size, np.nan)
        if armed.any():
            x, v = self._trend_points(slots[armed])
            enough = np.isfinite(v).sum(axis=1) >= MIN_TREND_HOURS
            slope[armed] = np.where(enough, theil_sen(x, v), np.nan)
        out: dict[str, Outlook] = {}
        for k, dev in enumerate(ids):
            i = slots[k]
            base = float(s["baseline"][i])
            level = float(s["level"][i])
            line = p.alarm_ratio * base
            t_last = float(s["t_last"][i])
            hours = _hours_to_line(level, line, float(slope[k]))
            if level <= line:
                hours = 0.0
            elif not float(slope[k]) * 24.0 / base * 100.0 <= -p.min_rate_pct_per_day:
                hours = math.inf  # steady within the detector's own notion of a decline
            out[dev] = Outlook(
                level_kn=level,
                baseline_kn=base,
                armed=bool(armed[k]),
                tempco_kn_per_c=float(s["tempco"][i]),
                t_ref_c=float(s["t_ref"][i]),
                t_last_s=t_last,
                slope_kn_per_h=float(slope[k]),
                line_kn=line,
                eta_s=t_last + hours * _HOUR if armed[k] and math.isfinite(hours) else math.inf,
            )
        return out

    def decide(self, frame: Frame, scores: Scores) -> Decisions:
        """Loosening, preload_low, installation and sensor-fault alerts and their edge events."""
        p = self.params
        ex = scores.extra
        dec = decide_sensor(self, frame, scores, self.state["act_sensor"])
        ratio = ex["ratio"]
        armed = ex["phase"] == _ARMED
        trusted = (ex["quality"] & (FaultCode.STUCK | FaultCode.BATTERY_BAD)) == 0
        # Loosening is a loss below the settled baseline that still goes on (or a sudden one);
        # it clears as soon as that no longer holds: a flat bolt is never loosening.
        loose = armed & trusted & ex["tripped"]
        clear = ~ex["holding"]
        low_sev = np.where(
            ratio < p.critical_ratio,
            int(Severity.CRITICAL),
            np.where(
                ratio < p.alarm_ratio,
                int(Severity.MAJOR),
                np.where(ratio < p.warning_ratio, int(Severity.WARNING), 0),
            ),
        )
        low_sev = np.where(armed & trusted, low_sev, 0)
        late = frame.late_rows()
        act_loose = self.state["act_loose"]
        act_low = self.state["act_low"]
        y = frame.column("preload_kn")
        if self.params.compiled:
            self._decide_kernel(frame, scores, dec, loose, clear, low_sev, y)
            return dec
        candidate = (
            loose
            | (act_loose[frame.slot] > 0)
            | (low_sev > 0)
            | ex["tightened"]
            | (act_low[frame.slot] > 0)
        )
        # Every row of a device with a candidate row: the active state is tracked row by row.
        rows = np.flatnonzero(np.isin(frame.slot, frame.slot[candidate]))
        for i in map(int, rows):
            s = int(frame.slot[i])
            if ex["tightened"][i]:
                act_loose[s] = 0
                act_low[s] = 0
                k = float(ex["nut_factor"][i])
                if math.isfinite(k) and not (p.installation.k_min <= k <= p.installation.k_max):
                    dec.events.append(self._installation_event(frame, i, k, bool(late[i])))
                    dec.alert[i] = EventKind.INSTALLATION.value
                    dec.severity[i] = int(Severity.WARNING)
                continue
            if loose[i]:
                sev = self._loosening_severity(
                    float(ratio[i]),
                    float(ex["slope_kn_per_h"][i]),
                    float(ex["baseline_kn"][i]),
                    float(ex["level_kn"][i]),
                )
                if sev > act_loose[s]:
                    act_loose[s] = sev
                    dec.events.append(
                        self._event(frame, scores, i, EventKind.LOOSENING, Severity(sev), y)
                    )
            elif act_loose[s] > 0 and clear[i]:
                act_loose[s] = 0
            if low_sev[i] > act_low[s]:
                act_low[s] = low_sev[i]
                dec.events.append(
                    self._event(
                        frame, scores, i, EventKind.PRELOAD_LOW, Severity(int(low_sev[i])), y
                    )
                )
            elif low_sev[i] == 0 and ratio[i] >= p.warning_ratio + 0.02:  # hysteresis
                act_low[s] = 0
            if act_loose[s] > 0:
                dec.alert[i] = EventKind.LOOSENING.value
                dec.severity[i] = max(int(act_loose[s]), int(act_low[s]))
            elif act_low[s] > 0:
                dec.alert[i] = EventKind.PRELOAD_LOW.value
                dec.severity[i] = int(act_low[s])
        return dec

    def _decide_kernel(
        self,
        frame: Frame,
        scores: Scores,
        dec: Decisions,
        loose: Bool,
        clear: Bool,
        low_sev: Int64,
        y: Float64,
    ) -> None:
        """The row loop of :meth:`decide` compiled (``decide_rows``); events built after."""
        from detection._preload_kernel import (
            ALERT_INSTALLATION,
            ALERT_LOOSENING,
            ALERT_LOW,
            decide_rows,
        )

        p = self.params
        ex = scores.extra
        k = ex["nut_factor"]
        with np.errstate(invalid="ignore"):
            outside = np.isfinite(k) & ~((k >= p.installation.k_min) & (k <= p.installation.k_max))
        n = len(frame)
        codes = np.zeros(n, np.int8)
        sev = np.zeros(n, np.int8)
        found = np.zeros((2 * n, 3), np.int64)
        ne = decide_rows(
            np.ascontiguousarray(frame.slot, np.int64),
            ex["tightened"],
            outside,
            np.ascontiguousarray(loose),
            np.ascontiguousarray(clear),
            low_sev.astype(np.int64),
            ex["ratio"],
            ex["slope_kn_per_h"],
            ex["baseline_kn"],
            ex["level_kn"],
            np.array([p.critical_ratio, p.alarm_ratio, p.warning_ratio]),
            self.state["act_loose"],
            self.state["act_low"],
            codes,
            sev,
            found,
        )
        late = frame.late_rows()
        for row, code, level in found[:ne].tolist():
            if code == ALERT_INSTALLATION:
                ev = self._installation_event(frame, row, float(k[row]), bool(late[row]))
            else:
                kind = EventKind.LOOSENING if code == ALERT_LOOSENING else EventKind.PRELOAD_LOW
                ev = self._event(frame, scores, row, kind, Severity(level), y)
            dec.events.append(ev)
        for code, kind in (
            (ALERT_LOOSENING, EventKind.LOOSENING),
            (ALERT_LOW, EventKind.PRELOAD_LOW),
            (ALERT_INSTALLATION, EventKind.INSTALLATION),
        ):
            rows = codes == code
            if rows.any():
                dec.alert[rows] = kind.value
                dec.severity[rows] = sev[rows]

    def _loosening_severity(self, ratio: float, slope: float, base: float, level: float) -> int:
        p = self.params
        if ratio < p.critical_ratio:
            return int(Severity.CRITICAL)
        hours = _hours_to_line(level, base * p.alarm_ratio, slope)
        if ratio < p.warning_ratio or hours < 24.0:
            return int(Severity.MAJOR)
        return int(Severity.WARNING)

    def _event(
        self,
        frame: Frame,
        scores: Scores,
        i: int,
        kind: EventKind,
        sev: Severity,
        y: Float64,
    ) -> DetectionEvent:
        p = self.params
        ex = scores.extra
        base = float(ex["baseline_kn"][i])
        level = float(ex["level_kn"][i])
        ratio = float(ex["ratio"][i])
        slope = float(ex["slope_kn_per_h"][i])
        hours = _hours_to_line(level, base * p.alarm_ratio, slope)
        pct_day = slope * 24.0 / base * 100.0 if math.isfinite(slope) else math.nan
        text = f"preload {level:.1f} kN = {ratio * 100:.0f} % of settled {base:.1f} kN"
        if math.isfinite(pct_day) and pct_day < 0:
            text += f", falling {-pct_day:.1f} %/day"
            if math.isfinite(hours):
                text += f", {p.alarm_ratio * 100:.0f} % expected in {hours:.0f} h"
        elif kind is EventKind.LOOSENING:
            text += f", CUSUM {float(ex['cusum'][i]):.1f} sigma"
        data = {
            "preload_kn": float(y[i]),
            "level_kn": level,
            "baseline_kn": base,
            "ratio": ratio,
            "slope_pct_per_day": pct_day,
            "hours_to_alarm_line": hours,
            "cusum": float(ex["cusum"][i]),
        }
        return DetectionEvent(
            device_id=str(frame.device_id[i]),
            kind=kind,
            severity=sev,
            ts_ms=round(float(frame.ts_s[i]) * 1000),
            score=float(scores.score[i]),
            explanation=text,
            detector=self.name,
            late=bool(frame.late_rows()[i]),
            site="" if frame.site is None else str(frame.site[i]),
            data=data,
        )

    def _installation_event(self, frame: Frame, i: int, k: float, late: bool) -> DetectionEvent:
        p = self.params.installation
        torque = float(frame.column("torque_nm")[i])
        preload = float(frame.column("preload_kn")[i])
        return DetectionEvent(
            device_id=str(frame.device_id[i]),
            kind=EventKind.INSTALLATION,
            severity=Severity.WARNING,
            ts_ms=round(float(frame.ts_s[i]) * 1000),
            score=1.0,
            explanation=(
                f"nut factor K = {k:.3f} (torque {torque:.0f} N·m, preload {preload:.1f} kN) "
                f"outside {p.k_min:.2f}-{p.k_max:.2f}: thread, dirt or lubrication problem"
            ),
            detector=self.name,
            late=late,
            site="" if frame.site is None else str(frame.site[i]),
            data={"nut_factor": k, "torque_nm": torque, "preload_kn": preload},
        )

    @classmethod
    def conformance_case(cls, seed: int) -> ConformanceCase:
        """Healthy bolts, then spikes, a stuck sensor and a halved preload."""
        return bolt_case(seed, with_loss=True)


class Outlook(NamedTuple):
    """Where a bolt's preload is heading, as :class:`BoltPreloadDetector` sees it.

    Attributes:
        level_kn: The filtered, temperature-compensated level (at ``t_ref_c``), kN.
        baseline_kn: The settled baseline, kN (NaN while settling).
        armed: The baseline is settled.
        tempco_kn_per_c: The joint's temperature coefficient the filter learned, kN/°C: the
            compensated preload is ``preload - tempco · (temp - t_ref)``.
        t_ref_c: The reference temperature, °C.
        t_last_s: The newest reading evaluated, epoch s.
        slope_kn_per_h: Theil-Sen slope of the compensated hourly means since the baseline, kN/h
            (NaN: not armed, or fewer than :data:`MIN_TREND_HOURS` hours).
        line_kn: The alarm line the forecast aims at, kN.
        eta_s: When the level reaches ``line_kn`` at that slope, epoch s (``t_last_s`` once
            below it; inf when it falls slower than the detector's ``min_rate_pct_per_day``).
    """

    level_kn: float
    baseline_kn: float
    armed: bool
    tempco_kn_per_c: float
    t_ref_c: float
    t_last_s: float
    slope_kn_per_h: float
    line_kn: float
    eta_s: float

    @property
    def ratio(self) -> float:
        """Level / settled baseline (NaN while settling)."""
        return self.level_kn / self.baseline_kn if self.baseline_kn else math.nan

    @property
    def trend_pct_per_day(self) -> float:
        """The slope as % of the settled baseline per day (NaN when unknown)."""
        if not self.baseline_kn:
            return math.nan
        return self.slope_kn_per_h * 24.0 / self.baseline_kn * 100.0


def _hours_to_line(level: float, line: float, slope_kn_per_h: float) -> float:
    """Hours until a falling level reaches ``line`` (inf when not falling, 0 when below)."""
    if not math.isfinite(slope_kn_per_h) or slope_kn_per_h >= 0:
        return math.inf
    if level <= line:
        return 0.0
    return (level - line) / -slope_kn_per_h


class _Fit(NamedTuple):
    """A per-bolt least-squares fit of hourly means: level + slope·hour (+ tempco·temperature)."""

    level: Float64  # at the newest hour in the window, kN
    slope: Float64  # kN per hour
    slope_se: Float64  # its standard error (noise estimated from the residuals)
    tempco: Float64  # kN per °C (NaN without temperature)
    temp_span: Float64  # °C covered in the window
    n: Int64  # hours in the window
    resid: Float64  # residual per hour (0 outside the mask)


def _regress(
    hours: Float64,
    y: npt.NDArray[np.floating[Any]],
    temp: npt.NDArray[np.floating[Any]] | None,
    mask: Bool,
) -> _Fit:
    """Ordinary least squares per row over the masked hourly means, batched with numpy.

    With ``temp``, the model is ``y = a + s·(h - h̄) + c·(T - T̄)``; the temperature term keeps a
    daily cycle or a cold snap of a steel-in-aluminium joint out of the slope.
    """
    y64 = np.asarray(y, np.float64)
    m = mask & np.isfinite(y64)
    if temp is not None:
        t64 = np.asarray(temp, np.float64)
        m &= np.isfinite(t64)
    w = m.astype(np.float64)
    n = w.sum(axis=1)
    nz = np.maximum(n, 1.0)
    x = np.where(m, hours, 0.0)
    yy = np.where(m, y64, 0.0)
    xc = np.where(m, x - (x.sum(axis=1) / nz)[:, None], 0.0)
    yc = np.where(m, yy - (yy.sum(axis=1) / nz)[:, None], 0.0)
    sxx = (xc * xc).sum(axis=1)
    sxy = (xc * yc).sum(axis=1)
    k = 2
    with np.errstate(all="ignore"):
        if temp is None:
            slope = sxy / sxx
            tempco = np.full(n.shape, np.nan)
            span = np.zeros(n.shape)
            resid = yc - slope[:, None] * xc
        else:
            tt = np.where(m, t64, 0.0)
            tc = np.where(m, tt - (tt.sum(axis=1) / nz)[:, None], 0.0)
            stt = (tc * tc).sum(axis=1)
            sxt = (xc * tc).sum(axis=1)
            sty = (tc * yc).sum(axis=1)
            det = sxx * stt - sxt * sxt
            # Too little temperature change to tell: the temperature term is left out.
            weak = ~(stt > 1e-6 * np.maximum(n, 1)) | ~(np.abs(det) > 1e-9 * sxx * stt)
            slope = np.where(weak, sxy / sxx, (stt * sxy - sxt * sty) / det)
            tempco = np.where(weak, np.nan, (sxx * sty - sxt * sxy) / det)
            resid = yc - slope[:, None] * xc - np.nan_to_num(tempco)[:, None] * tc
            k = 3
            tmax = np.where(m, tt, -np.inf).max(axis=1)
            tmin = np.where(m, tt, np.inf).min(axis=1)
            span = np.where(n > 0, tmax - tmin, 0.0)
            # Slope variance with the temperature term: sigma² · stt / det.
            var_factor = np.where(weak, 1.0 / sxx, stt / det)
        sigma2 = (resid * resid * w).sum(axis=1) / np.maximum(n - k, 1.0)
        if temp is None:
            var_factor = 1.0 / sxx
        slope_se = np.sqrt(sigma2 * var_factor)
        last = np.where(m, x, -np.inf).max(axis=1)
        xbar = x.sum(axis=1) / nz
        level = yy.sum(axis=1) / nz + slope * (last - xbar)
    enough = n >= k + 1
    nan = np.full(n.shape, np.nan)
    return _Fit(
        level=np.where(enough, level, nan),
        slope=np.where(enough, slope, nan),
        slope_se=np.where(enough, slope_se, nan),
        tempco=np.where(enough, tempco, nan),
        temp_span=span,
        n=n.astype(np.int64),
        resid=np.where(m, resid, 0.0),
    )


def _curvature(
    hours: Float64,
    y: npt.NDArray[np.floating[Any]],
    temp: npt.NDArray[np.floating[Any]],
    mask: Bool,
) -> tuple[Float64, Float64]:
    """Per row, the curvature ``c`` of ``y = a + b·h + c·h² + k·T`` over the masked hours and
    its standard error (NaN with fewer than 6 hours): positive where a decline slows down.

    Time, its square and the temperature are fitted together: a daily cycle is curved in time
    too, and a temperature coefficient fitted without the curvature would take some of it.
    With too little temperature change the temperature term is left out.
    """
    y64 = np.asarray(y, np.float64)
    t64 = np.asarray(temp, np.float64)
    m = mask & np.isfinite(y64) & np.isfinite(t64)
    w = m.astype(np.float64)
    n = w.sum(axis=1)
    nz = np.maximum(n, 1.0)

    def centred(a: Float64) -> Float64:
        a0 = np.where(m, a, 0.0)
        out: Float64 = np.where(m, a0 - (a0.sum(axis=1) / nz)[:, None], 0.0)
        return out

    u, v = centred(hours), centred(hours * hours)
    yc, tc = centred(y64), centred(t64)
    suu, suv, svv = (u * u).sum(axis=1), (u * v).sum(axis=1), (v * v).sum(axis=1)
    sut, svt, stt = (u * tc).sum(axis=1), (v * tc).sum(axis=1), (tc * tc).sum(axis=1)
    suy, svy, sty = (u * yc).sum(axis=1), (v * yc).sum(axis=1), (tc * yc).sum(axis=1)
    with np.errstate(all="ignore"):
        # Without temperature: 2 x 2 normal equations.
        det2 = suu * svv - suv * suv
        b2 = (svv * suy - suv * svy) / det2
        c2 = (suu * svy - suv * suy) / det2
        # With it: 3 x 3, by Cramer's rule.
        det3 = (
            suu * (svv * stt - svt * svt)
            - suv * (suv * stt - svt * sut)
            + sut * (suv * svt - svv * sut)
        )
        b3 = (
            suy * (svv * stt - svt * svt)
            - suv * (svy * stt - svt * sty)
            + sut * (svy * svt - svv * sty)
        ) / det3
        c3 = (
            suu * (svy * stt - svt * sty)
            - suy * (suv * stt - svt * sut)
            + sut * (suv * sty - svy * sut)
        ) / det3
        k3 = (
            suu * (svv * sty - svy * svt)
            - suv * (suv * sty - svy * sut)
            + suy * (suv * svt - svv * sut)
        ) / det3
        weak = ~(stt > 1e-6 * nz) | ~(np.abs(det3) > 1e-9 * det2 * stt)
        b = np.where(weak, b2, b3)
        c = np.where(weak, c2, c3)
        k = np.where(weak, 0.0, k3)
        r = yc - b[:, None] * u - c[:, None] * v - k[:, None] * tc
        dof = np.where(weak, n - 3.0, n - 4.0)
        s2 = (r * r * w).sum(axis=1) / np.fmax(dof, 1.0)
        var_factor = np.where(weak, suu / det2, (suu * stt - sut * sut) / det3)
        se = np.sqrt(s2 * var_factor)
    enough = n >= 6
    return np.where(enough, c, np.nan), np.where(enough, se, np.nan)


_T975: Final = np.array(
    [np.inf, 12.71, 4.30, 3.18, 2.78, 2.57, 2.45, 2.36, 2.31, 2.26, 2.23, 2.20, 2.18, 2.16, 2.14]
)


def _t975(dof: Int64) -> Float64:
    """Student's t 97.5 % quantile for ``dof`` degrees of freedom (2.0 from 15 on)."""
    d = np.asarray(dof, np.int64)
    out: Float64 = np.where(d < _T975.shape[0], _T975[np.clip(d, 0, _T975.shape[0] - 1)], 2.0)
    return out


def _robust_regress(
    hours: Float64,
    y: npt.NDArray[np.floating[Any]],
    temp: npt.NDArray[np.floating[Any]] | None,
    mask: Bool,
) -> _Fit:
    """:func:`_regress`, then again without the hours whose residual exceeds 4 robust sigmas.

    An hourly mean that a spike slipped into (one the Hampel filter could not confirm) must not
    tilt a trend.
    """
    fit = _regress(hours, y, temp, mask)
    if mask.shape[1] == 0:
        return fit
    with np.errstate(all="ignore"):
        absr = np.where(mask, np.abs(fit.resid), np.nan)
        sig = 1.4826 * np.nanmedian(np.where(fit.n[:, None] >= 10, absr, 0.0), axis=1)
    sig = np.where(np.isfinite(sig), sig, np.inf)
    # Too few hours to call one an outlier: keep them all.
    sig = np.where(fit.n >= 10, sig, np.inf)
    keep = mask & ~(np.abs(fit.resid) > 4.0 * np.fmax(sig, 1e-9)[:, None])
    return _regress(hours, y, temp, keep)
