"""Audit reports as PDF: one joint's (:func:`joint_report`), or a site's or structure's
(:func:`fleet_report`), over a period, from what the console reads (:class:`ConsoleSource`).

Plots are drawn with matplotlib's object-oriented API, the document is made with fpdf2; both
functions are synchronous and keep no state between calls, so a web route runs them in a
worker thread. Campaigns come in as :class:`CampaignSummary` values. See docs/reports.md.
"""

from dashboards.report.campaigns import CampaignSummary, TaskSummary, summaries
from dashboards.report.data import Scope
from dashboards.report.errors import ReportError
from dashboards.report.fleet import fleet_report
from dashboards.report.gaps import Gap, find_gaps
from dashboards.report.joint import joint_report

__all__ = [
    "CampaignSummary",
    "Gap",
    "ReportError",
    "Scope",
    "TaskSummary",
    "find_gaps",
    "fleet_report",
    "joint_report",
    "summaries",
]
