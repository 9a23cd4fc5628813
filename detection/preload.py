"""Bolt preload: loosening long before a fixed line is crossed, and never from settling or weather.

Per bolt, for each reading (vectorised over the bolts of a step):

1. **Quality** — :func:`detection.sensor_faults.quality_step` holds out spikes, flags stuck values
   and a dying battery, and confirms level shifts. A held-out reading never moves the filters.
2. **Temperature-compensated level** — a two-state Kalman filter, ``preload = L + b·(T - T_ref)``:
   the level ``L`` is a random walk (process noise per hour, so irregular sampling and gaps are
   handled by scaling with the real interval) and ``b`` the joint's temperature coefficient
   (kN/°C), estimated online by the same recursion (recursive regression of preload on
   temperature). Steel in aluminium gives about +0.3 %/°C, steel in steel about 0.
3. **Settling-aware baseline** — after a ``tightened`` event (a torque value in the data) or when a
   bolt is first seen, the bolt *learns*. After a tightening it waits for embedding: it arms when
   at least ``min_learn_h`` have passed and the compensated level's slope has fallen below
   ``settle_pct_per_h`` (or after ``max_learn_h`` in any case). A bolt first seen without a
   tightening, a battery swap or an implausible upward jump only need ``min_learn_h``. The
   baseline ``B`` is then the filtered level.
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
from dataclasses import dataclass, field
from typing import Any, ClassVar, Final

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
from detection.sensor_faults import (
    QUALITY_STATE,
    FaultCode,
    SensorFaultParams,
    bolt_case,
    decide_sensor,
    quality_step,
)

__all__ = ["BoltPreloadDetector", "PreloadParams", "theil_sen"]

TREND_SLOTS: Final = 48
"""Hourly means kept for the trend (two days)."""
_HOUR: Final = 3600.0
_DAY: Final = 86_400.0

# Learning phases.
_NEW: Final = 0
_LEARNING: Final = 1
_ARMED: Final = 2


@dataclass(frozen=True, slots=True)
class PreloadParams:
    """Hyper-parameters of the bolt preload detector.

    Attributes:
        min_learn_h: Shortest learning after a tightening or first sight, hours.
        max_learn_h: Longest learning: the baseline is taken then even if still settling, hours.
        settle_pct_per_h: The bolt is settled when its compensated level moves less than this
            (% of the level per hour).
        level_q_pct_per_sqrt_h: Random-walk process noise of the level, % of the level per √h.
        tempco_q_per_sqrt_h: Process noise of the temperature coefficient, fraction of the
            level per °C per √h.
        cusum_k: CUSUM reference value, in innovation sigmas.
        cusum_h: CUSUM decision interval, in innovation sigmas.
        latch_h: A CUSUM crossing stays evidence of a change for this long, hours.
        min_loss_pct: A CUSUM alarm needs at least this loss of level, % of the baseline
            (while the CUSUM crossing is latched).
        loss_pct: A loss of level this large is loosening whatever the CUSUM says, %.
        clear_loss_pct: A loosening alert clears below this loss (and a reset CUSUM), %.
        trend_h: Hours of hourly means the Theil-Sen trend uses (at most 48).
        warning_ratio: ``preload_low`` warning below this fraction of the baseline.
        alarm_ratio: ``preload_low`` alarm below this fraction (also the forecast's line).
        critical_ratio: ``preload_low`` critical below this fraction.
        diameter_mm: Nominal diameter for the nut-factor check when the registry does not give
            one (None: no check unless the registry says).
        sensor: The sensor-fault checks.
        installation: The nut-factor band.
    """

    min_learn_h: float = 6.0
    max_learn_h: float = 72.0
    settle_pct_per_h: float = 0.05
    level_q_pct_per_sqrt_h: float = 0.05
    tempco_q_per_sqrt_h: float = 1e-6
    cusum_k: float = 0.5
    cusum_h: float = 12.0
    latch_h: float = 48.0
    min_loss_pct: float = 1.5
    loss_pct: float = 3.0
    clear_loss_pct: float = 0.75
    trend_h: float = 24.0
    warning_ratio: float = 0.80
    alarm_ratio: float = 0.70
    critical_ratio: float = 0.30
    diameter_mm: float | None = None
    sensor: SensorFaultParams = field(default_factory=SensorFaultParams)
    installation: InstallationParams = field(default_factory=InstallationParams)


_STATE: Final[dict[str, tuple[npt.DTypeLike, float, tuple[int, ...]]]] = {
    **QUALITY_STATE,
    "phase": (np.int8, _NEW, ()),
    "t_learn": (np.float64, np.nan, ()),  # learning started, epoch s
    "settling": (np.int8, 0, ()),  # 1: learning after a tightening (wait for embedding)
    "t_last": (np.float64, np.nan, ()),  # newest reading evaluated, epoch s
    "level": (np.float64, np.nan, ()),  # L, kN
    "tempco": (np.float64, 0.0, ()),  # b, kN/°C
    "t_ref": (np.float64, np.nan, ()),  # T_ref, °C
    "p00": (np.float64, np.nan, ()),
    "p01": (np.float64, 0.0, ()),
    "p11": (np.float64, np.nan, ()),
    "m_fast": (np.float64, np.nan, ()),  # EW means of the compensated preload (settling slope)
    "m_slow": (np.float64, np.nan, ()),
    "baseline": (np.float64, np.nan, ()),  # B, kN
    "cusum": (np.float64, 0.0, ()),
    "t_trip": (np.float64, np.nan, ()),  # last time the CUSUM crossed h, epoch s
    "diameter_mm": (np.float64, np.nan, ()),  # from the registry (nut-factor check)
    "hr_sum": (np.float64, 0.0, ()),
    "hr_n": (np.int16, 0, ()),
    "hr_idx": (np.float64, np.nan, ()),  # current hour, epoch hours
    "tr_val": (np.float32, np.nan, (TREND_SLOTS,)),  # hourly means, kN
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
            "slope_kn_per_h": np.full(n, np.nan),
            "tightened": np.zeros(n, np.bool_),
            "nut_factor": np.full(n, np.nan),
        }
        score = np.zeros(n)
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
        q = quality_step(s, p.sensor, slots, t, y, batt)
        code = q.code
        ex["quality"][rows] = code
        ex["spikes"][rows] = q.spikes

        # Re-learning: a tightening, a battery swap, an implausible upward jump; or a new bolt.
        tightened = np.isfinite(torque) & np.isfinite(y)
        swapped = ((code & FaultCode.BATTERY_SWAP) != 0) | (np.nan_to_num(swap) > 0)
        jump_up = (code & FaultCode.SHIFT_UP) != 0
        phase = s["phase"][slots]
        relearn = tightened | swapped | jump_up | ((phase == _NEW) & np.isfinite(y))
        if tightened.any():
            ex["tightened"][rows[tightened]] = True
            diam = s["diameter_mm"][slots[tightened]]
            if p.diameter_mm is not None:
                diam = np.where(np.isfinite(diam), diam, p.diameter_mm)
            k, _ = check_nut_factor(torque[tightened], y[tightened], diam, p.installation)
            ex["nut_factor"][rows[tightened]] = k
        if relearn.any():
            r = slots[relearn]
            s["phase"][r] = _LEARNING
            s["settling"][r] = tightened[relearn]
            s["t_learn"][r] = t[relearn]
            s["level"][r] = y[relearn]
            level_var = (y[relearn] * 0.02) ** 2
            s["p00"][r] = level_var
            s["p01"][r] = 0.0
            first = np.isnan(s["p11"][r])
            s["p11"][r] = np.where(first, (y[relearn] * 0.003) ** 2, s["p11"][r])
            s["t_ref"][r] = np.where(np.isfinite(s["t_ref"][r]), s["t_ref"][r], temp[relearn])
            s["m_fast"][r] = np.nan
            s["m_slow"][r] = np.nan
            s["baseline"][r] = np.nan
            s["cusum"][r] = 0.0
            s["hr_n"][r] = 0
            s["hr_sum"][r] = 0.0
            s["hr_idx"][r] = np.nan
            s["tr_val"][r] = np.nan
            s["tr_hour"][r] = np.nan
            s["tr_pos"][r] = 0
            s["t_ref"][r] = np.where(np.isfinite(s["t_ref"][r]), s["t_ref"][r], 20.0)

        # Which readings move the filters.
        bad = (
            (code & (FaultCode.SPIKE | FaultCode.STUCK | FaultCode.BATTERY_BAD)) != 0
        ) | ~np.isfinite(y)
        use = ~bad & ~relearn
        shift_down = use & ((code & FaultCode.SHIFT_DOWN) != 0)

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

        # Settling slope from two EW means of the compensated preload.
        comp = y - b_n * u
        a_fast = 1.0 - np.exp(-dt_h / 1.0)
        a_slow = 1.0 - np.exp(-dt_h / 4.0)
        mf = s["m_fast"][slots]
        ms = s["m_slow"][slots]
        mf = np.where(use, np.where(np.isfinite(mf), mf + a_fast * (comp - mf), comp), mf)
        ms = np.where(use, np.where(np.isfinite(ms), ms + a_slow * (comp - ms), comp), ms)
        s["m_fast"][slots] = mf
        s["m_slow"][slots] = ms
        slope_pct_h = np.abs(mf - ms) / 3.0 / np.abs(mf) * 100.0

        # Arm after settling.
        age_h = (t - s["t_learn"][slots]) / _HOUR
        # Only a tightening makes a bolt embed: otherwise the learning time is enough.
        settled = (slope_pct_h < p.settle_pct_per_h) | (s["settling"][slots] == 0)
        arm = learning & use & (((age_h >= p.min_learn_h) & settled) | (age_h >= p.max_learn_h))
        if arm.any():
            ra = slots[arm]
            s["phase"][ra] = _ARMED
            s["baseline"][ra] = level_n[arm]
            s["cusum"][ra] = 0.0
        armed = s["phase"][slots] == _ARMED

        # Lower CUSUM on standardised innovations (armed bolts, trusted readings).
        c = s["cusum"][slots]
        c = np.where(armed & use & ~arm, np.maximum(0.0, c - z - p.cusum_k), c)
        s["cusum"][slots] = c
        s["t_trip"][slots] = np.where(armed & (c >= p.cusum_h), t, s["t_trip"][slots])
        tripped = armed & ((t - s["t_trip"][slots]) <= p.latch_h * _HOUR)

        # Hourly means for the trend.
        self._trend_push(slots, t, comp, use & armed)

        base = s["baseline"][slots]
        ratio = level_n / base
        loss = 1.0 - ratio
        ex["phase"][rows] = s["phase"][slots]
        ex["level_kn"][rows] = level_n
        ex["baseline_kn"][rows] = base
        ex["ratio"][rows] = ratio
        ex["loss"][rows] = loss
        ex["cusum"][rows] = c
        ex["tripped"][rows] = tripped
        # Score: 0.5 at either decision threshold, towards 1 beyond.
        strength = np.fmax(
            np.where(loss * 100.0 >= p.min_loss_pct, np.fmax(c / p.cusum_h, tripped), 0.0),
            np.nan_to_num(loss * 100.0 / p.loss_pct, nan=0.0),
        )
        sc = np.where(armed, 1.0 - np.exp2(-np.maximum(strength, 0.0)), 0.0)
        score[rows] = np.clip(np.nan_to_num(sc, nan=0.0), 0.0, 1.0)

        suspicious = armed & (
            (np.nan_to_num(loss) * 100.0 >= p.min_loss_pct) | (c >= p.cusum_h / 2.0)
        )
        if suspicious.any():
            ex["slope_kn_per_h"][rows[suspicious]] = self._trend_slope(slots[suspicious])

    def _trend_push(self, slots: Int64, t: Float64, comp: Float64, use: Bool) -> None:
        """Accumulate hourly means of the compensated preload; push finished hours to the ring."""
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
            s["tr_val"][d, pos] = (s["hr_sum"][d] / s["hr_n"][d]).astype(np.float32)
            s["tr_hour"][d, pos] = (cur[done] - np.floor(s["t_learn"][d] / _HOUR)).astype(
                np.float32
            )
            s["tr_pos"][d] = ((pos + 1) % TREND_SLOTS).astype(np.int16)
        new = ~np.isfinite(cur) | (hour != cur)
        s["hr_sum"][sl] = np.where(new, comp[use], s["hr_sum"][sl] + comp[use])
        s["hr_n"][sl] = np.where(new, 1, s["hr_n"][sl] + 1)
        s["hr_idx"][sl] = hour

    def _trend_slope(self, slots: Int64) -> Float64:
        """Theil-Sen slope (kN/h) of the bolts' hourly means, the current partial hour included."""
        s = self.state
        vals = s["tr_val"][slots].astype(np.float64)
        hours = s["tr_hour"][slots].astype(np.float64)
        cur_h = s["hr_idx"][slots] - np.floor(s["t_learn"][slots] / _HOUR)
        cur_v = np.where(
            s["hr_n"][slots] > 0, s["hr_sum"][slots] / np.maximum(s["hr_n"][slots], 1), np.nan
        )
        x = np.concatenate([hours, cur_h[:, None]], axis=1)
        v = np.concatenate([vals, cur_v[:, None]], axis=1)
        # The trend of the last day only: older hours may predate the change.
        recent = x >= (cur_h - self.params.trend_h)[:, None]
        v = np.where(np.isfinite(x) & recent, v, np.nan)
        x = np.where(np.isfinite(v), x, np.nan)
        return theil_sen(x, v)

    def decide(self, frame: Frame, scores: Scores) -> Decisions:
        """Loosening, preload_low, installation and sensor-fault alerts and their edge events."""
        p = self.params
        ex = scores.extra
        dec = decide_sensor(self, frame, scores, self.state["act_sensor"])
        loss = np.nan_to_num(ex["loss"], nan=0.0) * 100.0
        ratio = ex["ratio"]
        armed = ex["phase"] == _ARMED
        trusted = (ex["quality"] & (FaultCode.STUCK | FaultCode.BATTERY_BAD)) == 0
        loose = (
            armed & trusted & ((ex["tripped"] & (loss >= p.min_loss_pct)) | (loss >= p.loss_pct))
        )
        clear = (~armed) | (~ex["tripped"] & (loss < p.clear_loss_pct))
        low_sev = np.where(
            ratio < p.critical_ratio,
            int(Severity.CRITICAL),
            np.where(
                ratio < p.alarm_ratio,
                int(Severity.ALARM),
                np.where(ratio < p.warning_ratio, int(Severity.WARNING), 0),
            ),
        )
        low_sev = np.where(armed & trusted, low_sev, 0)
        late = frame.late_rows()
        act_loose = self.state["act_loose"]
        act_low = self.state["act_low"]
        y = frame.column("preload_kn")
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

    def _loosening_severity(self, ratio: float, slope: float, base: float, level: float) -> int:
        p = self.params
        if ratio < p.critical_ratio:
            return int(Severity.CRITICAL)
        hours = _hours_to_line(level, base * p.alarm_ratio, slope)
        if ratio < p.warning_ratio or hours < 24.0:
            return int(Severity.ALARM)
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


def _hours_to_line(level: float, line: float, slope_kn_per_h: float) -> float:
    """Hours until a falling level reaches ``line`` (inf when not falling, 0 when below)."""
    if not math.isfinite(slope_kn_per_h) or slope_kn_per_h >= 0:
        return math.inf
    if level <= line:
        return 0.0
    return (level - line) / -slope_kn_per_h
