"""The audit report of one joint over a period, as a PDF.

It has the joint's facts and a summary; the joint drawing with each bolt's state at the end of
the period and the table of its bolts; each bolt's preload history with its lines, events,
alert episodes and gaps; the installation records; the alerts with who acknowledged them and
when; the retightening campaigns with each bolt's before and after preload; the data-quality
gaps. :func:`joint_report` is synchronous and keeps no state between calls: a web route runs it
in a worker thread.
"""

from __future__ import annotations

from collections.abc import Sequence

from dashboards.console.source import ConsoleSource
from dashboards.report.campaigns import CampaignSummary, campaigns_of, is_done, is_overdue
from dashboards.report.data import STATE_LABELS, JointData, below, gather_joint
from dashboards.report.fmt import kn, pct, when, zone_name
from dashboards.report.pdf import Document
from dashboards.report.sections import (
    alerts_section,
    campaigns_section,
    gaps_section,
    tightenings_section,
)

__all__ = ["joint_report", "render_joint"]


def joint_report(
    source: ConsoleSource,
    joint_id: str,
    from_ms: int,
    to_ms: int,
    campaigns: Sequence[CampaignSummary] = (),
) -> bytes:
    """The audit report of a joint for ``[from_ms, to_ms)`` (epoch ms), as PDF bytes.

    Args:
        source: The console's door to the stores.
        joint_id: The joint's registry id.
        from_ms: Start of the period (included).
        to_ms: End of the period (excluded).
        campaigns: The retightening campaigns known; those with a task on one of the joint's
            bolts, open at some time of the period, are reported.

    Raises:
        ReportError: No such joint (key ``joint``), or an empty or inverted period (``from``).
        StoreError: The store folder cannot be opened.
    """
    data = gather_joint(source, joint_id, from_ms, to_ms)
    devices = {b.device_id for b in data.bolts}
    return render_joint(data, campaigns_of(campaigns, devices, from_ms, to_ms))


def render_joint(data: JointData, campaigns: Sequence[CampaignSummary]) -> bytes:
    """The PDF of gathered joint data and its campaigns."""
    j, zone = data.joint, data.zone
    from dashboards.report.plots import (  # matplotlib: loaded for a report only
        joint_drawing,
        preload_plot,
    )

    doc = Document(f"boltwatch audit report · joint {j.id}")
    doc.heading(f"Audit report: joint {j.id}")
    profile = data.profile
    pattern = f"{j.pattern}, {j.bolt_count} positions"
    if j.pitch_circle_diameter_mm:
        pattern += f", pitch circle {j.pitch_circle_diameter_mm:g} mm"
    doc.facts(
        [
            ("joint", f"{j.name} ({j.id})"),
            ("structure", f"{data.structure.name} ({data.structure.id})"),
            ("site", f"{data.site.name} ({data.site.id})"),
            ("pattern", f"{pattern}; clamps {j.material}"),
            (
                "bolt profile",
                f"{profile.id}: {profile.thread} grade {profile.grade}, target "
                f"{profile.nominal_preload_kn:g} kN, K {profile.nut_factor_min:g}"
                f"-{profile.nut_factor_max:g}"
                if profile is not None
                else j.bolt_profile,
            ),
            ("instrumented", f"{len(data.bolts)} of {j.bolt_count} positions"),
            ("period", f"{when(data.from_ms, zone)} to {when(data.to_ms, zone)}"),
            ("times", zone_name(zone, data.to_ms)),
            ("made", when(data.now_ms, zone)),
        ]
    )
    bolts = data.bolts
    alerts = [r for b in bolts for r in b.alerts]
    doc.heading("Summary", 2)
    doc.facts(
        [
            ("bolts reporting", f"{sum(1 for b in bolts if b.ts_ms.size)} of {len(bolts)}"),
            (
                "below the lines",
                f"{below(bolts, 0.8)} below 80 %, {below(bolts, 0.7)} below 70 %, "
                f"{below(bolts, 0.3)} below 30 % of settled at the end of the period",
            ),
            ("alerts", f"{len(alerts)}, {sum(1 for r in alerts if r.acks)} acknowledged"),
            (
                "campaigns",
                f"{len(campaigns)}: {sum(1 for c in campaigns if is_done(c))} done, "
                f"{sum(1 for c in campaigns if is_overdue(c, data.to_ms))} overdue",
            ),
            ("gaps", str(sum(len(b.gaps) for b in bolts))),
        ]
    )
    doc.heading("Joint drawing", 2)
    doc.paragraph(
        "Each bolt is coloured by its preload at the end of the period (the median of its last "
        "hour of readings) against the settled baseline the detector holds; hatched: its "
        "sensor was silent or faulty then."
    )
    doc.image(joint_drawing(data), doc.width_mm * 0.85)
    doc.table(
        ("position", "bolt", "readings", "level kN", "settled kN", "% of settled", "state"),
        [
            [
                str(b.position),
                b.device_id,
                f"{b.ts_ms.size:,}" + (" (hourly)" if b.resolution == "1h" else ""),
                kn(b.level_kn),
                kn(b.baseline_kn),
                pct(b.ratio),
                STATE_LABELS[b.state] + (", sensor silent or faulty" if b.hatched else ""),
            ]
            for b in bolts
        ],
        (10, 22, 14, 11, 11, 11, 30),
        empty="No instrumented bolt in this joint.",
    )
    doc.heading("Preload history", 2)
    doc.paragraph(
        "Raw preload (the mean and min-max band of time bins when readings are many), the "
        "settled, 80, 70 and 30 % lines, tightenings (dashed) and other events (dotted), "
        "alert episodes as coloured bands and gaps hatched grey."
    )
    for b in bolts:
        title = f"Position {b.position}: {b.device_id}"
        doc.figure(title, preload_plot(b, data.from_ms, data.to_ms, zone))
        if b.resolution == "1h":
            doc.paragraph("Hourly means: the raw readings of this period are past retention.")
    tightenings_section(doc, bolts, zone)
    alerts_section(doc, bolts, zone)
    campaigns_section(doc, campaigns, data.to_ms, zone)
    gaps_section(doc, bolts, zone)
    return doc.output()
