"""Streaming detectors and the engine that holds per-device state as arrays.

The package face is the vocabulary every detector and consumer shares (:mod:`detection.base`).
Modules: ``engine`` (per-device state, batches in, events out), ``registry`` (every detector,
by name), the detectors (``preload``, ``sensor_faults``, ``joints``, ``printer``, ``laser``,
``cnc``, ``motors``, ``univariate``, ``multivariate``), ``replay`` (offline, causal scoring), and
the evaluation helpers ``machine_eval`` and ``skab``. Nothing here imports the simulator or the
composition root (docs/architecture.md).
"""

from detection.base import (
    Decisions,
    DetectionError,
    DetectionEvent,
    Detector,
    EventKind,
    Frame,
    Scores,
    Severity,
)

__all__ = [
    "Decisions",
    "DetectionError",
    "DetectionEvent",
    "Detector",
    "EventKind",
    "Frame",
    "Scores",
    "Severity",
]
