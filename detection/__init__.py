"""Streaming detectors and the engine that holds per-device state as arrays.

Not built yet: see the detection issue.
"""

__all__: list[str] = []
