"""The per-alert stages of the alert pipeline (``AlertPipeline.stages`` lists them in order).

At each evaluation, every alert that may have something to do goes through the stages in turn;
a stage returns False to stop it there (cleared, still pending, muted):

1. :class:`Lifecycle` — pending (``for``) → active → cleared after ``clear_after`` of quiet;
   flapping; ``resolved`` notifications for a cleared alert that had been notified.
2. :class:`Mute` — flapping hold, silences and maintenance windows (:class:`Silencer`),
   inhibition (:class:`Inhibitor`).
3. :class:`Escalate` — per route: group wait, first notification, severity rise, repeat,
   escalation to the route's next receiver (:class:`Escalator`).

Before them, the pipeline's input deduplicates events into one alert per (device, kind) (the
store's upsert); after them, the dues of one group are grouped into one notification, recorded in
the outbox, and sent by the notify loop (:mod:`alerts.pipeline`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final, Protocol

from alerts.model import Alert, AlertState, Silence, Transition
from alerts.rules import InhibitRule, Route, Rules
from alerts.store import AlertStore, StoredAlert

if TYPE_CHECKING:
    from alerts.store_pg import PgAlertStore

__all__ = [
    "ActiveIndex",
    "Due",
    "Escalate",
    "Escalator",
    "Inhibitor",
    "Lifecycle",
    "Mute",
    "Plan",
    "Silencer",
    "Stage",
    "Step",
]


@dataclass(slots=True)
class Step:
    """One alert on its way through the stages at one evaluation.

    Attributes:
        stored: The alert (and what the store knows of it).
        now: The evaluation's time (epoch ms).
        plan: Where stages put what they decide.
        active: The open alerts by device and site (inhibition).
        what: What the lifecycle stage did to it (None: nothing).
    """

    stored: StoredAlert
    now: int
    plan: Plan
    active: ActiveIndex
    what: Transition | None = None


class Stage(Protocol):
    """One step of the per-alert path."""

    @property
    def name(self) -> str:
        """Its name (in logs and docs)."""
        ...

    def apply(self, step: Step) -> bool:
        """Do this stage's part; False: the alert goes no further this time."""
        ...


@dataclass(slots=True)
class Due:
    """A notification decision for one alert and one receiver."""

    alert: Alert
    receiver: str
    route: Route
    status: str
    reason: str


@dataclass(slots=True)
class Plan:
    """What one evaluation decided: notifications due, alerts changed, history lines."""

    dues: list[Due] = field(default_factory=list)
    changed: dict[int, Alert] = field(default_factory=dict)
    history: list[tuple[int, int, Transition, str]] = field(default_factory=list)


class Lifecycle:
    """Stage 1, lifecycle: pending → active → cleared, flapping. A cleared alert that had been
    notified gets its ``resolved`` notifications here (a silence does not hold them back); only
    active alerts go on."""

    name: Final = "lifecycle"

    def __init__(self, rules: Rules) -> None:
        self.rules = rules

    def apply(self, step: Step) -> bool:
        """Advance the alert; whether it goes on (it is active)."""
        a = step.stored.alert
        was = a.state
        step.what = self.step(step.stored, step.now)
        if step.what is not None:
            step.plan.changed[a.id] = a
            step.plan.history.append((a.id, step.now, step.what, ""))
        if a.state is AlertState.CLEARED:
            if was is AlertState.ACTIVE and a.notified_severity >= 0:
                for route in self.rules.routes_for(a.site, a.kind, a.severity):
                    for receiver in route.receivers[: a.escalation + 1]:
                        step.plan.dues.append(Due(a, receiver, route, "resolved", "cleared"))
            return False
        return a.state is AlertState.ACTIVE

    def step(self, s: StoredAlert, now: int) -> Transition | None:
        """Advance one alert; returns what happened (None for nothing)."""
        a = s.alert
        rule = self.rules.rule_for(a.kind)
        d = self.rules.defaults
        quiet_ms = now - s.inactive_ms if s.inactive_ms else 0
        if a.state is AlertState.PENDING:
            if s.inactive_ms and quiet_ms >= rule.clear_after_s * 1000:
                a.state = AlertState.CLEARED
                a.cleared_ms = now
                return Transition.CLEARED_PENDING
            if now - a.first_ms >= rule.for_s * 1000:
                a.state = AlertState.ACTIVE
                a.active_ms = now
                a.transitions = [t for t in a.transitions if now - t < d.flap_window_s * 1000]
                a.transitions.append(now)
                if len(a.transitions) > d.flap_max:
                    a.flapping = True
                    return Transition.FLAPPING
                return Transition.ACTIVATED
            return None
        if a.state is AlertState.ACTIVE and s.inactive_ms:
            needed = rule.clear_after_s
            if a.flapping:
                needed = max(needed, d.flap_window_s)
            if quiet_ms >= needed * 1000:
                a.state = AlertState.CLEARED
                a.cleared_ms = now
                if a.flapping:
                    a.flapping = False
                    a.transitions = []
                return Transition.CLEARED
        return None


class Silencer:
    """Silences and maintenance windows."""

    def __init__(self, store: AlertStore | PgAlertStore, rules: Rules) -> None:
        self.store = store
        self.static = [
            Silence(-i - 1, s.starts_ms, s.ends_ms, s.author, s.reason, s.device_id, s.site, s.kind)
            for i, s in enumerate(rules.silences)
        ]
        self._cache: tuple[int, list[Silence]] = (-1, [])

    def silenced_by(self, alert: Alert, now: int) -> Silence | None:
        """The silence muting this alert now, if any."""
        if self._cache[0] != now:
            self._cache = (now, self.static + self.store.silences(active_at_ms=now))
        return next((s for s in self._cache[1] if s.matches(alert, now)), None)


class Inhibitor:
    """Inhibition rules over the currently active alerts."""

    def __init__(self, rules: Rules) -> None:
        self.rules = rules.inhibit

    def affected(self, changed: Sequence[StoredAlert]) -> tuple[set[str], set[str]]:
        """Devices and sites whose alerts a state change of these alerts may mute or unmute."""
        devices: set[str] = set()
        sites: set[str] = set()
        for src in changed:
            a = src.alert
            for rule in self.rules:
                if not _can_inhibit(rule, src):
                    continue
                if rule.equal == "device":
                    devices.add(a.device_id)
                elif a.site:
                    sites.add(a.site)
        return devices, sites

    def inhibited(self, target: StoredAlert, active: ActiveIndex) -> bool:
        """Whether an active source alert mutes this one."""
        t = target.alert
        for rule in self.rules:
            if rule.target_kinds and t.kind not in rule.target_kinds:
                continue
            if t.severity > rule.target_max_severity:
                continue
            if rule.equal == "device":
                sources = active.on_device(t.device_id)
            else:
                sources = active.on_site(t.site) if t.site else []
            for src in sources:
                a = src.alert
                if a.id == t.id or a.state is not AlertState.ACTIVE:
                    continue
                if not _can_inhibit(rule, src):
                    continue
                if rule.equal == "device" and a.severity <= t.severity and not rule.source_kinds:
                    continue  # a critical mutes the *lower* severities of the same device
                return True
        return False


def _can_inhibit(rule: InhibitRule, src: StoredAlert) -> bool:
    """Whether an alert matches a rule's source side (kind, device kind, severity)."""
    a = src.alert
    return (
        (not rule.source_kinds or a.kind in rule.source_kinds)
        and (not rule.source_device_kinds or src.device_kind in rule.source_device_kinds)
        and a.severity >= rule.source_min_severity
    )


class ActiveIndex:
    """Open alerts by device and by site, kept up to date with the pipeline's cache."""

    def __init__(self) -> None:
        self.alerts: dict[int, StoredAlert] = {}
        self.by_device: dict[str, set[int]] = {}
        self.by_site: dict[str, set[int]] = {}

    def put(self, s: StoredAlert) -> None:
        """Add or replace an alert."""
        self.drop(s.alert.id)
        a = s.alert
        self.alerts[a.id] = s
        self.by_device.setdefault(a.device_id, set()).add(a.id)
        if a.site:
            self.by_site.setdefault(a.site, set()).add(a.id)

    def drop(self, alert_id: int) -> None:
        """Forget an alert (cleared)."""
        s = self.alerts.pop(alert_id, None)
        if s is None:
            return
        self.by_device.get(s.alert.device_id, set()).discard(alert_id)
        self.by_site.get(s.alert.site, set()).discard(alert_id)

    def on_device(self, device_id: str) -> list[StoredAlert]:
        """Open alerts of a device."""
        return [self.alerts[i] for i in self.by_device.get(device_id, ())]

    def on_site(self, site: str) -> list[StoredAlert]:
        """Open alerts of a site."""
        return [self.alerts[i] for i in self.by_site.get(site, ())]


class Mute:
    """Stage 2, mute: a flapping alert already paged, a silence or maintenance window, or an
    inhibiting alert stops the alert here (the alert itself stays as it is)."""

    name: Final = "mute"

    def __init__(self, silencer: Silencer, inhibitor: Inhibitor) -> None:
        self.silencer = silencer
        self.inhibitor = inhibitor

    def apply(self, step: Step) -> bool:
        """Whether the alert may be notified now."""
        a = step.stored.alert
        if a.flapping and step.what is not Transition.FLAPPING and a.notified_severity >= 0:
            return False  # held active: no paging while it flaps
        if self.silencer.silenced_by(a, step.now) is not None:
            return False
        return not self.inhibitor.inhibited(step.stored, step.active)


class Escalate:
    """Stage 3, escalate: per route, after ``group_wait``, the receivers due now (the first,
    again on a higher severity or a repeat, the next one after ``escalate_after``)."""

    name: Final = "escalate"

    def __init__(self, rules: Rules) -> None:
        self.rules = rules
        self.escalator = Escalator()

    def apply(self, step: Step) -> bool:
        """Add the alert's due notifications to the plan."""
        a = step.stored.alert
        for route in self.rules.routes_for(a.site, a.kind, a.severity):
            if (
                a.notified_severity < 0
                and step.now - a.active_ms < self.rules.defaults.group_wait_s * 1000
            ):
                continue
            escalation_before = a.escalation
            for receiver, reason in self.escalator.due(a, route, step.now):
                step.plan.dues.append(Due(a, receiver, route, "firing", reason))
            if a.escalation != escalation_before:
                step.plan.changed[a.id] = a
        return True


class Escalator:
    """Which receivers of a route an alert has reached, and what is due now."""

    def due(self, a: Alert, route: Route, now: int) -> list[tuple[str, str]]:
        """(receiver, reason) pairs to notify for an active alert now."""
        chain = route.receivers
        if a.notified_severity < 0:
            return [(chain[0], "new")]
        out: list[tuple[str, str]] = []
        if int(a.severity) > a.notified_severity:
            out += [(r, "severity") for r in chain[: a.escalation + 1]]
        elif not a.acknowledged and now - a.notified_ms >= route.repeat_interval_s * 1000:
            out += [(r, "repeat") for r in chain[: a.escalation + 1]]
        if (
            not a.acknowledged
            and route.escalate_after_s > 0
            and a.escalation + 1 < len(chain)
            and now - a.active_ms >= route.escalate_after_s * 1000 * (a.escalation + 1)
        ):
            a.escalation += 1
            out.append((chain[a.escalation], "escalated"))
        return out
