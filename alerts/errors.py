"""Typed errors of the alert package."""

from __future__ import annotations

__all__ = ["AlertsError", "ListenError", "RuleError"]


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


class ListenError(AlertsError, OSError):
    """The API cannot listen on its address (port in use, address not local).

    An :class:`OSError` (``errno`` kept) that also names the setting to change, so the command
    line reports it as one line and exit status 2 instead of a traceback.

    Attributes:
        key: The setting, ``alerts.api_listen``.
        reason: ``cannot listen on HOST:PORT: <why>``.
    """

    def __init__(self, key: str, code: int | None, reason: str) -> None:
        super().__init__(code, f"{key}: {reason}")
        self.key = key
        self.reason = reason

    def __str__(self) -> str:
        return f"{self.key}: {self.reason}"

    def __reduce__(self) -> tuple[type[ListenError], tuple[str, int | None, str]]:
        return (type(self), (self.key, self.errno, self.reason))
