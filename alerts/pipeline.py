"""The alert pipeline: detection events in, notifications out, as a chain of small stages.

``take → Dedup → [Lifecycle → Mute → Escalate] → Group → Outbox → Notify (retry)``

The bracketed stages (:mod:`alerts.stages`) run per alert, from one list whose order is declared
once (``AlertPipeline.stages``); the others are this module's input, grouping and delivery.

* **Dedup** — one alert per (device, kind), created atomically in the store.
* **Lifecycle** — pending (``for``) → active → cleared once the detector has stopped reporting the
  condition for ``clear_after`` (hysteresis); severity escalates while active; an alert that
  re-activates more than ``flap_max`` times within ``flap_window`` is *flapping*: held active,
  not paged again until it has been quiet for a whole window. ``no_data`` alerts come from
  ingest, not from detectors, and clear when the device reports again.
* **Mute** — silences and maintenance windows (rules file or API) and inhibition rules (a
  critical alert mutes the same device's warnings; an offline gateway mutes its site's
  ``no_data``) stop notifications, not the alerts themselves; so does flapping.
* **Escalate** — not acknowledged within ``escalate_after``: the route's next receiver is told too;
  unacknowledged active alerts are repeated every ``repeat_interval``.
* **Group** — alerts of one group (joint, site or device) due at the same time make one
  notification; new alerts wait ``group_wait`` for their siblings.
* **Outbox / Notify** — notifications are recorded before they are sent, each with a stable id;
  each receiver is delivered by its own task, so a failing channel never blocks the others;
  retryable failures back off exponentially (with jitter, honouring a channel's Retry-After).

Time comes from an injected clock (epoch ms), so tests are exact and fast.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import heapq
import logging
import math
import random
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Final

from prometheus_client import CollectorRegistry, Counter, Gauge

from alerts.model import (
    Alert,
    AlertState,
    Channel,
    ChannelError,
    Notification,
)
from alerts.rules import Route, Rules
from alerts.stages import (
    ActiveIndex,
    Due,
    Escalate,
    Inhibitor,
    Lifecycle,
    Mute,
    Plan,
    Silencer,
    Stage,
    Step,
)
from alerts.store import AlertStore, StoredAlert, refreshed
from detection.events import BatchOutcome, DetectionEvent, EventKind, Severity

if TYPE_CHECKING:
    from alerts.store_pg import PgAlertStore

__all__ = ["AlertMetrics", "AlertPipeline", "Clock", "no_data_event", "system_clock"]

log = logging.getLogger(__name__)

Clock = Callable[[], int]
"""Returns the current time in epoch milliseconds."""

NO_DATA: Final = "no_data"
_ONE_SHOT: Final = frozenset({"installation", "joint"})
"""Kinds that are facts, not conditions: inactive from the start, they clear after clear_after."""
MAX_BACKOFF_S: Final = 60.0
"""Longest wait between two tries of a notification (times a jitter of 0.5-1.5): once a receiver
is back, what waited for it goes out within 90 s (with 300 s, a 10-minute webhook outage was
followed by 347 s of silence)."""
MARK_SENT_EVERY: Final = 100
"""Notifications sent are marked in the outbox in bursts of at most this many (one transaction
each): a burst of 40,000 was 7.5 times faster to deliver than with one transaction per
notification. A crash re-sends at most this many, under their ids."""
_IMPLIES: Final[Mapping[str, tuple[str, ...]]] = {"loosening": ("preload_low",)}
"""A detector shows one alert per reading: a loosening bolt's low preload is active too."""


def no_data_event(
    device_id: str, device_kind: str, site: str, last_seen_ms: int, now_ms: int
) -> DetectionEvent:
    """A device that fell silent (ingest's silence watcher), as the detection event that goes
    through :meth:`AlertPipeline.take` like any other: rules, metrics and all."""
    silent_min = max(now_ms - last_seen_ms, 0) / 60_000
    return DetectionEvent(
        device_id=device_id,
        kind=EventKind.NO_DATA,
        severity=Severity.WARNING,
        ts_ms=now_ms,
        score=1.0,
        explanation=f"no data for {silent_min:.0f} min (battery, radio or gateway?)",
        detector="silence",
        site=site,
        data={"last_seen_ms": float(last_seen_ms)},
        device_kind=device_kind,
    )


def system_clock() -> int:
    """Wall-clock time, epoch ms."""
    return time.time_ns() // 1_000_000


class AlertMetrics:
    """Prometheus metrics of the alert pipeline (events are also counted here)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.events = Counter(
            "boltwatch_detection_events",
            "Detection events received by the alert pipeline",
            ["kind", "severity"],
            registry=self.registry,
        )
        self.alerts = Gauge(
            "boltwatch_alerts", "Alerts by state", ["state"], registry=self.registry
        )
        self.notifications = Counter(
            "boltwatch_notifications",
            "Notification delivery attempts",
            ["receiver", "result"],
            registry=self.registry,
        )


def _group_key(a: Alert, route: Route) -> str:
    if route.group_by == "device":
        return f"{a.site}/{a.device_id}"
    if route.group_by == "site":
        return a.site or a.device_id
    return a.group or a.site or a.device_id


def _title(status: str, alerts: Sequence[Alert]) -> str:
    worst = max(alerts, key=lambda a: a.severity)
    if status == "resolved":
        head = f"[resolved] {worst.kind} on {worst.device_id}"
    else:
        head = f"[{worst.severity}] {worst.kind} on {worst.device_id}"
    if worst.site:
        head += f" ({worst.site})"
    if len(alerts) > 1:
        head += f" and {len(alerts) - 1} more"
    return head


class AlertPipeline:
    """Alerts from detection events, through rules, to notification channels.

    Args:
        rules: Parsed rules.
        store: The durable store.
        channels: Channel per receiver name (every receiver routes refer to).
        clock: Epoch-ms clock (injected in tests).
        metrics: Prometheus metrics (a private registry if None).
        group_of: Group (joint) of a device, from the registry; the site when None.
        on_record: Called after notifications are recorded and before they are sent (tests use
            it to crash at the worst moment).
    """

    def __init__(
        self,
        rules: Rules,
        store: AlertStore | PgAlertStore,
        channels: Mapping[str, Channel],
        *,
        clock: Clock = system_clock,
        metrics: AlertMetrics | None = None,
        group_of: Callable[[str], str] | None = None,
        on_record: Callable[[list[Notification]], None] | None = None,
    ) -> None:
        self.rules = rules
        self.store = store
        self.channels = dict(channels)
        self.clock = clock
        self.metrics = metrics or AlertMetrics()
        self.group_of = group_of
        self.on_record = on_record
        self.silencer = Silencer(store, rules)
        self.inhibitor = Inhibitor(rules)
        self.stages: list[Stage] = [
            Lifecycle(rules),
            Mute(self.silencer, self.inhibitor),
            Escalate(rules),
        ]
        """The per-alert stages, in order: the one place the order is declared."""
        self._open: dict[str, set[str]] = {}
        self._no_data: set[str] = set()
        self._cache: dict[int, StoredAlert] | None = None
        self._ids: dict[tuple[str, str], int] = {}
        """(device, kind) -> id of the open alerts held in ``_cache``."""
        self._touched: set[int] = set()
        """Open alerts refreshed in memory by events since the last evaluation."""
        self._index = ActiveIndex()
        self._due: dict[int, float] = {}
        """Per open alert, the next time a timer can change it (:meth:`_next_check`) ..."""
        self._due_heap: list[tuple[float, int]] = []
        """... and the same as a heap (stale entries skipped), so that an evaluation finds the
        alerts due without scanning every open one."""
        self._silence_next: float = -math.inf
        self._open_alerts()
        self._refresh(list((self._cache or {}).values()))
        self._wake = asyncio.Event()
        self._rng = random.Random()  # noqa: S311 - retry jitter, not cryptography

    # -- inputs (Dedup stage) ---------------------------------------------------------------

    def take(self, outcome: BatchOutcome) -> list[int]:
        """The one input: what detection made of a batch (or a ``no_data`` event from the
        silence watcher, wrapped the same way). Records its events as alerts, lets the alerts
        whose condition the detectors no longer show go inactive, and clears the ``no_data`` of
        the devices seen. Returns the ids of the alerts the events raised or refreshed."""
        ids = self._raise(outcome.events) if outcome.events else []
        if outcome.active:
            self._activity(outcome.active)
        if outcome.seen:
            self._seen(outcome.seen)
        return ids

    def _raise(self, events: Iterable[DetectionEvent]) -> list[int]:
        """Record detection events as alerts (one per device and kind, created atomically)."""
        rows = []
        now = self.clock()
        counted: dict[tuple[str, Severity], int] = {}
        rule_for = self.rules.rule_for
        for ev in events:
            kind = ev.kind.value
            rule = rule_for(kind)
            sev = Severity(ev.severity)
            counted[(kind, sev)] = counted.get((kind, sev), 0) + 1
            if sev < rule.min_severity:
                continue
            if rule.severity is not None:
                sev = max(rule.severity, sev) if sev > Severity.WARNING else rule.severity
            rows.append(
                {
                    "device_id": ev.device_id,
                    "kind": kind,
                    "device_kind": ev.device_kind,
                    "site": ev.site,
                    "grp": self._group(ev.device_id),
                    "severity": int(sev),
                    "ms": max(ev.ts_ms, 0) if ev.late else now,
                    "explanation": ev.explanation,
                    "data": {k: v for k, v in ev.data.items() if math.isfinite(v)},
                    "late": ev.late,
                    "inactive": now if kind in _ONE_SHOT else 0,
                }
            )
        for (kind, sev), n in counted.items():
            self.metrics.events.labels(kind=kind, severity=str(sev)).inc(n)
        ids = self._store_rows(rows) if rows else []
        for r in rows:
            self._open.setdefault(str(r["device_id"]), set()).add(str(r["kind"]))
            if r["kind"] == NO_DATA:
                self._no_data.add(str(r["device_id"]))
        if ids:
            self._wake.set()
        return ids

    def _store_rows(self, rows: list[dict[str, object]]) -> list[int]:
        """Events of open alerts held in memory update them in one statement (and in memory);
        the others (new, or cleared) go through the store's upsert. Ids in row order."""
        if self._cache is None:
            self._open_alerts()
        cache = self._cache if self._cache is not None else {}
        known: list[tuple[int, dict[str, object]]] = []
        fresh: list[dict[str, object]] = []
        where: list[int] = []  # per row: index into known (>= 0) or -1 - index into fresh
        for r in rows:
            i = self._ids.get((str(r["device_id"]), str(r["kind"])))
            if i is not None and i in cache:
                where.append(len(known))
                known.append((i, r))
            else:
                where.append(-1 - len(fresh))
                fresh.append(r)
        missed_ids, loaded = self.store.write_events(known, fresh)
        missed = set(missed_ids)
        for i, r in known:
            if i not in missed:
                refreshed(cache[i], r)
                self._index.put(cache[i])
                self._touched.add(i)
        # New alerts (or cleared ones raised again): written in one statement and read back in
        # one query, held in memory at once and looked at by the next evaluation.
        fresh_ids: dict[tuple[str, str], int] = {}
        for s in loaded:
            a = s.alert
            cache[a.id] = s
            self._index.put(s)
            self._ids[(a.device_id, a.kind)] = a.id
            self._touched.add(a.id)
            fresh_ids[(a.device_id, a.kind)] = a.id
        return [
            known[w][0] if w >= 0 else fresh_ids[(str(r["device_id"]), str(r["kind"]))]
            for w, r in zip(where, rows, strict=True)
        ]

    def _refresh(self, opened: Sequence[StoredAlert]) -> None:
        self._open = {}
        for s in opened:
            self._open.setdefault(s.alert.device_id, set()).add(s.alert.kind)
        self._no_data = {s.alert.device_id for s in opened if s.alert.kind == NO_DATA}

    def _activity(self, active: Mapping[str, Sequence[str]]) -> None:
        """What each reporting device's detector shows as active now (clear conditions).

        Only devices with open alerts cost a store update, so calling this for every batch is
        cheap.
        """
        now = self.clock()
        for device_id, kinds in active.items():
            open_kinds = self._open.get(device_id)
            if not open_kinds:
                continue
            shown = set(kinds)
            for k in kinds:
                shown.update(_IMPLIES.get(k, ()))
            self.store.set_inactive(device_id, sorted(shown), now)

    def _seen(self, device_ids: Iterable[str]) -> None:
        """Devices reported again: their ``no_data`` alerts become inactive (then clear)."""
        now = self.clock()
        for dev in self._no_data.intersection(device_ids):
            found = self.store.find(dev, NO_DATA)
            if found is not None and found.alert.state is not AlertState.CLEARED:
                self.store.upsert_inactive(found.alert.id, now)
            self._no_data.discard(dev)

    def resolve(self, device_id: str, kind: str) -> bool:
        """The condition of one alert that no detector clears is gone (a campaign's overdue
        task was done): it goes inactive, then clears after its hysteresis. False when there is
        no such open alert."""
        found = self.store.find(device_id, kind)
        if found is None or found.alert.state is AlertState.CLEARED:
            return False
        self.store.upsert_inactive(found.alert.id, self.clock())
        self._wake.set()
        return True

    def _group(self, device_id: str) -> str:
        return self.group_of(device_id) if self.group_of is not None else ""

    # -- decisions ----------------------------------------------------------------------------

    def _open_alerts(self) -> set[int]:
        """Refresh the cache of open alerts with what was written since last time; returns the
        ids written since last time (every open alert the first time)."""
        if self._cache is None:
            self.store.take_dirty()
            self._cache = {s.alert.id: s for s in self.store.open_alerts()}
            for s in self._cache.values():
                self._index.put(s)
                self._ids[(s.alert.device_id, s.alert.kind)] = s.alert.id
            return set(self._cache)
        dirty = self.store.take_dirty()
        if dirty:
            for s in self.store.load(dirty):
                if s.alert.state is AlertState.CLEARED:
                    self._forget(s.alert)
                else:
                    self._cache[s.alert.id] = s
                    self._index.put(s)
                    self._ids[(s.alert.device_id, s.alert.kind)] = s.alert.id
                    self._open.setdefault(s.alert.device_id, set()).add(s.alert.kind)
                    if s.alert.kind == NO_DATA:
                        self._no_data.add(s.alert.device_id)
        return dirty

    def _forget(self, a: Alert) -> None:
        """A cleared alert leaves the cache and the indexes."""
        if self._cache is not None:
            self._cache.pop(a.id, None)
        if self._ids.get((a.device_id, a.kind)) == a.id:
            del self._ids[(a.device_id, a.kind)]
        self._index.drop(a.id)
        self._due.pop(a.id, None)
        kinds = self._open.get(a.device_id)
        if kinds is not None:
            kinds.discard(a.kind)
            if not kinds:
                del self._open[a.device_id]
        if a.kind == NO_DATA:
            self._no_data.discard(a.device_id)

    def _next_check(self, s: StoredAlert) -> float:
        """The earliest time (epoch ms) a timer can change anything about this alert."""
        a = s.alert
        rule = self.rules.rule_for(a.kind)
        d = self.rules.defaults
        times: list[float] = []
        if s.inactive_ms:
            hold = max(rule.clear_after_s, d.flap_window_s) if a.flapping else rule.clear_after_s
            times.append(s.inactive_ms + hold * 1000)
        if a.state is AlertState.PENDING:
            times.append(a.first_ms + rule.for_s * 1000)
        elif a.notified_severity < 0:
            times.append(a.active_ms + d.group_wait_s * 1000)
        elif not a.acknowledged:
            for route in self.rules.routes_for(a.site, a.kind, a.severity):
                times.append(a.notified_ms + route.repeat_interval_s * 1000)
                if route.escalate_after_s > 0 and a.escalation + 1 < len(route.receivers):
                    times.append(a.active_ms + route.escalate_after_s * 1000 * (a.escalation + 1))
        return min(times, default=math.inf)

    def _silence_boundary(self, now: int) -> float:
        """The next start or end of a silence (when muted alerts must be looked at again)."""
        silences = self.silencer.static + self.store.silences()
        return min(
            (t for x in silences for t in (x.starts_ms, x.ends_ms) if t > now), default=math.inf
        )

    def evaluate(self) -> list[Notification]:
        """Advance the open alerts that may have something to do, and record the notifications
        now due (in the outbox).

        Only alerts written since the last call, alerts whose next timer (``for``, group wait,
        clear hysteresis, repeat, escalation) has come, and alerts sharing a device or site with
        an alert that changed state (inhibition) are looked at; a silence starting or ending
        makes every open alert be looked at.
        """
        now = self.clock()
        dirty = self._open_alerts() | self._touched
        self._touched = set()
        if self.store.take_silences_changed() or now >= self._silence_next:
            dirty = set(self._cache or ())
            self._silence_next = self._silence_boundary(now)
        else:
            dirty |= self._pop_due(now)
        plan = Plan()
        active = self._index
        by_id = self._cache or {}
        todo = [by_id[i] for i in sorted(dirty) if i in by_id]
        self._advance(todo, active, now, plan)
        # Alerts muted or unmuted by a state change next to them (inhibition): look again.
        devices, sites = self.inhibitor.affected([by_id[i] for i in plan.changed if i in by_id])
        seen = {s.alert.id for s in todo}
        near = {i for d in devices for i in active.by_device.get(d, ())} | {
            i for site in sites for i in active.by_site.get(site, ())
        }
        related = [by_id[i] for i in sorted(near) if i not in seen and i in by_id]
        self._advance(related, active, now, plan)
        notes = self._record(plan, now)
        for s in (*todo, *related):
            if s.alert.state is AlertState.CLEARED:
                self._forget(s.alert)
            else:
                self._set_due(s.alert.id, self._next_check(s))
        self.metrics.alerts.labels(state="open").set(len(self._cache or {}))
        return notes

    def _set_due(self, alert_id: int, at: float) -> None:
        if self._due.get(alert_id) == at:
            return
        self._due[alert_id] = at
        if at != math.inf:
            heapq.heappush(self._due_heap, (at, alert_id))
            if len(self._due_heap) > 4 * len(self._due) + 1024:  # mostly stale: rebuild
                self._due_heap = [(t, i) for i, t in self._due.items() if t != math.inf]
                heapq.heapify(self._due_heap)

    def _pop_due(self, now: int) -> set[int]:
        """The alerts whose next timer has come (their entries leave the heap)."""
        out: set[int] = set()
        heap = self._due_heap
        while heap and heap[0][0] <= now:
            at, alert_id = heapq.heappop(heap)
            if self._due.get(alert_id) == at:
                del self._due[alert_id]  # evaluated now, then given its next time
                out.add(alert_id)
        return out

    def _advance(
        self, alerts: Sequence[StoredAlert], active: ActiveIndex, now: int, plan: Plan
    ) -> None:
        for s in alerts:
            step = Step(s, now, plan, active)
            for stage in self.stages:
                if not stage.apply(step):
                    break

    def _record(self, plan: Plan, now: int) -> list[Notification]:
        groups: dict[tuple[str, str, str], list[Due]] = {}
        for due in plan.dues:
            key = (due.receiver, _group_key(due.alert, due.route), due.status)
            groups.setdefault(key, []).append(due)
        notes: list[Notification] = []
        touched: dict[int, Alert] = dict(plan.changed)
        for (receiver, group, status), dues in groups.items():
            alerts = list({d.alert.id: d.alert for d in dues}.values())
            for a in alerts:
                if status == "firing":
                    a.notified_ms = now
                    a.notified_severity = int(a.severity)
                else:
                    a.notified_severity = -1
                touched[a.id] = a
            digest = hashlib.sha256(
                "|".join(
                    [receiver, group, status, str(now)]
                    + [f"{a.id}:{a.first_ms}:{int(a.severity)}" for a in alerts]
                ).encode()
            ).hexdigest()[:32]
            notes.append(
                Notification(
                    id=digest,
                    receiver=receiver,
                    status=status,
                    group=group,
                    title=_title(status, alerts),
                    alerts=[a.as_dict() for a in alerts],
                    created_ms=now,
                )
            )
        if notes or touched:
            self.store.record(notes, touched.values(), plan.history)
        if notes:
            if self.on_record is not None:
                self.on_record(notes)
            self._wake.set()
        return notes

    # -- delivery (Notify stage) ----------------------------------------------------------------

    async def deliver(self) -> int:
        """Send every due outbox row; each receiver in its own task. Returns rows sent."""
        now = self.clock()
        due = self.store.due(now, limit=1000)
        by_receiver: dict[str, list[Notification]] = {}
        for row in due:
            by_receiver.setdefault(row.notification.receiver, []).append(row.notification)
        results = await asyncio.gather(
            *(self._deliver_to(r, notes) for r, notes in by_receiver.items())
        )
        return sum(results)

    async def _deliver_to(self, receiver: str, notes: list[Notification]) -> int:
        channel = self.channels.get(receiver)
        sent: list[str] = []
        done = 0
        try:
            for note in notes:
                if channel is None:
                    self.store.mark_failed(note.id, f"no channel for receiver {receiver!r}", None)
                    self.metrics.notifications.labels(receiver=receiver, result="failed").inc()
                    continue
                try:
                    await channel.send(note)
                except ChannelError as exc:
                    self._failed(receiver, note, exc)
                    break  # keep this receiver's order: the rest waits for the retry
                sent.append(note.id)
                if len(sent) >= MARK_SENT_EVERY:
                    done += self._mark_sent(receiver, sent)
        finally:
            # Marked in bursts: after a crash, what was sent since the last mark is sent again
            # under the same ids (at least once: a receiver can drop an id it has seen).
            done += self._mark_sent(receiver, sent)
        return done

    def _mark_sent(self, receiver: str, sent: list[str]) -> int:
        n = len(sent)
        if n:
            self.store.mark_sent_many(sent, self.clock())
            self.metrics.notifications.labels(receiver=receiver, result="sent").inc(n)
            sent.clear()
        return n

    def _failed(self, receiver: str, note: Notification, exc: ChannelError) -> None:
        attempts = note.attempts + 1
        if exc.retryable:
            delay = min(2.0**attempts, MAX_BACKOFF_S) * (0.5 + self._rng.random())
            delay = max(delay, float(getattr(exc, "retry_after_s", 0.0) or 0.0))
            self.store.mark_failed(note.id, str(exc), self.clock() + int(delay * 1000))
            self.metrics.notifications.labels(receiver=receiver, result="retry").inc()
            log.warning(
                "notification %s to %s failed, retry in %.0f s: %s", note.id, receiver, delay, exc
            )
        else:
            self.store.mark_failed(note.id, str(exc), None)
            self.metrics.notifications.labels(receiver=receiver, result="failed").inc()
            # An expected refusal, not a bug: no traceback.
            log.error("notification %s to %s failed for good: %s", note.id, receiver, exc)

    async def run(self, interval_s: float = 1.0) -> None:
        """Evaluate and deliver until cancelled (wakes early when events arrive)."""
        while True:
            self._wake.clear()  # before the work: an event arriving meanwhile wakes us again
            self.evaluate()
            await self.deliver()
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a cancellation
            # that arrives as the event is set, and the task then never ends.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(interval_s):
                    await self._wake.wait()

    async def aclose(self) -> None:
        """Close every channel."""
        for channel in self.channels.values():
            await channel.aclose()
