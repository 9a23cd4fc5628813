"""A field fleet: smart bolts whose every parameter is drawn across the full ranges of DOMAIN.md.

The scenario library (:mod:`firmware_sim.scenario`) simulates named situations around sensible
defaults. This module is the evaluation's counterweight: each bolt draws its own physics, sensor,
sampling, climate and history from the whole published range, so that a detector tuned on some
seeds is judged on other seeds it has never seen, and on bolts unlike the defaults.

What is drawn per bolt (see :class:`FieldRanges`, whose defaults are DOMAIN.md's ranges):

* **Joint**: steel in steel (temperature coefficient 0 ± 0.02 %/°C) or steel in aluminium
  (0 to +0.4 %/°C); nominal diameter, target preload and the fitter's torque table; the real nut
  factor K (torque-controlled tightening scatter).
* **Embedding** 5-25 % with a time constant of 1-24 h.
* **Climate**: outdoor daily cycles of 5-30 °C peak to peak, weather, multi-day cold snaps down to
  -15 °C and below; the joint follows the air through about an hour of thermal lag.
* **Sensor**: noise 0.5-2 % (1 sigma), its own small temperature coefficient, resolution.
* **Sampling**: every 1-30 min with jitter, 0-5 % of samples lost, bursts of fast samples.
* **History**: monitoring starts at the tightening (the torque on the first row) or hours to weeks
  after it (no torque row; the bolt already settled or still settling).
* **Scenario** (what happens): one of :data:`FIELD_SCENARIOS`, at a drawn onset.

Ground truth per bolt (:class:`FieldTruth`) records the scenario, the onset, when the true
preload first fell below 70 % of its settled level, and every drawn value.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Final

import numpy as np
import numpy.typing as npt
from scipy.signal import lfilter

__all__ = [
    "FIELD_LOOSENING",
    "FIELD_SCENARIOS",
    "FieldBolt",
    "FieldRanges",
    "FieldTruth",
    "simulate_field",
]

Float64 = npt.NDArray[np.float64]
_HOUR: Final = 3600.0
_DAY: Final = 86_400.0

FIELD_SCENARIOS: Final = (
    "healthy-steel",
    "healthy-aluminium",
    "stuck",
    "spikes",
    "battery-swap",
    "dropouts",
    "retightened",
    "retightened-silent",
    "vibration-loosening",
    "creep",
    "sudden-loss",
)
"""What happens to a field bolt; the last three really loosen."""

FIELD_LOOSENING: Final = frozenset({"vibration-loosening", "creep", "sudden-loss"})


@dataclass(frozen=True, slots=True)
class FieldRanges:
    """The ranges each bolt's parameters are drawn from (uniformly unless said otherwise).

    Defaults are DOMAIN.md's ranges; each attribute is ``(low, high)``.
    """

    embedding_pct: tuple[float, float] = (5.0, 25.0)
    embedding_tau_h: tuple[float, float] = (1.0, 24.0)
    aluminium_tempco_pct_per_c: tuple[float, float] = (0.0, 0.4)
    steel_tempco_pct_per_c: tuple[float, float] = (-0.02, 0.02)
    sensor_tempco_pct_per_c: tuple[float, float] = (-0.01, 0.01)
    noise_pct: tuple[float, float] = (0.5, 2.0)
    interval_min: tuple[float, float] = (1.0, 30.0)  # log-uniform
    lost_pct: tuple[float, float] = (0.0, 5.0)
    nut_factor: tuple[float, float] = (0.12, 0.24)
    nominal_nut_factor: tuple[float, float] = (0.15, 0.20)
    diameter_mm: tuple[float, float] = (12.0, 30.0)
    target_preload_kn: tuple[float, float] = (30.0, 300.0)  # log-uniform
    daily_swing_c: tuple[float, float] = (5.0, 30.0)  # peak to peak
    mean_temp_c: tuple[float, float] = (-2.0, 22.0)
    cold_snap_depth_c: tuple[float, float] = (8.0, 25.0)
    cold_snap_days: tuple[float, float] = (1.0, 5.0)
    late_start_share: float = 0.4
    late_start_h: tuple[float, float] = (2.0, 24.0 * 30)  # log-uniform
    onset_day: tuple[float, float] = (2.0, 20.0)
    days: float = 30.0


@dataclass(slots=True)
class FieldTruth:
    """Ground truth of one field bolt (times in epoch seconds; NaN: never).

    Attributes:
        device_id: The bolt.
        scenario: One of :data:`FIELD_SCENARIOS`.
        onset_s: When the scenario's event began (loosening, fault, retightening).
        cross70_s: When the true preload first fell below 70 % of its settled level.
        drawn: Every drawn parameter, by name.
    """

    device_id: str
    scenario: str
    onset_s: float
    cross70_s: float
    drawn: dict[str, float] = field(default_factory=dict)

    @property
    def loosening(self) -> bool:
        """Whether the bolt really loosens."""
        return self.scenario in FIELD_LOOSENING


@dataclass(slots=True)
class FieldBolt:
    """One field bolt's readings as its node sent them (time order), and its truth.

    ``torque_nm`` is finite on the row of a tightening that the node reported; ``battery_swap``
    is 1 on the first reading after a reported battery swap.
    """

    ts_s: Float64
    preload_kn: Float64
    temp_c: Float64
    torque_nm: Float64
    battery_v: Float64
    battery_swap: Float64
    true_kn: Float64
    truth: FieldTruth


def _lu(rng: np.random.Generator, lo_hi: tuple[float, float]) -> float:
    """Log-uniform draw."""
    lo, hi = lo_hi
    return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))


def _u(rng: np.random.Generator, lo_hi: tuple[float, float]) -> float:
    return float(rng.uniform(lo_hi[0], lo_hi[1]))


def _times(
    rng: np.random.Generator, r: FieldRanges, start_s: float, d: dict[str, float]
) -> Float64:
    """Sample times: a base interval with jitter, bursts of fast samples, lost samples."""
    interval_s = _lu(rng, r.interval_min) * 60.0
    d["interval_min"] = interval_s / 60.0
    n = int(r.days * _DAY / interval_s) + 1
    steps = interval_s * (1.0 + rng.uniform(-0.02, 0.02, n))
    # Bursts: a node that sees a change reports faster for a while (adaptive reporting).
    burst = rng.random(n) < 0.003
    steps = np.where(burst, np.minimum(interval_s, 60.0), steps)
    t = start_s + np.cumsum(steps) - steps[0]
    t = t[t < start_s + r.days * _DAY]
    lost = _u(rng, r.lost_pct) / 100.0
    d["lost_pct"] = lost * 100.0
    keep = rng.random(t.shape[0]) >= lost
    keep[0] = True
    out: Float64 = t[keep]
    return out


def _climate(rng: np.random.Generator, r: FieldRanges, t: Float64, d: dict[str, float]) -> Float64:
    """Joint temperature (°C): daily cycle, weather, cold snaps, an hour of thermal lag."""
    mean = _u(rng, r.mean_temp_c)
    swing = _u(rng, r.daily_swing_c)
    d["mean_temp_c"], d["daily_swing_c"] = mean, swing
    phase = rng.uniform(0, 2 * math.pi)
    air = mean + swing / 2.0 * np.sin(2 * math.pi * t / _DAY + phase)
    # Weather: a slow random walk pulled back to the mean (a few days).
    hours = np.arange(0.0, r.days * 24.0 + 2.0)
    w = lfilter([1.0], [1.0, -math.exp(-1.0 / 72.0)], rng.normal(0.0, 0.6, hours.shape[0]))
    air = air + np.interp((t - t[0]) / _HOUR, hours, w)
    snaps = int(rng.poisson(1.5))
    depth_min = 0.0
    for _ in range(snaps):
        at = t[0] + rng.uniform(0.0, r.days) * _DAY
        dur = _u(rng, r.cold_snap_days) * _DAY
        depth = _u(rng, r.cold_snap_depth_c)
        x = (t - at) / dur
        air = air - depth * np.where((x > 0) & (x < 1), np.sin(math.pi * np.clip(x, 0, 1)) ** 2, 0)
        depth_min = max(depth_min, depth)
    d["cold_snaps"], d["deepest_snap_c"] = float(snaps), depth_min
    # First-order lag of about an hour, on an irregular grid.
    dt = np.diff(t, prepend=t[0])
    out: Float64 = np.empty_like(air)
    out[0] = air[0]
    a = 1.0 - np.exp(-dt / _HOUR)
    for i in range(1, air.shape[0]):
        out[i] = out[i - 1] + a[i] * (air[i] - out[i - 1])
    d["min_temp_c"] = float(out.min())
    return out


def simulate_field(
    seed: int, bolts: int = 60, ranges: FieldRanges | None = None
) -> list[FieldBolt]:
    """Simulate ``bolts`` field bolts, scenarios in turn, every parameter drawn per bolt.

    Args:
        seed: The same seed gives the same fleet.
        bolts: How many bolts (scenarios are assigned round-robin, so 60 gives 5-6 of each).
        ranges: The ranges to draw from (DOMAIN.md's by default).
    """
    r = ranges or FieldRanges()
    root = np.random.SeedSequence([seed, 0xB017])
    out = []
    start = 1_767_225_600.0 + (seed % 1000) * 7 * _DAY  # 2026-01-01 and on, a week per seed
    for i, child in enumerate(root.spawn(bolts)):
        rng = np.random.default_rng(child)
        scenario = FIELD_SCENARIOS[i % len(FIELD_SCENARIOS)]
        out.append(_bolt(rng, r, f"field-{seed}-{i:03d}", scenario, start))
    return out


def _bolt(  # noqa: PLR0912, PLR0915 - one bolt's story, top to bottom
    rng: np.random.Generator, r: FieldRanges, device_id: str, scenario: str, start_s: float
) -> FieldBolt:
    d: dict[str, float] = {}
    t = _times(rng, r, start_s, d)
    n = t.shape[0]
    temp = _climate(rng, r, t, d)
    aluminium = scenario == "healthy-aluminium" or rng.random() < 0.4
    tempco = _u(rng, r.aluminium_tempco_pct_per_c if aluminium else r.steel_tempco_pct_per_c)
    d["aluminium"], d["tempco_pct_per_c"] = float(aluminium), tempco
    dia = _u(rng, r.diameter_mm)
    target = _lu(rng, r.target_preload_kn)
    k_nom = _u(rng, r.nominal_nut_factor)
    k = _u(rng, r.nut_factor)
    torque = k_nom * target * 1000.0 * dia / 1000.0
    f0 = torque / (k * dia / 1000.0) / 1000.0
    emb = _u(rng, r.embedding_pct) / 100.0
    tau = _u(rng, r.embedding_tau_h) * _HOUR
    d.update(
        diameter_mm=dia,
        nut_factor=k,
        torque_nm=torque,
        f0_kn=f0,
        embedding_pct=emb * 100,
        embedding_tau_h=tau / _HOUR,
    )
    late = rng.random() < r.late_start_share
    since0 = _lu(rng, r.late_start_h) * _HOUR if late else 0.0
    d["monitoring_starts_h_after_install"] = since0 / _HOUR
    install_s = t[0] - since0
    t_ref = float(temp[0])  # the installation temperature (close enough when late)
    age = t - install_s
    true = f0 * (1.0 - emb * (1.0 - np.exp(-age / tau)))
    settled = np.full(n, f0 * (1.0 - emb))
    torque_col = np.full(n, np.nan)
    if not late:
        torque_col[0] = round(torque, 1)
    swap = np.zeros(n)
    onset = t[0] + _u(rng, r.onset_day) * _DAY
    d["onset_day"] = (onset - t[0]) / _DAY
    j = int(np.searchsorted(t, onset))
    x = np.maximum(t - onset, 0.0)
    if scenario == "vibration-loosening":
        a, c = rng.uniform(0.01, 0.03), rng.uniform(0.02, 0.05)
        tf, ts = rng.uniform(2, 8) * _HOUR, rng.uniform(1, 4) * _DAY
        stage1 = rng.uniform(1.0, 6.0) * _DAY
        t2 = rng.uniform(12.0, 96.0) * _HOUR
        p = rng.uniform(2.0, 3.0)
        m1 = 1.0 - a * (1 - np.exp(-x / tf)) - c * (1 - np.exp(-x / ts))
        y2 = np.clip((x - stage1) / t2, 0.0, 1.0)
        true = true * m1 * (1.0 - 0.97 * y2**p)
        d.update(stage1_days=stage1 / _DAY, stage2_h=t2 / _HOUR)
    elif scenario == "creep":
        rate = rng.uniform(1.0, 4.0) / 100.0
        true = true * np.maximum(1.0 - rate * x / _DAY, 0.0)
        d["creep_pct_per_day"] = rate * 100
    elif scenario == "sudden-loss":
        loss = rng.uniform(0.4, 1.0)
        true = np.where(t >= onset, true * (1.0 - loss), true)
        d["loss_pct"] = loss * 100
    elif scenario.startswith("retightened") and j < n:
        k2 = _u(rng, r.nut_factor)
        f1 = torque / (k2 * dia / 1000.0) / 1000.0
        emb2, tau2 = rng.uniform(0.01, 0.05), _u(rng, r.embedding_tau_h) * _HOUR
        if f1 > true[j]:
            true[j:] = f1 * (1.0 - emb2 * (1.0 - np.exp(-(t[j:] - t[j]) / tau2)))
            settled[j:] = f1 * (1.0 - emb2)
        else:
            # The wrench reaches its torque before the nut turns: a torque-controlled
            # retightening never lowers the preload, and nothing new embeds.
            f1, emb2 = float(true[j]), 0.0
        if scenario == "retightened":
            torque_col[j] = round(torque, 1)
        d.update(retightened_kn=f1, retightened_embedding_pct=emb2 * 100)
    true = true * (1.0 + tempco / 100.0 * (temp - t_ref))
    noise = _u(rng, r.noise_pct) / 100.0
    s_tc = _u(rng, r.sensor_tempco_pct_per_c) / 100.0
    d["noise_pct"], d["sensor_tempco_pct_per_c"] = noise * 100, s_tc * 100
    meas = true * (1.0 + s_tc * (temp - t_ref)) * (1.0 + rng.normal(0.0, noise, n))
    battery = 3.6 - 0.004 * np.maximum(10.0 - temp, 0.0) - 0.002 * (t - t[0]) / (30 * _DAY)
    if scenario == "stuck" and j < n:
        end = (
            n if rng.random() < 0.5 else int(np.searchsorted(t, onset + rng.uniform(6, 72) * _HOUR))
        )
        meas[j:end] = meas[j]
    elif scenario == "spikes":
        count = max(int(rng.poisson(rng.uniform(2.0, 10.0) * (t[-1] - onset) / _DAY)), 1)
        at = rng.integers(min(j, n - 1), n, count)
        meas[at] *= 1.0 + rng.uniform(0.2, 0.5, count) * rng.choice([-1.0, 1.0], count)
    elif scenario == "battery-swap" and j < n:
        off = rng.uniform(1.0, 5.0) * rng.choice([-1.0, 1.0])
        meas[j:] += f0 * off / 100.0
        battery[j:] = 3.67
        swap[j] = 1.0
        d["offset_pct"] = off
    elif scenario == "dropouts":
        keep = np.ones(n, np.bool_)
        for _ in range(int(rng.integers(2, 6))):
            g0 = float(rng.uniform(t[0], t[-1]))
            g1 = g0 + rng.uniform(2.0, 24.0) * _HOUR
            keep &= (t < g0) | (t >= g1)
        keep[0] = True
        t, meas, temp, true, settled = t[keep], meas[keep], temp[keep], true[keep], settled[keep]
        torque_col, battery, swap = torque_col[keep], battery[keep], swap[keep]
    cross = np.flatnonzero(true < 0.7 * settled * (1.0 + tempco / 100.0 * (temp - t_ref)))
    truth = FieldTruth(
        device_id=device_id,
        scenario=scenario,
        onset_s=onset if scenario not in ("healthy-steel", "healthy-aluminium") else math.nan,
        cross70_s=float(t[cross[0]]) if cross.size else math.nan,
        drawn={k_: round(v, 4) for k_, v in d.items()},
    )
    return FieldBolt(
        ts_s=t,
        preload_kn=np.round(meas, 2),
        temp_c=np.round(temp + rng.normal(0.0, 0.1, t.shape[0]), 1),
        torque_nm=torque_col,
        battery_v=np.round(battery, 3),
        battery_swap=swap,
        true_kn=true,
        truth=truth,
    )
