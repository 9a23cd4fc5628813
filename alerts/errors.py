"""Typed errors of the alert package."""

from __future__ import annotations

__all__ = ["AlertsError", "RuleError"]


class AlertsError(Exception):
    """Base of the alert package's errors."""


class RuleError(AlertsError, ValueError):
    """Bad alert rules or channel configuration.

    Attributes:
        key: The offending key, as a dotted path (``receivers[2].url``).
        reason: What is wrong with it.
    """

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"{key}: {reason}")
        self.key = key
        self.reason = reason
