"""Campaigns follow the bolts: retightenings close tasks, re-embedding records the *after*
reading, overdue tasks escalate through the alert routes.

:class:`CampaignTracker` sits after the alert pipeline on the path of each committed batch
(``boltwatch run`` wires it): a bolt's ``tightened`` event moves its open task to
``retightened`` and acknowledges the campaign's alerts of that bolt with the campaign's
reference; once the bolt's detector has settled again (it is seen settling after the
retightening, then armed with a new baseline — or, for a retightening it never saw, armed a day
later), the task records the bolt's level as its *after* reading and the new settled baseline,
and is done. A task still not done after its campaign's due date raises a
``maintenance_overdue`` alert on the bolt (routed, escalated and notified like any alert),
which clears when the task is done or the campaign cancelled.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Final, Protocol

from alerts.campaigns import Campaign, CampaignStore, NoSuchCampaignError, Task
from alerts.pipeline import AlertPipeline
from detection.events import BatchOutcome, DetectionEvent, EventKind, Severity
from sensors.codec import DecodedBatch
from sensors.schema import TightenedEvent

__all__ = ["CHECK_EVERY_S", "RESETTLE_MS", "BoltState", "CampaignTracker"]

log = logging.getLogger(__name__)

RESETTLE_MS: Final = 24 * 3_600_000
"""A retightening the detector never saw (recorded by hand, no jump in the data): the *after*
reading is taken once the bolt is armed with readings this long after it."""
CHECK_EVERY_S: Final = 1.0
"""After a batch, tasks are checked at most this often (a batch with a ``tightened`` event is
always followed by a check); ``boltwatch run`` also checks every few seconds without batches."""
_OVERDUE: Final = EventKind.MAINTENANCE_OVERDUE.value


class BoltState(Protocol):
    """What the tracker reads of a bolt's detector (:class:`detection.preload.Outlook` is one)."""

    @property
    def level_kn(self) -> float:
        """The compensated preload level, kN."""
        ...

    @property
    def baseline_kn(self) -> float:
        """The settled baseline, kN (NaN while settling)."""
        ...

    @property
    def armed(self) -> bool:
        """The baseline is settled."""
        ...

    @property
    def t_last_s(self) -> float:
        """The newest reading evaluated, epoch s."""
        ...


class CampaignTracker:
    """Moves campaign tasks along as the bolts report.

    Args:
        store: The campaigns.
        pipeline: The alert pipeline (its store acknowledges linked alerts; overdue tasks go
            through :meth:`~alerts.pipeline.AlertPipeline.take`).
        outlook: The detector's state of the bolts asked for (those it holds).
        clock: Epoch ms (the service's clock).
        site_of: A bolt's site, for the overdue alert's routing.
        monotonic: Seconds, for :data:`CHECK_EVERY_S`.
    """

    def __init__(
        self,
        store: CampaignStore,
        pipeline: AlertPipeline,
        outlook: Callable[[Sequence[str]], Mapping[str, BoltState]],
        *,
        clock: Callable[[], int],
        site_of: Callable[[str], str] = lambda _d: "",
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.pipeline = pipeline
        self.outlook = outlook
        self.clock = clock
        self.site_of = site_of
        self.monotonic = monotonic
        self._checked = -float("inf")

    def after_batch(self, batch: DecodedBatch) -> None:
        """A committed batch went through detection: its ``tightened`` events retighten their
        bolts' tasks; then the tasks are checked (at most every :data:`CHECK_EVERY_S`)."""
        tightened = False
        for ev in batch.events:
            if isinstance(ev.event, TightenedEvent):
                tightened = True
                self.retightened(
                    ev.device_id,
                    ms=ev.ts_ms,
                    by=ev.event.operator or "device",
                    torque_nm=ev.event.torque_nm,
                    preload_kn=ev.event.preload_kn,
                )
        if tightened or self.monotonic() - self._checked >= CHECK_EVERY_S:
            self.check()

    def retightened(
        self,
        device_id: str,
        *,
        ms: int,
        by: str,
        torque_nm: float | None = None,
        preload_kn: float | None = None,
        campaign_id: int | None = None,
    ) -> list[Task]:
        """The bolt was retightened (its event, or a technician's record): its open tasks move
        on, and the campaign's alerts of that bolt are acknowledged with its reference.

        Raises:
            CampaignError: A number is not valid.
        """
        moved = self.store.retighten(
            device_id,
            ms=ms,
            by=by,
            torque_nm=torque_nm,
            preload_kn=preload_kn,
            campaign_id=campaign_id,
        )
        for task in moved:
            campaign = self.store.get(task.campaign_id)
            if campaign is None:  # pragma: no cover - the task's campaign exists
                continue
            what = f"{campaign.ref}: {device_id} retightened by {by}"
            if torque_nm is not None:
                what += f" at {torque_nm:g} N·m"
            self._acknowledge(campaign, what, only=device_id)
            if not any(t.state == "open" for t in campaign.tasks):
                self._acknowledge(campaign, f"{campaign.ref}: every bolt retightened", only=None)
        return moved

    def check(self) -> None:
        """Record the *after* reading of re-embedded bolts; escalate overdue tasks."""
        self._checked = self.monotonic()
        pending = self.store.pending()
        if not pending:
            return
        now = self.clock()
        retightened = [t for t in pending if t.state == "retightened"]
        states = self.outlook([t.device_id for t in retightened]) if retightened else {}
        for task in retightened:
            state = states.get(task.device_id)
            if state is None:
                continue
            if not state.armed:
                if not task.settling_seen:
                    self.store.settling(task.campaign_id, task.device_id)
                continue
            # The data's time, not the service's: a backfill settles as the live data would.
            newest_ms = state.t_last_s * 1000.0
            if task.settling_seen or newest_ms - task.retightened_ms >= RESETTLE_MS:
                self._settled(task, state, now)
        self._escalate(pending, now)

    def cancelled(self, campaign: Campaign) -> None:
        """A campaign was cancelled: its overdue alerts clear."""
        for task in campaign.tasks:
            if task.escalated_ms:
                self.pipeline.resolve(task.device_id, _OVERDUE)

    def _settled(self, task: Task, state: BoltState, now: int) -> None:
        try:
            campaign = self.store.settle(
                task.campaign_id,
                task.device_id,
                after_kn=float(state.level_kn),
                settled_kn=float(state.baseline_kn),
                ms=now,
            )
        except NoSuchCampaignError:  # cancelled, or recorded by a check just before
            return
        if task.escalated_ms:
            self.pipeline.resolve(task.device_id, _OVERDUE)
        if campaign.state == "done":
            lines = [
                f"{t.device_id} {_kn(t.before_kn)} -> {_kn(t.after_kn)}" for t in campaign.tasks
            ]
            self._acknowledge(campaign, f"{campaign.ref} done: " + ", ".join(lines), only=None)
            log.info("%s done (%s)", campaign.ref, campaign.title)

    def _escalate(self, pending: Sequence[Task], now: int) -> None:
        late = [t for t in pending if not t.escalated_ms]
        if not late:
            return
        campaigns = {c.id: c for c in self.store.campaigns(state="open")}
        events = []
        for task in late:
            campaign = campaigns.get(task.campaign_id)
            if campaign is None or not campaign.overdue(now):
                continue
            hours = (now - campaign.due_ms) / 3_600_000
            who = f", assigned to {campaign.assignee}" if campaign.assignee else ""
            events.append(
                DetectionEvent(
                    device_id=task.device_id,
                    kind=EventKind.MAINTENANCE_OVERDUE,
                    severity=Severity.MAJOR,
                    ts_ms=now,
                    score=1.0,
                    explanation=(
                        f"{campaign.ref} ({campaign.title}{who}): {task.device_id} "
                        f"{'not settled yet' if task.state == 'retightened' else 'not retightened'}"
                        f", {hours:.1f} h past due"
                    ),
                    detector="campaign",
                    site=self.site_of(task.device_id),
                    data={"campaign": float(campaign.id), "overdue_h": round(hours, 2)},
                    device_kind="cbolt",
                )
            )
            self.store.escalated(task.campaign_id, task.device_id, now)
        if events:
            self.pipeline.take(BatchOutcome(events=events))

    def _acknowledge(self, campaign: Campaign, text: str, *, only: str | None) -> None:
        """Acknowledge the campaign's alerts (of one bolt, or those of no bolt of the campaign:
        a joint's) with a comment naming it; those acknowledged already get the comment."""
        bolts = {t.device_id for t in campaign.tasks}
        store = self.pipeline.store
        now = self.clock()
        for alert_id in campaign.alert_ids:
            found = store.get(alert_id)
            if found is None:
                continue
            dev = found.alert.device_id
            if (only is not None and dev != only) or (only is None and dev in bolts):
                continue
            who = f"{campaign.ref} ({campaign.opened_by})"
            if found.alert.acknowledged:
                store.comment(alert_id, who, now, text)
            else:
                store.acknowledge(alert_id, who, now, text)


def _kn(value: float | None) -> str:
    return "?" if value is None else f"{value:.1f} kN"
