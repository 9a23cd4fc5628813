"""Helpers shared by the generic detectors (univariate, multivariate) and the machine detectors.

* :func:`row_event`: the :class:`DetectionEvent` of one frame row.
* :func:`check_hysteresis`, :func:`severity_of`, :func:`decide_hysteresis`: one anomaly score
  per row thresholded with hysteresis (on at ``threshold``, off below ``release``) into alerts
  and edge events, as the univariate and multivariate detectors do.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np
import numpy.typing as npt

from detection.base import (
    Decisions,
    DetectionError,
    DetectionEvent,
    EventKind,
    Float64,
    Frame,
    Scores,
    Severity,
    steps,
)

__all__ = [
    "MakeEvent",
    "check_hysteresis",
    "decide_hysteresis",
    "row_event",
    "severity_of",
]


def row_event(
    frame: Frame,
    row: int,
    *,
    kind: EventKind,
    severity: Severity,
    score: float,
    explanation: str,
    detector: str,
    late: bool,
    data: Mapping[str, float],
) -> DetectionEvent:
    """The event of ``frame``'s row ``row`` (device, time in ms and site taken from the row)."""
    return DetectionEvent(
        device_id=str(frame.device_id[row]),
        kind=kind,
        severity=severity,
        ts_ms=round(float(frame.ts_s[row]) * 1000.0),
        score=score,
        explanation=explanation,
        detector=detector,
        late=late,
        site="" if frame.site is None else str(frame.site[row]),
        data=data,
    )


def check_hysteresis(threshold: float, release: float) -> None:
    """Reject an alert threshold and release that are not ``0 < release <= threshold < 1``.

    Raises:
        DetectionError: Out of order (key ``threshold``).
    """
    if not 0.0 < release <= threshold < 1.0:
        raise DetectionError("threshold", "need 0 < release <= threshold < 1")


def severity_of(score: Float64, threshold: float) -> npt.NDArray[np.int8]:
    """WARNING at the threshold, MAJOR at 0.99, CRITICAL at 0.9999."""
    sev = np.where(score >= threshold, int(Severity.WARNING), 0)
    sev = np.where(score >= 0.99, int(Severity.MAJOR), sev)
    sev = np.where(score >= 0.9999, int(Severity.CRITICAL), sev)
    return sev.astype(np.int8)


MakeEvent = Callable[[int, Severity, bool], DetectionEvent]
"""(row, severity, late) -> the event of an alert edge at that row."""


def decide_hysteresis(
    frame: Frame,
    scores: Scores,
    sev_state: npt.NDArray[np.int8],
    *,
    threshold: float,
    release: float,
    make_event: MakeEvent,
) -> Decisions:
    """``EventKind.ANOMALY`` alerts with hysteresis per device, and events on their edges.

    An alert starts when the score reaches ``threshold`` and lasts while it stays at or above
    ``release``; its severity (:func:`severity_of`, at least WARNING) never drops while active.
    An event is emitted when an alert starts or escalates.

    Args:
        frame: The frame just updated (sorted by slot, time).
        scores: Its scores.
        sev_state: Per-device active severity (the detector's state); updated in place.
        threshold: Score at which an alert starts.
        release: Score below which an active alert ends.
        make_event: The event of an edge at a row.
    """
    n = len(frame)
    dec = Decisions.empty(n)
    if n == 0:
        return dec
    late = frame.late_rows()
    for rows in steps(frame.slot):
        slots = frame.slot[rows]
        sc = scores.score[rows]
        prev = sev_state[slots]
        active = (sc >= threshold) | ((prev > 0) & (sc >= release))
        sev = np.maximum(prev, severity_of(sc, threshold))
        sev = np.where(active, np.maximum(sev, int(Severity.WARNING)), 0).astype(np.int8)
        sev_state[slots] = sev
        dec.alert[rows[active]] = str(EventKind.ANOMALY)
        dec.severity[rows] = sev
        for i in np.flatnonzero(sev > prev):
            row = int(rows[i])
            dec.events.append(make_event(row, Severity(int(sev[i])), bool(late[row])))
    return dec
