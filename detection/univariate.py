"""A generic streaming anomaly score for any single metric (column ``value``).

Per device the detector keeps a robust *level* and *scale* (Huber-clipped EWMAs: a location and a
mean-absolute-deviation scale, MAD-like), optionally plus a daily (or any period) profile of 24
bins. A reading's robust z-score is its distance from level + profile in scales; the score is
``1 - 10**(-(z / z_alarm)**2)``, so ``z_alarm`` robust sigmas score exactly 0.9 (the default alert
threshold) and the usual noise of 2 sigma scores about 0.1.

* **Spikes** are clipped at ``huber_k`` scales before they update the level and scale, so one
  outlier scores high without moving the baseline.
* **Level shifts** are absorbed: the clipped updates keep pulling the level towards the new value
  and the scale grows meanwhile, so an alert for a lasting shift ends after some
  ``level_window`` samples instead of ringing forever.
* **Irregular sampling and gaps** are time-aware: the EWMA weights count elapsed time in units of
  the device's typical sampling interval, so a reading after a long gap weighs more.
* **NaN** readings score 0 and change nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Final

import numpy as np
import numpy.typing as npt

from detection._generic_common import check_hysteresis, decide_hysteresis, row_event
from detection.base import (
    ConformanceCase,
    Decisions,
    DetectionError,
    DetectionEvent,
    Detector,
    EventKind,
    Float64,
    Frame,
    Int64,
    Scores,
    Severity,
    steps,
)

__all__ = ["SEASON_BINS", "UnivariateDetector", "UnivariateParams"]

SEASON_BINS: Final = 24
"""Bins of the seasonal profile (fixed: a trailing dimension of the state)."""
_SIGMA_PER_ABS_DEV: Final = 1.2533  # Gaussian sigma = 1.2533 * mean |x - mu|
_MAX_GAP_SAMPLES: Final = 1000.0  # a gap counts as at most this many typical intervals
_DT_WINDOW: Final = 20.0  # samples over which the typical sampling interval is learned


@dataclass(frozen=True, slots=True)
class UnivariateParams:
    """Hyper-parameters of the univariate detector.

    Attributes:
        warmup_samples: Readings per device before scoring starts (scores 0 meanwhile).
        level_window: Time constant of the level, in typical sampling intervals (samples).
        scale_window: Time constant of the scale, in samples.
        huber_k: Residuals are clipped at this many scales before updating (robustness).
        z_alarm: Robust z-score that scores 0.9 (the score is 1 - 10**(-(z / z_alarm)**2)).
        min_scale_rel: Smallest scale, relative to the level (quantised or constant metrics).
        min_scale_abs: Smallest scale, in the metric's unit.
        period_s: Seasonal period in seconds (86400 for daily; 0 = no seasonality).
        season_periods: Time constant of the seasonal profile, in periods.
        threshold: Score at which an alert starts.
        release: Score below which an active alert ends (hysteresis).
    """

    warmup_samples: int = 20
    level_window: float = 60.0
    scale_window: float = 120.0
    huber_k: float = 3.0
    z_alarm: float = 6.0
    min_scale_rel: float = 1e-3
    min_scale_abs: float = 1e-9
    period_s: float = 0.0
    season_periods: float = 7.0
    threshold: float = 0.9
    release: float = 0.7


class UnivariateDetector(Detector[UnivariateParams]):
    """Robust, self-normalising z-score of one metric per device (see the module doc).

    Args:
        params: Hyper-parameters; defaults if None.

    Raises:
        DetectionError: A parameter is out of range.
    """

    name: ClassVar[str] = "univariate"
    kinds: ClassVar[tuple[str, ...]] = ("univariate",)
    params_type: ClassVar[type[Any]] = UnivariateParams
    state_spec: ClassVar[Mapping[str, tuple[npt.DTypeLike, float, tuple[int, ...]]]] = {
        "n": (np.int64, 0, ()),
        "last_ts_s": (np.float64, np.nan, ()),
        "dt_typ_s": (np.float64, np.nan, ()),
        "level": (np.float64, 0.0, ()),
        "scale": (np.float64, 0.0, ()),
        "season": (np.float64, 0.0, (SEASON_BINS,)),
        "alert_sev": (np.int8, 0, ()),
    }

    def __init__(self, params: UnivariateParams | None = None) -> None:
        super().__init__(params)
        p = self.params
        if p.warmup_samples < 2:
            raise DetectionError("warmup_samples", f"must be >= 2, got {p.warmup_samples}")
        if min(p.level_window, p.scale_window, p.huber_k, p.z_alarm) <= 0:
            raise DetectionError("level_window", "windows, huber_k and z_alarm must be > 0")
        if p.period_s < 0 or p.season_periods <= 0:
            raise DetectionError("period_s", "period_s >= 0 and season_periods > 0")
        check_hysteresis(p.threshold, p.release)

    def update(self, frame: Frame) -> Scores:
        """Score every row against its device's baseline, then learn from it (causal).

        Returns:
            Scores in [0, 1]; extras ``baseline`` (level + seasonal profile, the metric's unit),
            ``z_sigma`` (signed robust z-score) and ``scale`` (robust sigma, the metric's unit).
        """
        n = len(frame)
        score = np.zeros(n)
        extra = {"baseline": np.full(n, np.nan), "z_sigma": np.zeros(n), "scale": np.zeros(n)}
        if n == 0:
            return Scores(score, extra)
        self.state.ensure(int(frame.slot.max()) + 1)
        value = frame.column("value")
        for rows in steps(frame.slot):
            ok = rows[~np.isnan(value[rows])]
            if ok.shape[0]:
                self._step(ok, frame.slot[ok], frame.ts_s[ok], value[ok], score=score, extra=extra)
        return Scores(score, extra)

    def _step(
        self,
        rows: Int64,
        slots: Int64,
        ts_s: Float64,
        x: Float64,
        *,
        score: Float64,
        extra: dict[str, Float64],
    ) -> None:
        """One vectorised update of the devices in ``slots`` (one finite reading each)."""
        p = self.params
        st = self.state
        n = st["n"][slots]
        last = st["last_ts_s"][slots]
        dt_s = np.where(np.isnan(last), 0.0, np.maximum(ts_s - last, 0.0))
        typ = st["dt_typ_s"][slots]
        # Elapsed time in typical intervals (1 until an interval is known).
        k = np.where(np.isnan(typ) | (typ <= 0), 1.0, dt_s / np.where(typ > 0, typ, 1.0))
        k = np.clip(k, 0.0, _MAX_GAP_SAMPLES)
        seasonal = p.period_s > 0
        if seasonal:
            width_s = p.period_s / SEASON_BINS
            b = (np.mod(ts_s, p.period_s) // width_s).astype(np.int64) % SEASON_BINS
            seas = st["season"][slots, b]
        else:
            seas = np.zeros(slots.shape[0])
        level = st["level"][slots]
        scale = st["scale"][slots]
        base = level + seas
        floor = p.min_scale_rel * np.abs(level) + p.min_scale_abs
        sc = np.maximum(scale, floor)
        err = x - base
        z = err / sc
        warm = n < p.warmup_samples
        s = np.where(warm, 0.0, 1.0 - np.power(10.0, -np.square(z / p.z_alarm)))
        score[rows] = s
        extra["baseline"][rows] = base
        extra["z_sigma"][rows] = np.where(warm, 0.0, z)
        extra["scale"][rows] = sc

        # Learn: a running mean while warming up, Huber-clipped EWMAs afterwards.
        n1 = n + 1
        psi = np.where(warm, err, np.clip(z, -p.huber_k, p.huber_k) * sc)
        a_lvl = 1.0 - np.power(1.0 - 1.0 / p.level_window, k)
        a_lvl = np.where(warm, np.maximum(a_lvl, 1.0 / n1), a_lvl)
        a_lvl = np.where(n == 0, 1.0, a_lvl)
        st["level"][slots] = level + a_lvl * psi
        # The noise does not change during a gap: a reading counts at most once for the scale.
        a_sc = 1.0 - np.power(1.0 - 1.0 / p.scale_window, np.minimum(k, 1.0))
        a_sc = np.where(warm, np.maximum(a_sc, 1.0 / np.maximum(n, 1)), a_sc)
        a_sc = np.where(n == 0, 0.0, a_sc)
        st["scale"][slots] = scale + a_sc * (_SIGMA_PER_ABS_DEV * np.abs(psi) - scale)
        if seasonal:
            # The profile learns what the level cannot follow: the residual at this time of day.
            a_seas = 1.0 - np.exp(-np.minimum(dt_s, width_s) / (p.season_periods * width_s))
            learn = ~warm
            st["season"][slots[learn], b[learn]] = seas[learn] + a_seas[learn] * psi[learn]
        has_dt = (n > 0) & (dt_s > 0)
        gap = np.minimum(dt_s, np.where(np.isnan(typ), dt_s, _MAX_GAP_SAMPLES * typ))
        new_typ = np.where(np.isnan(typ), gap, typ + (gap - typ) / _DT_WINDOW)
        st["dt_typ_s"][slots] = np.where(has_dt, new_typ, typ)
        st["last_ts_s"][slots] = ts_s
        st["n"][slots] = n1

    def decide(self, frame: Frame, scores: Scores) -> Decisions:
        """Alerts with hysteresis (on at ``threshold``, off below ``release``), events on edges."""
        if len(frame) == 0:
            return Decisions.empty(0)
        self.state.ensure(int(frame.slot.max()) + 1)
        value = frame.column("value")
        return decide_hysteresis(
            frame,
            scores,
            self.state["alert_sev"],
            threshold=self.params.threshold,
            release=self.params.release,
            make_event=lambda row, severity, late: self._event(
                frame, scores, row, value=float(value[row]), severity=severity, late=late
            ),
        )

    def _event(
        self,
        frame: Frame,
        scores: Scores,
        row: int,
        *,
        value: float,
        severity: Severity,
        late: bool,
    ) -> DetectionEvent:
        z = float(scores.extra["z_sigma"][row])
        base = float(scores.extra["baseline"][row])
        scale = float(scores.extra["scale"][row])
        side = "above" if z >= 0 else "below"
        what = "its daily profile" if self.params.period_s > 0 else "its level"
        return row_event(
            frame,
            row,
            kind=EventKind.ANOMALY,
            severity=severity,
            score=float(scores.score[row]),
            explanation=(
                f"value {value:.4g} is {abs(z):.1f} robust sigma {side} {what} {base:.4g} "
                f"(sigma {scale:.3g})"
            ),
            detector=self.name,
            late=late,
            data={"value": value, "baseline": base, "z_sigma": z, "sigma": scale},
        )

    @classmethod
    def conformance_case(cls, seed: int) -> ConformanceCase:
        """Four devices sampled every 60 s; then spikes on all and a level step on one."""
        rng = np.random.default_rng(seed)
        n_dev, n_norm, n_anom, dt_s = 4, 200, 80, 60.0
        levels = np.array([20.0, 50.0, 100.0, 5.0])
        sigmas = np.array([0.5, 2.0, 1.0, 0.1])

        def frame(start: int, y: npt.NDArray[np.float64]) -> Frame:
            n = y.shape[1]
            slot = np.repeat(np.arange(n_dev, dtype=np.int64), n)
            ids = np.array([f"sensor-{s}" for s in slot], dtype=object)
            ts = 1.7e9 + dt_s * np.tile(np.arange(start, start + n, dtype=np.float64), n_dev)
            return Frame(slot, ids, ts, {"value": y.reshape(-1)})

        def noise(n: int) -> npt.NDArray[np.float64]:
            return levels[:, None] + sigmas[:, None] * rng.normal(size=(n_dev, n))

        normal = frame(0, noise(n_norm))
        y = noise(n_anom)
        bad = np.zeros((n_dev, n_anom), np.bool_)
        bad[:, 20::20] = True  # spikes of 12 sigma
        y[bad] += 12.0 * np.broadcast_to(sigmas[:, None], y.shape)[bad]
        bad[1, 50:60] = True  # a step of 10 sigma on device 1
        y[1, 50:] += 10.0 * sigmas[1]
        return ConformanceCase(normal, frame(n_norm, y), bad.reshape(-1))
