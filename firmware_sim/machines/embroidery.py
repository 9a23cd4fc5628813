"""Embroidery machine: colour blocks, stitch rate, thread tension, thread breaks.

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

from typing import Final

import numpy as np

from firmware_sim.machines.common import (
    DUTY_WINDOW_S,
    HOUR_S,
    Streams,
    Values,
    duty_pct,
    fault_severity,
    job_events,
    loguniform,
    lookup,
    renewal,
)
from firmware_sim.machines.model import FloatArray, IntArray, MachineEvent, MachineSpec

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
            d = float(loguniform(rng, 120.0, 720.0, 1)[0])
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
    n_cand = int(rng.poisson(_BREAK_RATE_MAX_PER_H * (t1 - t0) / HOUR_S))
    cand = np.sort(rng.uniform(t0, t1, n_cand))
    u = rng.uniform(0.0, 1.0, cand.size)
    rethread = rng.uniform(*_RETHREAD_S, cand.size)
    s_tension = fault_severity(spec.faults, "tension_fault", cand)
    lam = np.minimum(lam0 * (1 + _TENSION_BREAK_GAIN * s_tension), _BREAK_RATE_MAX_PER_H)
    _, stitching = lookup(bs, be, cand)
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


def simulate_embroidery(
    spec: MachineSpec, t: FloatArray, streams: Streams
) -> tuple[Values, list[MachineEvent]]:
    r_sched, r_noise, r_fault = streams
    prm = spec.params
    t0, t1 = float(t[0]), float(t[-1])
    starts, ends = renewal(
        r_sched, t0, t1, dur_s=(600.0, 5400.0), gap_s=(600.0, 3 * HOUR_S), first_gap_max_s=1800.0
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

    job_k, _ = lookup(starts, ends, t)
    _, stitching = lookup(ss, se, t)
    s_mo = fault_severity(spec.faults, "motor_overload", t)
    s_tf = fault_severity(spec.faults, "tension_fault", t)
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
        "duty_pct": duty_pct(ss, se, t, DUTY_WINDOW_S),
        "thread_tension_g": ten,
    }
    events += job_events(spec.device_id, starts, ends, t1)
    return values, events
