"""The newest vibration waveform of a machine as a Welch spectrum, for its console page.

The time series databases do not hold waveforms; the ingest store keeps each one (float32) with
its reading, so the console reads the newest and draws its power spectral density: chatter shows
as a strong peak in the chatter band, a bearing defect as lines at its defect frequencies
(:mod:`detection.cnc` raises both).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

import numpy as np

from dashboards.charts import SPECTRA
from detection.cnc import iso_zone
from ingest.store import Store
from sensors.schema import DeviceKind

__all__ = ["MAX_BINS", "Spectrum", "newest_spectrum"]

MAX_BINS: Final = 2048
"""Most frequency bins sent to the browser (Welch segments of up to twice that)."""
_MIN_SAMPLES: Final = 64


@dataclass(frozen=True, slots=True)
class Spectrum:
    """The Welch PSD of a device's newest waveform.

    Attributes:
        device_id: The device.
        ts_ms: When that waveform was taken, epoch ms.
        field: The waveform's field (``vib_ms2``).
        fs_hz: Its sampling rate, Hz.
        samples: How many samples it had.
        f_hz: Frequencies, Hz.
        psd: Power spectral density, (m/s²)²/Hz.
        rms: The waveform's RMS (m/s², mean removed).
        vib_rms_mms: The reading's velocity RMS, mm/s (NaN when not reported).
        zone: Its ISO 10816-3 zone letter ("?" when unknown).
    """

    device_id: str
    ts_ms: int
    field: str
    fs_hz: float
    samples: int
    f_hz: list[float]
    psd: list[float]
    rms: float
    vib_rms_mms: float
    zone: str


def newest_spectrum(store: Store, kind: DeviceKind, device_id: str) -> Spectrum | None:
    """The spectrum of the device's newest waveform; None for a kind without waveforms, a
    device without one yet, or one too short (under 64 samples) or without a valid rate."""
    spec = SPECTRA.get(kind)
    if spec is None:
        return None
    name, rate = spec
    found = store.latest_waveform(kind, device_id, name)
    if found is None:
        return None
    ts_ms, x, values = found
    fs = values.get(rate, math.nan)
    x = x[np.isfinite(x)]
    if x.size < _MIN_SAMPLES or not (math.isfinite(fs) and fs > 0):
        return None
    x = x - x.mean()
    from scipy import signal  # scipy.signal costs ~60 MB: loaded when a spectrum is drawn

    f, p = signal.welch(x, fs=fs, nperseg=min(x.size, 2 * MAX_BINS))
    vib = values.get("vib_rms_mms", math.nan)
    return Spectrum(
        device_id,
        ts_ms,
        name,
        fs,
        int(x.size),
        f.tolist(),
        p.tolist(),
        float(np.sqrt(np.mean(x * x))),
        vib,
        iso_zone(vib),
    )
