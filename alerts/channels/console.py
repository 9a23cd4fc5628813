"""The ``console`` channel: one line per alert on the terminal (``boltwatch demo`` uses it).

``12:03:07 CRITICAL loosening wtg03-f1-b004 (windfarm-north): preload 61 % of nominal``

The time is the alert's latest event (its clearing time once cleared), local time unless
``utc = true``; the severity is coloured (red for critical, ...); a cleared alert says
``cleared`` after the device, an acknowledged one ``ack by <who>``.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, ClassVar, Final, Self

from rich.console import Console
from rich.text import Text

from alerts.channels._options import parse_options
from alerts.errors import RuleError
from alerts.model import ChannelError, Notification

__all__ = ["ConsoleChannel", "ConsoleOptions"]

SEVERITY_STYLES: Final[dict[str, str]] = {
    "critical": "bold white on red",
    "major": "bold red",
    "warning": "yellow",
    "info": "cyan",
}
"""Rich style of each severity's name."""


@dataclass(frozen=True, slots=True)
class ConsoleOptions:
    """Options of a ``console`` receiver.

    Attributes:
        stream: ``stdout`` or ``stderr``.
        utc: Print times in UTC instead of local time.
    """

    stream: str = "stdout"
    utc: bool = False


class ConsoleChannel:
    """Print each alert of a notification as one line.

    Args:
        options: Validated options.
        console: Where to print; default a rich Console on ``options.stream``.
    """

    kind: ClassVar[str] = "console"

    def __init__(self, options: ConsoleOptions, console: Console | None = None) -> None:
        self.options = options
        self.console = console or Console(
            file=sys.stderr if options.stream == "stderr" else sys.stdout
        )

    @classmethod
    def from_options(cls, options: Mapping[str, Any], key: str) -> Self:
        """Validate a receiver's options and build the channel.

        Raises:
            RuleError: A bad option, named ``{key}.{option}``.
        """
        opts = parse_options(ConsoleOptions, options, key)
        if opts.stream not in ("stdout", "stderr"):
            raise RuleError(f"{key}.stream", "must be stdout or stderr")
        return cls(opts)

    def lines(self, notification: Notification) -> list[Text]:
        """The lines to print (styled text), one per alert."""
        out = []
        for a in notification.alerts:
            cleared = a.get("state") == "cleared"
            ms = int(
                (a.get("cleared_ms") if cleared else a.get("last_event_ms"))
                or notification.created_ms
            )
            when = datetime.fromtimestamp(ms / 1000.0, UTC)
            if not self.options.utc:
                when = when.astimezone()
            severity = str(a.get("severity", "info"))
            line = Text(when.strftime("%H:%M:%S") + " ", style="dim")
            line.append(f"{severity.upper():<8}", style=SEVERITY_STYLES.get(severity, ""))
            line.append(f" {a.get('kind', '')} ", style="bold")
            line.append(str(a.get("device_id", "")))
            if a.get("site"):
                line.append(f" ({a['site']})")
            if cleared:
                line.append(" cleared", style="green")
            if a.get("acknowledged"):
                line.append(f" ack by {a.get('ack_by', '')}", style="dim")
            if a.get("explanation"):
                line.append(f": {a['explanation']}")
            out.append(line)
        return out

    async def send(self, notification: Notification) -> None:
        """Print the lines (no wrapping: one alert, one line).

        Raises:
            ChannelError: The stream is closed (not retryable).
        """
        try:
            for line in self.lines(notification):
                self.console.print(line, soft_wrap=True, highlight=False)
        except OSError as exc:  # a closed pipe or terminal
            raise ChannelError(f"console: cannot write ({exc})", retryable=False) from exc

    async def aclose(self) -> None:
        """Nothing to release."""
