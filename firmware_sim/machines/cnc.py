"""CNC mill: spindle current, the vibration model, its readings and waveforms.

**cnc_mill** (vectorised on ``t_s``): each run has 4 part programs (20 min-2 h of operations of
2-15 min, 20 s tool changes); a job runs one of them (gaps 15 min-4 h), so equal operations recur.
An operation has a spindle speed of 8 000-18 000 rpm, a chip load of 0.02-0.07 mm/tooth (feed =
chip · ``teeth`` · rpm) and a depth factor of 0.8-3 A. Spin-up takes 4 s (+2.5 A). Spindle current
= 1.2 + 0.6 (rpm/18 000)² A (no load) + depth · feed/2400 · (chip/0.05)^-0.25 (specific cutting
energy), +5 % wear over each operation, ±6 % engagement noise. ``fs_hz`` is NaN (summary readings).

Vibration model (acceleration, shared by `cnc_waveform` and ``vib_rms_mms``), f_r = rpm/60:

* Rotor lines at 1, 2, 3 · f_r of velocity 0.6 · (f_r/200 Hz) · (1, 0.3, 0.12) mm/s RMS.
* Tooth-passing lines at k · ``teeth`` · f_r (k = 1..3) while cutting, the first of velocity
  0.5 · (chip/0.05)^0.75 mm/s RMS, then acceleration ratios 0.5, 0.25.
* White acceleration noise, one-sided PSD 2.5e-5 (m/s²)²/Hz (0.16 of it with the spindle off).
* ``chatter`` (cutting only): a line near the structural mode (``chatter_hz``, 750 Hz), at
  (⌊mode/f_r⌋ + 0.4) f_r so never on a harmonic of f_r, of velocity 5 mm/s · severity, amplitude
  modulated ±20 % at 2 Hz, with sidebands at ± tooth-passing frequency (0.25 · its velocity).
* ``bearing_outer`` / ``bearing_inner``: impacts of 25 m/s² · severity at BPFO / BPFI (±0.5 %
  jitter, ±10 % amplitude) ringing an 8 kHz housing resonance (damping ratio 0.06, zero-DC
  band-pass response), amplitude-modulated at f_r by 30 % (outer: rotating unbalance load) / 80 %
  (inner: the defect passes through the load zone); plus looseness: 3 mm/s · severity added to the
  1-3 · f_r lines, and the noise floor · (1 + 0.5 severity)².
* ``tool_wear``: spindle current · (1 + 0.3 s) while cutting, tooth-passing lines · (1 + 0.6 s),
  noise amplitude · (1 + 0.5 s), with s = severity · progress through the interval.

``vib_rms_mms`` is the velocity RMS over 10-1000 Hz of that model (the in-band lines' powers,
impulse trains by their Fourier series, plus the noise PSD integrated as S/(2πf)²), read with ±3 %
estimation noise. Cutting at 8 000-18 000 rpm: healthy ~0.6-1.0 mm/s (ISO 10816-3 zone A),
tool_wear up to ~1.1-1.3, bearing faults ~3.4-3.9 (zone C), chatter ~5.3 (zone D).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

import numpy as np
from scipy import signal

from firmware_sim.machines.common import (
    HOUR_S,
    Streams,
    Values,
    fault_severity,
    job_events,
    loguniform,
    lookup,
    ramped_severity,
)
from firmware_sim.machines.model import (
    DEFAULT_BEARING,
    DEFAULT_CHATTER_MODE_HZ,
    FAULT_KINDS,
    BearingGeometry,
    FloatArray,
    MachineEvent,
    MachineSpec,
)
from sensors.schema import DeviceKind

# Vibration model shared by readings and waveforms

_ROTOR_V_MMS: Final = 0.6  # 1x velocity RMS at f_r = 200 Hz
_ROTOR_SHARES: Final = (1.0, 0.3, 0.12)
_LOOSE_V_MMS: Final = 3.0
_LOOSE_SHARES: Final = (0.7, 0.55, 0.45)
_TP_V_MMS: Final = 0.5
_TP_HARMONICS: Final = (1.0, 0.5, 0.25)
_NOMINAL_CHIP_MM: Final = 0.05
_NOISE_PSD: Final = 2.5e-5  # (m/s^2)^2/Hz, one-sided
_CHATTER_V_MMS: Final = 5.0
_CHATTER_AM: Final = (0.2, 2.0)  # depth, frequency Hz
_CHATTER_SIDEBAND: Final = 0.25
_BEARING_RES_HZ: Final = 8000.0
_BEARING_ZETA: Final = 0.06
_BEARING_PEAK_MS2: Final = 25.0
_BEARING_MOD: Final = {"bearing_outer": 0.3, "bearing_inner": 0.8}
_BAND_HZ: Final = (10.0, 1000.0)
_WAVE_FS_MIN_HZ: Final = 25_600.0
_CNC_FAULTS: Final = FAULT_KINDS[DeviceKind.CNC_MILL]

# Normalise the looseness shares to unit RSS so _LOOSE_V_MMS is the added velocity RMS.
_LOOSE_NORM: Final = math.sqrt(sum(s * s for s in _LOOSE_SHARES))


@dataclass(frozen=True, slots=True)
class _Line:
    """A sinusoidal component: frequency, Hz, and acceleration amplitude, m/s² (per sample)."""

    freq: FloatArray
    amp: FloatArray
    am: bool = False


def _vel_amp(freq: FloatArray, v_rms_mms: FloatArray) -> FloatArray:
    """Acceleration amplitude (m/s²) of a sinusoid of the given velocity RMS (mm/s)."""
    return np.asarray(v_rms_mms * 1e-3 * math.sqrt(2) * 2 * math.pi * freq, dtype=np.float64)


def _ring_gain(freq: FloatArray) -> FloatArray:
    """|H(2πf)| of one bearing impact's ring, s.

    The housing's acceleration rings a resonance as a second-order band-pass with zero DC gain:
    h(t) = e^(-sigmat)(cos ω_d t - (sigma/ω_d) sin ω_d t), H(s) = s / ((s + sigma)² + ω_d²).
    """
    wn = 2 * math.pi * _BEARING_RES_HZ
    sigma = _BEARING_ZETA * wn
    wd = wn * math.sqrt(1 - _BEARING_ZETA**2)
    jw = 1j * 2 * math.pi * freq
    return np.asarray(np.abs(jw / ((sigma + jw) ** 2 + wd**2)), dtype=np.float64)


def _vib_model(
    rpm: FloatArray,
    chip_mm: FloatArray,
    sev: Mapping[str, FloatArray],
    *,
    teeth: int,
    bearing: BearingGeometry,
    mode_hz: float,
    bearing_lines: bool,
) -> tuple[list[_Line], FloatArray]:
    """Lines and white-noise PSD ((m/s²)²/Hz) of the vibration model at each sample.

    With ``bearing_lines`` the bearing impulse trains are included as their Fourier series (for
    band RMS); without, the caller synthesises them in time.
    """
    fr = rpm / 60.0
    running = rpm > 0
    cutting = running & (chip_mm > 0)
    s_ch = np.where(cutting, sev["chatter"], 0.0)
    s_tw = np.where(cutting, sev["tool_wear"], 0.0)
    s_b = np.where(running, sev["bearing_outer"] + sev["bearing_inner"], 0.0)
    chip_ratio = np.where(cutting, chip_mm, 0.0) / _NOMINAL_CHIP_MM

    # Everything at integer multiples of f_r adds coherently: one line per order.
    orders: dict[int, FloatArray] = {}
    for k in range(1, 4):
        v = _ROTOR_V_MMS * (fr / 200.0) * _ROTOR_SHARES[k - 1]
        v = v + _LOOSE_V_MMS * s_b * _LOOSE_SHARES[k - 1] / _LOOSE_NORM
        orders[k] = _vel_amp(k * fr, v)
    tp1 = _vel_amp(teeth * fr, _TP_V_MMS * chip_ratio**0.75 * (1 + 0.6 * s_tw))
    for k, ratio in enumerate(_TP_HARMONICS, start=1):
        order = k * teeth
        orders[order] = orders.get(order, np.zeros(rpm.size)) + ratio * tp1
    lines = [_Line(o * fr, amp) for o, amp in sorted(orders.items())]

    # Chatter: near the structural mode, 0.4 f_r away from every harmonic of f_r.
    safe_fr = np.where(running, fr, 1.0)
    fc = np.where(running, (np.floor(mode_hz / safe_fr) + 0.4) * safe_fr, 0.0)
    ac = _vel_amp(fc, _CHATTER_V_MMS * s_ch)
    lines.append(_Line(fc, ac, am=True))
    lines.extend(
        _Line(f_sb, _vel_amp(f_sb, _CHATTER_SIDEBAND * _CHATTER_V_MMS * s_ch))
        for f_sb in (fc + teeth * fr, np.abs(fc - teeth * fr))
    )

    if bearing_lines:
        for kind, mod in _BEARING_MOD.items():
            s = np.where(running, sev[kind], 0.0)
            if not np.any(s > 0):
                continue
            fd = np.asarray(
                bearing.bpfo_hz(1.0) * fr if kind == "bearing_outer" else bearing.bpfi_hz(1.0) * fr
            )
            a = _BEARING_PEAK_MS2 * s
            lines.append(_Line(fr, mod * a * fd * _ring_gain(fr)))  # modulation of the mean
            k_max = int(np.ceil((_BAND_HZ[1] + fr.max()) / max(float(fd[s > 0].min()), 1.0)))
            for k in range(1, k_max + 1):
                f = k * fd
                lines.append(_Line(f, 2 * a * fd * _ring_gain(f)))
                lines.append(_Line(f + fr, mod * a * fd * _ring_gain(f + fr)))
                lines.append(_Line(np.abs(f - fr), mod * a * fd * _ring_gain(np.abs(f - fr))))

    psd = _NOISE_PSD * np.where(running, 1.0, 0.16) * ((1 + 0.5 * s_tw) * (1 + 0.5 * s_b)) ** 2
    return lines, np.asarray(psd, dtype=np.float64)


def _band_velocity_ms(lines: list[_Line], psd: FloatArray) -> FloatArray:
    """Velocity mean square over 10-1000 Hz, (mm/s)²."""
    lo, hi = _BAND_HZ
    ms = psd * (1 / lo - 1 / hi) / (4 * math.pi**2)
    for line in lines:
        in_band = (line.freq >= lo) & (line.freq <= hi)
        safe_f = np.where(in_band, line.freq, 1.0)
        v = np.where(in_band, line.amp / (2 * math.pi * safe_f), 0.0)
        gain = 1 + _CHATTER_AM[0] ** 2 / 2 if line.am else 1.0
        ms = ms + v * v / 2 * gain
    return np.asarray(ms * 1e6, dtype=np.float64)


def _check_cnc_args(rpm: float, teeth: int, active_faults: frozenset[str], severity: float) -> None:
    if not (math.isfinite(rpm) and rpm >= 0):
        raise ValueError("rpm must be finite and >= 0")
    if teeth < 1:
        raise ValueError("teeth must be >= 1")
    unknown = sorted(set(active_faults) - set(_CNC_FAULTS))
    if unknown:
        raise ValueError(f"unknown cnc_mill fault kind {unknown[0]!r}")
    if not (math.isfinite(severity) and severity >= 0):
        raise ValueError("severity must be finite and >= 0")


def _chip(rpm: float, teeth: int, feed_mm_min: float | None) -> float:
    if rpm <= 0:
        return 0.0
    if feed_mm_min is None:
        return _NOMINAL_CHIP_MM
    return max(feed_mm_min, 0.0) / (teeth * rpm)


def cnc_vib_rms_mms(
    *,
    rpm: float,
    teeth: int = 4,
    active_faults: frozenset[str] = frozenset(),
    severity: float = 1.0,
    bearing: BearingGeometry = DEFAULT_BEARING,
    feed_mm_min: float | None = None,
    chatter_mode_hz: float = DEFAULT_CHATTER_MODE_HZ,
) -> float:
    """Velocity RMS (10-1000 Hz) of the spindle vibration model, mm/s (no estimation noise).

    Args:
        rpm: Spindle speed, 1/min (0: spindle off, only the noise floor remains).
        teeth: Cutter teeth.
        active_faults: Active ``cnc_mill`` fault kinds.
        severity: Severity applied to every active fault.
        bearing: Spindle bearing geometry.
        feed_mm_min: Feed rate, mm/min; None means cutting at a 0.05 mm/tooth chip load, 0 means
            not cutting.
        chatter_mode_hz: Structural mode near which chatter appears, Hz.

    Returns:
        Velocity RMS, mm/s: the quantity ISO 10816-3 zones are defined on.
    """
    _check_cnc_args(rpm, teeth, active_faults, severity)
    sev = {k: np.array([severity if k in active_faults else 0.0]) for k in _CNC_FAULTS}
    chip = np.array([_chip(rpm, teeth, feed_mm_min)])
    lines, psd = _vib_model(
        np.array([float(rpm)]),
        chip,
        sev,
        teeth=teeth,
        bearing=bearing,
        mode_hz=chatter_mode_hz,
        bearing_lines=True,
    )
    return float(np.sqrt(_band_velocity_ms(lines, psd))[0])


def _impulse_train(
    *,
    n: int,
    fs_hz: float,
    t_first_s: float,
    fd_hz: float,
    fr_hz: float,
    peak_ms2: float,
    mod: float,
    rng: np.random.Generator,
) -> FloatArray:
    """Impulses at ``fd_hz`` (0.5 % jitter) ringing the bearing resonance, amplitude-modulated."""
    wn = 2 * math.pi * _BEARING_RES_HZ
    sigma = _BEARING_ZETA * wn
    wd = wn * math.sqrt(1 - _BEARING_ZETA**2)
    ring = math.ceil(7.0 / sigma * fs_hz)  # e^-7: the ring has died out
    t_start = t_first_s - ring / fs_hz
    t_stop = t_first_s + n / fs_hz
    j = np.arange(math.floor(t_start * fd_hz), math.ceil(t_stop * fd_hz) + 1, dtype=np.float64)
    phase0 = float(rng.uniform(0.0, 1.0))
    tj = (j + phase0 + 0.005 * rng.standard_normal(j.size)) / fd_hz
    psi = float(rng.uniform(0.0, 2 * math.pi))
    amps = peak_ms2 * (1 + mod * np.cos(2 * math.pi * fr_hz * tj + psi))
    amps = amps * (1 + 0.1 * rng.standard_normal(j.size))
    pos = np.round((tj - t_start) * fs_hz).astype(np.intp)
    keep = (pos >= 0) & (pos < n + ring)
    e = np.zeros(n + ring)
    np.add.at(e, pos[keep], amps[keep])
    # Impulse-invariant ring h[k] = r^k (cos kθ - c sin kθ), the sampled band-pass response of
    # `_ring_gain`, with h[0] halved (trapezoidal correction) so its DC gain stays ~0.
    r = math.exp(-sigma / fs_hz)
    theta = wd / fs_hz
    c = sigma / wd
    b = [0.5, -c * r * math.sin(theta), -0.5 * r * r]
    y = signal.lfilter(b, [1.0, -2 * r * math.cos(theta), r * r], e)
    return np.asarray(y[ring:], dtype=np.float64)


def cnc_waveform(
    *,
    rpm: float,
    fs_hz: float,
    n: int,
    rng: np.random.Generator,
    teeth: int = 4,
    active_faults: frozenset[str] = frozenset(),
    severity: float = 1.0,
    bearing: BearingGeometry = DEFAULT_BEARING,
    feed_mm_min: float | None = None,
    chatter_mode_hz: float = DEFAULT_CHATTER_MODE_HZ,
) -> FloatArray:
    """Spindle-housing acceleration waveform from the shared vibration model, m/s².

    Below 25.6 kHz the signal is synthesised at an integer multiple of ``fs_hz`` and decimated with
    an anti-aliasing filter, as a sensor's ADC would.

    Args:
        rpm: Spindle speed, 1/min (f_r = rpm/60).
        fs_hz: Sampling rate, Hz.
        n: Number of samples.
        rng: Source of phases, noise and impulse jitter.
        teeth: Cutter teeth (tooth-passing frequency = teeth · f_r).
        active_faults: Active ``cnc_mill`` fault kinds (``chatter``, ``bearing_outer``,
            ``bearing_inner``, ``tool_wear``).
        severity: Severity applied to every active fault (for ``tool_wear``: the wear reached).
        bearing: Spindle bearing geometry (BPFO, BPFI).
        feed_mm_min: Feed rate, mm/min; None means cutting at a 0.05 mm/tooth chip load, 0 means
            the spindle turns without cutting.
        chatter_mode_hz: Structural mode near which chatter appears, Hz.

    Returns:
        Acceleration, m/s², ``n`` samples at ``fs_hz``.

    Raises:
        ValueError: Unknown fault kind or a non-physical argument.
    """
    _check_cnc_args(rpm, teeth, active_faults, severity)
    if not (math.isfinite(fs_hz) and fs_hz > 0) or n < 1:
        raise ValueError("fs_hz must be > 0 and n >= 1")
    m = max(1, math.ceil(_WAVE_FS_MIN_HZ / fs_hz))
    fs_int = fs_hz * m
    pad = 64 * m if m > 1 else 0
    n_int = n * m + 2 * pad
    tt = (np.arange(n_int, dtype=np.float64) - pad) / fs_int
    sev = {k: np.array([severity if k in active_faults else 0.0]) for k in _CNC_FAULTS}
    chip = np.array([_chip(rpm, teeth, feed_mm_min)])
    lines, psd = _vib_model(
        np.array([float(rpm)]),
        chip,
        sev,
        teeth=teeth,
        bearing=bearing,
        mode_hz=chatter_mode_hz,
        bearing_lines=False,
    )
    x = np.zeros(n_int)
    for line in lines:
        f, a = float(line.freq[0]), float(line.amp[0])
        phase = float(rng.uniform(0.0, 2 * math.pi))
        if a <= 0 or f <= 0 or f >= 0.45 * fs_int:
            continue
        wave = a * np.cos(2 * math.pi * f * tt + phase)
        if line.am:
            depth, f_am = _CHATTER_AM
            am_phase = float(rng.uniform(0.0, 2 * math.pi))
            wave *= 1 + depth * np.sin(2 * math.pi * f_am * tt + am_phase)
        x += wave
    x += math.sqrt(float(psd[0]) * fs_int / 2) * rng.standard_normal(n_int)
    fr = rpm / 60.0
    for kind, mod in _BEARING_MOD.items():
        if kind in active_faults and severity > 0 and rpm > 0:
            fd = bearing.bpfo_hz(fr) if kind == "bearing_outer" else bearing.bpfi_hz(fr)
            x += _impulse_train(
                n=n_int,
                fs_hz=fs_int,
                t_first_s=float(tt[0]),
                fd_hz=fd,
                fr_hz=fr,
                peak_ms2=_BEARING_PEAK_MS2 * severity,
                mod=mod,
                rng=rng,
            )
    if m > 1:
        x = np.asarray(signal.resample_poly(x, 1, m), dtype=np.float64)[pad // m : pad // m + n]
    return np.asarray(x, dtype=np.float64)


# ---------------------------------------------------------------------------------------------
# Runs

_CNC_PROGRAMS: Final = 4
_TOOL_CHANGE_S: Final = 20.0
_SPINUP_S: Final = 4.0
_SPINUP_A: Final = 2.5
_TOOL_WEAR_CURRENT: Final = 0.3


def simulate_cnc(
    spec: MachineSpec, t: FloatArray, streams: Streams
) -> tuple[Values, list[MachineEvent]]:
    r_sched, r_noise, _ = streams
    prm = spec.params
    teeth = int(prm.get("teeth", 4.0))
    mode_hz = prm.get("chatter_hz", DEFAULT_CHATTER_MODE_HZ)
    t0, t1 = float(t[0]), float(t[-1])

    # Part programs: operations (duration, rpm, chip load, depth factor).
    programs: list[FloatArray] = []
    for _ in range(_CNC_PROGRAMS):
        total = float(loguniform(r_sched, 1200.0, 7200.0, 1)[0])
        durs = loguniform(r_sched, 120.0, 900.0, int(total / 120.0) + 1)
        n_ops = max(1, int(np.searchsorted(np.cumsum(durs), total)))
        ops = np.column_stack(
            (
                durs[:n_ops],
                np.round(r_sched.uniform(8000.0, 18000.0, n_ops), -2),
                r_sched.uniform(0.02, 0.07, n_ops),
                r_sched.uniform(0.8, 3.0, n_ops),
            )
        )
        programs.append(ops)

    job_s: list[float] = []
    job_e: list[float] = []
    op_rows: list[list[float]] = []
    tj = t0 + float(r_sched.uniform(0.0, 1800.0))
    while tj <= t1:
        prog = programs[int(r_sched.integers(_CNC_PROGRAMS))]
        job_s.append(tj)
        cursor = tj
        for dur, rpm, chip, depth in prog.tolist():
            op_rows.append([cursor, cursor + dur, rpm, chip, depth])
            cursor += dur + _TOOL_CHANGE_S
        job_e.append(cursor - _TOOL_CHANGE_S)
        tj = job_e[-1] + float(loguniform(r_sched, 900.0, 4 * HOUR_S, 1)[0])
    ops_a = np.asarray(op_rows, dtype=np.float64).reshape(-1, 5)
    noise = r_noise.standard_normal((4, t.size))

    k, inside = lookup(ops_a[:, 0], ops_a[:, 1], t)
    if ops_a.shape[0] == 0:
        ops_a = np.zeros((1, 5))
    op_s, op_e, op_rpm, op_chip, op_depth = (ops_a[k, c] for c in range(5))
    since = t - op_s
    spinup = inside & (since < _SPINUP_S)
    cutting = inside & ~spinup
    rpm = np.where(inside, op_rpm * np.minimum(since / _SPINUP_S, 1.0), 0.0)
    feed = np.where(cutting, op_chip * teeth * op_rpm, 0.0)
    chip = np.where(cutting, op_chip, 0.0)

    wear = 1.0 + 0.05 * np.clip(since / np.maximum(op_e - op_s, 1.0), 0.0, 1.0)
    i_cut = (
        op_depth
        * (feed / 2400.0)
        * (np.maximum(chip, 1e-6) / _NOMINAL_CHIP_MM) ** -0.25
        * wear
        * (1 + 0.06 * noise[0])
    )
    i_nl = 1.2 + 0.6 * (rpm / 18000.0) ** 2
    tool_wear = ramped_severity(spec.faults, "tool_wear", t, t1)
    current = np.where(
        cutting,
        (i_nl + np.maximum(i_cut, 0.0)) * (1 + _TOOL_WEAR_CURRENT * tool_wear),
        i_nl + _SPINUP_A,
    )
    current = np.where(inside, np.maximum(current * (1 + 0.01 * noise[1]), 0.0), 0.0)

    sev = {kind: fault_severity(spec.faults, kind, t) for kind in _CNC_FAULTS}
    sev["tool_wear"] = tool_wear
    lines, psd = _vib_model(
        rpm, chip, sev, teeth=teeth, bearing=DEFAULT_BEARING, mode_hz=mode_hz, bearing_lines=True
    )
    vib = np.sqrt(_band_velocity_ms(lines, psd)) * (1 + 0.03 * noise[2])

    values: Values = {
        "spindle_rpm": np.maximum(rpm * (1 + 0.001 * noise[3]), 0.0),
        "spindle_a": current,
        "vib_rms_mms": np.maximum(vib, 0.0),
        "feed_mm_min": feed,
        "fs_hz": np.full(t.size, np.nan),
    }
    events = job_events(spec.device_id, np.asarray(job_s, dtype=np.float64), np.asarray(job_e), t1)
    return values, events
