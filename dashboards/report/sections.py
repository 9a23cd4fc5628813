"""Sections both reports write: installation records, alerts, campaigns and data-quality gaps."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import tzinfo
from typing import Final

from dashboards.report.campaigns import CampaignSummary, is_overdue
from dashboards.report.data import BoltData
from dashboards.report.fmt import duration, kn, num, pct, when
from dashboards.report.gaps import MIN_GAP_MS, SPACING_FACTOR
from dashboards.report.pdf import Document

__all__ = ["alerts_section", "campaigns_section", "gaps_section", "tightenings_section"]

_MAX_ROWS: Final = 500
"""A fleet report's longest table: beyond, it says how many rows it left out."""


def _capped(doc: Document, rows: list[list[str]], what: str) -> list[list[str]]:
    if len(rows) <= _MAX_ROWS:
        return rows
    doc.paragraph(
        f"The first {_MAX_ROWS} of {len(rows)} {what} are listed; the joints' reports list all."
    )
    return rows[:_MAX_ROWS]


def tightenings_section(doc: Document, bolts: Sequence[BoltData], zone: tzinfo) -> None:
    """Every bolt's installation records and ``tightened`` events up to the end of the period:
    torque, achieved preload against the profile's target, the nut factor K with its verdict,
    the tool with its calibration date, the operator and the pass."""
    doc.heading("Installation records", 2)
    doc.paragraph(
        "Each tightening up to the end of the period: the registry's installation records and "
        "the tightened events the bolt or its tool sent. K = T / (F · d), with its verdict "
        "against the bolt profile's accepted range."
    )
    rows = [
        [
            b.device_id,
            when(t.ts_ms, zone),
            str(t.tightening_pass or ""),
            num(t.torque_nm, 0),
            kn(t.preload_kn),
            kn(t.target_kn),
            f"{num(t.nut_factor, 3)} {t.verdict}".strip(),
            t.tool,
            t.tool_calibrated.isoformat() if t.tool_calibrated else "",
            t.operator,
            t.source,
        ]
        for b in bolts
        for t in b.tightenings
    ]
    doc.table(
        (
            "bolt",
            "time",
            "pass",
            "torque N·m",
            "preload kN",
            "target kN",
            "K (verdict)",
            "tool",
            "calibrated",
            "operator",
            "from",
        ),
        _capped(doc, rows, "tightenings"),
        (21, 22, 7, 11, 11, 11, 13, 22, 15, 17, 12),
        empty="No tightening recorded.",
    )


def alerts_section(doc: Document, bolts: Sequence[BoltData], zone: tzinfo) -> None:
    """The alerts active at some time of the period, with who acknowledged them and when."""
    doc.heading("Alerts", 2)
    rows = []
    for b in bolts:
        for r in b.alerts:
            a = r.alert
            acks = "; ".join(f"{who} {when(ms, zone)}" for who, ms in r.acks)
            rows.append(
                [
                    b.device_id,
                    a.kind,
                    str(a.severity),
                    when(r.start_ms, zone),
                    when(a.cleared_ms, zone) or str(a.state),
                    acks or "not acknowledged",
                    a.explanation,
                ]
            )
    doc.table(
        ("bolt", "kind", "severity", "opened", "cleared", "acknowledged by", "explanation"),
        _capped(doc, rows, "alerts"),
        (21, 14, 11, 22, 22, 30, 40),
        empty="No alert in this period.",
    )


def campaigns_section(
    doc: Document, campaigns: Sequence[CampaignSummary], to_ms: int, zone: tzinfo
) -> None:
    """Each retightening campaign of the period and, per bolt, its before and after preload."""
    doc.heading("Retightening campaigns", 2)
    if not campaigns:
        doc.paragraph("There was no campaign in this period.")
        return
    for c in campaigns:
        doc.heading(f"Campaign {c.id}: {c.title}", 3)
        due = when(c.due_ms, zone) or "no due date"
        if is_overdue(c, to_ms):
            due += " (overdue)"
        doc.facts(
            [
                ("state", c.state),
                ("opened", f"{when(c.opened_ms, zone)} by {c.opened_by}"),
                ("assignee", c.assignee or "nobody yet"),
                ("due", due),
                ("closed", when(c.closed_ms, zone) or "not yet"),
            ]
        )
        rows = [
            [
                t.device_id,
                t.state,
                kn(t.before_kn),
                when(t.retightened_ms, zone),
                t.retightened_by,
                num(t.torque_nm, 0),
                kn(t.after_kn),
                kn(t.settled_kn),
                pct(t.after_kn / t.before_kn) if t.after_kn and t.before_kn else "",
            ]
            for t in c.tasks
        ]
        doc.table(
            (
                "bolt",
                "task",
                "before kN",
                "retightened",
                "by",
                "torque N·m",
                "after kN",
                "settled kN",
                "after / before",
            ),
            rows,
            (21, 9, 11, 22, 16, 11, 11, 11, 11),
        )


def gaps_section(doc: Document, bolts: Sequence[BoltData], zone: tzinfo) -> None:
    """Each bolt's stretches without readings in the period."""
    doc.heading("Data-quality gaps", 2)
    doc.paragraph(
        f"A gap is a stretch without readings longer than {SPACING_FACTOR:g} times the bolt's "
        f"median interval between readings in the period, and at least "
        f"{duration(MIN_GAP_MS)}; counted from the bolt's installation when that is in the "
        "period, up to the end of the period (or the time of the report)."
    )
    rows = [
        [
            b.device_id,
            when(g.start_ms, zone),
            when(g.end_ms, zone),
            duration(g.duration_ms),
            "no reading since" if g.open_ended else "",
        ]
        for b in bolts
        for g in b.gaps
    ]
    doc.table(
        ("bolt", "from", "to", "duration", "note"),
        _capped(doc, rows, "gaps"),
        (22, 22, 22, 16, 24),
        empty="No gap: every bolt reported throughout the period.",
    )
