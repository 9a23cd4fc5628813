"""Vinyl cutters and embroidery machines: motor current, blade force, stitch rate, thread tension.

Both learn, per device, how the motor current follows the machine's own operating point — a
least-squares fit over the first ``fit_samples`` working readings (vinyl: ``current ~ 1 + speed +
blade force`` while cutting; embroidery: ``current ~ 1 + stitch rate`` while stitching), frozen
once the readings span enough operating points — and then watch the ratio of the current to that
fit, smoothed over ``ratio_tau_samples`` readings.

**Vinyl cutter** (:class:`VinylCutterDetector`):

* Blade wear (``EventKind.TOOL_WEAR``): a dull blade drags, so the current at the same speed and
  force creeps up: the smoothed ratio above ``wear_warning`` / ``wear_alarm``.
* Motor stall (``EventKind.MOTOR``): the blade is down (force > 0) but the carriage does not move
  (speed 0) while the motor draws current, for ``stall_s``.

**Embroidery machine** (:class:`EmbroideryDetector`), all ``EventKind.MOTOR``:

* Motor overload: current over the fit by ``overload_warning`` / ``overload_alarm``.
* Tension fault: the upper-thread tension's mean absolute deviation from its own running level
  (reset when stitching resumes after a job-sized gap), relative, above ``tension_warning``.
* Thread breaks: stitching stops of ``break_min_s``-``break_max_s`` (re-threading; colour changes
  are shorter, job gaps longer), counted with a one-hour memory of stitching time.
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
    conformance_from,
    decide_kinds,
    fmt,
    level_ramp,
    ramp,
    split_case,
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
    "EmbroideryDetector",
    "EmbroideryParams",
    "VinylCutterDetector",
    "VinylCutterParams",
]


def _fit_step(
    st: Mapping[str, npt.NDArray[Any]],
    s: Int64,
    x: Float64,
    y: Float64,
    use: Bool,
    *,
    fit_samples: int,
    min_span: Float64,
    enough: Bool | None = None,
    ridge: float = 1e-6,
) -> Float64:
    """One step of the per-device current fit; returns the prediction (NaN until frozen).

    ``st`` holds ``xtx`` (devices, p, p), ``xty`` (devices, p), ``n``, ``coef`` (devices, p,
    NaN until frozen), ``lo``/``hi`` (devices, p: feature ranges seen). A device's fit freezes
    once it has ``fit_samples`` readings, every feature spans at least ``min_span`` and
    ``enough`` (e.g. jobs seen) holds.
    """
    coef = st["coef"][s]
    frozen = np.all(np.isfinite(coef), axis=1)
    learn = use & ~frozen
    if np.any(learn):
        sl = s[learn]
        xl = x[learn]
        st["xtx"][sl] += xl[:, :, None] * xl[:, None, :]
        st["xty"][sl] += xl * y[learn][:, None]
        st["n"][sl] += 1
        st["lo"][sl] = np.fmin(st["lo"][sl], xl)
        st["hi"][sl] = np.fmax(st["hi"][sl], xl)
        spanned = np.all(st["hi"][sl] - st["lo"][sl] >= min_span, axis=1)
        ready = (st["n"][sl] >= fit_samples) & spanned
        if enough is not None:
            ready &= enough[learn]
        if np.any(ready):
            sr = sl[ready]
            a = st["xtx"][sr]
            # Marquardt-style damping: each diagonal element scaled, so no feature is shrunk
            # more than another whatever its unit.
            damp = ridge * np.einsum("ijj->ij", a)[:, :, None] * np.eye(a.shape[1])[None]
            st["coef"][sr] = np.linalg.solve(a + damp, st["xty"][sr][:, :, None])[:, :, 0]
    coef = st["coef"][s]
    return np.asarray(np.einsum("ij,ij->i", coef, x), dtype=np.float64)


def _fit_spec(p: int) -> dict[str, tuple[npt.DTypeLike, float, tuple[int, ...]]]:
    return {
        "xtx": (np.float64, 0.0, (p, p)),
        "xty": (np.float64, 0.0, (p,)),
        "n": (np.int64, 0, ()),
        "coef": (np.float64, np.nan, (p,)),
        "lo": (np.float64, np.nan, (p,)),
        "hi": (np.float64, np.nan, (p,)),
        "ratio": (np.float64, 0.0, ()),
        "ratio_n": (np.int64, 0, ()),
    }


def _ratio_step(
    st: Mapping[str, npt.NDArray[Any]], s: Int64, ratio: Float64, use: Bool, tau: float
) -> tuple[Float64, Int64]:
    """Smooth (current / fit - 1) per device: a plain mean up to ``tau`` readings, then an EWMA."""
    ok = use & np.isfinite(ratio)
    r, k = st["ratio"][s], st["ratio_n"][s]
    a = np.maximum(1.0 / tau, 1.0 / (k + 1.0))
    st["ratio"][s] = np.where(ok, r + (np.nan_to_num(ratio) - r) * a, r)
    st["ratio_n"][s] = k + ok
    return st["ratio"][s].copy(), st["ratio_n"][s].copy()


def _current_step(
    st: Mapping[str, npt.NDArray[Any]],
    s: Int64,
    x: Float64,
    amps: Float64,
    use: Bool,
    *,
    fit_samples: int,
    min_span: Float64,
    tau: float,
    enough: Bool | None = None,
) -> tuple[Float64, Float64, Int64]:
    """:func:`_fit_step` then :func:`_ratio_step` of current / fit - 1.

    Returns:
        The fit's prediction, the smoothed ratio and the count of readings it has smoothed.
    """
    pred = _fit_step(st, s, x, amps, use, fit_samples=fit_samples, min_span=min_span, enough=enough)
    r = amps / np.where(pred > 0, pred, np.nan) - 1.0
    ratio, ratio_n = _ratio_step(st, s, r, use, tau)
    return pred, ratio, ratio_n


# ---------------------------------------------------------------------------------------------
# Vinyl cutter

_VINYL_KINDS: Final = (EventKind.MOTOR, EventKind.TOOL_WEAR)


@dataclass(frozen=True, slots=True)
class VinylCutterParams:
    """Hyper-parameters of :class:`VinylCutterDetector`.

    Attributes:
        fit_samples: Cutting readings the current fit learns from (at least).
        fit_jobs: Jobs (speed and force settings) the fit must have seen before it freezes.
        min_speed_span_mm_s: Cut speeds seen must span this before the fit freezes, mm/s.
        min_force_span_g: Blade forces seen must span this, g (several jobs: the reading's
            noise alone spans ~40 g within one job).
        ratio_tau_samples: Smoothing of current / fit, in cutting readings.
        ratio_min_samples: Compared readings needed before blade wear is scored.
        wear_warning: Smoothed excess current (ratio - 1) that is a blade-wear warning.
        wear_alarm: ... an alarm.
        job_gap_s: Cutting that resumes after this long without cutting starts a new job, s.
        stall_speed_mm_s: Blade down and slower than this is not moving, mm/s.
        stall_min_a: ... while drawing at least this current, A.
        stall_s: ... for this long is a stall, s.
        max_dt_s: Longest time step integrated between two readings, s.
        scale: Where scores become alerts.
    """

    fit_samples: int = 300
    fit_jobs: int = 4
    min_speed_span_mm_s: float = 50.0
    min_force_span_g: float = 50.0
    job_gap_s: float = 120.0
    ratio_tau_samples: float = 60.0
    ratio_min_samples: int = 30
    wear_warning: float = 0.05
    wear_alarm: float = 0.10
    stall_speed_mm_s: float = 1.0
    stall_min_a: float = 0.3
    stall_s: float = 4.0
    max_dt_s: float = 30.0
    scale: AlertScale = field(default_factory=AlertScale)


class VinylCutterDetector(Detector[VinylCutterParams]):
    """Blade wear and motor stalls of vinyl cutters.

    Reads ``motor_a``, ``blade_force_g``, ``cut_speed_mm_s``.

    Scores (``Scores.extra``): ``score_motor``, ``score_tool_wear``; ``expected_a`` (the fit),
    ``wear_ratio`` (smoothed current / fit - 1), ``stall_s``.
    """

    name: ClassVar[str] = "vinyl_cutter"
    kinds: ClassVar[tuple[str, ...]] = ("vinyl_cutter",)
    params_type: ClassVar[type[Any]] = VinylCutterParams
    state_spec: ClassVar[Mapping[str, tuple[npt.DTypeLike, float, tuple[int, ...]]]] = {
        "last_ts": (np.float64, np.nan, ()),
        "stall_acc": (np.float64, 0.0, ()),
        "last_cut_ts": (np.float64, np.nan, ()),
        "jobs": (np.int64, 0, ()),
        **_fit_spec(3),
        "levels": (np.int8, 0, (len(_VINYL_KINDS),)),
    }

    def update(self, frame: Frame) -> Scores:
        """Fit, wear ratio and stall time per reading; score them."""
        n = begin_update(self, frame, ("motor_a",))
        p = self.params
        amps = frame.column("motor_a")
        force = frame.column("blade_force_g")
        speed = frame.column("cut_speed_mm_s")
        down = np.nan_to_num(force) > 0
        cutting = down & (np.nan_to_num(speed) > p.stall_speed_mm_s) & np.isfinite(amps)
        stalled = (
            down
            & (np.nan_to_num(speed) <= p.stall_speed_mm_s)
            & (np.nan_to_num(amps) >= p.stall_min_a)
        )
        x = np.column_stack([np.ones(n), np.nan_to_num(speed), np.nan_to_num(force)]).reshape(n, 3)
        min_span = np.array([0.0, p.min_speed_span_mm_s, p.min_force_span_g])
        expected = np.full(n, np.nan)
        ratio = np.zeros(n)
        ratio_n = np.zeros(n, np.int64)
        stall = np.zeros(n)
        st = self.state.arrays
        for rows in steps(frame.slot):
            s = frame.slot[rows]
            ts = frame.ts_s[rows]
            dt = tick(st, s, ts, p.max_dt_s)
            c = cutting[rows]
            gap = ts - st["last_cut_ts"][s]
            st["jobs"][s] += c & ~(gap < p.job_gap_s)  # NaN gap (first cut) counts
            st["last_cut_ts"][s] = np.where(c, ts, st["last_cut_ts"][s])
            expected[rows], ratio[rows], ratio_n[rows] = _current_step(
                st,
                s,
                x[rows],
                amps[rows],
                c,
                fit_samples=p.fit_samples,
                min_span=min_span,
                tau=p.ratio_tau_samples,
                enough=st["jobs"][s] >= p.fit_jobs,
            )
            st["stall_acc"][s] = np.where(stalled[rows], st["stall_acc"][s] + dt, 0.0)
            stall[rows] = st["stall_acc"][s]
        motor = ramp(stall, (0.0, 0.5 * p.stall_s, p.stall_s, 3.0 * p.stall_s), (0, 0.4, 0.8, 0.9))
        wear = level_ramp(
            ratio, p.wear_warning, p.wear_alarm, 0.85, when=ratio_n >= p.ratio_min_samples
        )
        ks = np.column_stack([motor, wear]).reshape(n, 2)
        extra: dict[str, npt.NDArray[Any]] = {
            "score_motor": motor,
            "score_tool_wear": wear,
            "expected_a": expected,
            "wear_ratio": ratio,
            "stall_s": stall,
            "cutting": cutting,
        }
        return Scores(np.clip(ks.max(axis=1, initial=0.0), 0.0, 1.0), extra)

    def decide(self, frame: Frame, scores: Scores) -> Decisions:
        """Alerts per row; blade wear is judged on cutting readings only."""
        evidence = np.asarray(scores.extra["cutting"], np.bool_) | (scores.extra["stall_s"] > 0)
        return decide_kinds(
            self,
            frame,
            scores,
            _VINYL_KINDS,
            lambda row, k: self._explain(frame, scores, row, k),
            evidence=evidence,
        )

    def _explain(
        self, frame: Frame, scores: Scores, row: int, k: int
    ) -> tuple[str, dict[str, float]]:
        x = scores.extra
        amps = float(frame.column("motor_a")[row])
        force = float(frame.column("blade_force_g")[row])
        speed = float(frame.column("cut_speed_mm_s")[row])
        data = {"motor_a": amps, "blade_force_g": force, "cut_speed_mm_s": speed}
        if _VINYL_KINDS[k] is EventKind.MOTOR:
            data["stall_s"] = float(x["stall_s"][row])
            return (
                f"blade down ({fmt(force, ' g', 0)}) at {fmt(speed, ' mm/s', 0)} for "
                f"{float(x['stall_s'][row]):.0f} s drawing {fmt(amps, ' A', 2)}: motor stall",
                data,
            )
        ratio = float(x["wear_ratio"][row])
        data |= {"wear_ratio": ratio, "expected_a": float(x["expected_a"][row])}
        return (
            f"cutting current {100.0 * ratio:+.1f} % over this cutter's own fit at equal speed and "
            f"force (now {fmt(amps, ' A', 2)} vs {fmt(float(x['expected_a'][row]), ' A', 2)} at "
            f"{fmt(speed, ' mm/s', 0)}, {fmt(force, ' g', 0)}): blade wear",
            data,
        )

    @classmethod
    def conformance_case(cls, seed: int) -> ConformanceCase:
        """Three cutters cutting jobs of varied speed and force; then a stall and a dull blade."""
        rng = np.random.default_rng(seed)
        n_norm, n_anom = 1050, 210
        t = np.arange(n_norm + n_anom, dtype=np.float64) * 5.0
        frames: list[tuple[Frame, Frame, Bool]] = []
        # Jobs of 40 readings (200 s) with 30 idle readings (150 s) between them.
        job = np.arange(t.size) // 70
        in_job = np.arange(t.size) % 70 < 40
        for i in range(3):
            speed_set = rng.uniform(50.0, 400.0, job.max() + 1)[job]
            force_set = rng.uniform(60.0, 250.0, job.max() + 1)[job]
            down = in_job & (rng.uniform(size=t.size) < 0.75)
            speed = np.where(down, speed_set * rng.uniform(0.8, 1.0, t.size), 0.0)
            force = np.where(down, force_set * (1 + 0.03 * rng.standard_normal(t.size)), 0.0)
            drag = 0.002 * force
            anomalous = np.zeros(n_anom, np.bool_)
            if i == 2:  # dull blade: 2.5 times the drag
                drag[n_norm:] *= 2.5
            amps = np.where(
                down,
                0.5 + 0.0025 * speed + drag,
                np.where(in_job, 0.5 + 0.0025 * 1.5 * speed_set, 0.1),
            ) * (1 + 0.03 * rng.standard_normal(t.size))
            if i == 0:  # stalled with the blade down, in a job that never ends
                speed[n_norm:] = 0.0
                force[n_norm:] = force_set[n_norm:]
                amps[n_norm:] = 3.0
                anomalous[:] = True  # a 5 s reading of a stall is already past stall_s
            if i == 2:
                # Once the smoothed ratio has seen a dozen dull cuts, on every reading.
                anomalous[np.flatnonzero(down[n_norm:])[12] :] = True
            values = {
                "motor_a": amps,
                "blade_force_g": force,
                "cut_speed_mm_s": speed,
                "duty_pct": np.where(in_job, 75.0, 0.0),
            }
            full = Frame.single(f"vinyl{i}", 1.7e9 + t, values, slot=i)
            frames.append(split_case(full, n_norm, anomalous))
        return conformance_from(frames)


# ---------------------------------------------------------------------------------------------
# Embroidery machine

_EMB_KINDS: Final = (EventKind.MOTOR,)
_EMB_CAUSES: Final = ("overload", "tension", "breaks")


@dataclass(frozen=True, slots=True)
class EmbroideryParams:
    """Hyper-parameters of :class:`EmbroideryDetector`.

    Attributes:
        fit_samples: Stitching readings the current fit learns from.
        min_rate_span_spm: Stitch rates seen must span this before the fit freezes, 1/min.
        ratio_tau_samples: Smoothing of current / fit, in stitching readings.
        ratio_min_samples: Compared readings needed before an overload is scored.
        overload_warning: Smoothed excess current (ratio - 1) that is a warning.
        overload_alarm: ... an alarm.
        tension_tau_s: Time constant of the tension's running level, s (stitching time).
        dev_tau_s: Time constant of its mean absolute relative deviation, s.
        tension_warning: Mean absolute relative deviation that is a tension warning.
        tension_alarm: ... an alarm.
        tension_min_s: Stitching time in a job before the deviation is scored, s.
        new_job_gap_s: A stop at least this long starts a new job (tension level reset), s.
        break_min_s: Shortest stop counted as a thread break (re-threading), s.
        break_max_s: Longest, s.
        breaks_warning: Breaks within about an hour of stitching that are a warning.
        max_dt_s: Longest time step integrated between two readings, s.
        scale: Where scores become alerts.
    """

    fit_samples: int = 200
    min_rate_span_spm: float = 40.0
    ratio_tau_samples: float = 30.0
    ratio_min_samples: int = 10
    overload_warning: float = 0.15
    overload_alarm: float = 0.3
    tension_tau_s: float = 300.0
    dev_tau_s: float = 180.0
    tension_warning: float = 0.08
    tension_alarm: float = 0.14
    tension_min_s: float = 120.0
    new_job_gap_s: float = 300.0
    break_min_s: float = 40.0
    break_max_s: float = 300.0
    breaks_warning: float = 4.0
    max_dt_s: float = 30.0
    scale: AlertScale = field(default_factory=AlertScale)


class EmbroideryDetector(Detector[EmbroideryParams]):
    """Motor overload, thread-tension faults and thread-break bursts of embroidery machines.

    Reads ``motor_a``, ``stitch_rate_spm``, ``thread_tension_g``.

    Scores (``Scores.extra``): ``score_motor``; ``expected_a``, ``overload_ratio``,
    ``tension_dev`` (mean absolute relative deviation), ``breaks`` (decaying count), ``cause``.
    """

    name: ClassVar[str] = "embroidery"
    kinds: ClassVar[tuple[str, ...]] = ("embroidery",)
    params_type: ClassVar[type[Any]] = EmbroideryParams
    state_spec: ClassVar[Mapping[str, tuple[npt.DTypeLike, float, tuple[int, ...]]]] = {
        "last_ts": (np.float64, np.nan, ()),
        "last_stitch_ts": (np.float64, np.nan, ()),
        "level_g": (np.float64, np.nan, ()),
        "dev": (np.float64, 0.0, ()),
        "job_s": (np.float64, 0.0, ()),
        "breaks": (np.float64, 0.0, ()),
        **_fit_spec(2),
        "levels": (np.int8, 0, (1,)),
    }

    def update(self, frame: Frame) -> Scores:
        """Current fit, tension deviation and thread breaks per reading; score them."""
        n = begin_update(self, frame, ("motor_a", "stitch_rate_spm"))
        p = self.params
        amps = frame.column("motor_a")
        spm = frame.column("stitch_rate_spm")
        ten = frame.column("thread_tension_g")
        stitching = (np.nan_to_num(spm) > 0) & np.isfinite(amps)
        x = np.column_stack([np.ones(n), np.nan_to_num(spm)]).reshape(n, 2)
        min_span = np.array([0.0, p.min_rate_span_spm])
        expected = np.full(n, np.nan)
        ratio = np.zeros(n)
        ratio_n = np.zeros(n, np.int64)
        dev = np.zeros(n)
        job_s = np.zeros(n)
        breaks = np.zeros(n)
        st = self.state.arrays
        for rows in steps(frame.slot):
            s = frame.slot[rows]
            ts = frame.ts_s[rows]
            dt = tick(st, s, ts, p.max_dt_s)
            on = stitching[rows]
            expected[rows], ratio[rows], ratio_n[rows] = _current_step(
                st,
                s,
                x[rows],
                amps[rows],
                on,
                fit_samples=p.fit_samples,
                min_span=min_span,
                tau=p.ratio_tau_samples,
            )
            # Stops: a re-threading-sized gap in stitching is a thread break; a long one a new job.
            gap = ts - st["last_stitch_ts"][s]
            resumed = on & np.isfinite(gap)
            brk = resumed & (gap >= p.break_min_s) & (gap <= p.break_max_s)
            new_job = on & (~np.isfinite(gap) | (gap > p.new_job_gap_s))
            st["last_stitch_ts"][s] = np.where(on, ts, st["last_stitch_ts"][s])
            sdt = np.where(on, dt, 0.0)
            st["breaks"][s] = st["breaks"][s] * np.exp(-sdt / 3600.0) + brk
            # Tension: deviation from its own running level, relative, smoothed.
            tg = ten[rows]
            tok = on & np.isfinite(tg) & (tg > 0)
            lvl = np.where(new_job | np.isnan(st["level_g"][s]), tg, st["level_g"][s])
            jb = np.where(new_job, 0.0, st["job_s"][s]) + sdt
            d = np.abs(tg - lvl) / np.where(lvl > 0, lvl, np.nan)
            a_d = 1.0 - np.exp(-sdt / p.dev_tau_s)
            dv = np.where(new_job, 0.0, st["dev"][s])
            dv = np.where(tok & np.isfinite(d), dv + (np.nan_to_num(d) - dv) * a_d, dv)
            a_l = 1.0 - np.exp(-sdt / p.tension_tau_s)
            lvl = np.where(tok, lvl + (np.nan_to_num(tg) - lvl) * a_l, lvl)
            st["level_g"][s] = np.where(tok | new_job, lvl, st["level_g"][s])
            st["dev"][s] = dv
            st["job_s"][s] = jb
            dev[rows] = dv
            job_s[rows] = jb
            breaks[rows] = st["breaks"][s]
        over = level_ramp(
            ratio, p.overload_warning, p.overload_alarm, 0.9, when=ratio_n >= p.ratio_min_samples
        )
        tens = level_ramp(
            dev, p.tension_warning, p.tension_alarm, 0.8, when=job_s >= p.tension_min_s
        )
        brk_s = ramp(breaks, (0.0, p.breaks_warning - 1.0, p.breaks_warning), (0.0, 0.3, 0.55))
        parts = np.column_stack([over, tens, brk_s]).reshape(n, 3)
        score = parts.max(axis=1, initial=0.0)
        extra: dict[str, npt.NDArray[Any]] = {
            "score_motor": score,
            "expected_a": expected,
            "overload_ratio": ratio,
            "tension_dev": dev,
            "breaks": breaks,
            "cause": np.argmax(parts, axis=1),
            "stitching": stitching,
        }
        return Scores(np.clip(score, 0.0, 1.0), extra)

    def decide(self, frame: Frame, scores: Scores) -> Decisions:
        """Alerts per row; judged on stitching readings only (a stop clears nothing)."""
        return decide_kinds(
            self,
            frame,
            scores,
            _EMB_KINDS,
            lambda row, _k: self._explain(frame, scores, row),
            evidence=np.asarray(scores.extra["stitching"], np.bool_),
        )

    def _explain(self, frame: Frame, scores: Scores, row: int) -> tuple[str, dict[str, float]]:
        x = scores.extra
        cause = _EMB_CAUSES[int(x["cause"][row])]
        amps = float(frame.column("motor_a")[row])
        spm = float(frame.column("stitch_rate_spm")[row])
        ten = float(frame.column("thread_tension_g")[row])
        data = {
            "motor_a": amps,
            "stitch_rate_spm": spm,
            "thread_tension_g": ten,
            "overload_ratio": float(x["overload_ratio"][row]),
            "tension_dev": float(x["tension_dev"][row]),
            "breaks": float(x["breaks"][row]),
        }
        if cause == "overload":
            exp = float(x["expected_a"][row])
            return (
                f"main motor {fmt(amps, ' A', 2)}, {100.0 * data['overload_ratio']:+.0f} % over "
                f"this machine's fit ({fmt(exp, ' A', 2)} at {fmt(spm, ' spm', 0)}): "
                "motor overload",
                data,
            )
        if cause == "tension":
            return (
                f"upper-thread tension {fmt(ten, ' g', 0)} varies "
                f"{100.0 * data['tension_dev']:.0f} % around its level (mean absolute deviation): "
                "tension fault",
                data,
            )
        return (
            f"{data['breaks']:.1f} thread breaks in about an hour of stitching "
            f"(re-threading stops): tension or thread path fault",
            data,
        )

    @classmethod
    def conformance_case(cls, seed: int) -> ConformanceCase:
        """Three machines stitching; then one overloaded motor and one erratic tension."""
        rng = np.random.default_rng(seed)
        n_norm, n_anom = 400, 150
        t = np.arange(n_norm + n_anom, dtype=np.float64) * 5.0
        frames: list[tuple[Frame, Frame, Bool]] = []
        for i in range(3):
            job = np.arange(t.size) // 100
            rate_set = rng.uniform(500.0, 1000.0, job.max() + 1)[job]
            spm = rate_set * np.clip(rng.normal(0.95, 0.03, t.size), 0.8, 1.0)
            ten_set = rng.uniform(90.0, 130.0)
            ten = ten_set * (1 + 0.04 * rng.standard_normal(t.size))
            k = np.ones(t.size)
            anomalous = np.zeros(n_anom, np.bool_)
            if i == 0:
                k[n_norm:] = 1.9
                spm[n_norm:] *= 0.65
                anomalous[5:] = True
            elif i == 1:
                ten[n_norm:] = ten_set * (
                    1 + 0.2 * rng.standard_normal(n_anom) + 0.35 * rng.uniform(-1, 1, n_anom)
                )
                anomalous[60:] = True
            amps = (0.25 + 0.0011 * spm) * k * (1 + 0.03 * rng.standard_normal(t.size))
            values = {
                "motor_a": amps,
                "stitch_rate_spm": spm,
                "duty_pct": np.full(t.size, 100.0),
                "thread_tension_g": ten,
            }
            full = Frame.single(f"emb{i}", 1.7e9 + t, values, slot=i)
            frames.append(split_case(full, n_norm, anomalous))
        return conformance_from(frames)
