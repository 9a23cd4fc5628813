"""Alert rules, lifecycle store, pipeline stages, notification channels, the outbox, the HTTP API.

The package face is the alert model and the package's errors. Modules: ``rules`` (the rules
file), ``pipeline`` (dedup, group, inhibit, silence, escalate, notify), ``store`` (SQLite
lifecycle and outbox), ``channels`` (webhook, e-mail, Alertmanager, Apprise, ...), ``api``
(HTTP API and OpenAPI description), ``ratelimit``. Depends on sensors and on detection's
vocabulary (:mod:`detection.base`) only (docs/architecture.md).
"""

from alerts.errors import AlertsError, ListenError, RuleError
from alerts.model import (
    Alert,
    AlertState,
    Channel,
    ChannelError,
    Notification,
    Silence,
    Transition,
)
from detection.events import Severity

__all__ = [
    "Alert",
    "AlertState",
    "AlertsError",
    "Channel",
    "ChannelError",
    "ListenError",
    "Notification",
    "RuleError",
    "Severity",
    "Silence",
    "Transition",
]
