"""Streaming detectors and the engine that holds per-device state as arrays.

The package face is the vocabulary every detector and consumer shares (:mod:`detection.base`,
:mod:`detection.events`). Modules: ``events`` (what alerts receive: events, severities, the
batch outcome), ``engine`` (per-device state, batches in, outcomes out), ``registry`` (every
detector, by name), the detectors (``preload``, ``sensor_faults``, ``joints``, ``printer``,
``laser``, ``cnc``, ``motors``, ``univariate``, ``multivariate``) and ``replay`` (offline,
causal scoring). Evaluation (scenario scoring, machine series, SKAB, windowed scores) lives in
:mod:`boltwatch.evaluation`, which may use the simulator; nothing here imports the simulator or
the composition root (docs/architecture.md).
"""

from detection.base import Decisions, DetectionError, Detector, Frame, Scores
from detection.events import BatchOutcome, DetectionEvent, EventKind, Severity

__all__ = [
    "BatchOutcome",
    "Decisions",
    "DetectionError",
    "DetectionEvent",
    "Detector",
    "EventKind",
    "Frame",
    "Scores",
    "Severity",
]
