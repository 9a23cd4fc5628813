"""Typed errors of the telemetry contract.

Every error names the field (or key) it is about and says why, so that a dead-letter record or a
config message tells a device maker or an operator exactly what to fix.
"""

from __future__ import annotations


class SensorsError(Exception):
    """Base class of every error raised by :mod:`sensors`."""


class PayloadError(SensorsError):
    """A message (topic or payload) does not follow the telemetry contract.

    Attributes:
        field: Where the problem is, as a path: ``"topic"``, ``"payload"``, ``"$.preload_kn"``,
            ``"$.readings[3].ts"``.
        reason: What is wrong, in words a device maker can act on.
    """

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason

    def __reduce__(self) -> tuple[type[PayloadError], tuple[str, str]]:
        return (type(self), (self.field, self.reason))


class TopicError(PayloadError):
    """The MQTT topic does not follow ``boltwatch/v1/{site}/{kind}/{device_id}/{channel}``."""

    def __init__(self, reason: str) -> None:
        super().__init__("topic", reason)

    def __reduce__(self) -> tuple[type[TopicError], tuple[str]]:  # type: ignore[override]
        return (type(self), (self.reason,))


class RegistryError(SensorsError):
    """The device registry (sites, joints, bolts, machines) is invalid.

    Attributes:
        key: The offending key as a path into the TOML file, e.g. ``"joints[2].bolts[0].position"``.
        reason: What is wrong.
    """

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"{key}: {reason}")
        self.key = key
        self.reason = reason

    def __reduce__(self) -> tuple[type[RegistryError], tuple[str, str]]:
        return (type(self), (self.key, self.reason))
