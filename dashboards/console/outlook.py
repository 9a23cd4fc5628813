"""Where a bolt's preload is heading, as the console draws and writes it.

The detector keeps, per bolt, a temperature-compensated level, the joint's temperature
coefficient and a Theil-Sen slope of the compensated hourly means since the settled baseline
(:class:`detection.preload.Outlook`). From it the console draws the compensated preload beside
the raw one (``preload - tempco · (temp - T_ref)``), the forecast line from the newest level to
the alarm line (70 % of the settled baseline) with its ETA, and writes the trend (% of the
settled baseline per day) in a joint's table.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

from detection.preload import Outlook

__all__ = ["Forecast", "compensate", "eta_text", "forecast", "trend_text"]

_HOUR_S: Final = 3600.0
_MIN_AHEAD_S: Final = 3600.0
_MAX_AHEAD_S: Final = 30 * 86_400.0


@dataclass(frozen=True, slots=True)
class Forecast:
    """The forecast line on a bolt's chart.

    Attributes:
        t_s: Its start (the newest level) and its end, epoch s.
        kn: The compensated preload at those times, kN.
        eta_s: When it reaches the alarm line, epoch s; None when the preload is not falling.
        line_kn: The alarm line, kN.
        trend_pct_per_day: The slope as % of the settled baseline per day.
        text: What the page writes under the chart.
    """

    t_s: tuple[float, float]
    kn: tuple[float, float]
    eta_s: float | None
    line_kn: float
    trend_pct_per_day: float
    text: str


def compensate(
    preload: list[float | None], temp: list[float | None], outlook: Outlook
) -> list[float | None]:
    """The preload at the joint's reference temperature, point by point (None where either is
    missing, or the detector has no reference temperature yet)."""
    b, t_ref = outlook.tempco_kn_per_c, outlook.t_ref_c
    if not (math.isfinite(b) and math.isfinite(t_ref)):
        return [None] * len(preload)
    return [
        None
        if p is None or t is None or not math.isfinite(p) or not math.isfinite(t)
        else p - b * (t - t_ref)
        for p, t in zip(preload, temp, strict=True)
    ]


def forecast(outlook: Outlook, last_s: float | None, span_s: float) -> Forecast | None:
    """The forecast line of a chart ``span_s`` wide whose newest point is at ``last_s``.

    It starts at the detector's level (moved along the slope to ``last_s`` when the chart's data
    are newer than what the detector has evaluated) and runs to the alarm line, or a third of
    the span ahead (at least an hour, at most 30 days) when the line is further. It has an ETA
    when the detector gives one (a steady bolt has none). None when the bolt is not armed or has
    too few hours since its baseline for a slope.
    """
    o = outlook
    if not (o.armed and math.isfinite(o.slope_kn_per_h) and math.isfinite(o.level_kn)):
        return None
    per_s = o.slope_kn_per_h / _HOUR_S
    t0 = max(o.t_last_s, last_s or o.t_last_s)
    v0 = o.level_kn + per_s * (t0 - o.t_last_s)
    ahead = min(max(span_s / 3.0, _MIN_AHEAD_S), _MAX_AHEAD_S)
    eta: float | None = None
    if v0 <= o.line_kn:
        eta = t0
    elif math.isfinite(o.eta_s) and per_s < 0:
        eta = t0 + (v0 - o.line_kn) / -per_s
    t1 = t0 + ahead if eta is None else min(max(eta, t0 + _MIN_AHEAD_S), t0 + ahead)
    v1 = v0 + per_s * (t1 - t0)
    return Forecast((t0, t1), (v0, v1), eta, o.line_kn, o.trend_pct_per_day, eta_text(o, t0, eta))


def trend_text(outlook: Outlook | None) -> str:
    """The trend as a joint's table writes it: ``-1.3 %/day`` ("" when unknown)."""
    if outlook is None or not outlook.armed or not math.isfinite(outlook.trend_pct_per_day):
        return ""
    value = outlook.trend_pct_per_day
    return f"{value:+.1f} %/day" if abs(value) >= 0.05 else "0.0 %/day"


def eta_text(outlook: Outlook | None, now_s: float, eta_s: float | None = None) -> str:
    """When the preload reaches the alarm line, in words ("" when unknown)."""
    o = outlook
    if o is None or not o.armed or not math.isfinite(o.slope_kn_per_h):
        return ""
    line_pct = f"{100 * o.line_kn / o.baseline_kn:.0f} %"
    if eta_s is None:
        eta_s = o.eta_s if math.isfinite(o.eta_s) else None
    if eta_s is None:
        return f"steady: no crossing of the {line_pct} line ahead"
    left = eta_s - now_s
    if left <= 0:
        return f"below the {line_pct} line"
    when = datetime.fromtimestamp(eta_s, UTC).strftime("%Y-%m-%d %H:%M UTC")
    days = left / 86_400.0
    size = f"{days:.1f} days" if days >= 1 else f"{left / _HOUR_S:.1f} h"
    return f"reaches the {line_pct} line in {size} ({when})"
