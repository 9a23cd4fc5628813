"""What the alert pipeline stores and sends: alerts, silences, notifications, channels.

An **alert** is one per (device, kind) — ``loosening`` of bolt ``b-07`` — with a lifecycle
(pending → active → cleared) and, independently, an acknowledgement. A **notification** is one
message to one receiver about one or more alerts of a group (a joint, a site); it is recorded in
the outbox before it is sent, carries a stable id so receivers can deduplicate, and is retried
until a channel accepts it. A **channel** (webhook, e-mail, MQTT, Apprise, Alertmanager, console)
turns a notification into a message and reports whether a failure is worth retrying.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, ClassVar, Protocol

from detection.events import Severity

__all__ = [
    "Alert",
    "AlertState",
    "Channel",
    "ChannelError",
    "Notification",
    "Silence",
    "Transition",
]


class Transition(StrEnum):
    """What happened to an alert: one line of its history (``boltwatch alerts show``, the API)."""

    EVENT = "event"
    """A detection event raised or refreshed it."""
    ACTIVATED = "activated"
    FLAPPING = "flapping"
    """Activated too often within the flap window: held active, not paged again."""
    CLEARED = "cleared"
    CLEARED_PENDING = "cleared while pending"
    ACK = "ack"
    UNACK = "unack"
    COMMENT = "comment"


class AlertState(StrEnum):
    """Where an alert is in its lifecycle."""

    PENDING = "pending"
    ACTIVE = "active"
    CLEARED = "cleared"


@dataclass(slots=True)
class Alert:
    """One alert: a (device, kind) pair and its history.

    Times are epoch milliseconds (0 = never).

    Attributes:
        id: Stable id (the store's row id).
        device_id: The device.
        kind: Event kind (``loosening``, ``no_data``, ...).
        site: The device's site ("" when unknown).
        group: Group key for notifications (joint or site).
        severity: Current severity.
        state: Lifecycle state.
        first_ms: First event.
        last_event_ms: Latest event that kept it alive.
        active_ms: When it became active (0 while pending).
        cleared_ms: When it cleared (0 while not cleared).
        explanation: The latest event's explanation.
        data: The latest event's numbers.
        acknowledged: Acknowledged by someone.
        ack_by: Who acknowledged.
        ack_ms: When.
        comments: (author, epoch ms, text), oldest first.
        flapping: It toggled too often: held active, notifications paused.
        transitions: Recent activations (epoch ms), for flapping detection.
        escalation: Index of the receiver in the route's escalation chain.
        notified_ms: Last notification recorded for it.
        notified_severity: Severity of that notification.
        late: The latest event came from late (backfilled) readings.
    """

    id: int
    device_id: str
    kind: str
    site: str = ""
    group: str = ""
    severity: Severity = Severity.WARNING
    state: AlertState = AlertState.PENDING
    first_ms: int = 0
    last_event_ms: int = 0
    active_ms: int = 0
    cleared_ms: int = 0
    explanation: str = ""
    data: dict[str, float] = field(default_factory=dict)
    acknowledged: bool = False
    ack_by: str = ""
    ack_ms: int = 0
    comments: list[tuple[str, int, str]] = field(default_factory=list)
    flapping: bool = False
    transitions: list[int] = field(default_factory=list)
    escalation: int = 0
    notified_ms: int = 0
    notified_severity: int = -1
    late: bool = False

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form (the HTTP API's and the channels' view of an alert)."""
        return {
            "id": self.id,
            "device_id": self.device_id,
            "kind": self.kind,
            "site": self.site,
            "group": self.group,
            "severity": str(self.severity),
            "state": self.state.value,
            "first_ms": self.first_ms,
            "last_event_ms": self.last_event_ms,
            "active_ms": self.active_ms,
            "cleared_ms": self.cleared_ms,
            "explanation": self.explanation,
            "data": self.data,
            "acknowledged": self.acknowledged,
            "ack_by": self.ack_by,
            "ack_ms": self.ack_ms,
            "comments": [{"author": a, "ms": t, "text": c} for a, t, c in self.comments],
            "flapping": self.flapping,
            "late": self.late,
        }


@dataclass(slots=True)
class Silence:
    """A silence or maintenance window: matching alerts are not notified while it lasts.

    Empty matchers match everything of that dimension; at least one must be set.

    Attributes:
        id: Stable id.
        starts_ms: Start (epoch ms).
        ends_ms: End (epoch ms).
        author: Who set it.
        reason: Why (maintenance, known issue...).
        device_id: Only this device.
        site: Only this site.
        kind: Only this alert kind.
    """

    id: int
    starts_ms: int
    ends_ms: int
    author: str
    reason: str
    device_id: str = ""
    site: str = ""
    kind: str = ""

    def matches(self, alert: Alert, now_ms: int) -> bool:
        """Whether it silences this alert now."""
        return (
            self.starts_ms <= now_ms < self.ends_ms
            and (not self.device_id or self.device_id == alert.device_id)
            and (not self.site or self.site == alert.site)
            and (not self.kind or self.kind == alert.kind)
        )

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "id": self.id,
            "starts_ms": self.starts_ms,
            "ends_ms": self.ends_ms,
            "author": self.author,
            "reason": self.reason,
            "device_id": self.device_id,
            "site": self.site,
            "kind": self.kind,
        }


@dataclass(slots=True)
class Notification:
    """One message to one receiver, as recorded in the outbox.

    Attributes:
        id: Stable id (the same on every retry and after a restart): receivers dedupe on it.
        receiver: Receiver name (from the rules).
        status: ``firing`` or ``resolved``.
        group: The group key (joint or site) the alerts share.
        title: One line for people ("[major] loosening on wtg03-f1-b004 (windfarm-north)").
        alerts: The alerts, as :meth:`Alert.as_dict`.
        created_ms: When it was recorded.
        attempts: Delivery attempts so far.
    """

    id: str
    receiver: str
    status: str
    group: str
    title: str
    alerts: list[dict[str, Any]]
    created_ms: int
    attempts: int = 0

    def as_dict(self) -> dict[str, Any]:
        """JSON body of webhooks and MQTT messages."""
        return {
            "id": self.id,
            "receiver": self.receiver,
            "status": self.status,
            "group": self.group,
            "title": self.title,
            "created_ms": self.created_ms,
            "alerts": self.alerts,
        }

    def text(self) -> str:
        """Plain-text body (e-mail, chat): the title, then one line per alert."""
        lines = [self.title, ""]
        for a in self.alerts:
            ack = f", acknowledged by {a['ack_by']}" if a.get("acknowledged") else ""
            lines.append(
                f"- [{a['severity']}] {a['kind']} on {a['device_id']} ({a['site']}), "
                f"{a['state']}{ack}: {a['explanation']}"
            )
        lines += ["", f"notification id {self.id}"]
        return "\n".join(lines)


class ChannelError(Exception):
    """A channel could not deliver.

    Attributes:
        retryable: Whether trying again later may succeed (timeouts, 5xx, 429) or not (4xx, a
            bad address): non-retryable notifications are marked failed, not retried.
    """

    def __init__(self, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


class Channel(Protocol):
    """A notification channel: one small module per kind (see ``alerts/channels/``)."""

    kind: ClassVar[str]
    """Registry name (``webhook``, ``email``, ``mqtt``, ``apprise``, ``alertmanager``,
    ``console``)."""

    async def send(self, notification: Notification) -> None:
        """Deliver it, or raise :class:`ChannelError`."""
        ...

    async def aclose(self) -> None:
        """Release connections."""
        ...
