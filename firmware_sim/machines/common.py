"""Helpers shared by the machine simulators: job schedules, segment lookups, fault severities.

Segments (jobs, cut moves, stitching) are sorted, disjoint ``(starts, ends)`` arrays; a time ``t``
is inside a segment when ``start <= t < end``.
"""

from __future__ import annotations

import math
from typing import Final

import numpy as np
from scipy import signal

from firmware_sim.machines.model import (
    BoolArray,
    FloatArray,
    IntArray,
    MachineEvent,
    MachineFault,
)

# Integration step of the closed-loop (thermal) simulators, s.
DT_S: Final = 1.0
_DAY_S: Final = 86_400.0
_AMBIENT_SWING_C: Final = 1.5
HOUR_S: Final = 3600.0
# Trailing window of ``duty_pct`` readings, s.
DUTY_WINDOW_S: Final = 60.0


def loguniform(rng: np.random.Generator, lo: float, hi: float, size: int) -> FloatArray:
    return np.exp(rng.uniform(math.log(lo), math.log(hi), size))


def renewal(
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
        d = float(loguniform(rng, *dur_s, 1)[0])
        starts.append(t)
        ends.append(t + d)
        t += d + float(loguniform(rng, *gap_s, 1)[0])
    return np.asarray(starts, dtype=np.float64), np.asarray(ends, dtype=np.float64)


def alternating(
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


def lookup(starts: FloatArray, ends: FloatArray, t: FloatArray) -> tuple[IntArray, BoolArray]:
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


def duty_pct(starts: FloatArray, ends: FloatArray, t: FloatArray, window_s: float) -> FloatArray:
    """Share of the trailing window spent inside the segments, %."""
    on = _on_time(starts, ends, t) - _on_time(starts, ends, t - window_s)
    return np.clip(100.0 * on / window_s, 0.0, 100.0)


def fault_severity(faults: tuple[MachineFault, ...], kind: str, t: FloatArray) -> FloatArray:
    """Severity of a fault kind at each t (0 when absent; largest of overlapping faults)."""
    out = np.zeros(t.size)
    for f in faults:
        if f.kind == kind:
            m = (t >= f.onset_s) & (t < f.end_s)
            out[m] = np.maximum(out[m], f.severity)
    return out


def ramped_severity(
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


def ou(rng: np.random.Generator, n: int, dt_s: float, tau_s: float) -> FloatArray:
    """Unit-variance Ornstein-Uhlenbeck samples on a uniform grid."""
    a = math.exp(-dt_s / tau_s)
    w = rng.standard_normal(n)
    x = signal.lfilter([math.sqrt(1 - a * a)], [1.0, -a], w)
    return np.asarray(x, dtype=np.float64)


def internal_grid(t: FloatArray) -> tuple[FloatArray, IntArray]:
    """Uniform `DT_S` grid covering ``t`` and, per sample, the index of the latest grid step."""
    t0 = float(t[0])
    n = math.floor((float(t[-1]) - t0) / DT_S + 1e-9) + 1
    tau = t0 + DT_S * np.arange(n, dtype=np.float64)
    idx = np.clip(np.floor((t - t0) / DT_S + 1e-9).astype(np.intp), 0, n - 1)
    return tau, idx


def ambient(rng: np.random.Generator, mean_c: float, t: FloatArray) -> FloatArray:
    phase = float(rng.uniform(0.0, 2 * math.pi))
    return mean_c + _AMBIENT_SWING_C * np.sin(2 * math.pi * t / _DAY_S + phase)


def job_events(
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
