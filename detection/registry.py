"""The detectors boltwatch knows, in one place.

A new detector is one module in ``detection/`` and one line here. ``boltwatch replay --kind`` and
the engine look detectors up by name; every detector listed passes the shared conformance test
(``tests/unit/test_detector_conformance.py``).
"""

from __future__ import annotations

from typing import Any, Final

from detection.base import DetectionError, Detector

__all__ = ["DETECTORS", "detector_class", "make_detector"]

DETECTORS: Final[dict[str, type[Detector[Any]]]] = {}
"""Detector classes by name; filled by :func:`_register` below."""


def _register() -> None:
    # Imported here, not at module level, so a detector module may import this registry's
    # neighbours without a cycle.
    from detection import (
        cnc,
        laser,
        motors,
        multivariate,
        preload,
        printer,
        sensor_faults,
        univariate,
    )

    for cls in (
        preload.BoltPreloadDetector,
        sensor_faults.SensorFaultDetector,
        univariate.UnivariateDetector,
        multivariate.MultivariateDetector,
        printer.PrinterDetector,
        laser.LaserDetector,
        cnc.CncDetector,
        motors.VinylCutterDetector,
        motors.EmbroideryDetector,
    ):
        DETECTORS[cls.name] = cls


def detector_class(name: str) -> type[Detector[Any]]:
    """The detector class registered under ``name``.

    Raises:
        DetectionError: No such detector (the message lists the known ones).
    """
    if not DETECTORS:
        _register()
    try:
        return DETECTORS[name]
    except KeyError:
        known = ", ".join(sorted(DETECTORS))
        raise DetectionError("kind", f"no detector {name!r}; known: {known}") from None


def make_detector(name: str, params: object = None) -> Detector[Any]:
    """A new detector by registry name, with default or given hyper-parameters."""
    return detector_class(name)(params)
