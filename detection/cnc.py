"""CNC mills: ISO 10816 vibration severity, chatter, bearing defects, tool wear.

* **Vibration severity** (``EventKind.VIBRATION``): velocity RMS over 10-1000 Hz
  (``vib_rms_mms``, or computed from a waveform) in the ISO 10816-3 zones for medium machines on
  rigid foundations: A < 1.4 mm/s, B < 2.8 mm/s (acceptable), C < 4.5 mm/s (unsatisfactory: a
  warning), D (unacceptable: an alarm), critical from 7.1 mm/s. The explanation says whether the
  vibration is there only while cutting (chatter-like) or also when the spindle turns without
  cutting (bearing, unbalance, looseness) — all a summary reading can tell.
* From a **waveform** (``frame.arrays["vib_ms2"]`` with ``fs_hz``), :func:`waveform_features`
  computes a Welch PSD: **chatter** (``EventKind.CHATTER``) is a strong peak in the chatter band
  that is no harmonic of the spindle rate f_r = rpm/60 (tooth passing N·f_r is one) and no bearing
  line; **bearing defects** (``EventKind.BEARING``) show in the envelope spectrum (band-pass
  around the housing resonances, Hilbert envelope, Welch) at BPFO = (n/2)·f_r·(1 - (d/D)·cos φ)
  or BPFI = (n/2)·f_r·(1 + (d/D)·cos φ).
* **Tool wear** (``EventKind.TOOL_WEAR``): spindle current at *equal* operations — the same
  spindle speed and feed recur whenever a part program is run again. Per device, a small table
  learns the current of each (rpm, feed) operation from its first ``ref_samples`` cutting
  readings; later readings of that operation are compared with it and the ratio is smoothed over
  all operations (``wear_tau_samples``).
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
    kind_extras,
    level_ramp,
    ramp,
    split_case,
)
from detection.base import (
    Bool,
    ConformanceCase,
    Decisions,
    DetectionError,
    Detector,
    EventKind,
    Float64,
    Frame,
    Int64,
    Scores,
    steps,
)

__all__ = [
    "ISO_10816_3_MMS",
    "BearingParams",
    "CncDetector",
    "CncParams",
    "WaveformFeatures",
    "iso_zone",
    "waveform_features",
]

_KINDS: Final = (EventKind.CHATTER, EventKind.BEARING, EventKind.TOOL_WEAR, EventKind.VIBRATION)
_CHATTER, _BEARING, _WEAR, _VIB = range(4)
ISO_10816_3_MMS: Final = (1.4, 2.8, 4.5)
"""Lower edges of zones B, C and D of ISO 10816-3 (medium machines, rigid foundation), velocity
RMS in mm/s."""
TABLE_SIZE: Final = 64
"""Operations (rpm, feed) remembered per device for tool wear; the least-learned one is replaced
when the table is full."""


def iso_zone(v_mms: float) -> str:
    """ISO 10816-3 zone letter (A-D) of a velocity RMS, mm/s ("?" when NaN)."""
    if not math.isfinite(v_mms):
        return "?"
    return "ABCD"[int(np.searchsorted(ISO_10816_3_MMS, v_mms, side="right"))]


@dataclass(frozen=True, slots=True)
class BearingParams:
    """Rolling-element bearing geometry (default: a 7005 angular-contact spindle bearing).

    Attributes:
        n_balls: Number of rolling elements.
        ball_d_mm: Ball diameter d, mm.
        pitch_d_mm: Pitch diameter D, mm.
        contact_deg: Contact angle φ, degrees.
    """

    n_balls: int = 14
    ball_d_mm: float = 6.35
    pitch_d_mm: float = 36.0
    contact_deg: float = 15.0

    def __post_init__(self) -> None:
        """Reject impossible geometries."""
        if self.n_balls < 3 or not 0 < self.ball_d_mm < self.pitch_d_mm:
            raise DetectionError("bearing", "needs n_balls >= 3 and 0 < ball_d_mm < pitch_d_mm")
        if not 0 <= self.contact_deg < 90:
            raise DetectionError("bearing.contact_deg", "must be in [0, 90)")

    def bpfo_hz(self, shaft_hz: float) -> float:
        """Ball-pass frequency of the outer race, Hz."""
        r = self.ball_d_mm / self.pitch_d_mm * math.cos(math.radians(self.contact_deg))
        return self.n_balls / 2 * shaft_hz * (1 - r)

    def bpfi_hz(self, shaft_hz: float) -> float:
        """Ball-pass frequency of the inner race, Hz."""
        r = self.ball_d_mm / self.pitch_d_mm * math.cos(math.radians(self.contact_deg))
        return self.n_balls / 2 * shaft_hz * (1 + r)


@dataclass(frozen=True, slots=True)
class WaveformFeatures:
    """What one vibration waveform says (NaN where it cannot tell).

    Attributes:
        vel_rms_mms: Velocity RMS over 10-1000 Hz from the PSD, mm/s.
        chatter_hz: Frequency of the strongest peak that is no spindle, tooth-passing or bearing
            line, Hz.
        chatter_mms: Its velocity RMS, mm/s (0 when no such peak stands out).
        chatter_prominence: Its PSD over the band's median PSD (ratio).
        bpfo_snr_db: Envelope-spectrum energy at BPFO and 2·BPFO over the noise there, dB.
        bpfi_snr_db: Same at BPFI, dB.
        bpfo_hz: BPFO at this speed, Hz.
        bpfi_hz: BPFI at this speed, Hz.
    """

    vel_rms_mms: float
    chatter_hz: float
    chatter_mms: float
    chatter_prominence: float
    bpfo_snr_db: float
    bpfi_snr_db: float
    bpfo_hz: float
    bpfi_hz: float


_NO_FEATURES: Final = WaveformFeatures(*(math.nan,) * 8)


def _nperseg(n: int, fs_hz: float, resolution_hz: float) -> int:
    want = 1 << max(math.ceil(math.log2(max(fs_hz / resolution_hz, 16.0))), 4)
    return min(want, n)


def _near(f: Float64, lines: Float64, tol: Float64) -> Bool:
    """Whether each frequency is within tol of any of the lines."""
    if lines.size == 0:
        return np.zeros(f.shape, np.bool_)
    return np.asarray(np.any(np.abs(f[:, None] - lines[None, :]) <= tol[:, None], axis=1))


def waveform_features(
    vib_ms2: Float64,
    fs_hz: float,
    rpm: float,
    *,
    teeth: int = 4,
    bearing: BearingParams | None = None,
    chatter_band_hz: tuple[float, float] = (50.0, 3000.0),
    envelope_band_hz: tuple[float, float] = (4000.0, 12000.0),
    resolution_hz: float = 4.0,
    prominence: float = 100.0,
) -> WaveformFeatures:
    """Chatter and bearing features of one spindle acceleration waveform (Welch PSD).

    Args:
        vib_ms2: Acceleration samples, m/s².
        fs_hz: Sampling rate, Hz.
        rpm: Spindle speed, 1/min (≤ 0 or NaN: only the velocity RMS is computed).
        teeth: Cutter teeth (tooth passing = teeth·f_r, itself a harmonic of f_r).
        bearing: Spindle bearing geometry (default :class:`BearingParams`).
        chatter_band_hz: Where chatter peaks are looked for, Hz (capped at 0.45·fs).
        envelope_band_hz: Band-pass before the envelope (the housing resonances), Hz; no bearing
            features when the sampling rate cannot cover it.
        resolution_hz: Welch frequency resolution, Hz.
        prominence: A chatter peak's PSD must exceed the band's median PSD this many times.

    Returns:
        The features; chatter_mms is 0 when no off-harmonic peak stands out.

    Raises:
        DetectionError: Not a 1-D finite waveform of at least 64 samples, or fs_hz <= 0.
    """
    x = np.asarray(vib_ms2, dtype=np.float64)
    if x.ndim != 1 or x.size < 64 or not np.all(np.isfinite(x)):
        raise DetectionError("vib_ms2", "needs a finite 1-D waveform of at least 64 samples")
    if not (math.isfinite(fs_hz) and fs_hz > 0):
        raise DetectionError("fs_hz", f"must be > 0, got {fs_hz}")
    geo = BearingParams() if bearing is None else bearing
    x = x - x.mean()
    nper = _nperseg(x.size, fs_hz, resolution_hz)
    from scipy import signal  # ~60 MB: loaded once a mill sends a waveform, not for bolts

    f, p = signal.welch(x, fs=fs_hz, nperseg=nper)
    f = np.asarray(f, dtype=np.float64)
    p = np.asarray(p, dtype=np.float64)
    df = float(f[1] - f[0])
    band = (f >= 10.0) & (f <= 1000.0)
    vel_ms2 = float(np.sum(p[band] / (2 * np.pi * f[band]) ** 2) * df)
    vel = 1000.0 * math.sqrt(max(vel_ms2, 0.0))
    if not (math.isfinite(rpm) and rpm > 0):
        return WaveformFeatures(vel, *(math.nan,) * 7)
    fr = rpm / 60.0
    bpfo, bpfi = geo.bpfo_hz(fr), geo.bpfi_hz(fr)

    lo, hi = chatter_band_hz[0], min(chatter_band_hz[1], 0.45 * fs_hz)
    chatter_hz, chatter_mms, prom = _chatter_peak(f, p, (lo, hi), fr, (bpfo, bpfi), prominence)
    elo, ehi = envelope_band_hz[0], min(envelope_band_hz[1], 0.45 * fs_hz)
    snr_o = snr_i = math.nan
    if ehi > 1.2 * elo:
        snr_o, snr_i = _envelope_snr(x, fs_hz, (elo, ehi), fr, (bpfo, bpfi))
    return WaveformFeatures(vel, chatter_hz, chatter_mms, prom, snr_o, snr_i, bpfo, bpfi)


def _chatter_peak(
    f: Float64,
    p: Float64,
    band: tuple[float, float],
    fr: float,
    bearing_hz: tuple[float, float],
    prominence: float,
) -> tuple[float, float, float]:
    """The strongest prominent PSD peak off every spindle and bearing line.

    Returns:
        Its frequency (Hz, NaN when none), velocity RMS (mm/s, 0 when none) and prominence.
    """
    lo, hi = band
    df = float(f[1] - f[0])
    sel = np.flatnonzero((f >= lo) & (f <= hi))
    if sel.size <= 8:
        return math.nan, 0.0, 0.0
    floor = float(np.median(p[sel]))
    from scipy import signal

    idx, _ = signal.find_peaks(p[sel], height=prominence * floor)
    if not idx.size:
        return math.nan, 0.0, 0.0
    pk = sel[idx]
    fp = f[pk]
    tol = np.maximum(3.0 * df, 0.01 * fp)
    harmonics = np.asarray(fr * np.arange(1, int(hi / fr) + 3), dtype=np.float64)
    bear = np.array(
        [
            d * k + side * fr
            for d in bearing_hz
            for k in range(1, int(hi / d) + 2)
            for side in (-1.0, 0.0, 1.0)
        ],
        dtype=np.float64,
    )
    off = ~_near(fp, harmonics, tol) & ~_near(fp, bear, tol)
    if not np.any(off):
        return math.nan, 0.0, 0.0
    j = int(pk[off][np.argmax(p[pk[off]])])
    power = float(np.sum(p[max(j - 3, 0) : j + 4]) * df)
    hz = float(f[j])
    mms = 1000.0 * math.sqrt(power) / (2 * np.pi * hz)
    return hz, mms, float(p[j] / floor) if floor > 0 else math.inf


def _envelope_snr(
    x: Float64, fs_hz: float, band: tuple[float, float], fr: float, bearing_hz: tuple[float, float]
) -> tuple[float, float]:
    """Envelope-spectrum SNR (dB) at BPFO and BPFI (first two harmonics each)."""
    from scipy import signal

    sos = signal.butter(4, list(band), btype="bandpass", fs=fs_hz, output="sos")
    env = np.abs(signal.hilbert(signal.sosfiltfilt(sos, x)))
    fe, pe = signal.welch(env - env.mean(), fs=fs_hz, nperseg=_nperseg(x.size, fs_hz, 1.5))
    fe = np.asarray(fe, dtype=np.float64)
    pe = np.asarray(pe, dtype=np.float64)
    dfe = float(fe[1] - fe[0])
    noise = float(np.median(pe[(fe > 0.5 * fr) & (fe < 3.0 * max(bearing_hz))]))

    def snr(fd: float) -> float:
        e = n_bins = 0.0
        for k in (1, 2):
            m = np.abs(fe - k * fd) <= max(2.0 * dfe, 0.01 * k * fd)
            e += float(np.sum(pe[m]))
            n_bins += float(np.count_nonzero(m))
        if n_bins == 0 or noise <= 0:
            return math.nan
        return 10.0 * math.log10(max(e / (noise * n_bins), 1e-12))

    return snr(bearing_hz[0]), snr(bearing_hz[1])


@dataclass(frozen=True, slots=True)
class CncParams:
    """Hyper-parameters of :class:`CncDetector`.

    Attributes:
        teeth: Cutter teeth (tooth passing = teeth·rpm/60).
        bearing: Spindle bearing geometry for BPFO/BPFI.
        critical_mms: Velocity RMS that is critical (beyond zone D's lower edge 4.5 mm/s), mm/s.
        chatter_warning_mms: Velocity of an off-harmonic peak that is a chatter warning, mm/s.
        chatter_alarm_mms: ... an alarm, mm/s.
        bearing_warning_db: Envelope SNR at BPFO/BPFI that is a warning, dB.
        bearing_alarm_db: ... an alarm, dB.
        chatter_band_hz: See :func:`waveform_features`.
        envelope_band_hz: See :func:`waveform_features`.
        resolution_hz: See :func:`waveform_features`.
        prominence: See :func:`waveform_features`.
        ref_samples: Cutting readings that learn an operation's reference current.
        wear_tau_samples: Smoothing of the current ratio, in cutting readings.
        wear_min_samples: Compared readings needed before tool wear is scored.
        wear_warning: Current over reference (ratio - 1) that is a tool-wear warning.
        wear_alarm: ... an alarm.
        rpm_step: Spindle speed quantum of an operation key, 1/min.
        feed_step_mm_min: Feed quantum of an operation key, mm/min.
        scale: Where scores become alerts.
    """

    teeth: int = 4
    bearing: BearingParams = field(default_factory=BearingParams)
    critical_mms: float = 7.1
    chatter_warning_mms: float = 0.5
    chatter_alarm_mms: float = 1.5
    bearing_warning_db: float = 10.0
    bearing_alarm_db: float = 20.0
    chatter_band_hz: tuple[float, float] = (50.0, 3000.0)
    envelope_band_hz: tuple[float, float] = (4000.0, 12000.0)
    resolution_hz: float = 4.0
    prominence: float = 100.0
    ref_samples: int = 60
    wear_tau_samples: float = 100.0
    wear_min_samples: int = 30
    wear_warning: float = 0.06
    wear_alarm: float = 0.12
    rpm_step: float = 50.0
    feed_step_mm_min: float = 1.0
    scale: AlertScale = field(default_factory=AlertScale)


_FEATURE_KEYS: Final = (
    "wave_vel_mms",
    "chatter_hz",
    "chatter_mms",
    "bpfo_snr_db",
    "bpfi_snr_db",
)


class CncDetector(Detector[CncParams]):
    """Vibration severity, chatter, bearing defects and tool wear of CNC mills.

    Reads ``spindle_rpm``, ``spindle_a``, ``vib_rms_mms``, ``feed_mm_min`` and, when present,
    waveforms ``vib_ms2`` with ``fs_hz`` (summary rows from the offline CSV have NaN ``fs_hz``).

    Scores (``Scores.extra``): ``score_chatter``, ``score_bearing``, ``score_tool_wear``,
    ``score_vibration``; ``vib_mms`` (reading or waveform), ``wear_ratio``, ``spin_vib_mms`` (last
    vibration while turning without cutting), ``cutting``, and the waveform features
    (``chatter_hz``, ``chatter_mms``, ``bpfo_snr_db``, ``bpfi_snr_db``, ``wave_vel_mms``).
    """

    name: ClassVar[str] = "cnc_mill"
    kinds: ClassVar[tuple[str, ...]] = ("cnc_mill",)
    params_type: ClassVar[type[Any]] = CncParams

    state_spec: ClassVar[Mapping[str, tuple[npt.DTypeLike, float, tuple[int, ...]]]] = {
        "last_ts": (np.float64, np.nan, ()),
        "keys": (np.float64, np.nan, (TABLE_SIZE,)),
        "ref_sum": (np.float64, 0.0, (TABLE_SIZE,)),
        "ref_n": (np.int64, 0, (TABLE_SIZE,)),
        "wear": (np.float64, 0.0, ()),
        "wear_n": (np.int64, 0, ()),
        "spin_vib": (np.float64, np.nan, ()),
        "spin_ts": (np.float64, np.nan, ()),
        "levels": (np.int8, 0, (len(_KINDS),)),
    }

    def _features(self, frame: Frame) -> dict[str, Float64]:
        """Waveform features of every row that carries a waveform (NaN elsewhere)."""
        n = len(frame)
        out = {k: np.full(n, np.nan) for k in _FEATURE_KEYS}
        waves = frame.arrays.get("vib_ms2")
        if not waves:
            return out
        fs = frame.column("fs_hz")
        rpm = frame.column("spindle_rpm")
        p = self.params
        for i, w in enumerate(waves):
            if w is None or not math.isfinite(float(fs[i])) or w.shape[0] < 64:
                continue
            ft = waveform_features(
                w,
                float(fs[i]),
                float(rpm[i]),
                teeth=p.teeth,
                bearing=p.bearing,
                chatter_band_hz=p.chatter_band_hz,
                envelope_band_hz=p.envelope_band_hz,
                resolution_hz=p.resolution_hz,
                prominence=p.prominence,
            )
            out["wave_vel_mms"][i] = ft.vel_rms_mms
            out["chatter_hz"][i] = ft.chatter_hz
            out["chatter_mms"][i] = ft.chatter_mms
            out["bpfo_snr_db"][i] = ft.bpfo_snr_db
            out["bpfi_snr_db"][i] = ft.bpfi_snr_db
        return out

    def update(self, frame: Frame) -> Scores:
        """Vibration zone, waveform features and tool-wear ratio per reading; score them."""
        n = begin_update(self, frame, ("vib_rms_mms", "vib_ms2", "spindle_a"))
        p = self.params
        feats = self._features(frame)
        vib = frame.column("vib_rms_mms")
        vib = np.where(np.isfinite(vib), vib, feats["wave_vel_mms"])
        rpm = frame.column("spindle_rpm")
        feed = frame.column("feed_mm_min")
        amps = frame.column("spindle_a")
        running = np.isfinite(vib) & (np.nan_to_num(rpm, nan=1.0) > 0)
        cutting = (np.nan_to_num(rpm) > 0) & (np.nan_to_num(feed) > 0) & np.isfinite(amps)
        key = np.round(np.nan_to_num(rpm) / p.rpm_step) * 1e6 + np.round(
            np.nan_to_num(feed) / p.feed_step_mm_min
        )
        wear_out = np.zeros(n)
        wear_n_out = np.zeros(n, np.int64)
        spin_out = np.full(n, np.nan)
        spin_ts_out = np.full(n, np.nan)
        st = self.state
        for rows in steps(frame.slot):
            s = frame.slot[rows]
            st["last_ts"][s] = frame.ts_s[rows]
            spin = running[rows] & ~cutting[rows] & np.isfinite(vib[rows])
            st["spin_vib"][s] = np.where(spin, vib[rows], st["spin_vib"][s])
            st["spin_ts"][s] = np.where(spin, frame.ts_s[rows], st["spin_ts"][s])
            spin_out[rows] = st["spin_vib"][s]
            spin_ts_out[rows] = st["spin_ts"][s]
            c = cutting[rows]
            if np.any(c):
                self._wear_step(s[c], key[rows[c]], amps[rows[c]])
            wear_out[rows] = st["wear"][s]
            wear_n_out[rows] = st["wear_n"][s]

        vib_s = ramp(vib, (0.0, *ISO_10816_3_MMS, p.critical_mms), (0.0, 0.25, 0.5, 0.75, 0.9))
        ch_s = np.where(
            cutting | np.isfinite(feats["chatter_mms"]),
            ramp(
                feats["chatter_mms"],
                (0.0, p.chatter_warning_mms, p.chatter_alarm_mms, 3.0 * p.chatter_alarm_mms),
                (0.0, 0.5, 0.75, 0.9),
            ),
            0.0,
        )
        snr = np.fmax(feats["bpfo_snr_db"], feats["bpfi_snr_db"])
        be_s = ramp(
            snr,
            (0.0, p.bearing_warning_db, p.bearing_alarm_db, p.bearing_alarm_db + 10.0),
            (0.0, 0.5, 0.75, 0.9),
        )
        we_s = level_ramp(
            wear_out, p.wear_warning, p.wear_alarm, 0.9, when=wear_n_out >= p.wear_min_samples
        )
        ks = np.column_stack([ch_s, be_s, we_s, vib_s]).reshape(n, len(_KINDS))
        extra = kind_extras(_KINDS, ks)
        extra.update(feats)
        extra["vib_mms"] = vib
        extra["wear_ratio"] = wear_out
        extra["spin_vib_mms"] = spin_out
        extra["cutting"] = cutting
        extra["running"] = running
        # Cutting readings, or loud ones while turning: a quiet spin-up does not clear an alert.
        has_feed = np.isfinite(feed)
        extra["evidence"] = np.where(
            has_feed, cutting | (running & (np.nan_to_num(vib) >= ISO_10816_3_MMS[1])), running
        )
        extra["spin_age_s"] = frame.ts_s - spin_ts_out
        return Scores(np.clip(ks.max(axis=1, initial=0.0), 0.0, 1.0), extra)

    def _wear_step(self, s: Int64, key: Float64, amps: Float64) -> None:
        """Tool-wear table update for cutting readings (one per device) of one step.

        An operation seen for the first time takes the least-learned slot of its device's table;
        its first ``ref_samples`` readings learn its reference current, later ones update the
        device's smoothed ratio to it.
        """
        p = self.params
        st = self.state
        match = st["keys"][s] == key[:, None]
        found = match.any(axis=1)
        j = np.where(found, np.argmax(match, axis=1), np.argmin(st["ref_n"][s], axis=1))
        new = ~found
        st["keys"][s[new], j[new]] = key[new]
        st["ref_sum"][s[new], j[new]] = 0.0
        st["ref_n"][s[new], j[new]] = 0
        learn = st["ref_n"][s, j] < p.ref_samples
        st["ref_sum"][s[learn], j[learn]] += amps[learn]
        st["ref_n"][s[learn], j[learn]] += 1
        ref = st["ref_sum"][s, j] / np.maximum(st["ref_n"][s, j], 1)
        ratio = amps / np.where(ref > 0, ref, np.nan) - 1.0
        ok = ~learn & np.isfinite(ratio)
        w = st["wear"][s]
        wn = st["wear_n"][s]
        a = np.maximum(1.0 / p.wear_tau_samples, 1.0 / (wn + 1.0))  # a plain mean at first
        st["wear"][s] = np.where(ok, w + (np.nan_to_num(ratio) - w) * a, w)
        st["wear_n"][s] = wn + ok

    def decide(self, frame: Frame, scores: Scores) -> Decisions:
        """Alerts per row; rows with the spindle stopped keep the alerts they find."""
        return decide_kinds(
            self,
            frame,
            scores,
            _KINDS,
            lambda row, k: self._explain(frame, scores, row, k),
            evidence=np.asarray(scores.extra["evidence"], dtype=np.bool_),
        )

    def _explain(
        self, frame: Frame, scores: Scores, row: int, k: int
    ) -> tuple[str, dict[str, float]]:
        x = scores.extra
        rpm = float(frame.column("spindle_rpm")[row])
        vib = float(x["vib_mms"][row])
        data = {"spindle_rpm": rpm, "vib_rms_mms": vib}
        if k == _CHATTER:
            hz, mms = float(x["chatter_hz"][row]), float(x["chatter_mms"][row])
            fr = rpm / 60.0
            data |= {"chatter_hz": hz, "chatter_mms": mms}
            return (
                f"spectral peak at {fmt(hz, ' Hz', 0)} ({fmt(mms, ' mm/s', 2)}), "
                f"{fmt(hz / fr, '', 2)} x spindle rate {fmt(fr, ' Hz', 1)}: no spindle or "
                f"tooth-passing harmonic ({self.params.teeth} teeth): chatter",
                data,
            )
        if k == _BEARING:
            so, si = float(x["bpfo_snr_db"][row]), float(x["bpfi_snr_db"][row])
            race = "outer" if np.nan_to_num(so, nan=-99) >= np.nan_to_num(si, nan=-99) else "inner"
            b = self.params.bearing
            fd = b.bpfo_hz(rpm / 60.0) if race == "outer" else b.bpfi_hz(rpm / 60.0)
            db = so if race == "outer" else si
            data |= {"bpfo_snr_db": so, "bpfi_snr_db": si, "defect_hz": fd}
            name = "BPFO" if race == "outer" else "BPFI"
            return (
                f"envelope spectrum {fmt(db, ' dB', 1)} over the noise at {name} "
                f"{fmt(fd, ' Hz', 0)} (spindle {fmt(rpm, ' rpm', 0)}): {race}-race bearing defect",
                data,
            )
        if k == _WEAR:
            ratio = float(x["wear_ratio"][row])
            amps = float(frame.column("spindle_a")[row])
            data |= {"wear_ratio": ratio, "spindle_a": amps}
            return (
                f"spindle current {100.0 * ratio:+.1f} % over the same operations' reference "
                f"(now {fmt(amps, ' A', 2)} at {fmt(rpm, ' rpm', 0)}, "
                f"{fmt(float(frame.column('feed_mm_min')[row]), ' mm/min', 0)}): tool wear",
                data,
            )
        spin = float(x["spin_vib_mms"][row])
        age = float(x["spin_age_s"][row])
        data |= {"spin_vib_mms": spin, "spin_age_s": age}
        state = "while cutting" if bool(x["cutting"][row]) else "turning without cutting"
        if math.isfinite(spin) and math.isfinite(age):
            where = f"{state}; {spin:.2f} mm/s turning without cutting {age / 60.0:.0f} min earlier"
        else:
            where = state
        return (
            f"vibration {fmt(vib, ' mm/s', 2)} RMS (ISO 10816-3 zone {iso_zone(vib)}) at "
            f"{fmt(rpm, ' rpm', 0)} {where}",
            data,
        )

    @classmethod
    def conformance_case(cls, seed: int) -> ConformanceCase:
        """Three mills repeating operations; then chatter, a bearing defect, a worn tool."""
        rng = np.random.default_rng(seed)
        fs, n_wave = 25_600.0, 4096
        rpm_op, feed_op = 12_000.0, 2400.0
        fr = rpm_op / 60.0
        n_norm, n_anom = 80, 30
        t = np.arange(n_norm + n_anom, dtype=np.float64) * 5.0
        tt = np.arange(n_wave) / fs
        frames: list[tuple[Frame, Frame, Bool]] = []
        bpfo = BearingParams().bpfo_hz(fr)
        for i in range(3):
            waves: list[Float64 | None] = []
            amps = 3.0 * (1.0 + 0.02 * rng.standard_normal(t.size))
            vib = 0.9 * (1.0 + 0.03 * rng.standard_normal(t.size))
            for j in range(t.size):
                if j % 4:  # a waveform every fourth reading, summaries in between
                    waves.append(None)
                    continue
                x = sum(
                    a * np.sin(2 * np.pi * h * fr * tt + rng.uniform(0, 2 * np.pi))
                    for h, a in ((1, 0.8), (2, 0.5), (4, 2.0), (8, 1.0))
                ) + 0.35 * rng.standard_normal(n_wave)
                if j >= n_norm and i == 0:  # chatter off the harmonics
                    x = x + 25.0 * np.sin(2 * np.pi * 3.4 * fr * tt)
                if j >= n_norm and i == 1:  # outer-race impacts ringing at 8 kHz
                    e = np.zeros(n_wave)
                    e[(np.arange(0.0, tt[-1], 1.0 / bpfo) * fs).astype(np.int64)] = 25.0
                    ring = np.exp(-0.06 * 2 * np.pi * 8000.0 * tt[:200]) * np.cos(
                        2 * np.pi * 8000.0 * tt[:200]
                    )
                    x = x + np.convolve(e, ring)[:n_wave]
                waves.append(np.asarray(x, dtype=np.float64))
            if i == 0:
                vib[n_norm:] = 5.3
            elif i == 1:
                vib[n_norm:] = 3.7
            elif i == 2:
                amps[n_norm:] *= 1.3
            values = {
                "spindle_rpm": np.full(t.size, rpm_op),
                "spindle_a": amps,
                "vib_rms_mms": vib,
                "feed_mm_min": np.full(t.size, feed_op),
                "fs_hz": np.full(t.size, fs),
            }
            full = Frame.single(f"mill{i}", 1.7e9 + t, values, slot=i)
            full.arrays["vib_ms2"] = waves
            anomalous = np.zeros(n_anom, np.bool_)
            anomalous[:] = True
            if i == 2:
                anomalous[:12] = False  # the smoothed ratio needs a few readings
            frames.append(split_case(full, n_norm, anomalous))
        return conformance_from(frames)
