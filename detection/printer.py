"""3D printer heaters: Klipper's ``verify_heater`` CUSUM, detached thermistors, MAXTEMP, part fan.

Per heater (hotend, bed) and device, one vectorised step per reading:

* **Klipper's verify_heater**, scaled by the real time between readings: while the reading is
  below ``target - hysteresis`` the shortfall is integrated, ``err += (target - hysteresis -
  temp) · dt`` (°C·s); a heater not approaching its target faults at ``max_error`` (120 °C·s).
  After a target change the heater is *approaching* as long as it gains ``heating_gain_c`` (2 °C)
  every ``check_gain_time_s`` (hotend 20 s, bed 60 s — Marlin's heating watch). Unlike Klipper the
  sum is also cleared when the target is 0 (a heater that is off has nothing to verify).
* **Faster-than-physics cooling**: a block cannot cool faster than its own thermal time constant.
  The reading's fall beyond ``(temp - ambient) · dt / tau_min_s`` is accumulated (a CUSUM whose
  noise telescopes); ``fall_c`` of excess fall means the thermistor lost contact with the block.
  With the heater on that is a thermal runaway (the firmware heats at 100 % against a reading
  that will never rise); with the heater off, a sensor fault.
* **Over-temperature**: MAXTEMP (hotend 275 °C, bed 120 °C), or a reading more than
  ``over_c`` above the target and not falling for ``over_s`` (a heater stuck on).
* **Part fan**: the tachometer reads 0 while the hotend target is set after it had been
  running in that job, or ``fan_expected_s`` after the target was first reached.

A verify_heater fault is classified from the physics of the fall: the same excursion showed
faster-than-physics cooling (or, during heat-up, a reading that rose then stalled far below the
target at full duty) → ``THERMAL_RUNAWAY`` (critical); a reading that cools no faster than the
block does, or never rises → ``HEATER_FAILURE`` (alarm).

The decision helpers every machine detector shares (:class:`AlertScale`, :func:`ramp`,
:func:`decide_levels`...) live in :mod:`detection._machine_common`; they are re-exported here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Final

import numpy as np
import numpy.typing as npt

from detection._machine_common import (
    AlertScale,
    begin_update,
    check_sorted,
    concat_frames,
    conformance_from,
    decide_kinds,
    decide_levels,
    fmt,
    kind_extras,
    ramp,
    require_columns,
    split_case,
    step_dt,
    tick,
)
from detection.base import (
    Bool,
    ConformanceCase,
    Decisions,
    Detector,
    EventKind,
    Float64,
    Frame,
    Int64,
    Scores,
    steps,
)

__all__ = [
    "AlertScale",
    "HeaterParams",
    "PrinterDetector",
    "PrinterParams",
    "check_sorted",
    "concat_frames",
    "decide_levels",
    "ramp",
    "require_columns",
    "step_dt",
]

# ---------------------------------------------------------------------------------------------
# The printer detector

HEATERS: Final = ("hotend", "bed")
_KINDS: Final = (
    EventKind.THERMAL_RUNAWAY,
    EventKind.HEATER_FAILURE,
    EventKind.SENSOR_FAULT,
    EventKind.COOLING_FAILURE,
)
_RUNAWAY, _HEATER, _SENSOR, _FAN = range(4)


@dataclass(frozen=True, slots=True)
class HeaterParams:
    """Checks of one heater (defaults: Klipper's extruder / Marlin's hotend).

    Attributes:
        hysteresis_c: Klipper's ``hysteresis``: the band below target that counts as reached, °C.
        max_error_cs: Klipper's ``max_error``: the integrated shortfall that faults, °C·s.
        heating_gain_c: Klipper's ``heating_gain``: rise expected per check period while heating.
        check_gain_time_s: Klipper's ``check_gain_time``: that period, s (bed: 60 s).
        maxtemp_c: Over-temperature limit (Marlin's MAXTEMP), °C.
        tau_min_s: The block's fastest physical cooling time constant (with the heater off and the
            fan at full), with margin: a faster fall means the thermistor lost contact, s.
        fall_c: Excess fall (beyond ``tau_min_s`` cooling) that flags a detached thermistor, °C.
        rise_c: During heat-up, a reading that rose at least this much since the target was set
            and then stalled is a decoupled thermistor rather than a dead heater, °C.
        over_c: A reading this far above target and not falling is a heater stuck on, °C.
        over_s: For this long, s.
    """

    hysteresis_c: float = 5.0
    max_error_cs: float = 120.0
    heating_gain_c: float = 2.0
    check_gain_time_s: float = 20.0
    maxtemp_c: float = 275.0
    tau_min_s: float = 60.0
    fall_c: float = 8.0
    rise_c: float = 15.0
    over_c: float = 15.0
    over_s: float = 20.0


@dataclass(frozen=True, slots=True)
class PrinterParams:
    """Hyper-parameters of :class:`PrinterDetector`.

    Attributes:
        hotend: Hotend checks.
        bed: Bed checks (Klipper's heater_bed: gain time 60 s; bed MAXTEMP 120 °C).
        ambient_c: Room temperature, °C; the cooling check uses the lower of this and
            ``chamber_c`` (a bed-warmed enclosure reads above the room the hotend cools to).
        max_dt_s: Longest time step integrated between two readings (longer gaps count as this;
            data that is missing is not evidence), s.
        fan_on_pct: Tachometer reading that counts as the part fan running, %.
        fan_off_pct: Below this the part fan is stopped, %.
        fan_expected_s: After the hotend first reaches its target, the fan is expected within
            this time (``inf`` for a printer that prints without part cooling), s.
        fan_expected_job_s: ... and at the latest this long after the hotend target was set (a
            heat-up that never completes still ends in a print), s.
        fan_off_s: A stopped fan that should run for this long is a fan failure, s.
        scale: Where scores become alerts.
    """

    hotend: HeaterParams = field(default_factory=HeaterParams)
    bed: HeaterParams = field(
        default_factory=lambda: HeaterParams(
            check_gain_time_s=60.0, maxtemp_c=120.0, tau_min_s=200.0, fall_c=5.0, rise_c=8.0
        )
    )
    ambient_c: float = 22.0
    max_dt_s: float = 30.0
    fan_on_pct: float = 10.0
    fan_off_pct: float = 3.0
    fan_expected_s: float = 900.0
    fan_expected_job_s: float = 2400.0
    fan_off_s: float = 30.0
    scale: AlertScale = field(default_factory=AlertScale)


_H2: Final = (2,)


class PrinterDetector(Detector[PrinterParams]):
    """Thermal runaway, heater failure, detached thermistor and part-fan failure of 3D printers.

    Reads ``hotend_c``, ``hotend_target_c``, ``hotend_duty_pct``, ``bed_c``, ``bed_target_c``,
    ``bed_duty_pct``, ``fan_pct``, ``chamber_c`` (missing columns or NaN: that check is skipped).

    Scores (``Scores.extra``): ``score_thermal_runaway``, ``score_heater_failure``,
    ``score_sensor_fault``, ``score_cooling_failure`` on the :class:`AlertScale`; per heater
    ``{h}_err_cs`` (verify_heater sum), ``{h}_below_s`` (time under target - hysteresis),
    ``{h}_fall_c`` (excess fall), ``{h}_over_s``; ``fan_off_s``.
    """

    name: ClassVar[str] = "printer3d"
    kinds: ClassVar[tuple[str, ...]] = ("printer3d",)
    params_type: ClassVar[type[Any]] = PrinterParams
    state_spec: ClassVar[Mapping[str, tuple[npt.DTypeLike, float, tuple[int, ...]]]] = {
        "last_ts": (np.float64, np.nan, ()),
        "prev_c": (np.float64, np.nan, _H2),
        "err": (np.float64, 0.0, _H2),
        "approaching": (np.bool_, 0, _H2),
        "starting": (np.bool_, 0, _H2),
        "goal_c": (np.float64, 0.0, _H2),
        "goal_ts": (np.float64, 0.0, _H2),
        "last_target": (np.float64, 0.0, _H2),
        "session_c": (np.float64, np.nan, _H2),
        "reached": (np.bool_, 0, _H2),
        "below_since": (np.float64, np.nan, _H2),
        "fall_acc": (np.float64, 0.0, _H2),
        "fast_fall": (np.bool_, 0, _H2),
        "sensor_flag": (np.bool_, 0, _H2),
        "over_acc": (np.float64, 0.0, _H2),
        "reached_ts": (np.float64, np.nan, ()),
        "job_ts": (np.float64, np.nan, ()),
        "fan_ran": (np.bool_, 0, ()),
        "fan_off_acc": (np.float64, 0.0, ()),
        "levels": (np.int8, 0, (len(_KINDS),)),
    }

    def update(self, frame: Frame) -> Scores:
        """Run the heater and fan checks over the frame (see the module docs)."""
        n = begin_update(self, frame, ("hotend_c", "bed_c"))
        p = self.params
        temp = np.column_stack([frame.column(f"{h}_c") for h in HEATERS]).reshape(n, 2)
        target = np.nan_to_num(
            np.column_stack([frame.column(f"{h}_target_c") for h in HEATERS]).reshape(n, 2)
        )
        chamber = frame.column("chamber_c")
        # The enclosure air is warmed by the bed; the room is no warmer than either estimate.
        amb = np.fmin(chamber, p.ambient_c)
        fan = frame.column("fan_pct")

        out = {k: np.zeros((n, 2)) for k in ("err", "below_s", "fall_c", "over_s", "klipper")}
        out["runaway_ev"] = np.zeros((n, 2), np.bool_)
        fan_off_out = np.zeros(n)
        st = self.state
        for rows in steps(frame.slot):
            s = frame.slot[rows]
            ts = frame.ts_s[rows]
            dt = tick(st.arrays, s, ts, p.max_dt_s)
            tg = target[rows]
            new_job, in_range = self._heater_step(s, rows, ts, dt, temp[rows], tg, amb[rows], out)
            fan_off_out[rows] = self._fan_step(
                s, ts, dt, tg[:, 0] > 0, in_range, new_job, fan[rows]
            )
        kind_scores, heater = self._kind_scores(temp, target, out, fan_off_out)
        extra = kind_extras(_KINDS, kind_scores)
        extra["heater"] = heater
        for j, h in enumerate(HEATERS):
            extra[f"{h}_err_cs"] = out["err"][:, j]
            extra[f"{h}_below_s"] = out["below_s"][:, j]
            extra[f"{h}_fall_c"] = out["fall_c"][:, j]
            extra[f"{h}_over_s"] = out["over_s"][:, j]
        extra["fan_off_s"] = fan_off_out
        return Scores(np.clip(kind_scores.max(axis=1, initial=0.0), 0.0, 1.0), extra)

    def _heater(self, name: str) -> Float64:
        """A :class:`HeaterParams` field for (hotend, bed)."""
        p = self.params
        return np.array([getattr(h, name) for h in (p.hotend, p.bed)], dtype=np.float64)

    def _heater_step(  # noqa: PLR0915 - one recursion step of both heaters, top to bottom
        self,
        s: Int64,
        rows: Int64,
        ts: Float64,
        dt1: Float64,
        t: Float64,
        tg: Float64,
        amb: Float64,
        out: dict[str, npt.NDArray[Any]],
    ) -> tuple[Bool, Bool]:
        """verify_heater, cooling and over-temperature checks of one step (heater axis last).

        Returns:
            Per row: a new hotend target (job) started; the hotend is in range of its target.
        """
        st = self.state
        hyst, max_err = self._heater("hysteresis_c"), self._heater("max_error_cs")
        gain_c, gain_s = self._heater("heating_gain_c"), self._heater("check_gain_time_s")
        tau_min, fall_c = self._heater("tau_min_s"), self._heater("fall_c")
        rise_c, maxtemp = self._heater("rise_c"), self._heater("maxtemp_c")
        over_c = self._heater("over_c")
        dt = dt1[:, None]
        ok = np.isfinite(t)
        tt = np.where(ok, t, 0.0)
        prev = st["prev_c"][s]
        prev = np.where(np.isfinite(prev), prev, tt)
        tnow = ts[:, None]

        # A new target (from 0 or changed): a new heating session.
        last_tg = st["last_target"][s]
        new_session = ok & (tg > 0) & (tg != last_tg)
        session_c = np.where(new_session, tt, st["session_c"][s])
        reached = st["reached"][s] & ~new_session
        fast_fall = st["fast_fall"][s] & ~new_session

        # --- Klipper verify_heater, integrated over dt.
        err = st["err"][s]
        appr, start = st["approaching"][s], st["starting"][s]
        goal_c, goal_ts = st["goal_c"][s], st["goal_ts"][s]
        in_range = (tt >= tg - hyst) | (tg <= 0)
        a = ok & in_range
        b = ok & ~in_range
        err = np.where(a & ((tt <= tg + hyst) | (tg <= 0)), 0.0, err)
        err = np.where(b, err + (tg - hyst - tt) * dt, err)
        begin = b & ~appr & (tg != last_tg)
        gained = b & appr & (tt >= goal_c)
        timed_out = b & appr & ~gained & (tnow >= goal_ts)
        starting_adj = b & appr & ~gained & ~timed_out & start
        err = np.where(gained, 0.0, err)
        goal_c = np.where(begin | gained, tt + gain_c, goal_c)
        goal_c = np.where(starting_adj, np.minimum(goal_c, tt + gain_c), goal_c)
        goal_ts = np.where(begin | gained, tnow + gain_s, goal_ts)
        appr = np.where(a | timed_out, False, np.where(begin, True, appr))
        start = np.where(a | gained, False, np.where(begin, True, start))
        reached = reached | (a & (tg > 0))
        below_since = st["below_since"][s]
        below_since = np.where(
            b,
            np.where(np.isnan(below_since), tnow, below_since),
            np.where(ok, np.nan, below_since),
        )
        elapsed = np.clip((tnow - (goal_ts - gain_s)) / gain_s, 0.0, 1.0)
        # While approaching, Klipper only watches the gain timer; its expiry is no fault yet.
        klipper = np.where(appr, 0.5 * elapsed, err / max_err)
        klipper = np.where(ok & (tg > 0), klipper, 0.0)

        # --- Cooling faster than the block can: the thermistor lost contact.
        allowed = np.maximum(prev - amb[:, None], 0.0) * dt / tau_min
        # A slow leak (the whole threshold in 10 min) lets a flag end once the reading is calm.
        leak = fall_c * dt / 600.0
        fall_acc = np.where(
            ok,
            np.maximum(st["fall_acc"][s] + (prev - tt) - allowed - leak, 0.0),
            st["fall_acc"][s],
        )
        fell = fall_acc >= fall_c
        fast_fall = fast_fall | (fell & (tg > 0))
        sensor_flag = (st["sensor_flag"][s] | fell) & ~(a & (tg > 0) & ~fell)
        # --- Heater stuck on: far above target and not cooling.
        hot = ok & (tg > 0) & (tt > tg + over_c) & (tt - prev > -0.05 * dt)
        over_acc = np.where(hot, st["over_acc"][s] + dt, np.maximum(st["over_acc"][s] - dt, 0))

        stalled_rise = ~reached & (tt - session_c >= rise_c)
        runaway_ev = fast_fall | st["sensor_flag"][s] | stalled_rise
        for name, val in (
            ("prev_c", np.where(ok, tt, st["prev_c"][s])),
            ("err", err),
            ("approaching", appr),
            ("starting", start),
            ("goal_c", goal_c),
            ("goal_ts", goal_ts),
            ("last_target", np.where(ok, tg, last_tg)),
            ("session_c", session_c),
            ("reached", reached),
            ("below_since", below_since),
            ("fall_acc", fall_acc),
            ("fast_fall", fast_fall),
            ("sensor_flag", sensor_flag),
            ("over_acc", over_acc),
        ):
            st[name][s] = val
        out["err"][rows] = err
        out["below_s"][rows] = np.where(np.isnan(below_since), 0.0, tnow - below_since)
        out["fall_c"][rows] = fall_acc
        out["over_s"][rows] = over_acc
        out["klipper"][rows] = klipper
        out["runaway_ev"][rows] = runaway_ev | (ok & (tt >= maxtemp))

        return new_session[:, 0], a[:, 0]

    def _fan_step(
        self,
        s: Int64,
        ts: Float64,
        dt: Float64,
        hot_on: Bool,
        in_range: Bool,
        new_job: Bool,
        f: Float64,
    ) -> Float64:
        """Part-fan check of one step; returns the seconds the fan has been stopped."""
        st = self.state
        p = self.params
        reached_ts = np.where(new_job | ~hot_on, np.nan, st["reached_ts"][s])
        reached_ts = np.where(np.isnan(reached_ts) & in_range & hot_on, ts, reached_ts)
        job_ts = np.where(~hot_on, np.nan, np.where(new_job, ts, st["job_ts"][s]))
        job_ts = np.where(hot_on & np.isnan(job_ts), ts, job_ts)
        fan_ran = np.where(new_job | ~hot_on, False, st["fan_ran"][s]) | (
            hot_on & (f >= p.fan_on_pct)
        )
        expected = (
            fan_ran | (ts - reached_ts >= p.fan_expected_s) | (ts - job_ts >= p.fan_expected_job_s)
        )
        stopped = hot_on & np.isfinite(f) & (f < p.fan_off_pct) & expected
        fan_acc = np.where(stopped, st["fan_off_acc"][s] + dt, 0.0)
        st["reached_ts"][s] = reached_ts
        st["job_ts"][s] = job_ts
        st["fan_ran"][s] = fan_ran
        st["fan_off_acc"][s] = fan_acc
        return np.asarray(fan_acc, dtype=np.float64)

    def _kind_scores(
        self, temp: Float64, target: Float64, out: dict[str, npt.NDArray[Any]], fan_off: Float64
    ) -> tuple[Float64, Int64]:
        """Scores per row of (runaway, heater failure, sensor fault, fan) from the checks.

        Returns:
            The scores (rows, 4) and, per row, the heater (0 hotend, 1 bed) behind them.
        """
        p = self.params
        n = temp.shape[0]
        fall_c, over_s = self._heater("fall_c"), self._heater("over_s")
        maxtemp = self._heater("maxtemp_c")
        on = target > 0
        fall_score = ramp(out["fall_c"] / fall_c, (0.0, 0.5, 1.0, 2.0), (0.0, 0.3, 0.6, 0.7))
        kl_run = ramp(out["klipper"], (0.0, 0.5, 1.0), (0.0, 0.45, 0.95))
        kl_heat = ramp(out["klipper"], (0.0, 0.5, 1.0), (0.0, 0.45, 0.8))
        over = ramp(out["over_s"] / over_s, (0.0, 0.5, 1.0), (0.0, 0.45, 0.8))
        maxt = np.where(np.nan_to_num(temp) >= maxtemp, 1.0, 0.0)
        ev = out["runaway_ev"] > 0
        run = np.maximum.reduce(
            [np.where(ev, kl_run, 0.0), np.where(on, fall_score / 0.7 * 0.95, 0.0), over, maxt]
        )
        heat = np.where(ev, 0.0, kl_heat)
        sensor = np.where(on, 0.0, fall_score)
        fan_score = ramp(fan_off / p.fan_off_s, (0.0, 0.5, 1.0), (0.0, 0.3, 0.6))
        kind_scores = np.column_stack(
            [run.max(axis=1), heat.max(axis=1), sensor.max(axis=1), fan_score]
        ).reshape(n, len(_KINDS))
        heater = np.argmax(np.stack([run, heat, sensor]).max(axis=0), axis=1).reshape(n)
        return np.asarray(kind_scores, dtype=np.float64), heater.astype(np.int64)

    def decide(self, frame: Frame, scores: Scores) -> Decisions:
        """Alerts per row and their edges (start, escalation) with explanations in numbers."""
        return decide_kinds(
            self, frame, scores, _KINDS, lambda row, k: self._explain(frame, scores, row, k)
        )

    def _explain(
        self, frame: Frame, scores: Scores, row: int, k: int
    ) -> tuple[str, dict[str, float]]:
        x = scores.extra
        if k == _FAN:
            fan = float(frame.column("fan_pct")[row])
            off = float(x["fan_off_s"][row])
            tg = float(frame.column("hotend_target_c")[row])
            return (
                f"part fan reads {fmt(fan, ' %')} for {off:.0f} s while printing "
                f"(hotend target {fmt(tg, ' °C', 0)}): fan failure",
                {"fan_pct": fan, "fan_off_s": off, "hotend_target_c": tg},
            )
        h = HEATERS[int(x["heater"][row])]
        hp = self.params.hotend if h == "hotend" else self.params.bed
        temp = float(frame.column(f"{h}_c")[row])
        tg = float(frame.column(f"{h}_target_c")[row])
        duty = float(frame.column(f"{h}_duty_pct")[row])
        below = float(x[f"{h}_below_s"][row])
        err = float(x[f"{h}_err_cs"][row])
        fall = float(x[f"{h}_fall_c"][row])
        data = {
            f"{h}_c": temp,
            f"{h}_target_c": tg,
            f"{h}_duty_pct": duty,
            "below_s": below,
            "err_cs": err,
            "excess_fall_c": fall,
        }
        if k == _SENSOR:
            return (
                f"{h} reading fell {fall:.1f} °C faster than the block can cool "
                f"(tau >= {hp.tau_min_s:.0f} s), now {fmt(temp, ' °C')}, heater off: "
                "thermistor detached?",
                data,
            )
        if temp >= hp.maxtemp_c:
            what = f"{h} {fmt(temp, ' °C')} above MAXTEMP {hp.maxtemp_c:.0f} °C"
        elif float(x[f"{h}_over_s"][row]) > 0 and temp > tg + hp.over_c:
            what = (
                f"{h} {fmt(temp, ' °C')}, {temp - tg:.1f} °C over target {fmt(tg, ' °C', 0)} "
                f"for {float(x[f'{h}_over_s'][row]):.0f} s, duty {fmt(duty, ' %', 0)}"
            )
        else:
            what = (
                f"{h} {fmt(temp, ' °C')}, {tg - temp:.1f} °C under target {fmt(tg, ' °C', 0)} "
                f"for {below:.0f} s, duty {fmt(duty, ' %', 0)}"
            )
            if fall >= hp.fall_c / 2:
                what += f", fell {fall:.1f} °C faster than the block can cool"
        tail = ": thermal runaway" if k == _RUNAWAY else ": heater failure (not heating)"
        return what + tail, data

    @classmethod
    def conformance_case(cls, seed: int) -> ConformanceCase:
        """Three printers heat up and hold; then one thermistor falls off, one heater dies."""
        rng = np.random.default_rng(seed)
        n_norm, n_anom = 400, 200
        t = np.arange(n_norm + n_anom, dtype=np.float64)
        frames: list[tuple[Frame, Frame, Bool]] = []
        for i in range(3):
            target = 200.0 + 10.0 * i
            # Healthy: heat-up towards the target (tau 40 s), then holding at ~50 % duty.
            temp = target - (target - 22.0) * np.exp(-t / 40.0)
            duty = np.where(t < 120.0, 100.0, 50.0)
            k = np.arange(n_anom, dtype=np.float64)
            if i == 0:  # thermistor detached: the reading relaxes to ~30 °C with a 20 s lag
                temp[n_norm:] = 30.0 + (temp[n_norm - 1] - 30.0) * np.exp(-k / 20.0)
                duty[n_norm:] = 100.0
            elif i == 1:  # heater dead: the block cools to the room (tau 150 s)
                temp[n_norm:] = 22.0 + (temp[n_norm - 1] - 22.0) * np.exp(-k / 150.0)
                duty[n_norm:] = 100.0
            values = {
                "hotend_c": temp + rng.normal(0.0, 0.25, t.size),
                "hotend_target_c": np.full(t.size, target),
                "hotend_duty_pct": duty,
                "bed_c": 60.0 + rng.normal(0.0, 0.1, t.size),
                "bed_target_c": np.full(t.size, 60.0),
                "bed_duty_pct": np.full(t.size, 30.0),
                "fan_pct": np.full(t.size, 100.0),
                "chamber_c": np.full(t.size, 25.0),
            }
            full = Frame.single(f"p{i}", 1.7e9 + t, values, slot=i)
            anomalous = np.zeros(n_anom, np.bool_)
            # From when the evidence has built up: a detached thermistor falls faster than the
            # block can cool within seconds; a dead heater's shortfall sum needs ~15-20 s.
            if i == 0:
                anomalous[2:] = True
            elif i == 1:
                anomalous[16:] = True
            frames.append(split_case(full, n_norm, anomalous))
        return conformance_from(frames)
