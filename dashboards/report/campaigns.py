"""Retightening campaigns as the reports take them: plain, frozen summaries.

The reports do not read the campaign store: its owner hands them what it holds as
:class:`CampaignSummary` values (:func:`summaries` makes them of the store's
:class:`~alerts.campaigns.Campaign` rows), so that the reports depend on nothing but these
fields. A
campaign belongs to a report when one of its tasks is a bolt of the report's scope and it was
open at some time of the period.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Final

from alerts.campaigns import Campaign

__all__ = [
    "ENDED_STATES",
    "CampaignSummary",
    "TaskSummary",
    "campaigns_of",
    "is_done",
    "is_overdue",
    "summaries",
]

ENDED_STATES: Final = frozenset({"done", "cancelled"})
"""Campaign states after which a due date no longer matters."""


@dataclass(frozen=True, slots=True)
class TaskSummary:
    """One bolt's task in a campaign.

    Attributes:
        device_id: The bolt.
        state: The task's state (``open``, ``done``, ...: shown as given).
        before_kn: Preload frozen when the campaign started (kN), None if not recorded.
        retightened_ms: When the bolt was retightened (epoch ms), None if not yet.
        retightened_by: Who retightened it ("" when not said).
        torque_nm: Torque applied at the retightening (N·m), None if not recorded.
        after_kn: Preload once the bolt has embedded again (kN), None until then.
        settled_kn: The new settled level after re-embedding (kN), None until settled.
    """

    device_id: str
    state: str
    before_kn: float | None = None
    retightened_ms: int | None = None
    retightened_by: str = ""
    torque_nm: float | None = None
    after_kn: float | None = None
    settled_kn: float | None = None


@dataclass(frozen=True, slots=True)
class CampaignSummary:
    """A retightening campaign (a work order) and its tasks.

    Attributes:
        id: The campaign's id.
        title: Its title.
        state: Its state (``open``, ``done``, ``cancelled``, ...: shown as given).
        opened_ms: When it was opened (epoch ms).
        opened_by: Who opened it.
        assignee: Who is to do it ("" when nobody yet).
        due_ms: When it is due (epoch ms), None without a due date.
        closed_ms: When it was closed (epoch ms), None while open.
        tasks: One task per bolt.
    """

    id: int
    title: str
    state: str
    opened_ms: int
    opened_by: str
    assignee: str
    due_ms: int | None
    closed_ms: int | None
    tasks: tuple[TaskSummary, ...] = ()


def is_done(campaign: CampaignSummary) -> bool:
    """The campaign is done."""
    return campaign.state == "done"


def is_overdue(campaign: CampaignSummary, at_ms: int) -> bool:
    """The campaign is neither done nor cancelled and its due date is before ``at_ms``."""
    return (
        campaign.state not in ENDED_STATES
        and campaign.due_ms is not None
        and campaign.due_ms < at_ms
    )


def campaigns_of(
    campaigns: Sequence[CampaignSummary], devices: Collection[str], from_ms: int, to_ms: int
) -> list[CampaignSummary]:
    """The campaigns with a task on one of ``devices`` that were open at some time of
    ``[from_ms, to_ms)``, oldest first; each keeps only the tasks of those devices."""
    out = []
    for c in campaigns:
        if c.opened_ms >= to_ms or (c.closed_ms is not None and c.closed_ms < from_ms):
            continue
        tasks = tuple(t for t in c.tasks if t.device_id in devices)
        if tasks:
            out.append(replace(c, tasks=tasks))
    return sorted(out, key=lambda c: (c.opened_ms, c.id))


def summaries(campaigns: Iterable[Campaign]) -> list[CampaignSummary]:
    """The campaign store's campaigns as the reports take them."""
    return [
        CampaignSummary(
            id=c.id,
            title=c.title,
            state=c.state,
            opened_ms=c.opened_ms,
            opened_by=c.opened_by,
            assignee=c.assignee,
            due_ms=c.due_ms or None,
            closed_ms=c.closed_ms or None,
            tasks=tuple(
                TaskSummary(
                    device_id=t.device_id,
                    state=t.state,
                    before_kn=t.before_kn,
                    retightened_ms=t.retightened_ms or None,
                    retightened_by=t.retightened_by,
                    torque_nm=t.torque_nm,
                    after_kn=t.after_kn,
                    settled_kn=t.settled_kn,
                )
                for t in c.tasks
            ),
        )
        for c in campaigns
    ]
