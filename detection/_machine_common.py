"""Helpers every machine detector shares (printer, laser, CNC, vinyl cutter, embroidery).

Kind scores on one :class:`AlertScale`, mapped from physical quantities by :func:`ramp` and
thresholded with hysteresis into alert edges by :func:`decide_levels` (:func:`decide_kinds` is
that for a detector's ``score_<kind>`` extras); plus the small helpers of their ``update`` and
``conformance_case``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from detection._generic_common import row_event
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
    Severity,
    sort_frame,
    steps,
)

__all__ = [
    "AlertScale",
    "Explain",
    "begin_update",
    "check_sorted",
    "concat_frames",
    "conformance_from",
    "decide_kinds",
    "decide_levels",
    "fmt",
    "kind_extras",
    "level_ramp",
    "ramp",
    "require_columns",
    "split_case",
    "step_dt",
    "tick",
]

Int8 = npt.NDArray[np.int8]


@dataclass(frozen=True, slots=True)
class AlertScale:
    """Where kind scores become alerts; one scale for every machine detector.

    A detector maps each physical quantity onto [0, 1] so that its documented warning, alarm
    and critical limits land on these scores; :func:`decide_levels` thresholds them.

    Attributes:
        warning: Score at which a kind's alert starts as a warning.
        alarm: Score of an alarm.
        critical: Score of a critical alert.
        clear: An active alert ends when its score falls below this (hysteresis).
    """

    warning: float = 0.5
    alarm: float = 0.75
    critical: float = 0.9
    clear: float = 0.35

    def __post_init__(self) -> None:
        """Reject an unordered scale."""
        if not 0.0 <= self.clear < self.warning <= self.alarm <= self.critical <= 1.0:
            raise DetectionError("scale", "needs 0 <= clear < warning <= alarm <= critical <= 1")


def ramp(x: Float64, xs: tuple[float, ...], ys: tuple[float, ...]) -> Float64:
    """Piecewise-linear map of a physical quantity onto scores (NaN -> 0, clipped at the ends).

    Args:
        x: Values (any unit).
        xs: Increasing breakpoints in the unit of ``x``.
        ys: Scores at the breakpoints, in [0, 1].
    """
    out = np.interp(np.nan_to_num(x, nan=-np.inf), xs, ys, left=ys[0], right=ys[-1])
    return np.asarray(np.where(np.isnan(x), 0.0, out), dtype=np.float64)


def level_ramp(x: Float64, warning: float, alarm: float, top: float, *, when: Bool) -> Float64:
    """:func:`ramp` of a relative excess: 0.5 at ``warning``, 0.75 at ``alarm``, ``top`` at twice
    ``alarm``; 0 on rows where ``when`` is False (not enough evidence yet)."""
    scored = ramp(x, (0.0, warning, alarm, 2.0 * alarm), (0.0, 0.5, 0.75, top))
    return np.asarray(np.where(when, scored, 0.0), dtype=np.float64)


def require_columns(frame: Frame, names: tuple[str, ...], detector: str) -> None:
    """Raise unless the frame has at least one of ``names`` (an empty frame passes).

    Raises:
        DetectionError: None of the columns is present (key: the first column).
    """
    if len(frame) and not any(n in frame.values or n in frame.arrays for n in names):
        raise DetectionError(names[0], f"{detector} needs one of the columns {list(names)}")


def check_sorted(frame: Frame) -> None:
    """Raise unless the frame's rows are sorted by slot (as :func:`steps` requires).

    Raises:
        DetectionError: Rows out of slot order (key ``slot``).
    """
    if len(frame) > 1 and bool(np.any(np.diff(frame.slot) < 0)):
        raise DetectionError("slot", "frame rows must be sorted by (slot, ts_s)")


def _prepare(det: Detector[Any], frame: Frame) -> None:
    """Check the frame's row order and make room for its devices."""
    check_sorted(frame)
    if len(frame):
        det.ensure_devices(int(frame.slot.max()) + 1)


def begin_update(det: Detector[Any], frame: Frame, columns: tuple[str, ...]) -> int:
    """The checks that open a machine detector's ``update``; returns the frame's row count.

    Raises:
        DetectionError: None of ``columns`` is present, or rows out of slot order.
    """
    require_columns(frame, columns, det.name)
    _prepare(det, frame)
    return len(frame)


def step_dt(last_ts: Float64, ts: Float64, max_dt_s: float) -> Float64:
    """Seconds since each device's previous reading, 0 for a first reading, capped at max_dt_s."""
    dt = np.where(np.isnan(last_ts), 0.0, ts - last_ts)
    return np.clip(dt, 0.0, max_dt_s)


def tick(st: Mapping[str, npt.NDArray[Any]], s: Int64, ts: Float64, max_dt_s: float) -> Float64:
    """:func:`step_dt` from the devices' ``last_ts`` state, which then moves on to ``ts``."""
    dt = step_dt(st["last_ts"][s], ts, max_dt_s)
    st["last_ts"][s] = ts
    return dt


def fmt(x: float, unit: str = "", digits: int = 1) -> str:
    """A number for an explanation ("n/a" when NaN)."""
    return "n/a" if not math.isfinite(x) else f"{x:.{digits}f}{unit}"


def kind_extras(kinds: tuple[EventKind, ...], kind_scores: Float64) -> dict[str, npt.NDArray[Any]]:
    """``score_<kind>`` extras: one column of ``kind_scores`` (rows, kinds) per kind."""
    return {"score_" + k.value: kind_scores[:, i] for i, k in enumerate(kinds)}


Explain = Callable[[int, int], tuple[str, dict[str, float]]]
"""(row, kind index) -> (one sentence with numbers, the numbers by name with units)."""


def decide_levels(
    frame: Frame,
    kind_scores: Float64,
    levels: Int8,
    *,
    kinds: tuple[EventKind, ...],
    scale: AlertScale,
    detector: str,
    explain: Explain,
    evidence: Bool | None = None,
) -> Decisions:
    """Threshold per-kind scores with hysteresis into per-row alerts and edge events.

    Per device and kind, an alert starts when the score reaches ``scale.warning``, escalates when
    it reaches a higher level (never de-escalates while active) and ends when it falls below
    ``scale.clear``. Rows without ``evidence`` (e.g. a mill whose spindle is off) keep the levels
    they find. Events are emitted on a start or an escalation only.

    Args:
        frame: The frame just updated (sorted by slot, time).
        kind_scores: Score per row and kind, shape (rows, kinds), in [0, 1].
        levels: The detector's per-device active levels, shape (devices, kinds); updated in place.
        kinds: Event kind of each score column.
        scale: Thresholds.
        detector: Detector name for the events.
        explain: Explanation of an edge at (row, kind index).
        evidence: Rows that carry evidence (all when None).

    Returns:
        Active kind and severity per row (the most severe active kind, first listed on ties), and
        the edge events in row order.
    """
    n = len(frame)
    out = Decisions.empty(n)
    if n == 0:
        return out
    late = frame.late_rows()
    row_level = np.zeros((n, len(kinds)), np.int8)
    edges: list[tuple[int, int, int]] = []
    for rows in steps(frame.slot):
        s = frame.slot[rows]
        sc = kind_scores[rows]
        new = (
            (sc >= scale.warning).astype(np.int8)
            + (sc >= scale.alarm).astype(np.int8)
            + (sc >= scale.critical).astype(np.int8)
        )
        old = levels[s]
        upd = np.where(old > 0, np.where(sc >= scale.clear, np.maximum(old, new), 0), new)
        if evidence is not None:
            upd = np.where(evidence[rows][:, None], upd, old)
        upd = upd.astype(np.int8)
        levels[s] = upd
        row_level[rows] = upd
        for r, k in zip(*np.nonzero(upd > old), strict=True):
            edges.append((int(rows[r]), int(k), int(upd[r, k])))
    best = np.argmax(row_level, axis=1)
    sev = row_level[np.arange(n), best]
    names = np.array([k.value for k in kinds], dtype=object)
    out.alert[:] = np.where(sev > 0, names[best], "")
    out.severity[:] = sev
    edges.sort()
    for row, k, lvl in edges:
        text, data = explain(row, k)
        out.events.append(
            row_event(
                frame,
                row,
                kind=kinds[k],
                severity=Severity(lvl),
                score=float(kind_scores[row, k]),
                explanation=text,
                detector=detector,
                late=bool(late[row]),
                data=data,
            )
        )
    return out


def decide_kinds(
    det: Detector[Any],
    frame: Frame,
    scores: Scores,
    kinds: tuple[EventKind, ...],
    explain: Explain,
    evidence: Bool | None = None,
) -> Decisions:
    """A machine detector's ``decide``: :func:`decide_levels` of its ``score_<kind>`` extras.

    Uses the detector's ``levels`` state, its ``params.scale`` and its name.

    Raises:
        DetectionError: Rows out of slot order.
    """
    _prepare(det, frame)
    ks = np.column_stack([scores.extra["score_" + k.value] for k in kinds]).reshape(
        len(frame), len(kinds)
    )
    return decide_levels(
        frame,
        ks,
        det.state["levels"],
        kinds=kinds,
        scale=det.params.scale,
        detector=det.name,
        explain=explain,
        evidence=evidence,
    )


def _concat(frames: list[Frame]) -> Frame:
    """Frames of distinct devices as one frame (in the given order)."""
    keys = set().union(*(f.values for f in frames))
    arr_keys = set().union(*(f.arrays for f in frames))
    return Frame(
        slot=np.concatenate([f.slot for f in frames]),
        device_id=np.concatenate([f.device_id for f in frames]),
        ts_s=np.concatenate([f.ts_s for f in frames]),
        values={k: np.concatenate([f.column(k) for f in frames]) for k in sorted(keys)},
        arrays={
            k: [x for f in frames for x in f.arrays.get(k, [None] * len(f))]
            for k in sorted(arr_keys)
        },
    )


def concat_frames(frames: list[Frame]) -> Frame:
    """Frames of distinct devices as one frame, sorted by (slot, time)."""
    return sort_frame(_concat(frames))


def split_case(full: Frame, n_norm: int, anomalous: Bool) -> tuple[Frame, Frame, Bool]:
    """One device's conformance piece: its first ``n_norm`` rows, the ``anomalous.size`` rows
    after them, and which of those are anomalous."""
    return (
        full.take(np.arange(n_norm, dtype=np.int64)),
        full.take(np.arange(n_norm, n_norm + anomalous.size, dtype=np.int64)),
        anomalous,
    )


def conformance_from(frames: list[tuple[Frame, Frame, Bool]]) -> ConformanceCase:
    """A :class:`ConformanceCase` from per-device (normal, anomalous, anomaly mask) pieces."""
    return ConformanceCase(
        normal=_concat([f[0] for f in frames]),
        anomalous=_concat([f[1] for f in frames]),
        anomaly_rows=np.concatenate([f[2] for f in frames]),
    )
