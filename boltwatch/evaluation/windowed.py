"""Window-based scoring of anomaly scores, by the published rules of the Numenta Anomaly Benchmark.

NAB (Lavin & Ahmad, "Evaluating Real-time Anomaly Detection Algorithms - the Numenta Anomaly
Benchmark", 2015) scores a streaming detector on a corpus of labelled series; this module follows
the rules of its scorer and threshold sweeper:

* **Windows.** Each labelled anomaly gets a window of ``window_fraction`` (10 %) of its series'
  rows divided by the number of anomalies in the series, centred on the anomaly (NAB's rule) or
  starting at it (``placement="after"``); overlapping windows merge.
* **Probation.** The first ``probation_fraction`` (15 %, at most 750 rows) of each series lets a
  detector learn: rows there are not scored.
* **Detections.** A row is a detection when its score is at or above the threshold.
* **True positive.** Only the *first* detection in a window counts (later ones neither add nor
  cost). At relative position ``y = -(right - i + 1) / width`` it earns
  ``A_TP * sigma(y) / sigma(-1)`` with the scaled sigmoid ``sigma(y) = 2 / (1 + e^(5y)) - 1``:
  ``A_TP`` at the window's first row, about 0 at its last.
* **False negative.** A window without a detection costs ``A_FN``.
* **False positive.** Each detection outside every window costs ``-A_FP * sigma(d)``, with ``d``
  the distance past the end of the preceding window in window widths (``(i - right) /
  (width - 1)``): little just after a window, the full ``A_FP`` from 3 widths on, and the full
  ``A_FP`` when no window precedes it.
* **Sweep and normalisation.** The raw score ``S`` is summed over the corpus for one threshold,
  swept over every distinct score of the corpus. ``S_null = A_FN * W`` (never firing) and
  ``S_perfect = A_TP * W`` (the first row of every window, no false positive) for ``W`` windows;
  the normalised score is ``100 (S - S_null) / (S_perfect - S_null)``: 0 for a detector that never
  fires, 100 for a perfect one, negative for one that does worse than never firing.

Weights come from a :class:`Profile` (NAB's standard profile by default: ``A_TP = 1``,
``A_FP = -0.11``, ``A_FN = -1``). Everything is numpy: a sweep over a corpus of a few hundred
thousand rows takes well under a second.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Literal

import numpy as np
import numpy.typing as npt

__all__ = [
    "REWARD_LOW_FN",
    "REWARD_LOW_FP",
    "STANDARD",
    "LabelledSeries",
    "Profile",
    "ScoringError",
    "Sweep",
    "WindowedScore",
    "anomaly_windows",
    "label_onsets",
    "scaled_sigmoid",
    "score_at",
    "sweep",
]

Float64 = npt.NDArray[np.float64]
Int64 = npt.NDArray[np.int64]
Bool = npt.NDArray[np.bool_]
Placement = Literal["centred", "after"]

WINDOW_FRACTION: Final = 0.10
"""NAB: all windows of a series together span 10 % of its rows."""
PROBATION_FRACTION: Final = 0.15
"""NAB: the first 15 % of each series is not scored ..."""
MAX_PROBATION_ROWS: Final = 750
"""... but never more than 750 rows (15 % of 5000)."""
_FAR: Final = 3.0  # relative distances at or past this score as the full false positive


class ScoringError(ValueError):
    """Input the scorer cannot use.

    Attributes:
        key: What is wrong (a series, an argument).
        reason: Why, in words.
    """

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"{key}: {reason}")
        self.key = key
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Profile:
    """The weights of one application profile (NAB's cost matrix), signed as in the NAB paper.

    Attributes:
        a_tp: Reward of a detection at the very start of a window (> 0).
        a_fp: Cost of a false positive far from any window (< 0).
        a_fn: Cost of a window without detection (< 0).
    """

    a_tp: float = 1.0
    a_fp: float = -0.11
    a_fn: float = -1.0

    def __post_init__(self) -> None:
        if not (self.a_tp > 0 and self.a_fp < 0 and self.a_fn < 0):
            raise ScoringError("profile", "need a_tp > 0, a_fp < 0 and a_fn < 0")


STANDARD: Final = Profile()
"""NAB's standard profile: A_TP = 1, A_FP = -0.11, A_FN = -1."""
REWARD_LOW_FP: Final = Profile(a_tp=1.0, a_fp=-0.22, a_fn=-1.0)
"""NAB's "reward low false positives" profile."""
REWARD_LOW_FN: Final = Profile(a_tp=1.0, a_fp=-0.11, a_fn=-2.0)
"""NAB's "reward low false negatives" profile."""


def scaled_sigmoid(y: npt.ArrayLike) -> Float64:
    """NAB's ``sigma(y) = 2 / (1 + e^(5y)) - 1``, and exactly -1 from ``y = 3`` on.

    Args:
        y: Relative position: -1 at a window's first row, 0 at its right edge, > 0 past it.
    """
    a = np.asarray(y, dtype=np.float64)
    out = 2.0 / (1.0 + np.exp(np.minimum(5.0 * a, 50.0))) - 1.0
    return np.where(a >= _FAR, -1.0, out)


def label_onsets(labels: npt.ArrayLike) -> Int64:
    """Rows where a run of true labels starts (one anomaly per labelled segment).

    Args:
        labels: Per-row anomaly labels (bool or 0/1).
    """
    lab = np.asarray(labels).astype(np.bool_)
    rise = np.diff(np.r_[False, lab].astype(np.int8)) > 0
    return np.flatnonzero(rise).astype(np.int64)


def anomaly_windows(
    n_rows: int,
    anomaly_rows: npt.ArrayLike,
    *,
    window_fraction: float = WINDOW_FRACTION,
    placement: Placement = "centred",
) -> Int64:
    """NAB's windows around labelled anomalies of one series.

    Args:
        n_rows: Rows of the series.
        anomaly_rows: Row of each labelled anomaly.
        window_fraction: All windows of the series together span this fraction of its rows
            (each ``int(window_fraction * n_rows / n_anomalies)`` rows).
        placement: ``"centred"`` on the anomaly (NAB), or ``"after"``: starting at it.

    Returns:
        ``(k, 2)`` inclusive row bounds, sorted; overlapping windows merged.

    Raises:
        ScoringError: A row outside the series, or a bad fraction or placement.
    """
    rows = np.unique(np.asarray(anomaly_rows, dtype=np.int64))
    if rows.size and (rows[0] < 0 or rows[-1] >= n_rows):
        raise ScoringError("anomaly_rows", f"rows must lie in 0..{n_rows - 1}")
    if not 0.0 < window_fraction <= 1.0:
        raise ScoringError("window_fraction", f"must be in (0, 1], got {window_fraction}")
    if rows.size == 0:
        return np.zeros((0, 2), np.int64)
    length = int(window_fraction * n_rows / rows.size)
    if placement == "centred":
        left, right = rows - length // 2, rows + length // 2
    elif placement == "after":
        left, right = rows, rows + length
    else:
        raise ScoringError("placement", f"{placement!r} is not 'centred' or 'after'")
    left, right = np.maximum(left, 0), np.minimum(right, n_rows - 1)
    merged: list[list[int]] = []
    for lo, hi in zip(left.tolist(), right.tolist(), strict=True):
        if merged and lo <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], hi)
        else:
            merged.append([lo, hi])
    return np.array(merged, dtype=np.int64).reshape(-1, 2)


@dataclass(frozen=True, slots=True)
class LabelledSeries:
    """One labelled series of a corpus: its timestamps and anomaly windows.

    Attributes:
        name: Name in reports (``valve1/3.csv:Pressure``).
        ts_s: Timestamps, s, non-decreasing.
        windows: ``(k, 2)`` inclusive row bounds of the anomaly windows, sorted, disjoint.
    """

    name: str
    ts_s: Float64
    windows: Int64

    def __post_init__(self) -> None:
        n = self.ts_s.shape[0]
        w = self.windows
        if w.ndim != 2 or w.shape[1] != 2:
            raise ScoringError(f"{self.name}.windows", f"shape {w.shape} is not (k, 2)")
        if w.size and (
            w[:, 0].min() < 0
            or w[:, 1].max() >= n
            or np.any(w[:, 1] < w[:, 0])
            or np.any(w[1:, 0] <= w[:-1, 1])
        ):
            raise ScoringError(f"{self.name}.windows", "need sorted disjoint rows in the series")

    def __len__(self) -> int:
        return int(self.ts_s.shape[0])

    @classmethod
    def from_anomalies(
        cls,
        name: str,
        ts_s: npt.ArrayLike,
        anomaly_ts_s: npt.ArrayLike,
        *,
        window_fraction: float = WINDOW_FRACTION,
        placement: Placement = "centred",
    ) -> LabelledSeries:
        """A series whose anomalies are labelled by their times (NAB's windows around them).

        Args:
            name: Name in reports.
            ts_s: Timestamps of the rows, s.
            anomaly_ts_s: Time of each anomaly, s; it maps to the first row at or after it.
            window_fraction: See :func:`anomaly_windows`.
            placement: See :func:`anomaly_windows`.
        """
        ts = np.asarray(ts_s, dtype=np.float64)
        at = np.asarray(anomaly_ts_s, dtype=np.float64).reshape(-1)
        rows = np.searchsorted(ts, at, side="left")
        rows = rows[rows < ts.shape[0]]
        return cls(
            name,
            ts,
            anomaly_windows(
                ts.shape[0], rows, window_fraction=window_fraction, placement=placement
            ),
        )

    @classmethod
    def from_labels(
        cls,
        name: str,
        ts_s: npt.ArrayLike,
        labels: npt.ArrayLike,
        *,
        window_fraction: float = WINDOW_FRACTION,
        placement: Placement = "centred",
    ) -> LabelledSeries:
        """A series labelled per row: each labelled segment's first row is one anomaly.

        Args:
            name: Name in reports.
            ts_s: Timestamps of the rows, s.
            labels: Per-row anomaly labels.
            window_fraction: See :func:`anomaly_windows`.
            placement: See :func:`anomaly_windows`.
        """
        ts = np.asarray(ts_s, dtype=np.float64)
        return cls(
            name,
            ts,
            anomaly_windows(
                ts.shape[0],
                label_onsets(labels),
                window_fraction=window_fraction,
                placement=placement,
            ),
        )

    @classmethod
    def from_time_windows(
        cls, name: str, ts_s: npt.ArrayLike, windows_s: Sequence[tuple[float, float]]
    ) -> LabelledSeries:
        """A series with explicit label windows, in time (rows inside ``[start, end]``).

        Windows that hold no row are dropped; overlapping ones merge.
        """
        ts = np.asarray(ts_s, dtype=np.float64)
        merged: list[list[int]] = []
        for start, end in sorted(windows_s):
            lo = int(np.searchsorted(ts, start, side="left"))
            hi = int(np.searchsorted(ts, end, side="right")) - 1
            if hi < lo:
                continue
            if merged and lo <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], hi)
            else:
                merged.append([lo, hi])
        return cls(name, ts, np.array(merged, dtype=np.int64).reshape(-1, 2))


def _probation_rows(n: int, fraction: float, max_rows: int) -> int:
    return int(min(math.floor(fraction * n), max_rows))


def _row_values(n: int, windows: Int64, profile: Profile) -> tuple[Float64, Int64]:
    """Per row: what a detection there is worth, and its window (-1 outside every window)."""
    value = np.full(n, profile.a_fp)
    window = np.full(n, -1, np.int64)
    tp_scale = profile.a_tp / float(scaled_sigmoid(-1.0))
    bounds = windows.tolist()
    for k, (lo, hi) in enumerate(bounds):
        width = hi - lo + 1
        i = np.arange(lo, hi + 1)
        value[lo : hi + 1] = tp_scale * scaled_sigmoid(-(hi - i + 1) / width)
        window[lo : hi + 1] = k
        stop = bounds[k + 1][0] if k + 1 < len(bounds) else n
        after = np.arange(hi + 1, stop)
        value[hi + 1 : stop] = -profile.a_fp * scaled_sigmoid((after - hi) / max(width - 1, 1))
    return value, window


@dataclass(frozen=True, slots=True)
class _Rows:
    """The scorable rows of a corpus, flattened: score, worth, global window id."""

    score: Float64
    value: Float64
    window: Int64
    n_windows: int


def _flatten(
    corpus: Sequence[LabelledSeries],
    scores: Sequence[npt.ArrayLike],
    profile: Profile,
    probation_fraction: float,
    max_probation_rows: int,
) -> _Rows:
    if len(corpus) != len(scores):
        raise ScoringError("scores", f"{len(scores)} score arrays for {len(corpus)} series")
    if not 0.0 <= probation_fraction < 1.0:
        raise ScoringError("probation_fraction", "must be in [0, 1)")
    parts_s: list[Float64] = []
    parts_v: list[Float64] = []
    parts_w: list[Int64] = []
    offset = 0
    for series, raw in zip(corpus, scores, strict=True):
        s = np.asarray(raw, dtype=np.float64)
        n = len(series)
        if s.shape != (n,):
            raise ScoringError(series.name, f"{s.shape[0]} scores for {n} rows")
        value, window = _row_values(n, series.windows, profile)
        p = _probation_rows(n, probation_fraction, max_probation_rows)
        # A window is scored from its first row after probation on (NAB's sweeper).
        live = np.unique(window[p:][window[p:] >= 0])
        remap = np.full(series.windows.shape[0] + 1, -1, np.int64)
        remap[live] = offset + np.arange(live.shape[0])
        offset += int(live.shape[0])
        parts_s.append(np.where(np.isnan(s[p:]), -np.inf, s[p:]))
        parts_v.append(value[p:])
        parts_w.append(remap[window[p:]])
    if offset == 0:
        raise ScoringError("corpus", "no anomaly window outside the probation periods")
    return _Rows(
        np.concatenate(parts_s) if parts_s else np.zeros(0),
        np.concatenate(parts_v) if parts_v else np.zeros(0),
        np.concatenate(parts_w) if parts_w else np.zeros(0, np.int64),
        offset,
    )


@dataclass(frozen=True, slots=True)
class WindowedScore:
    """A detector's windowed score on a corpus at one threshold.

    Attributes:
        threshold: Detections are rows scoring at or above it.
        raw: Summed NAB score ``S``.
        normalised: ``100 (S - S_null) / (S_perfect - S_null)``.
        tp_windows: Windows with at least one detection.
        fn_windows: Windows without detection.
        fp_detections: Detections outside every window.
    """

    threshold: float
    raw: float
    normalised: float
    tp_windows: int
    fn_windows: int
    fp_detections: int


def _normalise(raw: npt.ArrayLike, n_windows: int, profile: Profile) -> Float64:
    null = profile.a_fn * n_windows
    perfect = profile.a_tp * n_windows
    return np.asarray(100.0 * (np.asarray(raw, np.float64) - null) / (perfect - null), np.float64)


@dataclass(frozen=True, slots=True)
class Sweep:
    """Windowed scores of a detector on a corpus for every threshold.

    Attributes:
        thresholds: Descending; the first is ``inf`` (never firing), then every distinct score.
        raw: Summed NAB score ``S`` at each threshold.
        tp_windows: Windows with a detection, at each threshold.
        fn_windows: Windows without detection, at each threshold.
        fp_detections: Detections outside every window, at each threshold.
        n_windows: Windows scored in the corpus.
        profile: The weights used.
    """

    thresholds: Float64
    raw: Float64
    tp_windows: Int64
    fn_windows: Int64
    fp_detections: Int64
    n_windows: int
    profile: Profile

    @property
    def normalised(self) -> Float64:
        """The normalised score at each threshold (0 never firing, 100 perfect)."""
        return _normalise(self.raw, self.n_windows, self.profile)

    @property
    def best_index(self) -> int:
        """Index of the best threshold (the highest one among equal best scores)."""
        return int(np.argmax(self.raw))

    @property
    def best_threshold(self) -> float:
        """The threshold with the best score (``inf``: never firing is best)."""
        return float(self.thresholds[self.best_index])

    @property
    def best(self) -> WindowedScore:
        """The score at the best threshold."""
        i = self.best_index
        return WindowedScore(
            threshold=float(self.thresholds[i]),
            raw=float(self.raw[i]),
            normalised=float(self.normalised[i]),
            tp_windows=int(self.tp_windows[i]),
            fn_windows=int(self.fn_windows[i]),
            fp_detections=int(self.fp_detections[i]),
        )


def sweep(
    corpus: Sequence[LabelledSeries],
    scores: Sequence[npt.ArrayLike],
    *,
    profile: Profile = STANDARD,
    probation_fraction: float = PROBATION_FRACTION,
    max_probation_rows: int = MAX_PROBATION_ROWS,
) -> Sweep:
    """Score a detector's scores on a labelled corpus at every threshold (NAB's sweep).

    Args:
        corpus: The labelled series.
        scores: The detector's score per row of each series (NaN = no detection).
        profile: The weights.
        probation_fraction: Leading fraction of each series that is not scored.
        max_probation_rows: Cap of the probation period, rows.

    Returns:
        Scores and counts per threshold; :attr:`Sweep.best` is the corpus-optimal threshold.

    Raises:
        ScoringError: Mismatched lengths, or no window left to score.
    """
    rows = _flatten(corpus, scores, profile, probation_fraction, max_probation_rows)
    w = rows.n_windows
    order = np.argsort(-rows.score, kind="stable")
    s, v, win = rows.score[order], rows.value[order], rows.window[order]
    inside = win >= 0
    inc = np.where(inside, 0.0, v)
    fp_inc = (~inside).astype(np.int64)
    tp_inc = np.zeros(s.shape[0], np.int64)
    # A window is worth its best (= earliest) detection so far: a running maximum per window in
    # sweep order. Offsetting each window's values by a multiple of a span larger than their
    # range makes one maximum.accumulate restart at every window.
    pos = np.flatnonzero(inside)
    if pos.size:
        by_window = pos[np.argsort(win[pos], kind="stable")]
        wid = win[by_window]
        span = 4.0 * (abs(rows.value).max() + abs(profile.a_fn) + 1.0)
        best = np.maximum.accumulate(v[by_window] + wid * span) - wid * span
        first = np.r_[True, wid[1:] != wid[:-1]]
        prev = np.where(first, profile.a_fn, np.r_[0.0, best[:-1]])
        inc[by_window] = best - prev
        tp_inc[by_window] = first
    # Thresholds are the distinct scores: the state after the last row of each tie.
    last = np.flatnonzero(np.r_[s[1:] != s[:-1], True]) if s.size else np.zeros(0, np.int64)
    last = last[np.isfinite(s[last])]
    null = profile.a_fn * w
    raw = null + np.cumsum(inc)[last]
    tp = np.cumsum(tp_inc)[last]
    fp = np.cumsum(fp_inc)[last]
    return Sweep(
        thresholds=np.r_[np.inf, s[last]],
        raw=np.r_[null, raw],
        tp_windows=np.r_[0, tp].astype(np.int64),
        fn_windows=(w - np.r_[0, tp]).astype(np.int64),
        fp_detections=np.r_[0, fp].astype(np.int64),
        n_windows=w,
        profile=profile,
    )


def score_at(
    corpus: Sequence[LabelledSeries],
    scores: Sequence[npt.ArrayLike],
    threshold: float,
    *,
    profile: Profile = STANDARD,
    probation_fraction: float = PROBATION_FRACTION,
    max_probation_rows: int = MAX_PROBATION_ROWS,
) -> WindowedScore:
    """Score a detector on a labelled corpus at one given threshold (e.g. its own alert level).

    Same rules and arguments as :func:`sweep`, computed directly.
    """
    rows = _flatten(corpus, scores, profile, probation_fraction, max_probation_rows)
    det = rows.score >= threshold
    outside = rows.window < 0
    raw = float(rows.value[det & outside].sum())
    hit = np.full(rows.n_windows, -np.inf)
    np.maximum.at(hit, rows.window[det & ~outside], rows.value[det & ~outside])
    tp = int(np.count_nonzero(np.isfinite(hit)))
    raw += float(np.where(np.isfinite(hit), hit, profile.a_fn).sum())
    return WindowedScore(
        threshold=float(threshold),
        raw=raw,
        normalised=float(_normalise(raw, rows.n_windows, profile)),
        tp_windows=tp,
        fn_windows=rows.n_windows - tp,
        fp_detections=int(np.count_nonzero(det & outside)),
    )
