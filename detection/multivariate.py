"""Multichannel streaming anomaly detection for machines and testbeds (a smoothed Hotelling T²).

Every numeric column of a frame is a channel (pump current, flow, spindle load, temperatures...).
Per device, each channel is smoothed by a time-aware EWMA (time constant ``smooth_s``) and the
smoothed vector is compared with what the device's first ``warmup_rows`` rows looked like: a
Mahalanobis distance (Hotelling's T², divided by the channel count) against the *smoothed*
vector's own mean and shrunk correlation. Smoothing first is the MEWMA idea: small persistent
shifts of a noisy channel (a valve 10 % closed) become many sigmas, while slowly drifting channels
(temperatures), whose smoothed spread is about their raw spread, gain no weight.

The warm-up is causal and has two halves, so the alarm limit is calibrated out of sample:

1. rows ``settle_rows..warmup_rows/2``: fit mean and correlation (model A);
2. rows ``warmup_rows/2..warmup_rows``: score them with model A; the largest statistic seen, times
   ``limit_factor``, is the alarm limit (it adapts to each device's own noise and autocorrelation);
3. at ``warmup_rows``: refit on the whole warm-up (model B), which then scores live rows.

A drifting channel (a temperature warming up) inflates the joint limit and can hide a clear
shift of one other channel (a flow dropping by many sigmas). So each channel also gets its own
limit, calibrated the same way: ``channel_factor`` x its largest smoothed deviation (in warm-up
sigmas) over the calibration half, never below ``channel_factor x channel_floor`` sigmas. The
alarm ratio is the larger of T²/limit and the largest per-channel ratio.

Scores are 0 during the warm-up. Afterwards the score is ``1 - 10**(-ratio)``, so 0.9 (the
default alert threshold) is exactly the limit and 0.99 twice it. The mean keeps following slow
drift (time constant ``adapt_s``) only while the score is below ``release``; a device whose score
stays above ``release`` for ``relearn_after_s`` is taken to have a new normal and warms up again.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Final

import numpy as np
import numpy.typing as npt

from detection._generic_common import check_hysteresis, decide_hysteresis, row_event
from detection.base import (
    ArrayState,
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

__all__ = ["MultivariateDetector", "MultivariateParams"]

_TINY: Final = 1e-12
_TOP_CHANNELS: Final = 3  # channels named in an explanation


@dataclass(frozen=True, slots=True)
class MultivariateParams:
    """Hyper-parameters of the multichannel detector.

    Attributes:
        warmup_rows: Rows per device used to learn normal behaviour (scores 0 meanwhile). SKAB's
            protocol allows the first 400 rows of each experiment (about 400 s at 1 Hz).
        max_channels: Largest number of channels (fixes the state's trailing shapes).
        smooth_s: Time constant of the per-channel EWMA smoothing, in seconds.
        settle_rows: First rows left out of the fit while the smoothing settles.
        shrinkage: Weight of the identity in the shrunk correlation matrix (0..1); keeps the
            inverse stable with few rows or collinear channels.
        limit_factor: Alarm limit = this x the largest statistic of the calibration half.
        channel_factor: Per-channel limit = this x the channel's largest smoothed deviation (in
            sigmas) over the calibration half (0 = no per-channel limits, T² only).
        channel_floor: Smallest calibration deviation assumed per channel, in sigmas.
        min_scale_rel: Smallest channel spread, relative to the channel's mean level (quantised or
            constant channels).
        adapt_s: Time constant of the slow drift tracking of the mean, in seconds (0 = frozen).
        relearn_after_s: A device above ``release`` this long warms up again, in seconds
            (0 = never).
        threshold: Score at which an alert starts.
        release: Score below which an active alert ends (hysteresis).
    """

    warmup_rows: int = 400
    max_channels: int = 16
    smooth_s: float = 10.0
    settle_rows: int = 30
    shrinkage: float = 0.1
    limit_factor: float = 2.0
    channel_factor: float = 4.0
    channel_floor: float = 2.0
    min_scale_rel: float = 1e-3
    adapt_s: float = 3600.0
    relearn_after_s: float = 3600.0
    threshold: float = 0.9
    release: float = 0.7


def _spec(m: int) -> dict[str, tuple[npt.DTypeLike, float, tuple[int, ...]]]:
    return {
        "n_rows": (np.int64, 0, ()),
        "last_ts_s": (np.float64, np.nan, ()),
        "smooth": (np.float64, np.nan, (m,)),
        "fit_n": (np.int64, 0, ()),
        "fit_mean": (np.float64, 0.0, (m,)),
        "fit_m2": (np.float64, 0.0, (m, m)),
        "mean": (np.float64, 0.0, (m,)),
        "scale": (np.float64, 1.0, (m,)),
        "precision": (np.float64, 0.0, (m, m)),
        "cal_max": (np.float64, 0.0, ()),
        "limit": (np.float64, np.inf, ()),
        "cal_zmax": (np.float64, 0.0, (m,)),
        "chan_limit": (np.float64, np.inf, (m,)),
        "hot_s": (np.float64, 0.0, ()),
        "alert_sev": (np.int8, 0, ()),
    }


class MultivariateDetector(Detector[MultivariateParams]):
    """Smoothed-T² anomaly detector over all numeric channels of a device (see module doc).

    Args:
        params: Hyper-parameters; defaults if None.

    Raises:
        DetectionError: A parameter is out of range.
    """

    name: ClassVar[str] = "multivariate"
    kinds: ClassVar[tuple[str, ...]] = ("multivariate",)
    watches_by_default: ClassVar[bool] = False
    params_type: ClassVar[type[Any]] = MultivariateParams
    state_spec: ClassVar[Mapping[str, tuple[npt.DTypeLike, float, tuple[int, ...]]]] = _spec(
        MultivariateParams().max_channels
    )

    def __init__(self, params: MultivariateParams | None = None) -> None:
        super().__init__(params)
        p = self.params
        if p.max_channels < 1:
            raise DetectionError("max_channels", f"must be >= 1, got {p.max_channels}")
        if p.warmup_rows < 4 or not 0 <= p.settle_rows < p.warmup_rows // 2 - 1:
            raise DetectionError(
                "warmup_rows", "need warmup_rows >= 4 and settle_rows < warmup_rows / 2 - 1"
            )
        check_hysteresis(p.threshold, p.release)
        if p.smooth_s <= 0 or p.limit_factor <= 0 or not 0.0 <= p.shrinkage <= 1.0:
            raise DetectionError("smooth_s", "smooth_s, limit_factor > 0 and shrinkage in [0, 1]")
        if p.channel_factor < 0 or p.channel_floor <= 0:
            raise DetectionError("channel_factor", "need channel_factor >= 0 and channel_floor > 0")
        # The trailing shapes depend on max_channels, so the state is built from the params.
        self.state = ArrayState(_spec(p.max_channels))
        self.channels: tuple[str, ...] | None = None

    # -- learned state outside the arrays ------------------------------------------------------

    def _extra_snapshot(self) -> dict[str, npt.NDArray[Any]]:
        return {"channels": np.array(self.channels or (), dtype=np.str_)}

    def _restore_extra(self, snap: Mapping[str, npt.NDArray[Any]]) -> None:
        names = snap.get("channels")
        self.channels = None if names is None or names.size == 0 else tuple(map(str, names))

    def _matrix(self, frame: Frame) -> npt.NDArray[np.float64]:
        """The frame's channels as a (rows, max_channels) matrix, padded with zeros."""
        names = tuple(sorted(frame.values))
        if self.channels is None:
            if not names:
                raise DetectionError("values", "a multivariate frame needs at least one channel")
            if len(names) > self.params.max_channels:
                raise DetectionError(
                    "values",
                    f"{len(names)} channels exceed max_channels={self.params.max_channels}",
                )
            self.channels = names
        elif names != self.channels:
            diff = sorted(set(names) ^ set(self.channels))
            raise DetectionError(
                diff[0] if diff else "values",
                f"channels {list(names)} differ from the learned {list(self.channels)}",
            )
        x = np.zeros((len(frame), self.params.max_channels))
        for j, name in enumerate(names):
            x[:, j] = frame.values[name]
        return x

    # -- the two steps ---------------------------------------------------------------------------

    def update(self, frame: Frame) -> Scores:
        """Smooth, learn and score every row (causal per device).

        Returns:
            Scores in [0, 1]; extras ``ratio`` (the larger of T² / alarm limit and the largest
            per-channel ratio; score = 1 - 10**-ratio), ``t2_ratio`` (T² / alarm limit),
            ``z_sigma`` (rows x channels: smoothed deviation in smoothed sigmas),
            ``contribution`` (rows x channels: each channel's share of T² / limit; they sum to
            ``t2_ratio``) and ``channel_ratio`` (rows x channels: |deviation| / the channel's
            own limit).
        """
        n = len(frame)
        m = self.params.max_channels
        score = np.zeros(n)
        ratio = np.zeros(n)
        t2_ratio = np.zeros(n)
        z_out = np.zeros((n, m))
        contrib = np.zeros((n, m))
        chan = np.zeros((n, m))
        if n == 0:
            return Scores(
                score,
                {
                    "ratio": ratio,
                    "t2_ratio": t2_ratio,
                    "z_sigma": z_out,
                    "contribution": contrib,
                    "channel_ratio": chan,
                },
            )
        x = self._matrix(frame)
        self.state.ensure(int(frame.slot.max()) + 1)
        for rows in steps(frame.slot):
            self._step(
                rows,
                frame.slot[rows],
                frame.ts_s[rows],
                x[rows],
                score=score,
                out=(ratio, t2_ratio, z_out, contrib, chan),
            )
        n_ch = len(self.channels or ())
        return Scores(
            score,
            {
                "ratio": ratio,
                "t2_ratio": t2_ratio,
                "z_sigma": z_out[:, :n_ch],
                "contribution": contrib[:, :n_ch],
                "channel_ratio": chan[:, :n_ch],
            },
        )

    def _step(
        self,
        rows: Int64,
        slots: Int64,
        ts_s: Float64,
        x: npt.NDArray[np.float64],
        *,
        score: Float64,
        out: tuple[
            Float64,
            Float64,
            npt.NDArray[np.float64],
            npt.NDArray[np.float64],
            npt.NDArray[np.float64],
        ],
    ) -> None:
        """One vectorised update of the devices in ``slots`` (one row each).

        ``score`` and ``out`` (ratio, t2_ratio, z_sigma, contribution, channel_ratio) are
        written at the given rows.
        """
        p = self.params
        st = self.state
        n_ch = len(self.channels or ())
        seen = ~np.isnan(x[:, :n_ch]).all(axis=1)
        if not seen.all():  # a row without any value: score 0, no state change
            rows, slots, ts_s, x = rows[seen], slots[seen], ts_s[seen], x[seen]
            if rows.shape[0] == 0:
                return
        last = st["last_ts_s"][slots]
        dt_s = np.where(np.isnan(last), 0.0, np.maximum(ts_s - last, 0.0))
        st["last_ts_s"][slots] = ts_s
        old = st["smooth"][slots]
        n_rows = st["n_rows"][slots] + 1
        st["n_rows"][slots] = n_rows
        alpha = (1.0 - np.exp(-dt_s / p.smooth_s))[:, None]
        sm = np.where(np.isnan(x), old, np.where(np.isnan(old), x, old + alpha * (x - old)))
        st["smooth"][slots] = sm
        sm = np.nan_to_num(sm)  # a channel never seen stays at 0 (and so never deviates)
        half = p.warmup_rows // 2

        fit = (n_rows > p.settle_rows) & (n_rows <= p.warmup_rows)
        if fit.any():
            self._accumulate(slots[fit], sm[fit])
        for at in (half, p.warmup_rows):
            fitted = n_rows == at
            if fitted.any():
                self._fit(slots[fitted], n_ch)
        live = n_rows > half
        if not live.any():
            return
        ls, lsm = slots[live], sm[live]
        z = (lsm - st["mean"][ls]) / st["scale"][ls]
        part = z * np.einsum("ijk,ik->ij", st["precision"][ls], z) / max(n_ch, 1)
        t2 = part.sum(axis=1)
        calib = n_rows[live] <= p.warmup_rows
        if calib.any():
            self._calibrate(ls[calib], t2[calib], z[calib], n_rows[live][calib] == p.warmup_rows)
        det = ~calib
        if not det.any():
            return
        ds = ls[det]
        r_t2 = t2[det] / st["limit"][ds]
        # Padded channels have z = 0 (ratio 0); without per-channel limits (channel_factor 0)
        # the limits stay infinite (ratio 0 too).
        r_ch = np.abs(z[det]) / st["chan_limit"][ds]
        r = np.maximum(r_t2, r_ch.max(axis=1))
        s = 1.0 - np.power(10.0, -r)
        where = rows[live][det]
        score[where] = s
        out[0][where] = r
        out[1][where] = r_t2
        out[2][where] = z[det]
        out[3][where] = part[det] / st["limit"][ds][:, None]
        out[4][where] = r_ch
        self._adapt(ds, s, dt_s[live][det], lsm[det])

    def _calibrate(
        self, cs: Int64, t2: Float64, z: npt.NDArray[np.float64], at_end: npt.NDArray[np.bool_]
    ) -> None:
        """Track the calibration maxima; set the alarm limits on the warm-up's last row."""
        p = self.params
        st = self.state
        st["cal_max"][cs] = np.maximum(st["cal_max"][cs], t2)
        st["cal_zmax"][cs] = np.maximum(st["cal_zmax"][cs], np.abs(z))
        ends = cs[at_end]
        # The statistic of T²/channels is 1 on average for white noise: never below that.
        st["limit"][ends] = p.limit_factor * np.maximum(st["cal_max"][ends], 1.0)
        if p.channel_factor > 0:
            st["chan_limit"][ends] = p.channel_factor * np.maximum(
                st["cal_zmax"][ends], p.channel_floor
            )

    def _adapt(self, ds: Int64, s: Float64, dts: Float64, sm: npt.NDArray[np.float64]) -> None:
        """Follow slow drift while calm; warm up again after ``relearn_after_s`` above release."""
        p = self.params
        st = self.state
        calm = s < p.release
        if p.adapt_s > 0 and calm.any():
            beta = (1.0 - np.exp(-dts[calm] / p.adapt_s))[:, None]
            cs = ds[calm]
            st["mean"][cs] += beta * (sm[calm] - st["mean"][cs])
        hot = np.where(calm, 0.0, st["hot_s"][ds] + dts)
        st["hot_s"][ds] = hot
        if p.relearn_after_s > 0:
            stale = ds[hot > p.relearn_after_s]
            if stale.shape[0]:
                sev = st["alert_sev"][stale].copy()
                st.reset(stale)
                st["alert_sev"][stale] = sev  # the alert episode belongs to decide()

    def _accumulate(self, slots: Int64, sm: npt.NDArray[np.float64]) -> None:
        """Welford update of the smoothed vector's mean and co-moment."""
        st = self.state
        k = st["fit_n"][slots] + 1
        st["fit_n"][slots] = k
        mean = st["fit_mean"][slots]
        delta = sm - mean
        mean = mean + delta / k[:, None]
        st["fit_mean"][slots] = mean
        st["fit_m2"][slots] += delta[:, :, None] * (sm - mean)[:, None, :]

    def _fit(self, slots: Int64, n_ch: int) -> None:
        """Mean, spread and shrunk inverse correlation from the accumulated warm-up rows."""
        p = self.params
        st = self.state
        m = p.max_channels
        k = np.maximum(st["fit_n"][slots] - 1, 1).astype(np.float64)
        cov = st["fit_m2"][slots] / k[:, None, None]
        mean = st["fit_mean"][slots]
        sd = np.sqrt(np.maximum(np.diagonal(cov, axis1=1, axis2=2), 0.0))
        sd = np.maximum(sd, p.min_scale_rel * np.abs(mean) + _TINY)
        corr = np.clip(cov / (sd[:, :, None] * sd[:, None, :]), -1.0, 1.0)
        used = np.arange(m) < n_ch
        corr[:, ~used, :] = 0.0
        corr[:, :, ~used] = 0.0
        eye = np.eye(m)
        corr = corr * (1.0 - eye) + eye
        corr = (1.0 - p.shrinkage) * corr + p.shrinkage * eye
        st["mean"][slots] = mean
        st["scale"][slots] = sd
        st["precision"][slots] = np.linalg.inv(corr)

    def decide(self, frame: Frame, scores: Scores) -> Decisions:
        """Alerts with hysteresis (on at ``threshold``, off below ``release``), events on edges."""
        if len(frame) == 0:
            return Decisions.empty(0)
        self.state.ensure(int(frame.slot.max()) + 1)
        names = self.channels or ()
        return decide_hysteresis(
            frame,
            scores,
            self.state["alert_sev"],
            threshold=self.params.threshold,
            release=self.params.release,
            make_event=lambda row, severity, late: self._event(
                frame, scores, row, severity=severity, late=late, names=names
            ),
        )

    def _event(
        self,
        frame: Frame,
        scores: Scores,
        row: int,
        *,
        severity: Severity,
        late: bool,
        names: tuple[str, ...],
    ) -> DetectionEvent:
        t2_ratio = float(scores.extra["t2_ratio"][row])
        z = scores.extra["z_sigma"][row]
        chan = scores.extra["channel_ratio"][row]
        # A channel matters by its share of T² / limit or by its own ratio, whichever is larger.
        share = np.maximum(scores.extra["contribution"][row], chan)
        top = [int(j) for j in np.argsort(-share)[:_TOP_CHANNELS] if share[j] > 0]
        parts = [f"{names[j]} {z[j]:+.1f} sigma" for j in top]
        lead = f"T² is {t2_ratio:.1f}x its warm-up limit"
        if chan.shape[0] and float(chan.max()) > t2_ratio:
            j = int(np.argmax(chan))
            lead = f"{names[j]} is {float(chan[j]):.1f}x its own warm-up limit ({lead})"
        explanation = (
            lead + "; most from " + ", ".join(parts) + " (smoothed, vs. the warm-up level)"
        )
        data = {"t2_over_limit": t2_ratio, "over_limit": float(scores.extra["ratio"][row])}
        data.update({f"z_sigma.{names[j]}": float(z[j]) for j in top})
        return row_event(
            frame,
            row,
            kind=EventKind.ANOMALY,
            severity=severity,
            score=float(scores.score[row]),
            explanation=explanation,
            detector=self.name,
            late=late,
            data=data,
        )

    @classmethod
    def conformance_case(cls, seed: int) -> ConformanceCase:
        """Three devices, four correlated channels at 1 Hz; then two channels shift by 6 sigma.

        The normal part is long enough for the default warm-up (400 rows) plus live rows.
        """
        rng = np.random.default_rng(seed)
        n_dev, n_norm, n_anom = 3, 520, 160
        t0 = 1.7e9

        def series(n: int, start: int, shift: npt.NDArray[np.float64]) -> dict[str, Float64]:
            base = rng.normal(size=(n_dev, n))
            cols = {
                "current_a": 2.0 + 0.1 * base + 0.05 * rng.normal(size=(n_dev, n)),
                "flow_lpm": 30.0 + 0.5 * base + 0.2 * rng.normal(size=(n_dev, n)),
                "pressure_bar": 1.0 + 0.05 * rng.normal(size=(n_dev, n)),
                "temp_c": 40.0
                + 0.0002 * (start + np.arange(n))
                + 0.1 * rng.normal(size=(n_dev, n)),
            }
            cols["flow_lpm"] = cols["flow_lpm"] - 3.0 * shift
            cols["pressure_bar"] = cols["pressure_bar"] + 0.3 * shift
            return {k: v.reshape(-1) for k, v in cols.items()}

        def frame(n: int, start: int, values: dict[str, Float64]) -> Frame:
            slot = np.repeat(np.arange(n_dev, dtype=np.int64), n)
            ids = np.array([f"rig-{s}" for s in slot], dtype=object)
            ts = t0 + np.tile(np.arange(start, start + n, dtype=np.float64), n_dev)
            return Frame(slot, ids, ts, values)

        normal = frame(n_norm, 0, series(n_norm, 0, np.zeros((n_dev, n_norm))))
        shift = np.zeros((n_dev, n_anom))
        shift[:, 60:120] = 1.0
        anomalous = frame(n_anom, n_norm, series(n_anom, n_norm, shift))
        return ConformanceCase(normal, anomalous, shift.reshape(-1) > 0)
