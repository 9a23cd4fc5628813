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

Modules
-------
``model`` (the data types, `FAULT_KINDS`, `MACHINE_PARAMS`, the default bearing), ``common``
(helpers shared by the simulators) and one module per machine kind, whose docs give its model and
constants: ``printer`` (printer3d), ``laser`` (laser_cutter), ``cnc`` (cnc_mill, with the
vibration model behind `cnc_waveform` and `cnc_vib_rms_mms`), ``vinyl`` (vinyl_cutter) and
``embroidery``.
"""

from __future__ import annotations

from typing import Final

import numpy as np
import numpy.typing as npt

from firmware_sim.machines.cnc import cnc_vib_rms_mms, cnc_waveform, simulate_cnc
from firmware_sim.machines.common import Streams
from firmware_sim.machines.embroidery import simulate_embroidery
from firmware_sim.machines.laser import simulate_laser
from firmware_sim.machines.model import (
    DEFAULT_BEARING,
    DEFAULT_CHATTER_MODE_HZ,
    FAULT_KINDS,
    MACHINE_PARAMS,
    BearingGeometry,
    FaultInterval,
    MachineEvent,
    MachineFault,
    MachineRun,
    MachineSpec,
)
from firmware_sim.machines.printer import simulate_printer
from firmware_sim.machines.vinyl import simulate_vinyl
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


# Reading fields that are not float columns (CNC waveforms are attached by callers).
_NON_FLOAT_FIELDS: Final = frozenset({"vib_ms2"})

_SIMULATORS: Final = {
    DeviceKind.PRINTER3D: simulate_printer,
    DeviceKind.LASER_CUTTER: simulate_laser,
    DeviceKind.CNC_MILL: simulate_cnc,
    DeviceKind.VINYL_CUTTER: simulate_vinyl,
    DeviceKind.EMBROIDERY: simulate_embroidery,
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
