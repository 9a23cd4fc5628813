"""The bolt preload recursion compiled along time: every row of a frame in one call.

:meth:`detection.preload.BoltPreloadDetector.update` steps through time with numpy arrays across
the bolts of each step: fast over 10,000 bolts with one reading each, slow along one bolt's year
(every step is a few hundred numpy calls on one-element arrays). This module runs the same
recursion — :func:`detection.sensor_faults.quality_step`, the Kalman filter, the hourly settling
and trend regressions, the Theil-Sen slope — one reading after the other in machine code
(numba), over the frame's rows in order, so both shapes cost a few hundred nanoseconds a reading.

It is the same arithmetic, operation by operation, as the numpy form (kept as
``PreloadParams(compiled=False)``): sums over the hourly ring reproduce numpy's pairwise
summation, medians take the mean of the two middle values, and ``nan_to_num``, ``fmax``,
``maximum`` keep numpy's NaN rules. ``tests/unit/test_preload_kernel.py`` compares the two forms
on every bolt scenario: the same diagnostics to the last bits, the same events.

Devices are independent, so rows may come in any device order as long as each device's rows are
in time order (the frame's order: sorted by slot, then time).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Final

import numpy as np
import numpy.typing as npt

from detection._kernel_math import (
    SLOTS,
    curvature,
    fmax,
    fmin,
    jit,
    maximum,
    median_sorted,
    nan_to_num,
    pairwise_sum,
    robust_regress,
    sign,
    t975,
)

if TYPE_CHECKING:
    from detection.preload import PreloadParams

F64 = npt.NDArray[np.float64]
F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]
I32 = npt.NDArray[np.int32]
I16 = npt.NDArray[np.int16]
I8 = npt.NDArray[np.int8]
B = npt.NDArray[np.bool_]

__all__ = [
    "ALERT_INSTALLATION",
    "ALERT_LOOSENING",
    "ALERT_LOW",
    "KERNEL_STATE",
    "decide_rows",
    "pack_params",
    "run_rows",
    "warm_up",
]

KERNEL_STATE: Final = (
    "q_ring",
    "q_pos",
    "q_absdev",
    "q_last_y",
    "q_stuck_n",
    "q_pend_n",
    "q_pend_y",
    "q_last_batt",
    "q_spikes",
    "q_last_t",
    "phase",
    "t_learn",
    "settling",
    "t_last",
    "level",
    "tempco",
    "t_ref",
    "p00",
    "p01",
    "p11",
    "baseline",
    "cusum",
    "t_shift",
    "h_armed",
    "tr_slope",
    "tr_z",
    "hr_sum",
    "hr_n",
    "hr_tsum",
    "hr_idx",
    "tr_val",
    "tr_temp",
    "tr_hour",
    "tr_pos",
    "bend_z",
    "tr_decl",
)
"""State arrays the kernel reads and writes, in its argument order."""


# Indices of the packed parameter vector (pack_params).
_SPIKE_SIGMA: Final = 0
_SPIKE_MIN_PCT: Final = 1
_NOISE_FLOOR_PCT: Final = 2
_STUCK_READINGS: Final = 3
_SHIFT_READINGS: Final = 4
_BATTERY_LOW_V: Final = 5
_BATTERY_BAD_V: Final = 6
_BATTERY_SWAP_RISE_V: Final = 7
_SPIKE_HALFLIFE_H: Final = 8
_MIN_LEARN_H: Final = 9
_MAX_LEARN_H: Final = 10
_SETTLE_PCT_PER_H: Final = 11
_SETTLE_WINDOW_H: Final = 12
_TEMPCO_WINDOW_H: Final = 13
_LEVEL_Q: Final = 14
_TEMPCO_Q: Final = 15
_CUSUM_K: Final = 16
_CUSUM_H: Final = 17
_MIN_LOSS_PCT: Final = 18
_MIN_RATE: Final = 19
_TREND_Z: Final = 20
_SUDDEN_LOSS_PCT: Final = 21
_SUDDEN_HOLD_H: Final = 22
_TREND_H: Final = 23
_SPIKES_ALERT: Final = 24
_LEARNING_LOSS_PCT: Final = 25
_TREND_TEMP_SPAN_C: Final = 26
_SECOND_LOOK_H: Final = 27
_TREND_CONFIRM_H: Final = 28
_CONFIRM_LOSS_PCT: Final = 29
_SIZE: Final = 30


def pack_params(p: PreloadParams) -> npt.NDArray[np.float64]:
    """A :class:`detection.preload.PreloadParams` as the kernel's parameter vector."""
    s = p.sensor
    v = np.zeros(_SIZE)
    v[_SPIKE_SIGMA] = s.spike_sigma
    v[_SPIKE_MIN_PCT] = s.spike_min_pct
    v[_NOISE_FLOOR_PCT] = s.noise_floor_pct
    v[_STUCK_READINGS] = s.stuck_readings
    v[_SHIFT_READINGS] = s.shift_readings
    v[_BATTERY_LOW_V] = s.battery_low_v
    v[_BATTERY_BAD_V] = s.battery_bad_v
    v[_BATTERY_SWAP_RISE_V] = s.battery_swap_rise_v
    v[_SPIKE_HALFLIFE_H] = s.spike_halflife_h
    v[_MIN_LEARN_H] = p.min_learn_h
    v[_MAX_LEARN_H] = p.max_learn_h
    v[_SETTLE_PCT_PER_H] = p.settle_pct_per_h
    v[_SETTLE_WINDOW_H] = p.settle_window_h
    v[_TEMPCO_WINDOW_H] = p.tempco_window_h
    v[_LEVEL_Q] = p.level_q_pct_per_sqrt_h
    v[_TEMPCO_Q] = p.tempco_q_per_sqrt_h
    v[_CUSUM_K] = p.cusum_k
    v[_CUSUM_H] = p.cusum_h
    v[_MIN_LOSS_PCT] = p.min_loss_pct
    v[_MIN_RATE] = p.min_rate_pct_per_day
    v[_TREND_Z] = p.trend_z
    v[_SUDDEN_LOSS_PCT] = p.sudden_loss_pct
    v[_SUDDEN_HOLD_H] = p.sudden_hold_h
    v[_TREND_H] = p.trend_h
    v[_SPIKES_ALERT] = s.spikes_alert
    v[_LEARNING_LOSS_PCT] = p.learning_loss_pct
    v[_TREND_TEMP_SPAN_C] = p.trend_temp_span_c
    v[_SECOND_LOOK_H] = p.second_look_h
    v[_TREND_CONFIRM_H] = p.trend_confirm_h
    v[_CONFIRM_LOSS_PCT] = p.confirm_loss_pct
    return v


# Fault bits (detection.sensor_faults.FaultCode) and learning phases (detection.preload).
_SPIKE: Final = 1
_SHIFT_DOWN: Final = 2
_SHIFT_UP: Final = 4
_STUCK: Final = 8
_BATTERY_LOW: Final = 16
_BATTERY_BAD: Final = 32
_BATTERY_SWAP: Final = 64
_NEW: Final = 0
_LEARNING: Final = 1
_ARMED: Final = 2
_PROVISIONAL: Final = 2  # settling: armed on a few hours, the second look still to come
_BEND_SIGMAS: Final = 1.0  # a curve bends down when its curvature is this many SE below 0
_BEND_NOW_SIGMAS: Final = 2.0  # ... and surely so before the second look
_WINDOW: Final = 7
_HOUR: Final = 3600.0
_MAD_PER_ABS_DEV: Final = 1.2533


@jit
def _comp(tr_val: F32, tr_temp: F32, s: int, tempco: float, t_ref: float) -> F64:
    """The bolt's hourly means compensated to ``t_ref`` (``BoltPreloadDetector._ring_comp``)."""
    out = np.empty(SLOTS)
    for j in range(SLOTS):
        out[j] = np.float64(tr_val[s, j]) - tempco * (np.float64(tr_temp[s, j]) - t_ref)
    return out


@jit
def _still_embedding(hours: F64, vals: F64, temps: F64, pv: F64) -> bool:
    """``BoltPreloadDetector._still_embedding`` for one bolt: the day since first sight still
    falls, and its curve is not confidently bending down."""
    win = np.zeros(SLOTS, np.bool_)
    for j in range(SLOTS):
        win[j] = math.isfinite(hours[j])
    ft = robust_regress(hours, vals, temps, True, win)
    if math.isfinite(ft[3]) and ft[4] >= pv[_TREND_TEMP_SPAN_C]:
        slope, se, n = ft[1], ft[2], ft[5] - 3.0
    else:
        fr = robust_regress(hours, vals, temps, False, win)
        slope, se, n = fr[1], fr[2], fr[5] - 2.0
    line = -pv[_SETTLE_PCT_PER_H] / 100.0 * abs(ft[0])
    falling = (slope + t975(n) * se) < line
    c, c_se = curvature(hours, vals, temps, win)
    return falling and not (c < -_BEND_SIGMAS * c_se)


@jit
def _hour_done(  # noqa: PLR0912, PLR0915 - both tests in one place, as the numpy form
    state: tuple[npt.NDArray[Any], ...], s: int, t: float, pv: F64
) -> None:
    """The bolt just finished an hour: settling test if learning, trend if armed."""
    phase, t_learn, settling, _, level, tempco, t_ref, p00, p01, _ = state[10:20]
    baseline, cusum, _, h_armed, tr_slope, tr_z = state[20:26]
    tr_val, tr_temp, tr_hour, bend_z = state[30], state[31], state[32], state[34]
    tr_decl = state[35]
    hours = np.empty(SLOTS)
    last = -math.inf
    for j in range(SLOTS):
        hours[j] = np.float64(tr_hour[s, j])
        if math.isfinite(hours[j]) and hours[j] > last:
            last = hours[j]
    vals = np.empty(SLOTS)
    temps = np.empty(SLOTS)
    for j in range(SLOTS):
        vals[j] = np.float64(tr_val[s, j])
        temps[j] = np.float64(tr_temp[s, j])
    if phase[s] == _LEARNING:
        win = np.zeros(SLOTS, np.bool_)
        first = math.inf
        for j in range(SLOTS):
            win[j] = math.isfinite(hours[j]) and hours[j] > last - pv[_SETTLE_WINDOW_H]
            if win[j] and hours[j] < first:
                first = hours[j]
        b_now = tempco[s]
        comp_l = _comp(tr_val, tr_temp, s, b_now, t_ref[s])
        ft = robust_regress(hours, vals, temps, True, win)
        fc = robust_regress(hours, comp_l, temps, False, win)
        fr = robust_regress(hours, vals, temps, False, win)
        long = (last - first >= pv[_TEMPCO_WINDOW_H]) and ft[4] >= 3.0
        long = long and math.isfinite(ft[1]) and math.isfinite(ft[3])
        age_h = (t - t_learn[s]) / _HOUR
        line = -pv[_SETTLE_PCT_PER_H] / 100.0 * abs(fr[0])
        flat_t = (ft[1] - t975(ft[5] - 3.0) * ft[2]) >= line
        flat_c = (fc[1] - fc[2]) >= line
        flat_r = (fr[1] - fr[2]) >= line
        short_ok = settling[s] == 0
        flat = flat_t if long else (short_ok and flat_c and flat_r)
        ok = fr[5] >= 5 and math.isfinite(fr[1])
        arm = (age_h >= pv[_MIN_LEARN_H] and ok and flat) or age_h >= pv[_MAX_LEARN_H]
        if arm:
            tc = ft[3] if long else b_now
            tempco[s] = tc
            comp = _comp(tr_val, tr_temp, s, tc, t_ref[s])
            summed = np.zeros(SLOTS)
            cnt = 0
            for j in range(SLOTS):
                if math.isfinite(hours[j]) and hours[j] > last - 6.0 and not math.isnan(comp[j]):
                    summed[j] = comp[j]
                    cnt += 1
            base = pairwise_sum(summed, SLOTS) / cnt if cnt > 0 else math.nan
            if not math.isfinite(base):
                base = level[s]
            phase[s] = _ARMED
            baseline[s] = base
            level[s] = base
            p00[s] = (base * 0.005) ** 2
            p01[s] = 0.0
            cusum[s] = 0.0
            h_armed[s] = last
            if not long and settling[s] == 0 and age_h < pv[_MAX_LEARN_H]:
                settling[s] = _PROVISIONAL
    if phase[s] == _ARMED and settling[s] == _PROVISIONAL and last >= pv[_SECOND_LOOK_H]:
        settling[s] = 0
        if _still_embedding(hours, vals, temps, pv):
            phase[s] = _LEARNING
            settling[s] = 1
            baseline[s] = math.nan
            h_armed[s] = math.nan
            cusum[s] = 0.0
            tr_slope[s] = math.nan
            tr_z[s] = math.nan
            tr_decl[s] = 0
    if phase[s] == _ARMED and settling[s] == _PROVISIONAL:
        win = np.zeros(SLOTS, np.bool_)
        for j in range(SLOTS):
            win[j] = math.isfinite(hours[j])
        c, c_se = curvature(hours, vals, temps, win)
        bend_z[s] = c / c_se
    if phase[s] == _ARMED:
        win = np.zeros(SLOTS, np.bool_)
        ha = np.float64(h_armed[s])
        for j in range(SLOTS):
            win[j] = math.isfinite(hours[j]) and hours[j] >= ha and hours[j] > last - pv[_TREND_H]
        comp = _comp(tr_val, tr_temp, s, tempco[s], t_ref[s])
        fit = robust_regress(hours, comp, temps, False, win)
        base = baseline[s]
        if fit[5] >= 6:
            slope = fit[1]
            z = fit[1] / fit[2]
            if slope <= 0.0:  # the check can only raise a falling slope
                fj = robust_regress(hours, vals, temps, True, win)
                if fj[5] >= 7 and math.isfinite(fj[3]) and fj[4] >= pv[_TREND_TEMP_SPAN_C]:
                    slope = fmax(slope, fj[1])
                    z = fmax(z, fj[1] / fj[2])
            tr_slope[s] = slope * 24.0 / base * 100.0
            tr_z[s] = z
            falls = tr_slope[s] <= -pv[_MIN_RATE] and tr_z[s] <= -pv[_TREND_Z]
            tr_decl[s] = min(tr_decl[s] + 1, 10000) if falls else 0
        else:
            tr_slope[s] = math.nan
            tr_z[s] = math.nan
            tr_decl[s] = 0


@jit
def _trend_slope(state: tuple[npt.NDArray[Any], ...], s: int, pv: F64) -> float:
    """Theil-Sen slope (kN/h) of the compensated hourly means since the baseline, current hour
    included (``BoltPreloadDetector._trend_slope``)."""
    t_learn, tempco, t_ref, h_armed = state[11], state[15], state[16], state[23]
    hr_sum, hr_n, hr_tsum, hr_idx, tr_val, tr_temp, tr_hour = state[26:33]
    w = SLOTS + 1
    b = tempco[s]
    x = np.empty(w)
    v = np.empty(w)
    comp = _comp(tr_val, tr_temp, s, b, t_ref[s])
    for j in range(SLOTS):
        x[j] = np.float64(tr_hour[s, j])
        v[j] = comp[j]
    cur_h = hr_idx[s] - math.floor(t_learn[s] / _HOUR)
    nh = max(int(hr_n[s]), 1)
    x[SLOTS] = cur_h
    if hr_n[s] > 0:
        v[SLOTS] = hr_sum[s] / nh - b * (hr_tsum[s] / nh - t_ref[s])
    else:
        v[SLOTS] = math.nan
    ha = np.float64(h_armed[s])
    for j in range(w):
        recent = x[j] >= cur_h - pv[_TREND_H] and x[j] >= ha
        if not (math.isfinite(x[j]) and recent):
            v[j] = math.nan
        if not math.isfinite(v[j]):
            x[j] = math.nan
    pairs = np.empty(w * (w - 1) // 2)
    c = 0
    finite = 0
    for i in range(w):
        for j in range(i + 1, w):
            sx = x[j] - x[i]
            if sx != 0:
                sl = (v[j] - v[i]) / sx
                if not math.isnan(sl):
                    pairs[c] = sl
                    c += 1
                    finite += math.isfinite(sl)
    if finite == 0:
        return math.nan
    # The median by selection (O(n)), not a sort: the two middle values, averaged.
    hi = c // 2
    part = np.partition(pairs[:c], hi)
    if c % 2 == 1:
        return float((part[hi] + part[hi]) / 2.0)
    return float((part[:hi].max() + part[hi]) / 2.0)


@jit
def run_rows(  # noqa: PLR0912, PLR0915 - one recursion, top to bottom, as the numpy _step
    slots: I64,
    cols: tuple[F64, F64, F64, F64, F64, F64],
    pv: F64,
    state: tuple[npt.NDArray[Any], ...],
    out: tuple[npt.NDArray[Any], ...],
) -> None:
    """Evaluate every row in order (rows of a device in time order).

    Args:
        slots: Device slot per row.
        cols: Per row: time (epoch s), preload, temperature, torque, battery, battery swap.
        pv: :func:`pack_params`.
        state: The detector's state arrays, in :data:`KERNEL_STATE` order.
        out: The diagnostics per row, in ``detection.preload``'s ``_KERNEL_OUT`` order, then the
            score.
    """
    ts, ys, temps, torques, batts, swaps = cols
    q_ring, q_pos, q_absdev, q_last_y, q_stuck_n, q_pend_n, q_pend_y = state[:7]
    q_last_batt, q_spikes, q_last_t, phase, t_learn, settling, t_last = state[7:14]
    level, tempco, t_ref, p00, p01, p11, baseline, cusum, t_shift, h_armed = state[14:24]
    tr_slope, tr_z, hr_sum, hr_n, hr_tsum, hr_idx, tr_val, tr_temp, tr_hour, tr_pos = state[24:34]
    bend_z = state[34]
    o_quality, o_spikes, o_phase, o_level, o_base, o_ratio, o_loss, o_cusum = out[:8]
    o_tripped, o_declining, o_holding, o_trend, o_slope, o_tightened, o_score = out[8:15]
    ring = np.empty(_WINDOW)
    for i in range(slots.shape[0]):
        s = slots[i]
        t = ts[i]
        y = ys[i]
        temp = temps[i]
        batt = batts[i]
        finite = math.isfinite(y)
        tightened = math.isfinite(torques[i]) and finite
        # -- quality (detection.sensor_faults.quality_step) --------------------------------
        if tightened:
            q_ring[s, :] = math.nan
            q_pos[s] = 0
            q_pend_n[s] = 0
        fill = 0
        for j in range(_WINDOW):  # insertion sort of the finite values: no allocation per row
            v = q_ring[s, j]
            if math.isfinite(v):
                k = fill
                while k > 0 and ring[k - 1] > v:
                    ring[k] = ring[k - 1]
                    k -= 1
                ring[k] = v
                fill += 1
        med = median_sorted(ring, fill)
        absdev = q_absdev[s]
        floor = abs(med) * pv[_NOISE_FLOOR_PCT] / 100.0
        q_sigma = fmax(nan_to_num(absdev * _MAD_PER_ABS_DEV), floor)
        thr = fmax(pv[_SPIKE_SIGMA] * q_sigma, abs(med) * pv[_SPIKE_MIN_PCT] / 100.0)
        dev = y - med
        outlier = finite and fill >= 3 and abs(dev) > thr
        pend_n = int(q_pend_n[s])
        pend_y = q_pend_y[s]
        same = (
            pend_n > 0
            and sign(pend_y - med) == sign(dev)
            and (abs(y - pend_y) <= thr or sign(y - pend_y) == sign(dev))
        )
        new_pend = (pend_n + 1 if same else 1) if outlier else 0
        spiky = q_spikes[s] >= pv[_SPIKES_ALERT]
        shift = outlier and new_pend >= (2 * pv[_SHIFT_READINGS] if spiky else pv[_SHIFT_READINGS])
        spike = outlier and not shift
        code = 0
        if shift:
            code |= _SHIFT_DOWN if dev < 0 else (_SHIFT_UP if dev > 0 else 0)
        if spike:
            code |= _SPIKE
        q_pend_n[s] = 0 if shift else new_pend
        q_pend_y[s] = y if (outlier and not same) else pend_y
        pos = int(q_pos[s])
        if shift:  # a shift restarts the window at the new level
            q_ring[s, :] = math.nan
            q_ring[s, 0] = pend_y
            q_ring[s, 1] = y
            q_pos[s] = 2
        if finite and not outlier:
            q_ring[s, pos % _WINDOW] = y
            q_pos[s] = (pos + 1) % _WINDOW
            d = abs(dev)
            if math.isfinite(d):
                q_absdev[s] = 0.97 * absdev + 0.03 * d if math.isfinite(absdev) else d
        if finite:
            q_stuck_n[s] = q_stuck_n[s] + 1 if y == q_last_y[s] else 0
            q_last_y[s] = y
        if q_stuck_n[s] >= pv[_STUCK_READINGS] - 1:
            code |= _STUCK
        if math.isfinite(batt):
            code |= _BATTERY_LOW if batt < pv[_BATTERY_LOW_V] else 0
            code |= _BATTERY_BAD if batt < pv[_BATTERY_BAD_V] else 0
            last_b = q_last_batt[s]
            if math.isfinite(last_b) and batt - last_b >= pv[_BATTERY_SWAP_RISE_V]:
                code |= _BATTERY_SWAP
            q_last_batt[s] = batt
        last_t = q_last_t[s]
        dt = max(t - last_t, 0.0) if math.isfinite(last_t) else 0.0
        spikes = q_spikes[s] * np.exp2(-dt / (pv[_SPIKE_HALFLIFE_H] * 3600.0)) + (
            1.0 if spike else 0.0
        )
        q_spikes[s] = spikes
        q_last_t[s] = fmax(t, -math.inf if math.isnan(last_t) else last_t)
        o_quality[i] = code
        o_spikes[i] = spikes
        o_tightened[i] = tightened
        # -- re-learning: a tightening, a battery swap, an upward jump; or a new bolt ----------
        jump_up = (code & _SHIFT_UP) != 0
        swapped = (code & _BATTERY_SWAP) != 0 or nan_to_num(swaps[i]) > 0
        relearn = tightened or swapped or jump_up or (phase[s] == _NEW and finite)
        if relearn:
            phase[s] = _LEARNING
            settling[s] = 1 if (tightened or jump_up) else 0
            t_learn[s] = t
            level[s] = y
            p00[s] = (y * 0.02) ** 2
            p01[s] = 0.0
            if math.isnan(p11[s]):
                p11[s] = (y * 0.003) ** 2
            if not math.isfinite(t_ref[s]):
                t_ref[s] = temp if math.isfinite(temp) else 20.0
            baseline[s] = math.nan
            cusum[s] = 0.0
            t_shift[s] = math.nan
            h_armed[s] = math.nan
            tr_slope[s] = math.nan
            tr_z[s] = math.nan
            state[35][s] = 0
            hr_n[s] = 0
            hr_sum[s] = 0.0
            hr_tsum[s] = 0.0
            hr_idx[s] = math.nan
            tr_val[s, :] = math.nan
            tr_temp[s, :] = math.nan
            tr_hour[s, :] = math.nan
            tr_pos[s] = 0
        # -- the Kalman filter, on the readings that may move it ------------------------------
        bad = (code & (_SPIKE | _STUCK | _BATTERY_BAD)) != 0 or not finite
        use = not bad and not relearn
        shift_down = use and (code & _SHIFT_DOWN) != 0
        if shift_down and phase[s] == _LEARNING:  # _step_down_while_learning
            drop = (level[s] - y) / level[s] * 100.0
            if drop >= pv[_LEARNING_LOSS_PCT]:
                baseline[s] = level[s]
                phase[s] = _ARMED
                settling[s] = 0
                cusum[s] = 0.0
                h_armed[s] = math.floor(t / _HOUR) - math.floor(t_learn[s] / _HOUR)
        learning = phase[s] == _LEARNING
        lv = level[s]
        b = tempco[s]
        a00 = p00[s]
        a01 = p01[s]
        a11 = p11[s]
        tl = t_last[s]
        dt_h = (max(t - tl, 0.0) if math.isfinite(tl) else 0.0) / _HOUR
        u = nan_to_num(temp - t_ref[s])
        ref = abs(baseline[s] if math.isfinite(baseline[s]) else lv)
        sigma = fmax(q_sigma, ref * pv[_NOISE_FLOOR_PCT] / 100.0)
        if not sigma > 0:
            sigma = fmax(abs(y) * 0.005, 1e-6)
        r_meas = sigma**2
        # Faster level changes are allowed while settling, and once a loss is under way.
        q_scale = (25.0 if learning else 1.0) * (25.0 if cusum[s] > pv[_CUSUM_H] else 1.0)
        a00 = a00 + (ref * pv[_LEVEL_Q] / 100.0) ** 2 * dt_h * q_scale
        a11 = a11 + (ref * pv[_TEMPCO_Q]) ** 2 * dt_h
        if shift_down:  # a confirmed sudden loss: the level jumps to the new reading
            lv = y
            a00 = r_meas * 4.0
        innov = y - (lv + b * u)
        ph = a00 + u * a01
        p1h = a01 + u * a11
        s_var = ph + u * p1h + r_meas
        k0 = ph / s_var
        k1 = p1h / s_var
        if use:
            lv = lv + k0 * innov
            b = b + k1 * innov
            a01, a00, a11 = a01 - k0 * p1h, a00 - k0 * ph, a11 - k1 * p1h
        level[s] = lv
        tempco[s] = b
        p00[s] = a00
        p01[s] = a01
        p11[s] = a11
        t_last[s] = fmax(t, -math.inf if math.isnan(tl) else tl)
        z = innov / math.sqrt(s_var)
        # -- hourly means; at each finished hour the settling test or the trend -------------
        if use:
            temp_f = temp if math.isfinite(temp) else t_ref[s]
            hour = math.floor(t / _HOUR)
            cur = hr_idx[s]
            if math.isfinite(cur) and hour != cur and hr_n[s] > 0:
                p = int(tr_pos[s])
                nh = hr_n[s]
                tr_val[s, p] = hr_sum[s] / nh
                tr_temp[s, p] = hr_tsum[s] / nh
                tr_hour[s, p] = cur - math.floor(t_learn[s] / _HOUR)
                tr_pos[s] = (p + 1) % SLOTS
                _hour_done(state, s, t, pv)
            if not math.isfinite(cur) or hour != cur:
                hr_sum[s] = y
                hr_tsum[s] = temp_f
                hr_n[s] = 1
            else:
                hr_sum[s] = hr_sum[s] + y
                hr_tsum[s] = hr_tsum[s] + temp_f
                hr_n[s] = hr_n[s] + 1
            hr_idx[s] = hour
        armed = phase[s] == _ARMED
        if armed and shift_down:
            t_shift[s] = t
        c = cusum[s]
        if armed and use and not (learning and armed):
            c = maximum(0.0, c - z - pv[_CUSUM_K])
        cusum[s] = c
        # Decision inputs and the score.
        base = baseline[s]
        ratio = level[s] / base
        loss_pct = nan_to_num(1.0 - ratio) * 100.0
        slope = np.float64(tr_slope[s])
        tz = np.float64(tr_z[s])
        declining = nan_to_num(slope) <= -pv[_MIN_RATE] and nan_to_num(tz) <= -pv[_TREND_Z]
        declining = declining and (
            state[35][s] >= pv[_TREND_CONFIRM_H] or loss_pct >= pv[_CONFIRM_LOSS_PCT]
        )
        recent_shift = (t - t_shift[s]) <= pv[_SUDDEN_HOLD_H] * _HOUR
        sudden = armed and recent_shift and loss_pct >= pv[_SUDDEN_LOSS_PCT]
        o_phase[i] = phase[s]
        o_level[i] = level[s]
        o_base[i] = base
        o_ratio[i] = ratio
        o_loss[i] = 1.0 - ratio
        o_cusum[i] = c
        bending = nan_to_num(np.float64(bend_z[s])) <= -_BEND_NOW_SIGMAS
        judged = settling[s] != _PROVISIONAL or bending
        o_tripped[i] = armed and (
            (declining and loss_pct >= pv[_MIN_LOSS_PCT] and judged) or sudden
        )
        o_declining[i] = armed and declining
        # Hysteresis: an active alert holds while half of each condition still holds.
        half = (
            loss_pct >= pv[_MIN_LOSS_PCT] / 2.0
            and nan_to_num(slope) <= -pv[_MIN_RATE] / 2.0
            and nan_to_num(tz) <= -pv[_TREND_Z] / 2.0
        )
        o_holding[i] = armed and (half or (recent_shift and loss_pct >= pv[_SUDDEN_LOSS_PCT] / 2.0))
        o_trend[i] = slope if armed else math.nan
        strength = fmin(
            fmin(loss_pct / pv[_MIN_LOSS_PCT], -nan_to_num(tz) / pv[_TREND_Z]),
            -nan_to_num(slope) / pv[_MIN_RATE],
        )
        if sudden:
            strength = fmax(strength, loss_pct / pv[_SUDDEN_LOSS_PCT])
        sc = 1.0 - np.exp2(-maximum(strength, 0.0)) if armed else 0.0
        o_score[i] = min(max(nan_to_num(sc), 0.0), 1.0)
        suspicious = armed and (loss_pct >= pv[_MIN_LOSS_PCT] or declining)
        o_slope[i] = _trend_slope(state, s, pv) if suspicious else math.nan


# Alert codes of decide_rows (the preload detector maps them to event kinds).
ALERT_LOOSENING: Final = 1
ALERT_LOW: Final = 2
ALERT_INSTALLATION: Final = 3
_WARNING: Final = 1
_MAJOR: Final = 2
_CRITICAL: Final = 3


@jit
def _hours_to_line(level: float, line: float, slope: float) -> float:
    """``detection.preload._hours_to_line``."""
    if not math.isfinite(slope) or slope >= 0:
        return math.inf
    if level <= line:
        return 0.0
    return (level - line) / -slope


@jit
def decide_rows(  # noqa: PLR0912 - the alert state machine, one branch per transition
    slots: I64,
    tightened: B,
    nut_outside: B,
    loose: B,
    clear: B,
    low_sev: I64,
    ratio: F64,
    slope: F64,
    base: F64,
    level: F64,
    lines: F64,
    act_loose: I8,
    act_low: I8,
    o_alert: I8,
    o_sev: I8,
    o_events: I64,
) -> int:
    """The alert state machine of ``BoltPreloadDetector.decide``, row by row in order.

    ``lines`` is (critical, alarm, warning) ratio. Writes each row's alert code and severity, and
    (row, alert code, severity) per event into ``o_events`` (room for two per row): returns the
    number of events.
    """
    critical, alarm, warning = lines[0], lines[1], lines[2]
    ne = 0
    for i in range(slots.shape[0]):
        s = slots[i]
        if tightened[i]:
            act_loose[s] = 0
            act_low[s] = 0
            if nut_outside[i]:
                o_events[ne, 0] = i
                o_events[ne, 1] = ALERT_INSTALLATION
                o_events[ne, 2] = _WARNING
                ne += 1
                o_alert[i] = ALERT_INSTALLATION
                o_sev[i] = _WARNING
            continue
        if loose[i]:
            r = ratio[i]
            if r < critical:
                sev = _CRITICAL
            elif r < warning or _hours_to_line(level[i], base[i] * alarm, slope[i]) < 24.0:
                sev = _MAJOR
            else:
                sev = _WARNING
            if sev > act_loose[s]:
                act_loose[s] = sev
                o_events[ne, 0] = i
                o_events[ne, 1] = ALERT_LOOSENING
                o_events[ne, 2] = sev
                ne += 1
        elif act_loose[s] > 0 and clear[i]:
            act_loose[s] = 0
        if low_sev[i] > act_low[s]:
            act_low[s] = low_sev[i]
            o_events[ne, 0] = i
            o_events[ne, 1] = ALERT_LOW
            o_events[ne, 2] = low_sev[i]
            ne += 1
        elif low_sev[i] == 0 and ratio[i] >= warning + 0.02:
            act_low[s] = 0
        if act_loose[s] > 0:
            o_alert[i] = ALERT_LOOSENING
            o_sev[i] = max(act_loose[s], act_low[s])
        elif act_low[s] > 0:
            o_alert[i] = ALERT_LOW
            o_sev[i] = act_low[s]
    return ne


def warm_up() -> None:
    """Compile (or load from numba's cache) both kernels on a tiny frame, so that the first real
    frame does not wait for them."""
    from detection.base import Frame
    from detection.preload import BoltPreloadDetector

    ids = np.array(["warm-up"], object)
    one = np.ones(1)
    frame = Frame(
        slot=np.zeros(1, np.int64),
        device_id=ids,
        ts_s=np.zeros(1),
        values={"preload_kn": one, "temp_c": one, "torque_nm": one, "battery_v": one},
    )
    BoltPreloadDetector().process(frame)
