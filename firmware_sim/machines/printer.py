"""3D printer: hotend and bed under PID control, heat-up and print jobs, thermal faults.

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
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Final

import numpy as np

from firmware_sim.machines.common import (
    DT_S,
    HOUR_S,
    Streams,
    Values,
    ambient,
    fault_severity,
    internal_grid,
    loguniform,
    ou,
)
from firmware_sim.machines.model import FloatArray, MachineEvent, MachineSpec

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
    new_integ = min(max(integ + err * DT_S, 0.0), 1.0 / ki)
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
            self.settle = self.settle + DT_S if near else 0.0
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
    gaps = loguniform(rng, 600.0, 3 * HOUR_S, n_jobs)
    gaps[0] = rng.uniform(0.0, HOUR_S)
    prints = loguniform(rng, HOUR_S, 6 * HOUR_S, n_jobs)
    probs = np.array([m[4] for m in _MATERIALS])
    mat = rng.choice(len(_MATERIALS), size=n_jobs, p=probs / probs.sum())
    hot_jit = rng.choice([-5.0, 0.0, 5.0], size=n_jobs)
    bed_jit = rng.choice([-5.0, 0.0, 5.0], size=n_jobs)
    hot = np.clip(np.array([_MATERIALS[m][1] for m in mat]) + hot_jit, 190.0, 250.0)
    bed = np.clip(np.array([_MATERIALS[m][2] for m in mat]) + bed_jit, 55.0, 100.0)
    fan = np.array([_MATERIALS[m][3] for m in mat])
    for key, arr, scale in (
        ("print_h", prints, HOUR_S),
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


def simulate_printer(
    spec: MachineSpec, t: FloatArray, streams: Streams
) -> tuple[Values, list[MachineEvent]]:
    r_sched, r_noise, _ = streams
    tau, idx = internal_grid(t)
    n = tau.size
    amb = ambient(r_sched, spec.params.get("ambient_c", 22.0), tau).tolist()
    jobs = _printer_jobs(spec, r_sched, float(t[0]), float(t[-1]))
    heater_w = spec.params.get("heater_w", 40.0)

    nh = r_noise.normal(0.0, _HOT_NOISE_C, n).tolist()
    nb = r_noise.normal(0.0, _BED_NOISE_C, n).tolist()
    melt = np.maximum(_MELT_W[0] + _MELT_W[1] * ou(r_noise, n, DT_S, _MELT_W[2]), 0.0).tolist()
    out_noise = r_noise.standard_normal((2, t.size))

    s_det = np.minimum(fault_severity(spec.faults, "thermistor_detached", tau), 1.0)
    coupling = (1.0 - (1.0 - _DETACHED_COUPLING) * s_det).tolist()
    tau_m = _HOT_SENSOR_TAU_S + (_DETACHED_TAU_S - _HOT_SENSOR_TAU_S) * s_det
    alpha_m = (1.0 - np.exp(-DT_S / tau_m)).tolist()
    heat_k = (1.0 - np.minimum(fault_severity(spec.faults, "heater_failure", tau), 1.0)).tolist()
    fan_k = (1.0 - np.minimum(fault_severity(spec.faults, "fan_failure", tau), 1.0)).tolist()
    alpha_bed = 1.0 - math.exp(-DT_S / _BED_SENSOR_TAU_S)
    alpha_ch = 1.0 - math.exp(-DT_S / _CHAMBER_TAU_S)
    bed_decay = math.exp(-DT_S * _BED_LOSS_W_K / _BED_C_J_K)

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
        th = teq + (th - teq) * math.exp(-DT_S * loss / _HOT_C_J_K)
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
