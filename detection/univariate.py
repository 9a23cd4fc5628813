"""A generic streaming anomaly score for any single metric (column ``value``): a calibrated
tail probability of recent behaviour, high when the behaviour changes and low again once the new
behaviour is normal.

Two stages per device, all state in arrays indexed by device slot:

1. **Raw robust z-score.** A robust *level* and *scale* (Huber-clipped EWMAs: a location and a
   mean-absolute-deviation scale, MAD-like), optionally plus a daily (or any period) profile of
   24 bins. A reading's robust z-score ``z`` is its distance from level + profile in scales; its
   raw score is ``(z / z_alarm)**2``, capped at 25 (``5 z_alarm`` sigmas). Spikes are clipped at
   ``huber_k`` scales before they update the baseline.
2. **Anomaly likelihood** (the idea of Numenta's anomaly likelihood: compare the recent raw scores
   with their long-run distribution). Two short EWMAs (``likelihood_short`` samples) follow the
   recent raw score and the recent signed, clipped z-score; the long-run mean and variance of
   each short mean are learnt over ``likelihood_long`` samples. The tail probability of each short
   mean under its long-run Gaussian — one-sided for the raw score (more deviation than usual: a
   spike, a new variance), two-sided for the signed z (a level shift or drift, which raw scores
   that alternate in sign would hide in quantised data) — is combined (the smaller, times 2) and
   log-scaled as NAB does: ``score = ln(p + 1e-10) / ln(1e-10)``, so p = 1e-5 scores 0.5 and
   p = 1e-10 scores 1. Because the reference is the raw score's own long-run distribution, a
   metric whose raw scores are always bursty (quantised, autocorrelated, on/off) calibrates itself.

**A confirmed change becomes the new normal.** When the score reaches ``relearn_score``, the
detector re-learns from its last :data:`RECENT` readings: after a level shift (the signed evidence
dominates) the level jumps to their median; after a new variance (the raw evidence dominates) the
scale grows to at least their robust spread; both short means restart from their long-run means.
So a lasting shift scores high at its onset and low a few readings later, and a threshold on the
score makes few, well-timed detections — what window-based scoring (NAB) rewards and what on-call
people want. A slow drift re-triggers whenever it has moved far enough again.

* **Irregular sampling and gaps** are time-aware: the level's EWMA weights count elapsed time in
  units of the device's typical sampling interval, so a reading after a long gap weighs more.
* **NaN** readings score 0 and change nothing.
* The score is 0 for the first ``warmup_samples + likelihood_warmup`` readings of a device.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Final

import numpy as np
import numpy.typing as npt
from scipy import special

from detection._generic_common import check_hysteresis, decide_hysteresis, row_event
from detection.base import (
    Bool,
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
RECENT: Final = 8
"""Recent readings kept per device (re-learning after a confirmed change)."""
_SIGMA_PER_ABS_DEV: Final = 1.2533  # Gaussian sigma = 1.2533 * mean |x - mu|
_SIGMA_PER_MAD: Final = 1.4826  # Gaussian sigma = 1.4826 * median |x - median|
_MAX_GAP_SAMPLES: Final = 1000.0  # a gap counts as at most this many typical intervals
_DT_WINDOW: Final = 20.0  # samples over which the typical sampling interval is learned
_RAW_CAP: Final = 5.0
_LOG_EPS: Final = math.log(1e-10)  # NAB's log scale: tail probability 1e-10 scores 1


@dataclass(frozen=True, slots=True)
class UnivariateParams:
    """Hyper-parameters of the univariate detector.

    Attributes:
        warmup_samples: Readings per device before scoring starts (scores 0 meanwhile).
        level_window: Time constant of the level, in typical sampling intervals (samples).
        scale_window: Time constant of the scale, in samples.
        huber_k: Residuals are clipped at this many scales before updating (robustness).
        z_alarm: Unit of the raw score, in robust sigmas (raw = (z / z_alarm)**2, at most 25).
        min_scale_rel: Smallest scale, relative to the level (quantised or constant metrics).
        min_scale_abs: Smallest scale, in the metric's unit.
        period_s: Seasonal period in seconds (86400 for daily; 0 = no seasonality).
        season_periods: Time constant of the seasonal profile, in periods.
        likelihood_short: Time constant of the recent mean raw score, in samples.
        likelihood_shift: Time constant of the recent mean signed z, in samples (longer: a
            drift or small shift accumulates evidence).
        likelihood_long: Time constant of their long-run mean and variance, in samples.
        likelihood_warmup: Samples after ``warmup_samples`` before the likelihood is scored.
        likelihood_min_std: Smallest long-run standard deviation of the recent mean raw score.
        likelihood_signed: Also score the recent mean signed z (False: raw scores only, as NAB).
        likelihood_min_std_z: Smallest long-run standard deviation of the recent mean signed z.
        relearn_score: Score at which a change is confirmed and re-learnt (0 = never).
        threshold: Score at which an alert starts.
        release: Score below which an active alert ends (hysteresis).
    """

    warmup_samples: int = 20
    level_window: float = 30.0
    scale_window: float = 120.0
    huber_k: float = 3.0
    z_alarm: float = 6.0
    min_scale_rel: float = 1e-3
    min_scale_abs: float = 1e-9
    period_s: float = 0.0
    season_periods: float = 7.0
    likelihood_short: float = 5.0
    likelihood_shift: float = 20.0
    likelihood_long: float = 1000.0
    likelihood_warmup: int = 50
    likelihood_min_std: float = 0.01
    likelihood_signed: bool = True
    likelihood_min_std_z: float = 0.05
    relearn_score: float = 0.5
    threshold: float = 0.5
    release: float = 0.3


class UnivariateDetector(Detector[UnivariateParams]):
    """Robust, self-normalising z-score of one metric per device (see the module doc).

    Args:
        params: Hyper-parameters; defaults if None.

    Raises:
        DetectionError: A parameter is out of range.
    """

    name: ClassVar[str] = "univariate"
    kinds: ClassVar[tuple[str, ...]] = ("univariate",)
    watches_by_default: ClassVar[bool] = False
    params_type: ClassVar[type[Any]] = UnivariateParams
    state_spec: ClassVar[Mapping[str, tuple[npt.DTypeLike, float, tuple[int, ...]]]] = {
        "n": (np.int64, 0, ()),
        "last_ts_s": (np.float64, np.nan, ()),
        "dt_typ_s": (np.float64, np.nan, ()),
        "level": (np.float64, 0.0, ()),
        "scale": (np.float64, 0.0, ()),
        "season": (np.float64, 0.0, (SEASON_BINS,)),
        "lik_n": (np.int64, 0, ()),
        "raw_short": (np.float64, 0.0, ()),
        "raw_mean": (np.float64, 0.0, ()),
        "raw_var": (np.float64, 0.0, ()),
        "z_short": (np.float64, 0.0, ()),
        "z_mean": (np.float64, 0.0, ()),
        "z_var": (np.float64, 0.0, ()),
        "recent": (np.float64, np.nan, (RECENT,)),
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
        if min(p.likelihood_short, p.likelihood_shift) < 1 or p.likelihood_long < max(
            p.likelihood_short, p.likelihood_shift
        ):
            raise DetectionError(
                "likelihood_short", "need 1 <= likelihood_short, _shift <= likelihood_long"
            )
        if p.likelihood_warmup < 0 or min(p.likelihood_min_std, p.likelihood_min_std_z) <= 0:
            raise DetectionError(
                "likelihood_warmup", "likelihood_warmup >= 0 and the minimum deviations > 0"
            )
        if not 0.0 <= p.relearn_score <= 1.0:
            raise DetectionError("relearn_score", f"must be in [0, 1], got {p.relearn_score}")
        check_hysteresis(p.threshold, p.release)

    def update(self, frame: Frame) -> Scores:
        """Score every row against its device's baseline, then learn from it (causal).

        Returns:
            Scores in [0, 1]; extras ``baseline`` (level + seasonal profile, the metric's unit),
            ``z_sigma`` (signed robust z-score), ``scale`` (robust sigma, the metric's unit),
            ``raw_score`` (stage 1) and ``tail_p`` (the tail probability of the recent behaviour
            under its long-run distribution; 1 while warming up).
        """
        n = len(frame)
        score = np.zeros(n)
        extra = {
            "baseline": np.full(n, np.nan),
            "z_sigma": np.zeros(n),
            "scale": np.zeros(n),
            "raw_score": np.zeros(n),
            "tail_p": np.ones(n),
        }
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
        lik, shift = self._likelihood(slots, z, warm, extra=extra, rows=rows)
        score[rows] = lik
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
        self._relearn(slots, n, x - seas, lik, shift)
        has_dt = (n > 0) & (dt_s > 0)
        gap = np.minimum(dt_s, np.where(np.isnan(typ), dt_s, _MAX_GAP_SAMPLES * typ))
        new_typ = np.where(np.isnan(typ), gap, typ + (gap - typ) / _DT_WINDOW)
        st["dt_typ_s"][slots] = np.where(has_dt, new_typ, typ)
        st["last_ts_s"][slots] = ts_s
        st["n"][slots] = n1

    def _likelihood(
        self,
        slots: Int64,
        z: Float64,
        warm: Bool,
        *,
        extra: dict[str, Float64],
        rows: Int64,
    ) -> tuple[Float64, Bool]:
        """The log-scaled tail probability of the recent means, and whether a shift dominates."""
        p = self.params
        st = self.state
        live = ~warm
        raw = np.where(warm, 0.0, np.minimum(np.abs(z) / p.z_alarm, _RAW_CAP))
        extra["raw_score"][rows] = raw
        n_l = st["lik_n"][slots]
        scored = live & (n_l >= p.likelihood_warmup)
        a = np.maximum(1.0 / p.likelihood_long, 1.0 / (n_l + 1.0))
        zr = self._track(slots, "raw", raw, live, a, p.likelihood_short, p.likelihood_min_std)
        log_q = special.log_ndtr(-zr)
        if p.likelihood_signed:
            zc = np.clip(z, -p.huber_k, p.huber_k)
            zz = self._track(slots, "z", zc, live, a, p.likelihood_shift, p.likelihood_min_std_z)
            log_q2 = math.log(2.0) + special.log_ndtr(-np.abs(zz))
            shift = log_q2 < log_q
            log_q = math.log(2.0) + np.minimum(log_q, log_q2)
        else:
            shift = np.zeros(slots.shape[0], np.bool_)
        log_q = np.logaddexp(np.minimum(log_q, 0.0), _LOG_EPS)
        out = np.where(scored, np.clip(log_q / _LOG_EPS, 0.0, 1.0), 0.0)
        extra["tail_p"][rows] = np.where(scored, np.exp(log_q), 1.0)
        st["lik_n"][slots] = n_l + live
        return out, shift & scored

    def _relearn(
        self, slots: Int64, n: Int64, deseasoned: Float64, score: Float64, shift: Bool
    ) -> None:
        """Keep the recent readings; after a confirmed change, take them as the new normal."""
        st = self.state
        st["recent"][slots, n % RECENT] = deseasoned
        confirmed = score >= self.params.relearn_score
        if self.params.relearn_score <= 0 or not confirmed.any():
            return
        s = slots[confirmed]
        recent = st["recent"][s]
        if np.isnan(recent).all(axis=1).any():  # restored from a snapshot without readings
            return
        med = np.nanmedian(recent, axis=1)
        mad = np.nanmedian(np.abs(recent - med[:, None]), axis=1) * _SIGMA_PER_MAD
        # The newest half: a shift confirmed a few readings after its onset is all in there.
        pos = (n[confirmed][:, None] - np.arange(RECENT // 2)[None, :]) % RECENT
        newest = np.nanmedian(np.take_along_axis(recent, pos, axis=1), axis=1)
        # A shift when the signed evidence dominates, or when the newest readings sit together
        # far from the level (a large shift confirmed by the raw score before the signed one);
        # otherwise a spike or a new variance, which moves the scale, never the level.
        level, scale = st["level"][s], st["scale"][s]
        away = np.abs(newest - level) > self.params.huber_k * scale
        sh = (shift[confirmed] | away) & np.isfinite(newest)
        grow = ~sh & np.isfinite(mad)
        st["level"][s] = np.where(sh, newest, level)
        st["scale"][s] = np.where(grow, np.maximum(scale, mad), scale)
        for key in ("raw", "z"):
            st[f"{key}_short"][s] = st[f"{key}_mean"][s]

    def _track(
        self,
        slots: Int64,
        key: str,
        x: Float64,
        live: Bool,
        a: Float64,
        window: float,
        min_std: float,
    ) -> Float64:
        """Short EWMA of ``x``, standardised by its long-run mean and deviation; then learn."""
        st = self.state
        m_old = st[f"{key}_short"][slots]
        m = np.where(live, m_old + (x - m_old) / window, m_old)
        mu = st[f"{key}_mean"][slots]
        var = st[f"{key}_var"][slots]
        sd = np.maximum(np.sqrt(var), min_std)
        zl = (m - mu) / sd
        dev = m - mu
        st[f"{key}_short"][slots] = m
        st[f"{key}_mean"][slots] = np.where(live, mu + a * dev, mu)
        st[f"{key}_var"][slots] = np.where(live, (1.0 - a) * (var + a * dev * dev), var)
        return np.asarray(zl, dtype=np.float64)

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
        tail_p = float(scores.extra["tail_p"][row])
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
                f"(sigma {scale:.3g}); recent behaviour has tail probability {tail_p:.1e} "
                "under its long-run distribution"
            ),
            detector=self.name,
            late=late,
            data={
                "value": value,
                "baseline": base,
                "z_sigma": z,
                "sigma": scale,
                "tail_p": tail_p,
            },
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
