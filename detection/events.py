"""The vocabulary detection hands to alerts: what was found, how bad, about which device.

Alerts depend on this module alone (docs/architecture.md), not on the detectors or the engine.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import IntEnum, StrEnum

__all__ = ["BatchOutcome", "DetectionEvent", "EventKind", "Severity"]


class Severity(IntEnum):
    """How bad an event or an alert is; ordered, so severities compare and escalate. One
    vocabulary from detection to the people paged: ``info``, ``warning``, ``major``,
    ``critical``."""

    INFO = 0
    WARNING = 1
    MAJOR = 2
    CRITICAL = 3

    def __str__(self) -> str:
        return self.name.lower()

    @classmethod
    def parse(cls, text: str) -> Severity:
        """From its lower-case name (``info``, ``warning``, ``major``, ``critical``).

        Raises:
            ValueError: Not a severity (the message lists them).
        """
        try:
            return cls[text.upper()]
        except KeyError:
            names = ", ".join(s.name.lower() for s in cls)
            raise ValueError(f"{text!r} is not a severity ({names})") from None


class EventKind(StrEnum):
    """What a detection event is about (the ``alert`` column of ``boltwatch replay``)."""

    LOOSENING = "loosening"
    PRELOAD_LOW = "preload_low"
    JOINT = "joint"
    INSTALLATION = "installation"
    SENSOR_FAULT = "sensor_fault"
    NO_DATA = "no_data"
    THERMAL_RUNAWAY = "thermal_runaway"
    HEATER_FAILURE = "heater_failure"
    COOLING_FAILURE = "cooling_failure"
    VIBRATION = "vibration"
    CHATTER = "chatter"
    BEARING = "bearing"
    TOOL_WEAR = "tool_wear"
    MOTOR = "motor"
    ANOMALY = "anomaly"
    INTERNAL_ERROR = "internal_error"
    """The device's detector raised (a bug): the device is no longer evaluated (faulted)."""
    MAINTENANCE_OVERDUE = "maintenance_overdue"
    """A bolt's task in a retightening campaign is past its due date (raised by the campaign
    tracker of alerts, not by a detector; it clears when the task is done)."""


@dataclass(frozen=True, slots=True)
class DetectionEvent:
    """One finding, as handed to alerts.

    Attributes:
        device_id: The device.
        kind: What was found.
        severity: How bad.
        ts_ms: Time of the reading that triggered it (epoch ms UTC).
        score: The anomaly score at that reading, in [0, 1].
        explanation: One sentence with numbers, for people ("preload 31.2 kN = 74 % of
            settled 42.1 kN, falling 1.8 %/day, 70 % expected in 38 h").
        detector: Name of the detector that found it.
        late: The triggering reading arrived late (backfill after an outage, or older than the
            device's newest evaluated reading): evaluated, but not news.
        site: The device's site, when known.
        data: The numbers behind the explanation (units in the keys).
        device_kind: The device's kind (``cbolt``, ``gateway``...), set by the engine.
    """

    device_id: str
    kind: EventKind
    severity: Severity
    ts_ms: int
    score: float
    explanation: str
    detector: str
    late: bool = False
    site: str = ""
    data: Mapping[str, float] = field(default_factory=dict)
    device_kind: str = ""


@dataclass(frozen=True, slots=True)
class BatchOutcome:
    """What detection made of one committed batch: the one hand-off from detection to alerts
    (:meth:`detection.engine.Engine.process_batch` returns it, the alert pipeline takes it).

    Attributes:
        events: Findings, in the order the engine raised them.
        active: Per device that reported readings, the alert kinds its detector still shows
            (empty when none): what lets an alert clear once its condition is gone.
        seen: Devices that reported readings (their ``no_data`` alerts clear).
    """

    events: list[DetectionEvent] = field(default_factory=list)
    active: dict[str, list[str]] = field(default_factory=dict)
    seen: frozenset[str] = frozenset()
