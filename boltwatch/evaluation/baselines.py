"""Reference scorers to compare the generic detectors with.

* :func:`windowed_gaussian`: NAB's "windowedGaussian" baseline — the mean and standard deviation
  of a trailing window of raw values, and the Gaussian tail probability of the newest value (or of
  the mean of the last few values) under them.
* :func:`null_scores`: a detector that never fires (the 0 of the normalised windowed score).
* :func:`random_scores`: independent uniform scores — chance level. Window-based scoring with a
  threshold swept over the corpus rewards firing at random at a well-chosen rate (a window caught
  by luck is worth more than the few false positives it costs), so a detector is only better
  than chance where it beats this.
"""

from __future__ import annotations

import math
from typing import Final

import numpy as np
import numpy.typing as npt
from scipy.special import erf

from boltwatch.evaluation.windowed import ScoringError

__all__ = ["null_scores", "random_scores", "windowed_gaussian"]

Float64 = npt.NDArray[np.float64]

_MIN_STD: Final = 1e-6  # NAB's floor for a constant window


def windowed_gaussian(values: npt.ArrayLike, *, window: int = 1000, average: int = 1) -> Float64:
    """NAB's windowed-Gaussian score of every row of one series, streaming and causal.

    Row ``i`` is compared with the mean ``mu`` and standard deviation ``sd`` of the up to
    ``window`` finite values before it: with ``x`` the mean of the finite values among rows
    ``i - average + 1 .. i``, ``z = (x - mu) / sd`` and the score is the two-sided Gaussian tail
    mass inside ``|z|``, ``1 - 2 Q(|z|) = erf(|z| / sqrt(2))``: 0 at the mean, 0.95 at 2 sigma.
    NAB uses ``window = 1000`` rows and ``average = 1``.

    Args:
        values: The series (NaN = not reported: scores 0 and is left out of the window).
        window: Trailing rows the mean and deviation are taken over.
        average: Newest rows averaged before standardising (1 = the newest value alone).

    Returns:
        Scores in [0, 1]; 0 until two finite values have been seen.

    Raises:
        ScoringError: ``window < 2`` or ``average < 1``.
    """
    if window < 2:
        raise ScoringError("window", f"must be >= 2, got {window}")
    if average < 1:
        raise ScoringError("average", f"must be >= 1, got {average}")
    x = np.asarray(values, dtype=np.float64).reshape(-1)
    n = x.shape[0]
    ok = np.isfinite(x)
    if not ok.any():
        return np.zeros(n)
    # Running sums of values shifted by a past value (the first finite one), which keeps the sum
    # of squares free of cancellation for large offsets with small spread.
    ref = float(x[np.argmax(ok)])
    d = np.where(ok, x - ref, 0.0)
    c1 = np.r_[0.0, np.cumsum(d)]
    c2 = np.r_[0.0, np.cumsum(d * d)]
    cn = np.r_[0, np.cumsum(ok)]
    i = np.arange(n)
    lo = np.maximum(i - window, 0)
    cnt = (cn[i] - cn[lo]).astype(np.float64)
    safe = np.maximum(cnt, 1.0)
    mu = (c1[i] - c1[lo]) / safe
    var = np.maximum((c2[i] - c2[lo]) / safe - mu * mu, 0.0)
    sd = np.maximum(np.sqrt(var), _MIN_STD)
    a_lo = np.maximum(i + 1 - average, 0)
    a_cnt = (cn[i + 1] - cn[a_lo]).astype(np.float64)
    recent = (c1[i + 1] - c1[a_lo]) / np.maximum(a_cnt, 1.0)
    z = np.abs(recent - mu) / sd
    score = erf(z / math.sqrt(2.0))
    return np.where(ok & (cnt >= 2) & (a_cnt > 0), score, 0.0).astype(np.float64)


def null_scores(n_rows: int) -> Float64:
    """Scores of a detector that never fires: all 0 (no threshold above 0 detects anything)."""
    return np.zeros(n_rows)


def random_scores(n_rows: int, seed: int) -> Float64:
    """Chance level: ``n_rows`` independent uniform scores in [0, 1) from ``seed``."""
    return np.random.default_rng(seed).random(n_rows)
