"""CO2 laser cutters: cooling water flow and temperature.

A CO2 tube dies within seconds without cooling, so the checks are on the water loop:

* **Flow loss**: ``flow_lpm`` under ``flow_min_lpm`` (1 L/min) for a few seconds: an alarm while
  the tube is idle, critical while it fires (``tube_current_ma`` or ``laser_power_pct`` > 0); a
  warning when the flow falls under ``flow_drop`` of the device's learned normal flow.
* **Supply temperature**: the outlet reading (``chiller_water_c``, measured at the tube outlet)
  includes the tube's own heat, ``22 W/mA`` carried away by ``69.8 W/K`` per L/min of water
  through a jacket of ``1.6 kJ/K``. The detector removes that rise — a first-order filter of
  ``heat / (flow · c_p)`` with the jacket's time constant — to estimate the chiller's supply
  temperature, which must stay under ~22 °C (warning) and 25 °C (critical). Healthy lasing at full
  power adds ~4 °C at the outlet, so thresholds on the raw reading would either false-alarm or come
  late. The tube current between two readings is unknown (cuts and travel alternate every few
  seconds): the filter is fed the mean of the two readings' currents, and the less of the jacket's
  state that mean explains — the further apart the readings are against the jacket's time constant
  (~11 s at 2 L/min) — the more one reading's estimate can be off: by up to half the full tube's
  rise (2.2 °C at 2 L/min) times ``1 - exp(-dt / time constant)``. The supply estimate is
  therefore averaged over as many readings as bring that spread down to ``supply_tol_c`` (~1.4
  readings at 1 s, ~8 at 5 s, ~19 at 10 s: ~40 s and ~3 min). The reservoir it estimates changes
  over minutes (a failed chiller warms it by at most ~1 °C/min), so sparse readings cost some
  delay, no sensitivity.
* **Rising trend**: the supply estimate's slope (a double exponential smoother, 10 min) above
  ``trend_c_h`` while the supply is already above ``trend_min_c``: a chiller losing ground.
* **Outlet over-temperature**: the raw outlet above ``outlet_critical_c``.

Every finding is ``EventKind.COOLING_FAILURE``; the explanation says which check fired.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Final

import numpy as np
import numpy.typing as npt

from detection._machine_common import (
    AlertScale,
    begin_update,
    conformance_from,
    decide_kinds,
    fmt,
    ramp,
    split_case,
    tick,
)
from detection.base import (
    Bool,
    ConformanceCase,
    Decisions,
    DetectionError,
    Detector,
    EventKind,
    Frame,
    Scores,
    steps,
)

__all__ = ["LaserDetector", "LaserParams"]

_KINDS: Final = (EventKind.COOLING_FAILURE,)
_CAUSES: Final = ("flow", "supply", "trend", "outlet", "flow_drop")


@dataclass(frozen=True, slots=True)
class LaserParams:
    """Hyper-parameters of :class:`LaserDetector`.

    Attributes:
        flow_min_lpm: Flow below this is a flow loss, L/min.
        flow_low_s: For at least this long (firing), s; idle: twice this.
        flow_drop: Flow under this share of the learned normal flow is a warning.
        flow_tau_s: Time constant of the learned normal flow, s.
        supply_warning_c: Supply water warning, °C.
        supply_critical_c: Supply water critical, °C.
        trend_c_h: Slope of the supply temperature that is a rising trend, °C/h.
        trend_min_c: The trend counts only above this supply temperature, °C.
        trend_tau_s: Time constant of the trend smoother, s.
        outlet_critical_c: Raw outlet temperature that is critical whatever the cause, °C.
        heat_w_per_ma: Tube heat into the water per mA of tube current, W/mA.
        jacket_c_j_k: Heat capacity of the water in the tube jacket, J/K.
        jacket_ua_w_k: Jacket's loss to the room, W/K.
        water_w_k_per_lpm: Heat carried per kelvin per L/min of water flow, W/K.
        firing_ma: Tube current above which the tube counts as firing, mA.
        max_dt_s: Longest time step integrated between two readings, s.
        tube_max_ma: Full tube current, mA: half its jacket rise is how far off one reading's
            supply estimate can be when the current between readings is unknown.
        supply_tol_c: The supply estimate averages as many readings as bring that spread down to
            this, °C.
        scale: Where scores become alerts.
    """

    flow_min_lpm: float = 1.0
    flow_low_s: float = 2.0
    flow_drop: float = 0.7
    flow_tau_s: float = 3600.0
    supply_warning_c: float = 22.0
    supply_critical_c: float = 25.0
    trend_c_h: float = 3.0
    trend_min_c: float = 21.0
    trend_tau_s: float = 600.0
    outlet_critical_c: float = 35.0
    heat_w_per_ma: float = 22.0
    jacket_c_j_k: float = 1600.0
    jacket_ua_w_k: float = 0.5
    water_w_k_per_lpm: float = 4186.0 / 60.0
    firing_ma: float = 0.5
    max_dt_s: float = 30.0
    tube_max_ma: float = 28.0
    supply_tol_c: float = 0.3
    scale: AlertScale = field(default_factory=AlertScale)

    def __post_init__(self) -> None:
        """Reject a supply smoother that cannot average."""
        if not self.supply_tol_c > 0.0 or not self.tube_max_ma >= 0.0:
            raise DetectionError("supply", "needs supply_tol_c > 0 and tube_max_ma >= 0")


class LaserDetector(Detector[LaserParams]):
    """Cooling failures of CO2 laser cutters (flow loss, warm or warming chiller water).

    Reads ``chiller_water_c``, ``flow_lpm``, ``tube_current_ma`` and ``laser_power_pct``.

    Scores (``Scores.extra``): ``score_cooling_failure``; ``supply_c`` (estimated supply water
    temperature, averaged as the module docs say; NaN without flow), ``trend_c_h``,
    ``flow_base_lpm``, ``flow_low_s``, ``cause`` (index into flow / supply / trend / outlet /
    flow_drop).
    """

    name: ClassVar[str] = "laser_cutter"
    kinds: ClassVar[tuple[str, ...]] = ("laser_cutter",)
    params_type: ClassVar[type[Any]] = LaserParams
    state_spec: ClassVar[Mapping[str, tuple[npt.DTypeLike, float, tuple[int, ...]]]] = {
        "last_ts": (np.float64, np.nan, ()),
        "rise_c": (np.float64, np.nan, ()),
        "last_cur": (np.float64, np.nan, ()),
        "supply": (np.float64, np.nan, ()),
        "s1": (np.float64, np.nan, ()),
        "s2": (np.float64, np.nan, ()),
        "flow_base": (np.float64, np.nan, ()),
        "low_s": (np.float64, 0.0, ()),
        "levels": (np.int8, 0, (1,)),
    }

    def update(self, frame: Frame) -> Scores:  # noqa: PLR0915 - one pass over the loop, in order
        """Estimate supply temperature, trend and flow state per reading; score them."""
        n = begin_update(self, frame, ("chiller_water_c", "flow_lpm"))
        p = self.params
        water = frame.column("chiller_water_c")
        flow = frame.column("flow_lpm")
        cur = np.nan_to_num(frame.column("tube_current_ma"))
        power = np.nan_to_num(frame.column("laser_power_pct"))
        firing = (cur > p.firing_ma) | (power > 0)
        supply = np.full(n, np.nan)
        trend = np.zeros(n)
        base = np.full(n, np.nan)
        low = np.zeros(n)
        st = self.state
        for rows in steps(frame.slot):
            s = frame.slot[rows]
            dt = tick(st.arrays, s, frame.ts_s[rows], p.max_dt_s)
            q = flow[rows]
            w = water[rows]
            has_q = np.isfinite(q)
            flowing = has_q & (q >= p.flow_min_lpm)
            # Jacket rise above the supply: first-order towards heat / (flow · c_p + UA).
            g = p.water_w_k_per_lpm * np.where(has_q, np.maximum(q, 0.0), 0.0) + p.jacket_ua_w_k
            # Tube current over the step: the mean of its two readings (unknown in between).
            c_now = cur[rows]
            c_prev = st["last_cur"][s]
            c_step = 0.5 * (np.where(np.isnan(c_prev), c_now, c_prev) + c_now)
            st["last_cur"][s] = c_now
            rise_eq = p.heat_w_per_ma * c_step / g
            a = 1.0 - np.exp(-dt * g / p.jacket_c_j_k)
            # A device's first reading: the jacket at its equilibrium, not at 0 (mid-job restart).
            r0 = st["rise_c"][s]
            r0 = np.where(np.isnan(r0), rise_eq, r0)
            rise = np.clip(r0 + (rise_eq - r0) * a, 0.0, 100.0)
            st["rise_c"][s] = rise
            # Supply estimate, averaged over n readings: spread / sqrt(n) = supply_tol_c.
            one = np.where(flowing & np.isfinite(w), w - rise, np.nan)
            ok = np.isfinite(one)
            sf = st["supply"][s]
            sf = np.where(ok & np.isnan(sf), one, sf)
            spread = p.heat_w_per_ma * p.tube_max_ma / (2.0 * g) * a
            weight = 1.0 / (1.0 + (spread / p.supply_tol_c) ** 2)
            sf = np.where(ok, sf + (one - sf) * weight, sf)
            st["supply"][s] = sf
            sup = np.where(ok, sf, np.nan)
            # Double exponential smoother of the supply estimate: slope = (s1 - s2) / tau.
            at = 1.0 - np.exp(-dt / p.trend_tau_s)
            s1, s2 = st["s1"][s], st["s2"][s]
            fresh = np.isnan(s1) & ok
            s1 = np.where(fresh, sup, s1)
            s2 = np.where(fresh, sup, s2)
            s1 = np.where(ok, s1 + (sup - s1) * at, s1)
            s2 = np.where(ok, s2 + (s1 - s2) * at, s2)
            st["s1"][s], st["s2"][s] = s1, s2
            # Learned normal flow: slow, and only from flows near it (a loss is not learned).
            fb = st["flow_base"][s]
            fb = np.where(np.isnan(fb) & flowing, q, fb)
            near = flowing & (q > p.flow_drop * fb) & (q < fb / p.flow_drop)
            af = 1.0 - np.exp(-dt / p.flow_tau_s)
            fb = np.where(near, fb + (q - fb) * af, fb)
            st["flow_base"][s] = fb
            lo = has_q & (q < p.flow_min_lpm)
            low_s = np.where(lo, st["low_s"][s] + dt, 0.0)
            st["low_s"][s] = low_s
            supply[rows] = sup
            trend[rows] = np.where(ok, (s1 - s2) / p.trend_tau_s * 3600.0, 0.0)
            base[rows] = fb
            low[rows] = low_s

        need = np.where(firing, p.flow_low_s, 2.0 * p.flow_low_s)
        flow_s = np.where(low >= need, np.where(firing, 0.95, 0.8), 0.0)
        drop = np.where(
            np.isfinite(base) & np.isfinite(flow) & (flow < p.flow_drop * base), 0.55, 0.0
        )
        sup_s = ramp(
            supply,
            (p.supply_warning_c - 2.0, p.supply_warning_c, p.supply_critical_c),
            (0.0, 0.5, 0.9),
        )
        trend_s = np.where(
            np.nan_to_num(supply) >= p.trend_min_c,
            ramp(trend, (0.0, p.trend_c_h, 3.0 * p.trend_c_h), (0.0, 0.5, 0.6)),
            0.0,
        )
        out_s = np.where(np.nan_to_num(water) >= p.outlet_critical_c, 0.95, 0.0)
        parts = np.column_stack([flow_s, sup_s, trend_s, out_s, drop]).reshape(n, len(_CAUSES))
        score = parts.max(axis=1, initial=0.0)
        extra: dict[str, npt.NDArray[Any]] = {
            "score_cooling_failure": score,
            "supply_c": supply,
            "trend_c_h": trend,
            "flow_base_lpm": base,
            "flow_low_s": low,
            "firing": firing,
            "cause": np.argmax(parts, axis=1),
        }
        return Scores(np.clip(score, 0.0, 1.0), extra)

    def decide(self, frame: Frame, scores: Scores) -> Decisions:
        """Cooling-failure alerts per row and their edges."""
        return decide_kinds(
            self, frame, scores, _KINDS, lambda row, _k: self._explain(frame, scores, row)
        )

    def _explain(self, frame: Frame, scores: Scores, row: int) -> tuple[str, dict[str, float]]:
        x = scores.extra
        cause = _CAUSES[int(x["cause"][row])]
        q = float(frame.column("flow_lpm")[row])
        w = float(frame.column("chiller_water_c")[row])
        sup = float(x["supply_c"][row])
        tr = float(x["trend_c_h"][row])
        cur = float(frame.column("tube_current_ma")[row])
        data = {
            "flow_lpm": q,
            "chiller_water_c": w,
            "supply_c": sup,
            "trend_c_h": tr,
            "tube_current_ma": cur,
            "flow_base_lpm": float(x["flow_base_lpm"][row]),
        }
        firing = bool(x["firing"][row])
        state = f"tube firing at {fmt(cur, ' mA')}" if firing else "tube idle"
        if cause == "flow":
            text = (
                f"water flow {fmt(q, ' L/min', 2)} < {self.params.flow_min_lpm:g} L/min for "
                f"{float(x['flow_low_s'][row]):.0f} s, {state}, outlet {fmt(w, ' °C')}: "
                "flow loss"
            )
        elif cause == "flow_drop":
            text = (
                f"water flow {fmt(q, ' L/min', 2)}, "
                f"{100.0 * q / float(x['flow_base_lpm'][row]):.0f} % of its normal "
                f"{fmt(float(x['flow_base_lpm'][row]), ' L/min', 2)}: flow dropping"
            )
        elif cause == "outlet":
            text = f"outlet water {fmt(w, ' °C')} >= {self.params.outlet_critical_c:g} °C, {state}"
        elif cause == "trend":
            text = (
                f"supply water {fmt(sup, ' °C')} rising {fmt(tr, ' °C/h')} "
                f"(outlet {fmt(w, ' °C')}, {state}): chiller losing ground"
            )
        else:
            text = (
                f"supply water {fmt(sup, ' °C')} (outlet {fmt(w, ' °C')} minus the tube's heat), "
                f"limits {self.params.supply_warning_c:g}/{self.params.supply_critical_c:g} °C, "
                f"trend {fmt(tr, ' °C/h')}: chiller not keeping up"
            )
        return text, data

    @classmethod
    def conformance_case(cls, seed: int) -> ConformanceCase:
        """Three lasers cutting on a healthy loop; then one loses flow, one's chiller fails."""
        rng = np.random.default_rng(seed)
        n_norm, n_anom = 600, 400
        t = np.arange(n_norm + n_anom, dtype=np.float64) * 2.0
        frames: list[tuple[Frame, Frame, Bool]] = []
        for i in range(3):
            firing = (np.arange(t.size) // 4) % 2 == 0
            cur = np.where(firing, 15.0, 0.0)
            flow = 2.0 + rng.normal(0.0, 0.02, t.size)
            supply = 20.0 + 0.3 * np.sin(2 * math.pi * t / 600.0)
            anomalous = np.zeros(n_anom, np.bool_)
            if i == 0:  # pump stops
                flow[n_norm:] = 0.02
                anomalous[:] = True
            elif i == 1:  # chiller off for a while: the supply water is at 26-28 °C
                supply[n_norm:] = 26.0 + 2.0 * np.linspace(0.0, 1.0, n_anom)
                anomalous[:] = True
            rise = 22.0 * cur / (69.8 * np.maximum(flow, 0.05))
            values = {
                "chiller_water_c": supply + rise + rng.normal(0.0, 0.05, t.size),
                "flow_lpm": flow,
                "tube_current_ma": cur,
                "laser_power_pct": np.where(firing, 55.0, 0.0),
                "ambient_c": np.full(t.size, 22.0),
            }
            full = Frame.single(f"laser{i}", 1.7e9 + t, values, slot=i)
            frames.append(split_case(full, n_norm, anomalous))
        return conformance_from(frames)
