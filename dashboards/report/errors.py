"""The one error of the reports: a request that cannot make a report, naming what is wrong."""

from __future__ import annotations

__all__ = ["ReportError"]


class ReportError(ValueError):
    """A report cannot be made: an unknown joint, site or structure, or an empty period.

    Attributes:
        key: What is wrong, by the name the caller used: ``joint``, ``site``, ``structure``,
            ``from`` or ``to``.
        reason: Why, in words the user can act on.
    """

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"{key}: {reason}")
        self.key = key
        self.reason = reason

    def __reduce__(self) -> tuple[type[ReportError], tuple[str, str]]:
        return (type(self), (self.key, self.reason))
