"""The reports' pictures, drawn with matplotlib: a joint's drawing and a bolt's preload history.

Only matplotlib's object-oriented API is used (a :class:`~matplotlib.figure.Figure` of its own
on an Agg canvas, never pyplot): nothing global is touched, no display is needed, and reports
can be made in several threads at once. Each picture is returned as PNG bytes.
"""

from __future__ import annotations

import io
from datetime import tzinfo
from typing import Final

import numpy as np
import numpy.typing as npt
from matplotlib import dates as mdates
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Circle, Patch

from dashboards.console.source import DRAWING
from dashboards.report.data import STATE_LABELS, BoltData, JointData

__all__ = ["DPI", "LEVEL_COLOURS", "joint_drawing", "preload_plot"]

DPI: Final = 160
"""Resolution of the pictures embedded in the PDF (dots per inch)."""
LEVEL_COLOURS: Final[dict[str, str]] = {
    "l90": "#66bb6a",
    "l80": "#fdd835",
    "l70": "#fb8c00",
    "llow": "#e53935",
    "settling": "#90caf9",
    "unknown": "#e0e0e0",
    "none": "#cccccc",
}
"""The console's colours of the drawing's classes."""
_SEVERITY_COLOURS: Final = {
    "info": "#90caf9",
    "warning": "#fdd835",
    "major": "#fb8c00",
    "critical": "#e53935",
}
_LINE_STYLES: Final = {"settled": "-", "80 %": "--", "70 %": "--", "30 %": ":"}
_LINE_COLOURS: Final = {
    "settled": "#2e7d32",
    "80 %": "#f9a825",
    "70 %": "#ef6c00",
    "30 %": "#b71c1c",
}
_GAP_COLOUR: Final = "#9e9e9e"
_MAX_POINTS: Final = 4000
"""Above this many values a plot draws the mean and the min-max envelope of time bins."""
_DAY_MS: Final = 86_400_000.0
_BOLT_RADIUS: Final = 13.0


def _png(fig: Figure) -> bytes:
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    return buf.getvalue()


def _day(ms: float) -> float:
    """Epoch ms as matplotlib's date number (days since 1970-01-01 UTC, its default epoch)."""
    return ms / _DAY_MS


def joint_drawing(data: JointData) -> bytes:
    """The joint's bolt pattern as the console draws it (the same positions), each bolt
    coloured by its state at the end of the period, silent or faulty sensors hatched, with a
    legend of the colours."""
    fig = Figure(figsize=(6.8, 3.6), layout="constrained")
    ax, key = fig.subplots(1, 2, width_ratios=(1.0, 0.8))
    ax.set_xlim(0, DRAWING)
    ax.set_ylim(DRAWING, 0)  # the console's drawing is SVG: y grows downwards
    ax.set_aspect("equal")
    ax.set_axis_off()
    c = DRAWING / 2
    if data.pitch_circle:
        ax.add_patch(
            Circle((c, c), data.pitch_circle, fill=False, linestyle="--", edgecolor="#999999")
        )
    by_device = {b.device_id: b for b in data.bolts}
    radius = _radius(data)
    for m in data.marks:
        bolt = by_device.get(m.device_id) if m.device_id else None
        if bolt is None:
            ax.add_patch(Circle((m.x, m.y), radius * 0.4, color=LEVEL_COLOURS["none"]))
            continue
        ax.add_patch(
            Circle(
                (m.x, m.y),
                radius,
                facecolor=LEVEL_COLOURS[bolt.state],
                edgecolor="#333333",
                hatch="////" if bolt.hatched else None,
            )
        )
        if radius >= 7:
            ax.text(m.x, m.y, str(m.position), ha="center", va="center", fontsize=7)
    key.set_axis_off()
    handles = [
        Patch(facecolor=LEVEL_COLOURS[k], edgecolor="#333333", label=label)
        for k, label in STATE_LABELS.items()
    ]
    handles.append(
        Patch(facecolor="white", edgecolor="#333333", hatch="////", label="silent or faulty")
    )
    key.legend(handles=handles, loc="center left", fontsize=8, frameon=False)
    return _png(fig)


def _radius(data: JointData) -> float:
    """The bolts' radius: the console's, smaller when positions are closer than that."""
    xy = np.array([(m.x, m.y) for m in data.marks], dtype=np.float64)
    if len(xy) < 2:
        return _BOLT_RADIUS
    d = np.hypot(xy[:, None, 0] - xy[None, :, 0], xy[:, None, 1] - xy[None, :, 1])
    np.fill_diagonal(d, np.inf)
    return float(min(_BOLT_RADIUS, max(1.5, 0.45 * d.min())))


def preload_plot(bolt: BoltData, from_ms: int, to_ms: int, zone: tzinfo) -> bytes:
    """A bolt's preload over the period: its values (or the mean and min-max envelope of time
    bins when there are many), the settled, 80, 70 and 30 % lines, its tightenings and other
    events as vertical lines, its alert episodes as bands coloured by severity and its gaps as
    hatched bands; times in ``zone``."""
    fig = Figure(figsize=(7.2, 2.7), layout="constrained")
    ax = fig.subplots()
    ts, kn = bolt.ts_ms, bolt.preload_kn
    if ts.size > _MAX_POINTS:
        mid, lo, hi, mean = _envelope(ts, kn, from_ms, to_ms, _MAX_POINTS // 4)
        ax.fill_between(mid / _DAY_MS, lo, hi, color="#1565c0", alpha=0.25, linewidth=0)
        ax.plot(
            mid / _DAY_MS, mean, color="#1565c0", linewidth=0.8, label="preload (mean)", zorder=3
        )
    elif ts.size:
        marker = "." if ts.size < 50 else None
        ax.plot(
            ts / _DAY_MS,
            kn,
            color="#1565c0",
            linewidth=0.8,
            marker=marker,
            label="preload",
            zorder=3,
        )
    else:
        ax.text(0.5, 0.5, "no reading in the period", transform=ax.transAxes, ha="center")
    for name, value in bolt.lines.items():
        style, colour = _LINE_STYLES[name], _LINE_COLOURS[name]
        ax.axhline(value, color=colour, linestyle=style, linewidth=0.9, label=name)
    _events(ax, bolt, from_ms, to_ms)
    _bands(ax, bolt, from_ms, to_ms)
    ax.set_xlim(_day(from_ms), _day(to_ms))
    _date_axis(ax, zone)
    ax.set_ylabel("preload (kN)")
    ax.grid(visible=True, linewidth=0.3)
    handles = ax.get_legend_handles_labels()[0]
    if bolt.alerts:
        handles.append(Patch(facecolor=_SEVERITY_COLOURS["major"], alpha=0.3, label="alert"))
    if bolt.gaps:
        handles.append(Patch(facecolor="none", edgecolor=_GAP_COLOUR, hatch="xx", label="gap"))
    if handles:
        ax.legend(
            handles=handles, fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False
        )
    return _png(fig)


def _events(ax: Axes, bolt: BoltData, from_ms: int, to_ms: int) -> None:
    """Tightenings (the registry's and the bolt's) dashed, other events dotted."""
    label: str | None = "tightening"
    for t in bolt.tightenings:
        if from_ms <= t.ts_ms < to_ms:
            ax.axvline(_day(t.ts_ms), color="#4a148c", linestyle="--", linewidth=1.0, label=label)
            label = None
    label = "other event"
    for ms, kind in bolt.events:
        if kind != "tightened":
            ax.axvline(_day(ms), color="#555555", linestyle=":", linewidth=1.0, label=label)
            label = None


def _bands(ax: Axes, bolt: BoltData, from_ms: int, to_ms: int) -> None:
    """Alert episodes coloured by severity, gaps hatched."""
    for row in bolt.alerts:
        a = row.alert
        start, end = max(row.start_ms, from_ms), min(a.cleared_ms or to_ms, to_ms)
        colour = _SEVERITY_COLOURS.get(str(a.severity), _SEVERITY_COLOURS["warning"])
        ax.axvspan(_day(start), _day(end), color=colour, alpha=0.2, linewidth=0)
    for g in bolt.gaps:
        ax.axvspan(
            _day(g.start_ms),
            _day(g.end_ms),
            facecolor="none",
            edgecolor=_GAP_COLOUR,
            hatch="xx",
            linewidth=0,
        )


def _date_axis(ax: Axes, zone: tzinfo) -> None:
    """Dates and times in ``zone`` on the x axis, as concise as the span allows."""
    # matplotlib.dates ships no type information (matplotlib's other modules do).
    locator = mdates.AutoDateLocator(tz=zone)  # type: ignore[no-untyped-call]
    ax.xaxis.set_major_locator(locator)
    formatter = mdates.ConciseDateFormatter(locator, tz=zone)  # type: ignore[no-untyped-call]
    ax.xaxis.set_major_formatter(formatter)


def _envelope(
    ts: npt.NDArray[np.int64], values: npt.NDArray[np.float64], from_ms: int, to_ms: int, bins: int
) -> tuple[
    npt.NDArray[np.int64], npt.NDArray[np.float64], npt.NDArray[np.float64], npt.NDArray[np.float64]
]:
    """Middle time, min, max and mean of each non-empty time bin of ``[from_ms, to_ms)``."""
    edges = np.linspace(from_ms, to_ms, bins + 1)
    which = np.clip(np.searchsorted(edges, ts, side="right") - 1, 0, bins - 1)
    starts = np.flatnonzero(np.r_[True, which[1:] != which[:-1]])
    counts = np.diff(np.r_[starts, ts.size])
    lo = np.minimum.reduceat(values, starts)
    hi = np.maximum.reduceat(values, starts)
    mean = np.add.reduceat(values, starts) / counts
    b = which[starts]
    mid = ((edges[b] + edges[b + 1]) / 2).astype(np.int64)
    return mid, lo, hi, mean
