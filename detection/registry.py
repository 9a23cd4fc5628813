"""The detectors boltwatch knows, in one place.

A new detector is one module in ``detection/`` and one line here. ``boltwatch replay --kind`` and
the engine look detectors up by name; every detector listed passes the shared conformance test
(``tests/unit/test_detector_conformance.py``).
"""

from __future__ import annotations

from typing import Any, Final

from detection.base import DetectionError, Detector

__all__ = [
    "DETECTORS",
    "default_detectors",
    "detector_class",
    "make_detector",
    "register",
    "warm_up_all",
]

DETECTORS: Final[dict[str, type[Detector[Any]]]] = {}
"""Detector classes by name; filled by :func:`_register` below."""


_builtin_loaded = False


def _register() -> None:
    global _builtin_loaded  # noqa: PLW0603 - the registry is filled once, on first use
    if _builtin_loaded:
        return
    _builtin_loaded = True
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
        register(cls)


def register(cls: type[Detector[Any]]) -> type[Detector[Any]]:
    """Add a detector class under its :attr:`~detection.base.Detector.name` (usable as a class
    decorator). Registering a name again replaces the class.

    Raises:
        DetectionError: Another detector already watches one of its kinds by default.
    """
    _register()
    if cls.watches_by_default:
        for other in DETECTORS.values():
            taken = set(other.kinds) & set(cls.kinds)
            if other.watches_by_default and other.name != cls.name and taken:
                raise DetectionError(
                    "kinds",
                    f"{cls.name!r} and {other.name!r} both watch {sorted(taken)} by default",
                )
    DETECTORS[cls.name] = cls
    return cls


def default_detectors() -> dict[str, str]:
    """Device kind -> name of the detector the engine runs on it: each registered detector that
    watches by default, for each of its kinds (kinds without one, gateways, get none)."""
    _register()
    return {
        kind: cls.name for cls in DETECTORS.values() if cls.watches_by_default for kind in cls.kinds
    }


def detector_class(name: str) -> type[Detector[Any]]:
    """The detector class registered under ``name``.

    Raises:
        DetectionError: No such detector (the message lists the known ones).
    """
    _register()
    try:
        return DETECTORS[name]
    except KeyError:
        known = ", ".join(sorted(DETECTORS))
        raise DetectionError("kind", f"no detector {name!r}; known: {known}") from None


def make_detector(name: str, params: object = None) -> Detector[Any]:
    """A new detector by registry name, with default or given hyper-parameters."""
    return detector_class(name)(params)


def warm_up_all() -> list[str]:
    """Every registered detector's compiled kernels into their cache (``make kernels``): the
    names of the detectors warmed up."""
    _register()
    for cls in DETECTORS.values():
        cls().warm_up()
    return sorted(DETECTORS)


if __name__ == "__main__":
    import time

    started = time.perf_counter()
    names = warm_up_all()
    print(
        f"detection kernels ready ({len(names)} detectors) in {time.perf_counter() - started:.1f} s"
    )
