"""The fleet report of a site or a structure over a period, as a PDF.

It has the share of instrumented bolts that reported in the period, how many bolts end it below
each line (80, 70 and 30 % of their settled baseline), the campaigns done and overdue, the list
of joints with their worst state and each joint's drawing, then the installation records,
alerts, campaigns and gaps of all their bolts. Each bolt's preload history is in its joint's
report (:mod:`dashboards.report.joint`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Final

from dashboards.console.source import ConsoleSource
from dashboards.report.campaigns import CampaignSummary, campaigns_of, is_done, is_overdue
from dashboards.report.data import (
    STATE_LABELS,
    FleetData,
    JointData,
    Scope,
    below,
    gather_fleet,
)
from dashboards.report.fmt import pct, when, zone_name
from dashboards.report.pdf import Document
from dashboards.report.sections import (
    alerts_section,
    campaigns_section,
    gaps_section,
    tightenings_section,
)

__all__ = ["MAX_DRAWINGS", "fleet_report", "render_fleet", "worst_state"]

MAX_DRAWINGS: Final = 40
"""Most joint drawings a fleet report draws (the joints' table lists them all)."""
_WORST: Final = ("l90", "none", "settling", "unknown", "l80", "l70", "llow")
"""The drawing's classes from best to worst."""


def fleet_report(
    source: ConsoleSource,
    scope: Scope,
    from_ms: int,
    to_ms: int,
    campaigns: Sequence[CampaignSummary] = (),
) -> bytes:
    """The fleet report of a site or structure for ``[from_ms, to_ms)`` (epoch ms), as PDF
    bytes.

    Args:
        source: The console's door to the stores.
        scope: The site or structure.
        from_ms: Start of the period (included).
        to_ms: End of the period (excluded).
        campaigns: The retightening campaigns known; those with a task on one of the scope's
            bolts, open at some time of the period, are reported.

    Raises:
        ReportError: No such site or structure (key ``site`` or ``structure``), or an empty or
            inverted period (``from``).
        StoreError: The store folder cannot be opened.
    """
    data = gather_fleet(source, scope, from_ms, to_ms)
    devices = {b.device_id for b in data.bolts}
    return render_fleet(data, campaigns_of(campaigns, devices, from_ms, to_ms))


def worst_state(joint: JointData) -> str:
    """The worst drawing class among the joint's bolts (``none``: no instrumented bolt)."""
    states = [b.state for b in joint.bolts] or ["none"]
    return max(states, key=_WORST.index)


def render_fleet(data: FleetData, campaigns: Sequence[CampaignSummary]) -> bytes:
    """The PDF of gathered fleet data and its campaigns."""
    zone, bolts = data.zone, data.bolts
    what = f"{data.scope.level} {data.scope.id}"
    from dashboards.report.plots import joint_drawing  # matplotlib: loaded for a report only

    doc = Document(f"boltwatch fleet report · {what}")
    doc.heading(f"Fleet report: {what}")
    positions = sum(j.joint.bolt_count for j in data.joints)
    reporting = sum(1 for b in bolts if b.ts_ms.size)
    settled = sum(1 for b in bolts if math.isfinite(b.ratio))
    alerts = [r for b in bolts for r in b.alerts]
    overdue = [c for c in campaigns if is_overdue(c, data.to_ms)]
    doc.facts(
        [
            (data.scope.level, f"{data.name} ({data.scope.id})"),
            *(
                [("site", f"{data.site.name} ({data.site.id})")]
                if data.scope.level != "site"
                else []
            ),
            ("period", f"{when(data.from_ms, zone)} to {when(data.to_ms, zone)}"),
            ("times", zone_name(zone, data.to_ms)),
            ("made", when(data.now_ms, zone)),
        ]
    )
    doc.heading("Summary", 2)
    share = reporting / len(bolts) if bolts else math.nan
    doc.facts(
        [
            ("joints", str(len(data.joints))),
            ("bolt positions", f"{positions}, of which {len(bolts)} instrumented"),
            (
                "instrumented bolts",
                f"{pct(share) or 'n/a'} reporting: {reporting} of {len(bolts)} registered "
                "bolts have readings in the period",
            ),
            (
                "below the lines",
                f"{below(bolts, 0.8)} below 80 %, {below(bolts, 0.7)} below 70 %, "
                f"{below(bolts, 0.3)} below 30 % of settled at the end of the period "
                f"({settled} bolts with a settled baseline)",
            ),
            ("alerts", f"{len(alerts)}, {sum(1 for r in alerts if r.acks)} acknowledged"),
            (
                "campaigns",
                f"{len(campaigns)}: {sum(1 for c in campaigns if is_done(c))} done, "
                f"{len(overdue)} overdue"
                + (f" ({', '.join(str(c.id) for c in overdue)})" if overdue else ""),
            ),
            (
                "gaps",
                f"{sum(len(b.gaps) for b in bolts)} on {sum(1 for b in bolts if b.gaps)} bolts",
            ),
        ]
    )
    doc.heading("Joints", 2)
    doc.table(
        (
            "joint",
            "structure",
            "positions",
            "bolts",
            "reporting",
            "lowest % of settled",
            "< 80 %",
            "< 70 %",
            "< 30 %",
            "alerts",
            "gaps",
            "worst state",
        ),
        [
            [
                j.joint.id,
                j.structure.id,
                str(j.joint.bolt_count),
                str(len(j.bolts)),
                str(sum(1 for b in j.bolts if b.ts_ms.size)),
                pct(min((b.ratio for b in j.bolts if math.isfinite(b.ratio)), default=math.nan)),
                str(below(j.bolts, 0.8)),
                str(below(j.bolts, 0.7)),
                str(below(j.bolts, 0.3)),
                str(sum(len(b.alerts) for b in j.bolts)),
                str(sum(len(b.gaps) for b in j.bolts)),
                STATE_LABELS[worst_state(j)],
            ]
            for j in data.joints
        ],
        (20, 14, 11, 8, 11, 11, 8, 8, 8, 8, 7, 22),
        empty=f"The {data.scope.level} has no joint.",
    )
    drawn = data.joints[:MAX_DRAWINGS]
    if drawn:
        doc.heading("Joint drawings", 2)
        if len(data.joints) > len(drawn):
            doc.paragraph(f"The first {len(drawn)} of {len(data.joints)} joints are drawn.")
        for j in drawn:
            doc.figure(f"{j.joint.id}: {j.joint.name}", joint_drawing(j), doc.width_mm * 0.7)
    tightenings_section(doc, bolts, zone)
    alerts_section(doc, bolts, zone)
    campaigns_section(doc, campaigns, data.to_ms, zone)
    gaps_section(doc, bolts, zone)
    return doc.output()
