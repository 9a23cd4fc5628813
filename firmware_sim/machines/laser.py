"""CO2 laser cutter: tube current while lasing, the water loop and its chiller.

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
"""

from __future__ import annotations

import math
from typing import Final

import numpy as np

from firmware_sim.machines.common import (
    DT_S,
    Streams,
    Values,
    alternating,
    ambient,
    fault_severity,
    internal_grid,
    job_events,
    lookup,
    ou,
    renewal,
)
from firmware_sim.machines.model import FloatArray, MachineEvent, MachineFault, MachineSpec

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


def simulate_laser(
    spec: MachineSpec, t: FloatArray, streams: Streams
) -> tuple[Values, list[MachineEvent]]:
    r_sched, r_noise, _ = streams
    prm = spec.params
    tau, idx = internal_grid(t)
    n = tau.size
    t0, t1 = float(t[0]), float(t[-1])
    amb = ambient(r_sched, prm.get("ambient_c", 22.0), tau)
    starts, ends = renewal(
        r_sched, t0, t1, dur_s=(180.0, 2700.0), gap_s=(300.0, 7200.0), first_gap_max_s=1800.0
    )
    seg_s: list[FloatArray] = []
    seg_e: list[FloatArray] = []
    seg_p: list[FloatArray] = []
    for s, e in zip(starts.tolist(), ends.tolist(), strict=True):
        power = round(float(r_sched.uniform(20.0, 85.0)))
        a, b = alternating(r_sched, s, e, 6.0, 2.0)
        seg_s.append(a)
        seg_e.append(b)
        seg_p.append(np.full(a.size, float(power)))
    ss = np.concatenate([np.empty(0), *seg_s])
    se = np.concatenate([np.empty(0), *seg_e])
    sp = np.concatenate([np.empty(0), *seg_p])
    k, lasing = lookup(ss, se, tau)
    power_pct = np.where(lasing, sp[k] if sp.size else 0.0, 0.0)
    current_ma = prm.get("tube_max_ma", 28.0) * power_pct / 100.0
    heat_w = (_TUBE_HEAT_W_PER_MA * current_ma).tolist()

    q_nom = prm.get("flow_lpm", 2.0)
    flow = q_nom * (1.0 + 0.01 * ou(r_noise, n, DT_S, 30.0)) * _flow_factor(spec.faults, tau)
    flow = np.maximum(flow, 0.0)
    g_w_k = (_FLOW_W_K_PER_LPM * flow).tolist()
    chill = (
        prm.get("chiller_w", 800.0)
        * (1.0 - np.minimum(fault_severity(spec.faults, "chiller_failure", tau), 1.0))
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
        tj = min(teq + (tj - teq) * math.exp(-DT_S * h / _JACKET_C_J_K), _BOILING_C)
        # Reservoir with a thermostatic on/off compressor.
        if comp_on and tr < set_c - _CHILLER_BAND_C:
            comp_on = False
        elif not comp_on and tr > set_c + _CHILLER_BAND_C:
            comp_on = True
        q_out = chill[i] if comp_on else 0.0
        tr += (
            DT_S
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
    return values, job_events(spec.device_id, starts, ends, t1)
