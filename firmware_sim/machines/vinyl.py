"""Vinyl cutter: cut and travel moves, blade force, motor current, blade wear and stalls.

**vinyl_cutter** (vectorised): jobs 1-20 min, gaps 5 min-2 h; cut moves (mean 5 s) and travel
(mean 1.5 s). Per job: cut speed 50-400 mm/s (``cut_speed_mm_s``), blade force 60-250 g
(``blade_force_g``). Motor current 0.5 A + 0.0025 A per mm/s + 0.002 A per g of blade force while
cutting (travel at 1.5 · speed, blade up), 0.1 A holding when idle. ``duty_pct`` is the blade-down
share of the last 60 s (a stall keeps the blade down).

* ``blade_wear``: blade force · (1 + 0.6 s), drag current · (1 + 0.5 s), s = severity · progress.
* ``motor_stall`` (in a job): speed 0, current (1.2 + 1.8 severity) A with a decaying spike at the
  stall; a ``fault`` event (code ``motor_stall``) 0.5 s after each stall begins.
"""

from __future__ import annotations

from typing import Final

import numpy as np

from firmware_sim.machines.common import (
    DUTY_WINDOW_S,
    Streams,
    Values,
    alternating,
    duty_pct,
    fault_severity,
    job_events,
    loguniform,
    lookup,
    ramped_severity,
    renewal,
)
from firmware_sim.machines.model import FloatArray, MachineEvent, MachineFault, MachineSpec

_VINYL_IDLE_A: Final = 0.1
_VINYL_BASE_A: Final = 0.5
_VINYL_A_PER_MM_S: Final = 0.0025
_VINYL_A_PER_G: Final = 0.002
_VINYL_STALL_A: Final = (1.2, 1.8)


def simulate_vinyl(
    spec: MachineSpec, t: FloatArray, streams: Streams
) -> tuple[Values, list[MachineEvent]]:
    r_sched, r_noise, _ = streams
    prm = spec.params
    t0, t1 = float(t[0]), float(t[-1])
    starts, ends = renewal(
        r_sched, t0, t1, dur_s=(60.0, 1200.0), gap_s=(300.0, 7200.0), first_gap_max_s=1800.0
    )
    n_jobs = starts.size
    speed = np.round(loguniform(r_sched, 50.0, 400.0, n_jobs), -1)
    force = np.round(r_sched.uniform(60.0, 250.0, n_jobs))
    if "cut_speed_mm_s" in prm:
        speed[:] = prm["cut_speed_mm_s"]
    if "blade_force_g" in prm:
        force[:] = prm["blade_force_g"]
    cuts = [alternating(r_sched, s, e, 5.0, 1.5) for s, e in zip(starts, ends, strict=True)]
    cs = np.concatenate([np.empty(0), *(c[0] for c in cuts)])
    ce = np.concatenate([np.empty(0), *(c[1] for c in cuts)])
    noise = r_noise.standard_normal((4, t.size))
    corner = r_noise.uniform(0.8, 1.0, t.size)

    job_k, in_job = lookup(starts, ends, t)
    _, blade_down = lookup(cs, ce, t)
    v_set = speed[job_k] if n_jobs else np.zeros(t.size)
    f_set = force[job_k] if n_jobs else np.zeros(t.size)
    wear = ramped_severity(spec.faults, "blade_wear", t, t1)
    stall = np.where(in_job, np.minimum(fault_severity(spec.faults, "motor_stall", t), 1.0), 0.0)
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
        "duty_pct": duty_pct(ds, de, t, DUTY_WINDOW_S),
    }
    events += job_events(spec.device_id, starts, ends, t1)
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
