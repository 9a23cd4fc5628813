"""How the reports write times, durations and numbers."""

from __future__ import annotations

import math
from datetime import UTC, datetime, tzinfo

__all__ = ["duration", "kn", "num", "pct", "when", "zone_name"]


def when(ms: int | None, zone: tzinfo, *, seconds: bool = False) -> str:
    """Epoch ms as a local date and time in ``zone`` ("" for None or 0)."""
    if not ms:
        return ""
    t = datetime.fromtimestamp(ms / 1000, zone)
    return t.strftime("%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M")


def zone_name(zone: tzinfo, at_ms: int) -> str:
    """The zone's name with its UTC offset at a time: ``Europe/Paris (UTC+01:00)``."""
    t = datetime.fromtimestamp(at_ms / 1000, UTC).astimezone(zone)
    offset = t.strftime("%z")
    return f"{zone} (UTC{offset[:3]}:{offset[3:]})"


def duration(ms: int) -> str:
    """A duration in days, hours and minutes, to the minute under a day and to the hour above:
    ``2 d 3 h``, ``3 d``, ``5 h 20 min``, ``6 h``, ``45 min``."""
    minutes = ms // 60_000
    days, rest = divmod(minutes, 1440)
    hours, mins = divmod(rest, 60)
    if days:
        return f"{days} d {hours} h" if hours else f"{days} d"
    if hours:
        return f"{hours} h {mins} min" if mins else f"{hours} h"
    return f"{mins} min"


def num(value: float | None, digits: int = 1) -> str:
    """A number with ``digits`` decimals ("" for None or NaN)."""
    if value is None or not math.isfinite(value):
        return ""
    return f"{value:,.{digits}f}"


def kn(value: float | None) -> str:
    """A force in kN, one decimal ("" for None or NaN)."""
    return num(value, 1)


def pct(value: float | None) -> str:
    """A fraction as a whole percentage ("" for None or NaN)."""
    if value is None or not math.isfinite(value):
        return ""
    return f"{100 * value:.0f} %"
