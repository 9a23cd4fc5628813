"""Smart-bolt physics and sensor behaviour, vectorised over bolts x time.

True preload of a bolt (kN), from its installation on:

* **Installation.** The fitter applies the torque the nominal nut factor asks for,
  ``T = K_nom · F_target · d``; the bolt's real nut factor ``K`` (drawn per bolt, dry steel
  0.14-0.22) gives the preload actually reached, ``F0 = T / (K · d)`` (DOMAIN: ``T = K · F · d``).
* **Embedding.** Surface roughness settles: ``F0 · (1 - e · (1 - exp(-t/τ)))`` with ``e`` 5-15 %
  and ``τ`` a few hours. The *settled* level ``F0 · (1 - e)`` is the reference for the 70 % line.
* **Temperature.** ``ΔF / F = c_joint · ΔT`` from the temperature at installation: steel bolt in
  an aluminium joint about +0.3 %/°C, steel in steel about 0.
* **Loosening** (ground truth carries onset and the time the true preload crosses 70 % of the
  settled level):
  - ``vibration_loosening``: stage 1, a slow loss without rotation as a fast and a slow
    exponential (a few % over days); stage 2, rotational back-off that accelerates,
    ``1 - (y / T2)^p`` (p 2-3, T2 half a day to a few days), down to a few % of preload;
  - ``creep``: roughly linear relaxation, 0.5-2 %/day;
  - ``sudden_loss``: a step loss of 40-100 % (impact, fracture).
* **Retightening** by maintenance resets the preload (new installation, embedding again) and
  cures loosening; it sends a ``tightened`` event.

The sensor measures ``F · (1 + c_sensor · ΔT)`` plus noise (0.5-1 % of preload, strain gauge or
ultrasonic), quantised to its resolution. Sensor faults change only the measurement: ``stuck``,
``spikes``, ``drift``, ``dropout`` (gaps of hours), ``battery_swap_offset`` (an offset step at a
battery swap), ``low_battery`` (voltage sags, readings noisier and gappier), ``clock_offset``
(timestamps shifted from the onset on).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Final

import numpy as np
import numpy.typing as npt

__all__ = [
    "LOOSENING_FAULTS",
    "SENSOR_FAULTS",
    "BoltEvent",
    "BoltFault",
    "BoltGroupSpec",
    "BoltSeries",
    "BoltTruth",
    "simulate_bolts",
]

Float64 = npt.NDArray[np.float64]
Int64 = npt.NDArray[np.int64]
_DAY_S: Final = 86_400.0
_HOUR_S: Final = 3_600.0


class BoltFault(StrEnum):
    """What happens to a bolt (or its sensor) during a run."""

    NONE = "none"
    VIBRATION_LOOSENING = "vibration_loosening"
    CREEP = "creep"
    SUDDEN_LOSS = "sudden_loss"
    STUCK = "stuck"
    SPIKES = "spikes"
    DRIFT = "drift"
    DROPOUT = "dropout"
    BATTERY_SWAP_OFFSET = "battery_swap_offset"
    LOW_BATTERY = "low_battery"
    CLOCK_OFFSET = "clock_offset"


LOOSENING_FAULTS: Final = frozenset(
    {BoltFault.VIBRATION_LOOSENING, BoltFault.CREEP, BoltFault.SUDDEN_LOSS}
)
SENSOR_FAULTS: Final = frozenset(
    {
        BoltFault.STUCK,
        BoltFault.SPIKES,
        BoltFault.DRIFT,
        BoltFault.DROPOUT,
        BoltFault.BATTERY_SWAP_OFFSET,
        BoltFault.LOW_BATTERY,
        BoltFault.CLOCK_OFFSET,
    }
)

# Thermal coefficient of preload by clamped material, per °C (steel bolt).
_JOINT_TEMPCO: Final = {
    "steel": 0.0,
    "aluminium": 0.003,
    "cast_iron": -0.0003,
    "concrete": 0.0002,
    "composite": 0.0015,
}


@dataclass(frozen=True, slots=True)
class BoltGroupSpec:
    """A group of alike bolts of a scenario (ranges are drawn uniformly per bolt).

    Attributes:
        count: Number of bolts.
        id_prefix: Device ids are ``{id_prefix}{i:03d}``.
        joint: Name of the joint the bolts belong to (positions 1..count).
        diameter_mm: Nominal diameter d.
        target_preload_kn: The preload the joint design asks for.
        nominal_nut_factor: K the fitter's torque table assumes.
        nut_factor: Range of the real K of each bolt.
        joint_material: ``steel``, ``aluminium``, ``cast_iron``, ``concrete`` or ``composite``.
        embedding_pct: Range of the embedding loss.
        embedding_tau_h: Range of the embedding time constant.
        noise_pct: Measurement noise, 1 sigma, in % of preload.
        resolution_kn: Sensor resolution.
        sensor_tempco_pct_per_c: Range of the sensor's own temperature coefficient after its
            internal compensation.
        install_s: When the bolts are tightened, seconds from the start (0: at the start; negative:
            before the run, already settled).
        fault: What happens to these bolts.
        fault_onset_s: Range of the fault's onset, seconds from the start.
        fault_params: Fault-specific parameters (see :func:`simulate_bolts`).
        retighten_s: Maintenance retightens the bolts at this time (seconds from the start).
        battery_v: Battery voltage at the start.
    """

    count: int
    id_prefix: str
    joint: str = "joint-1"
    diameter_mm: float = 16.0
    target_preload_kn: float = 62.0
    nominal_nut_factor: float = 0.18
    nut_factor: tuple[float, float] = (0.14, 0.22)
    joint_material: str = "steel"
    embedding_pct: tuple[float, float] = (5.0, 15.0)
    embedding_tau_h: tuple[float, float] = (2.0, 10.0)
    noise_pct: float = 0.5
    resolution_kn: float = 0.01
    sensor_tempco_pct_per_c: tuple[float, float] = (-0.01, 0.01)
    install_s: float = 0.0
    fault: BoltFault = BoltFault.NONE
    fault_onset_s: tuple[float, float] = (0.0, 0.0)
    fault_params: dict[str, float] = field(default_factory=dict)
    retighten_s: float | None = None
    battery_v: float = 3.65

    def __post_init__(self) -> None:
        if self.count < 1:
            raise ValueError("count must be >= 1")
        if self.joint_material not in _JOINT_TEMPCO:
            raise ValueError(
                f"joint_material {self.joint_material!r} is not one of {', '.join(_JOINT_TEMPCO)}"
            )
        for name in ("nut_factor", "embedding_pct", "embedding_tau_h", "fault_onset_s"):
            lo, hi = getattr(self, name)
            if lo > hi:
                raise ValueError(f"{name}: low end {lo} above high end {hi}")
        if self.nut_factor[0] <= 0 or self.diameter_mm <= 0 or self.target_preload_kn <= 0:
            raise ValueError("nut_factor, diameter_mm and target_preload_kn must be > 0")


@dataclass(frozen=True, slots=True)
class BoltEvent:
    """An event a bolt node sends: ``tightened`` (with torque and preload) or ``battery_swap``."""

    device_id: str
    ts_ms: int
    type: str
    torque_nm: float | None = None
    preload_kn: float | None = None
    battery_v: float | None = None


@dataclass(frozen=True, slots=True)
class BoltTruth:
    """Ground truth of one bolt.

    Attributes:
        device_id: The bolt.
        fault: What happened (``none`` for a healthy bolt).
        onset_ms: When it started (None for ``none``).
        end_ms: When a sensor fault ended (None: lasted to the end, or not a sensor fault).
        settled_kn: The settled preload (after embedding, at the installation temperature).
        cross70_ms: When the true preload first fell below 70 % of the settled level (None: never).
        nut_factor: The bolt's real K at (the last) installation.
        joint: The joint; ``position`` is the bolt's position in it (1-based).
        position: Position in the joint.
    """

    device_id: str
    fault: BoltFault
    onset_ms: int | None
    end_ms: int | None
    settled_kn: float
    cross70_ms: int | None
    nut_factor: float
    joint: str
    position: int


@dataclass(slots=True)
class BoltSeries:
    """A simulated run of many bolts on one time grid.

    Attributes:
        device_id: The bolts, one per row of the 2-D arrays.
        t_ms: Sample times (epoch ms UTC), shared by all bolts.
        ts_ms: The timestamp each node stamps on each sample (differs from ``t_ms`` only under a
            clock offset).
        preload_kn: Measured preload; NaN where the node sent nothing (dropout).
        true_preload_kn: The physical preload.
        temp_c: Measured joint temperature.
        battery_v: Battery voltage.
        events: ``tightened`` and ``battery_swap`` events, in time order.
        truth: Ground truth, one per bolt.
    """

    device_id: list[str]
    t_ms: Int64
    ts_ms: Int64
    preload_kn: Float64
    true_preload_kn: Float64
    temp_c: Float64
    battery_v: Float64
    events: list[BoltEvent]
    truth: list[BoltTruth]

    @property
    def samples(self) -> int:
        """Bolt samples in the run (bolts x times)."""
        return int(self.preload_kn.size)


def _u(rng: np.random.Generator, lo_hi: tuple[float, float], n: int) -> Float64:
    """``n`` draws from [lo, hi) (always consuming the stream, so draws stay aligned)."""
    lo, hi = lo_hi
    out: Float64 = rng.uniform(lo, hi, size=n)
    return out


def simulate_bolts(
    spec: BoltGroupSpec,
    t_ms: Int64,
    joint_temp_c: Float64,
    rng: np.random.Generator,
) -> BoltSeries:
    """Simulate a group of bolts on a time grid.

    Args:
        spec: The group.
        t_ms: Sample times, epoch ms, increasing.
        joint_temp_c: Joint temperature at each sample time (see :mod:`firmware_sim.climate`).
        rng: Random source; the same seed gives the same run.

    Fault parameters (``spec.fault_params``, all optional): ``stage1_days`` (vibration loosening,
    default 3-8), ``stage2_hours`` (12-96), ``creep_pct_per_day`` (0.5-2), ``loss_pct`` (40-100),
    ``drift_pct_per_day`` (0.1-1, sign random), ``spikes_per_day`` (4), ``dropout_hours`` (2-12),
    ``dropouts`` (3), ``offset_pct`` (2-5, sign random), ``clock_offset_s`` (±1-6 h).

    Returns:
        The run, with ground truth.
    """
    nb = spec.count
    nt = int(t_ms.shape[0])
    # Independent streams: a fault never changes the draws of the healthy physics or the noise,
    # so a faulty run and a healthy run with the same seed differ only by the fault.
    rng, rng_noise, rng_fault = rng.spawn(3)
    t_s = (t_ms - t_ms[0]).astype(np.float64) / 1000.0 if nt else np.zeros(0)
    start_ms = int(t_ms[0]) if nt else 0
    ids = [f"{spec.id_prefix}{i + 1:03d}" for i in range(nb)]
    d_m = spec.diameter_mm / 1000.0
    torque = spec.nominal_nut_factor * spec.target_preload_kn * 1000.0 * d_m  # N·m
    k = _u(rng, spec.nut_factor, nb)
    f0 = torque / (k * d_m) / 1000.0  # kN
    emb = _u(rng, spec.embedding_pct, nb) / 100.0
    tau = _u(rng, spec.embedding_tau_h, nb) * _HOUR_S
    tempco = _JOINT_TEMPCO[spec.joint_material] * (1.0 + rng.normal(0.0, 0.1, nb))
    sensor_tempco = _u(rng, spec.sensor_tempco_pct_per_c, nb) / 100.0
    onset_s = _u(rng_fault, spec.fault_onset_s, nb)

    temps = joint_temp_c[None, :] + rng.normal(
        0.0, 0.3, (nb, 1)
    )  # bolts of a joint differ a little
    install_idx = min(max(int(np.searchsorted(t_s, spec.install_s)), 0), max(nt - 1, 0))
    t_ref = temps[:, install_idx : install_idx + 1] if nt else np.zeros((nb, 1))
    d_temp = temps - t_ref
    since_install = np.maximum(t_s[None, :] - spec.install_s, 0.0)
    true = f0[:, None] * (1.0 - emb[:, None] * (1.0 - np.exp(-since_install / tau[:, None])))
    true *= 1.0 + tempco[:, None] * d_temp
    settled = f0 * (1.0 - emb)

    events: list[BoltEvent] = []
    installed_ms = start_ms + int(spec.install_s * 1000)
    if spec.install_s >= 0 and nt:
        f_meas0 = f0 * (1.0 + rng.normal(0.0, spec.noise_pct / 100.0, nb))
        events += [
            BoltEvent(
                ids[i], installed_ms, "tightened", round(torque, 1), round(float(f_meas0[i]), 2)
            )
            for i in range(nb)
        ]

    fault = spec.fault
    p = spec.fault_params
    if fault in LOOSENING_FAULTS:
        true *= _loosening(fault, p, t_s, onset_s, rng_fault)
    k_final = k
    if spec.retighten_s is not None and nt:
        true, settled, k_final = _retighten(
            spec,
            t_s=t_s,
            true=true,
            temps=temps,
            torque=torque,
            d_m=d_m,
            rng=rng,
            ids=ids,
            start_ms=start_ms,
            events=events,
        )

    noise = rng_noise.normal(0.0, spec.noise_pct / 100.0, (nb, nt))
    meas = true * (1.0 + sensor_tempco[:, None] * d_temp) * (1.0 + noise)
    battery = np.full((nb, nt), spec.battery_v) - 0.004 * np.maximum(10.0 - temps, 0.0)
    battery -= 0.002 * t_s[None, :] / (30 * _DAY_S)  # a node's drain over a month
    ts = np.broadcast_to(t_ms, (nb, nt)).copy()
    end_ms: list[int | None] = [None] * nb
    if fault in SENSOR_FAULTS and nt:
        end_ms = _sensor_fault(
            fault,
            p=p,
            t_s=t_s,
            t_ms=t_ms,
            onset_s=onset_s,
            meas=meas,
            battery=battery,
            ts=ts,
            rng=rng_fault,
            ids=ids,
            events=events,
            f0=f0,
        )
    if spec.resolution_kn > 0:
        meas = np.round(meas / spec.resolution_kn) * spec.resolution_kn
    temp_meas = np.round(temps + rng_noise.normal(0.0, 0.1, (nb, nt)), 1)
    battery = np.round(battery, 3)

    truth = _truth(
        spec,
        ids=ids,
        t_s=t_s,
        t_ms=t_ms,
        true=true,
        settled=settled,
        onset_s=onset_s,
        end_ms=end_ms,
        k_final=k_final,
        start_ms=start_ms,
    )
    events.sort(key=lambda e: (e.ts_ms, e.device_id))
    return BoltSeries(ids, t_ms, ts, meas, true, temp_meas, battery, events, truth)


def _truth(
    spec: BoltGroupSpec,
    *,
    ids: list[str],
    t_s: Float64,
    t_ms: Int64,
    true: Float64,
    settled: Float64,
    onset_s: Float64,
    end_ms: list[int | None],
    k_final: Float64,
    start_ms: int,
) -> list[BoltTruth]:
    """Ground truth per bolt: fault, onset, end and the first crossing of the 70 % line."""
    cross = (true < 0.7 * settled[:, None]) & (t_s[None, :] >= spec.install_s)
    first = np.where(cross.any(axis=1), cross.argmax(axis=1), -1)
    fault = spec.fault
    return [
        BoltTruth(
            device_id=ids[i],
            fault=fault,
            onset_ms=None if fault is BoltFault.NONE else start_ms + int(onset_s[i] * 1000),
            end_ms=end_ms[i],
            settled_kn=round(float(settled[i]), 3),
            cross70_ms=None if first[i] < 0 else int(t_ms[first[i]]),
            nut_factor=round(float(k_final[i]), 4),
            joint=spec.joint,
            position=i + 1,
        )
        for i in range(len(ids))
    ]


def _loosening(
    fault: BoltFault,
    p: dict[str, float],
    t_s: Float64,
    onset_s: Float64,
    rng: np.random.Generator,
) -> Float64:
    """Multiplier (bolts x times) of the true preload under a loosening fault."""
    nb = onset_s.shape[0]
    x = np.maximum(t_s[None, :] - onset_s[:, None], 0.0)
    if fault is BoltFault.VIBRATION_LOOSENING:
        # Stage 1: cyclic plastic deformation, no rotation: A(1 - e^(-x/τf)) + C(1 - e^(-x/τs)).
        lf = _u(rng, (0.01, 0.03), nb)
        ls = _u(rng, (0.02, 0.05), nb)
        tf = _u(rng, (2.0, 8.0), nb) * _HOUR_S
        ts_ = _u(rng, (1.0, 4.0), nb) * _DAY_S
        m1 = 1.0 - lf[:, None] * (1.0 - np.exp(-x / tf[:, None]))
        m1 -= ls[:, None] * (1.0 - np.exp(-x / ts_[:, None]))
        # Stage 2: rotational back-off, accelerating, to a residual of a few %.
        stage1 = _param(p, "stage1_days", (3.0, 8.0), nb, rng) * _DAY_S
        t2 = _param(p, "stage2_hours", (12.0, 96.0), nb, rng) * _HOUR_S
        power = _u(rng, (2.0, 3.0), nb)
        floor = _u(rng, (0.0, 0.05), nb)
        y = np.clip((x - stage1[:, None]) / t2[:, None], 0.0, 1.0)
        m2 = floor[:, None] + (1.0 - floor[:, None]) * (1.0 - y ** power[:, None])
        result: Float64 = m1 * m2
        return result
    if fault is BoltFault.CREEP:
        rate = _param(p, "creep_pct_per_day", (0.5, 2.0), nb, rng) / 100.0
        creep: Float64 = np.maximum(1.0 - rate[:, None] * x / _DAY_S, 0.0)
        return creep
    loss = _param(p, "loss_pct", (40.0, 100.0), nb, rng) / 100.0
    step: Float64 = np.where(t_s[None, :] >= onset_s[:, None], 1.0 - loss[:, None], 1.0)
    return step


def _retighten(
    spec: BoltGroupSpec,
    *,
    t_s: Float64,
    true: Float64,
    temps: Float64,
    torque: float,
    d_m: float,
    rng: np.random.Generator,
    ids: list[str],
    start_ms: int,
    events: list[BoltEvent],
) -> tuple[Float64, Float64, Float64]:
    """A new installation at ``spec.retighten_s``: new K, new embedding, loosening cured."""
    assert spec.retighten_s is not None  # noqa: S101 - the caller checked
    nb = true.shape[0]
    r = int(np.searchsorted(t_s, spec.retighten_s))
    k = _u(rng, spec.nut_factor, nb)
    f0 = torque / (k * d_m) / 1000.0
    emb = _u(rng, (0.01, 0.04), nb)  # a retightened joint has already embedded
    tau = _u(rng, spec.embedding_tau_h, nb) * _HOUR_S
    if r < t_s.shape[0]:
        since = t_s[None, r:] - spec.retighten_s
        d_temp = temps[:, r:] - temps[:, r : r + 1]
        new = f0[:, None] * (1.0 - emb[:, None] * (1.0 - np.exp(-since / tau[:, None])))
        new *= 1.0 + _JOINT_TEMPCO[spec.joint_material] * d_temp
        true = true.copy()
        true[:, r:] = new
        at_ms = start_ms + int(spec.retighten_s * 1000)
        meas = f0 * (1.0 + rng.normal(0.0, spec.noise_pct / 100.0, nb))
        events += [
            BoltEvent(ids[i], at_ms, "tightened", round(torque, 1), round(float(meas[i]), 2))
            for i in range(nb)
        ]
    return true, f0 * (1.0 - emb), k


def _sensor_fault(
    fault: BoltFault,
    *,
    p: dict[str, float],
    t_s: Float64,
    t_ms: Int64,
    onset_s: Float64,
    meas: Float64,
    battery: Float64,
    ts: Int64,
    rng: np.random.Generator,
    ids: list[str],
    events: list[BoltEvent],
    f0: Float64,
) -> list[int | None]:
    """Apply a sensor fault to the measurement in place; returns each bolt's fault end (ms)."""
    nb, nt = meas.shape
    start = np.searchsorted(t_s, onset_s)
    end_ms: list[int | None] = [None] * nb
    for i in range(nb):
        s = int(start[i])
        if s >= nt:
            continue
        if fault is BoltFault.STUCK:
            meas[i, s:] = meas[i, s]
        elif fault is BoltFault.SPIKES:
            rate = p.get("spikes_per_day", 4.0)
            span_days = (t_s[-1] - t_s[s]) / _DAY_S
            count = max(int(rng.poisson(rate * span_days)), 1)
            at = rng.integers(s, nt, count)
            size = rng.uniform(0.2, 0.5, count) * rng.choice([-1.0, 1.0], count)
            meas[i, at] *= 1.0 + size
        elif fault is BoltFault.DRIFT:
            rate = p.get("drift_pct_per_day", float(rng.uniform(0.1, 1.0))) / 100.0
            sign = rng.choice([-1.0, 1.0])
            meas[i, s:] *= 1.0 + sign * rate * (t_s[s:] - t_s[s]) / _DAY_S
        elif fault is BoltFault.DROPOUT:
            gaps = int(p.get("dropouts", 3))
            last = s
            for _ in range(gaps):
                hours = p.get("dropout_hours", float(rng.uniform(2.0, 12.0)))
                g0 = int(rng.integers(s, nt))
                g1 = int(np.searchsorted(t_s, t_s[g0] + hours * _HOUR_S))
                meas[i, g0:g1] = np.nan
                last = max(last, g1)
            end_ms[i] = int(t_ms[min(last, nt - 1)])
        elif fault is BoltFault.BATTERY_SWAP_OFFSET:
            pct = p.get("offset_pct", float(rng.uniform(2.0, 5.0))) * rng.choice([-1.0, 1.0])
            meas[i, s:] += f0[i] * pct / 100.0
            battery[i, s:] = 3.67
            events.append(BoltEvent(ids[i], int(t_ms[s]), "battery_swap", battery_v=3.67))
        elif fault is BoltFault.LOW_BATTERY:
            days = (t_s[s:] - t_s[s]) / _DAY_S
            battery[i, s:] = np.maximum(battery[i, s:] - 0.08 * days, 2.7)
            weak = battery[i] < 3.1
            meas[i, weak] *= 1.0 + rng.normal(0.0, 0.02, int(weak.sum()))
            gaps = weak & (rng.random(nt) < 0.3)
            meas[i, gaps] = np.nan
        elif fault is BoltFault.CLOCK_OFFSET:
            offset_s = p.get("clock_offset_s", float(rng.uniform(3_600.0, 6 * 3_600.0)))
            ts[i, s:] += int(offset_s * 1000) * int(rng.choice([-1, 1]))
    return end_ms


def _param(
    p: dict[str, float], name: str, default: tuple[float, float], n: int, rng: np.random.Generator
) -> Float64:
    if name in p:
        return np.full(n, float(p[name]))
    return rng.uniform(default[0], default[1], n)


def samples_per_bolt_year(interval_s: float) -> int:
    """How many samples one bolt sends in a year at a fixed interval."""
    return math.ceil(365.25 * _DAY_S / interval_s)
