"""What the console shows, read from the stores: the fleet tree, a bolt's series, data quality.

:class:`ConsoleSource` is the console's one door to data. It reads the registry (the tree and
the joints), the alert store (states, acknowledgements, history) and a reader connection to
the ingest store (readings, rollups, devices, dead letters); ``levels`` gives each bolt's
preload as a fraction of its settled baseline, from the running detector. Every method is
synchronous (SQLite): the pages call them in a worker thread; one lock keeps the reader
connection to one call at a time.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Final, Literal

import numpy as np

from alerts.campaign_tracker import CampaignTracker
from alerts.model import Alert, AlertState
from alerts.store import AlertStore
from dashboards.console.history import Tightening, tightenings
from dashboards.console.outlook import Forecast, compensate, forecast
from dashboards.console.spectrum import Spectrum, newest_spectrum
from detection.events import EventKind, Severity
from detection.preload import Outlook
from ingest import IngestTotals
from ingest.store import DeadLetter, Rollup, Store, StoreStats, reason_key
from sensors.registry import BoltInfo, Joint, Registry, Site
from sensors.registry_store import RegistryStore
from sensors.schema import KINDS, DeviceKind

__all__ = [
    "DRAWING",
    "FOLD_OK",
    "RANGES",
    "BoltLevel",
    "ConsoleSource",
    "DeviceRow",
    "Fleet",
    "JointMark",
    "JointView",
    "Node",
    "Quality",
    "Series",
    "Status",
]


class Status(StrEnum):
    """A device's or a group's colour on the console: its worst active alert."""

    OK = "ok"
    SILENT = "silent"
    FAULT = "fault"
    WARNING = "warning"
    MAJOR = "major"
    CRITICAL = "critical"

    @property
    def rank(self) -> int:
        """Order of badness (ok lowest)."""
        return _RANK[self]


_RANK: Final = {s: i for i, s in enumerate(Status)}
_FAULT_KINDS: Final = frozenset({EventKind.SENSOR_FAULT.value, EventKind.INTERNAL_ERROR.value})
_BY_SEVERITY: Final = {
    Severity.INFO: Status.OK,
    Severity.WARNING: Status.WARNING,
    Severity.MAJOR: Status.MAJOR,
    Severity.CRITICAL: Status.CRITICAL,
}

RANGES: Final[dict[str, int]] = {
    "1h": 3_600_000,
    "6h": 6 * 3_600_000,
    "1d": 86_400_000,
    "7d": 7 * 86_400_000,
    "30d": 30 * 86_400_000,
    "1y": 365 * 86_400_000,
}
"""Time ranges a series can be asked for (milliseconds back from now)."""
_RAW_UP_TO_MS: Final = 86_400_000
_MINUTES_UP_TO_MS: Final = 7 * 86_400_000
_HOURS_UP_TO_MS: Final = 30 * 86_400_000  # beyond, daily means (sealed days' hours are computed)

FOLD_OK: Final[dict[str, int]] = {"joint": 12, "machines": 100, "unregistered": 100}
"""Most ok devices a fleet-page group lists; beyond, it lists its exceptions and counts the
rest (the joint page lists every bolt). 10,000 rows made a 2.5 MB page that took 230 ms (p99)
to render."""


def alert_status(alert: Alert) -> Status:
    """The colour one alert gives its device (ok once it is not active)."""
    if alert.state is not AlertState.ACTIVE:
        return Status.OK
    if alert.kind == EventKind.NO_DATA.value:
        return Status.SILENT
    if alert.kind in _FAULT_KINDS:
        return Status.FAULT
    return _BY_SEVERITY.get(alert.severity, Status.WARNING)


@dataclass(frozen=True, slots=True)
class BoltLevel:
    """A bolt's preload as the detector sees it.

    Attributes:
        ratio: Preload level / settled baseline (NaN until there is a level).
        armed: The baseline is settled: the ratio means something.
        baseline_kn: The settled baseline (kN), NaN before.
    """

    ratio: float
    armed: bool
    baseline_kn: float


@dataclass(slots=True)
class DeviceRow:
    """One device on the fleet page.

    Attributes:
        device_id: The device.
        kind: Its kind.
        name: What people call it (machine name, or the bolt's position in its joint).
        status: Its worst active alert's colour.
        alerts: Its active alerts, worst first.
        last_seen_ms: Newest reading stored (epoch ms), None if none.
        level: Its preload level, for a bolt the detector has seen.
        outlook: Its trend and forecast (on a joint's page only).
    """

    device_id: str
    kind: str
    name: str
    status: Status = Status.OK
    alerts: list[Alert] = field(default_factory=list)
    last_seen_ms: int | None = None
    level: BoltLevel | None = None
    outlook: Outlook | None = None

    @property
    def percent(self) -> str:
        """The settled-preload percentage as text ("" when not armed)."""
        if self.level is None or not self.level.armed or not math.isfinite(self.level.ratio):
            return ""
        return f"{100 * self.level.ratio:.0f} %"


@dataclass(slots=True)
class Node:
    """A site, structure or joint with what it holds.

    Attributes:
        id: Its registry id.
        name: Its name.
        level: ``site``, ``structure``, ``joint``, ``machines`` or ``unregistered``.
        children: Nodes below it.
        devices: Devices directly under it.
        status: Worst status below it.
        counts: Devices below it by status.
        folded: Ok devices counted here but not listed (see :data:`FOLD_OK`): a joint of a
            large fleet lists its exceptions, and its page lists every bolt.
    """

    id: str
    name: str
    level: str
    children: list[Node] = field(default_factory=list)
    devices: list[DeviceRow] = field(default_factory=list)
    status: Status = Status.OK
    counts: dict[Status, int] = field(default_factory=dict)
    folded: int = 0

    def total(self) -> int:
        """Devices below it."""
        return sum(self.counts.values())

    def fold(self, limit: int) -> None:
        """Keep only the devices that are not ok when more than ``limit`` are ok (they stay
        counted, in ``folded``); below too."""
        for child in self.children:
            child.fold(FOLD_OK.get(child.level, limit))
        ok = sum(1 for d in self.devices if d.status is Status.OK)
        if ok > limit:
            self.devices = [d for d in self.devices if d.status is not Status.OK]
            self.folded += ok

    def summarise(self) -> None:
        """Fill ``status`` and ``counts`` from the devices and children (children first)."""
        counts = dict.fromkeys(Status, 0)
        for child in self.children:
            child.summarise()
            for s, n in child.counts.items():
                counts[s] += n
        for dev in self.devices:
            counts[dev.status] += 1
        counts[Status.OK] += self.folded
        self.counts = counts
        self.status = max(
            (s for s, n in counts.items() if n), key=_RANK.__getitem__, default=Status.OK
        )


@dataclass(slots=True)
class Fleet:
    """The fleet page: the registry tree, then devices heard from but not registered.

    Attributes:
        sites: One node per site (structures → joints → bolts, then a ``machines`` node).
        unregistered: Devices in the store that the registry does not know.
        counts: Every device shown, by status.
        query: The search text applied ("" for none).
        status: The status filter applied (None for none).
    """

    sites: list[Node]
    unregistered: Node
    counts: dict[Status, int]
    query: str = ""
    status: Status | None = None


@dataclass(frozen=True, slots=True)
class Series:
    """A device's numbers over a range, for a chart.

    Attributes:
        device_id: The device.
        fields: Field name -> values (NaN where missing), aligned with ``ts_s``.
        ts_s: Epoch seconds.
        source: ``raw``, ``1m`` or ``1h`` (rollup means).
        events: (epoch s, type) of the device's events in the range: tightenings,
            retightenings, battery swaps...
        episodes: (start s, end s or None while open, kind, severity) of its alerts that
            overlap the range.
        forecast: A bolt's forecast line (None: not armed, or no slope yet).
    """

    device_id: str
    ts_s: list[float]
    fields: dict[str, list[float | None]]
    source: str
    events: list[tuple[float, str]] = field(default_factory=list)
    episodes: list[tuple[float, float | None, str, str]] = field(default_factory=list)
    forecast: Forecast | None = None


@dataclass(frozen=True, slots=True)
class Quality:
    """The data-quality page.

    Attributes:
        stats: Counts of the store.
        silent: Devices with an active ``no_data`` alert.
        batteries: (device, volts) of bolts, lowest first.
        dead_letters: Reason -> (count, a sample).
        signals: (device, dBm) of bolts and gateways, weakest first (newest hourly mean).
        flow: Ingest's counters now (None: ingest runs in another process).
        rate_per_s: Readings stored per second since the previous look (None: first look).
        newest_age_s: Age of the newest reading stored, against the service's clock.
    """

    stats: StoreStats
    silent: list[Alert]
    batteries: list[tuple[str, float]]
    dead_letters: dict[str, tuple[int, DeadLetter | None]]
    signals: list[tuple[str, float]] = field(default_factory=list)
    flow: IngestTotals | None = None
    rate_per_s: float | None = None
    newest_age_s: float | None = None


@dataclass(frozen=True, slots=True)
class JointMark:
    """One bolt position in the joint drawing.

    Attributes:
        position: Position in the pattern, from 1.
        x: Centre, drawing units (the drawing is :data:`DRAWING` square).
        y: Centre, drawing units.
        device_id: The smart bolt there; None for a position without one.
        level: Colour class of its level: ``l90`` (≥ 90 % of settled), ``l80``, ``l70``,
            ``llow`` (< 70 %), ``settling`` (no baseline yet), ``unknown`` (no reading), ``none``
            (not instrumented).
        hatched: Its sensor is silent or faulty: the colour may be stale.
        label: The percentage shown ("" when none).
        status: Its worst active alert's colour.
    """

    position: int
    x: float
    y: float
    device_id: str | None
    level: str
    hatched: bool
    label: str
    status: Status


@dataclass(frozen=True, slots=True)
class JointView:
    """The joint page: the drawing, the bolts' table and the joint findings.

    Attributes:
        joint: The registry's joint.
        structure: Its structure's name.
        site: Its site's id.
        marks: The drawing's positions.
        rows: The instrumented bolts, by position.
        findings: Active ``joint`` alerts of its bolts (k of n low, uneven, asymmetric).
        pitch_circle: Radius of the pitch circle in drawing units (0 when not circular).
    """

    joint: Joint
    structure: str
    site: str
    marks: list[JointMark]
    rows: list[DeviceRow]
    findings: list[Alert]
    pitch_circle: float


DRAWING: Final = 360.0
"""Width and height of the joint drawing (SVG user units)."""
_MAX_DRAWN: Final = 400


class ConsoleSource:
    """The console's reads and actions.

    Args:
        readings: A reader connection to the ingest store (its own :class:`Store`, not the
            writer's).
        alerts: The alert store the pipeline and the API use.
        registry: Sites, joints, bolts and machines; None: every device is unregistered.
        clock: Epoch milliseconds (the service's clock: simulated in the demo).
        levels: Device id -> :class:`BoltLevel` of every bolt the detector holds.
        outlook: The detector's :class:`~detection.preload.Outlook` of the bolts asked for
            (those it has seen).
        flow: Ingest's counters (None when ingest is not in this process).
        monotonic: Seconds, for the ingest rate.
        campaigns: The retightening campaigns and their tracker (None: the console cannot open
            or record any).
        registry_store: The registry's database, when the service uses it (the console edits
            it); None when the service runs from a registry file (read-only).
    """

    def __init__(
        self,
        readings: Store,
        alerts: AlertStore,
        registry: Registry | None,
        *,
        clock: Callable[[], int],
        levels: Callable[[], Mapping[str, BoltLevel]] = dict,
        outlook: Callable[[Sequence[str]], Mapping[str, Outlook]] = lambda _ids: {},
        flow: Callable[[], IngestTotals] | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        campaigns: CampaignTracker | None = None,
        registry_store: RegistryStore | None = None,
    ) -> None:
        self.readings = readings
        self.campaigns = campaigns
        self.registry_store = registry_store
        self.alerts = alerts
        self.registry = registry or Registry.empty()
        self.clock = clock
        self.levels = levels
        self.outlook = outlook
        self.flow = flow
        self.monotonic = monotonic
        self._rate: tuple[float, float, float | None] | None = None  # (monotonic s, readings, /s)
        self._lock = threading.Lock()

    # -- fleet ----------------------------------------------------------------------------------

    def fleet(self, query: str = "", status: Status | None = None, *, fold: bool = True) -> Fleet:
        """The fleet tree, filtered by text (ids and names) and by status; ``fold``: a group
        lists its ok devices only when they are few (:data:`FOLD_OK`)."""
        with self._lock:
            known = self.readings.last_seen()
        by_device: dict[str, list[Alert]] = {}
        for alert in (s.alert for s in self.alerts.open_alerts()):
            if alert.state is AlertState.ACTIVE:
                by_device.setdefault(alert.device_id, []).append(alert)
        rows = _Rows(known, by_device, self.levels(), query.strip().lower(), status)
        reg = self.registry
        sites = [n for n in (_site_node(reg, site, rows) for site in reg.sites) if n.children]
        loose = Node("unregistered", "not in the registry", "unregistered")
        registered = set(reg.devices())
        for device_id in sorted(set(known) | set(by_device)):
            if device_id in registered:
                continue
            kind, site, _ = known.get(device_id, ("", "", None))
            rows.add(loose, device_id, kind, _display(kind), site)
        counts = dict.fromkeys(Status, 0)
        for node in (*sites, loose):
            if fold:
                node.fold(FOLD_OK.get(node.level, FOLD_OK["joint"]))
            node.summarise()
            for s, n in node.counts.items():
                counts[s] += n
        return Fleet(sites, loose, counts, query=query, status=status)

    # -- one joint ------------------------------------------------------------------------------

    def joint(self, joint_id: str) -> JointView | None:
        """A joint's drawing, bolts and findings; None if the registry has no such joint."""
        reg = self.registry
        joint = next((j for j in reg.joints if j.id == joint_id), None)
        if joint is None:
            return None
        structure = next(s for s in reg.structures if s.id == joint.structure)
        fleet = self.fleet(joint_id, fold=False)
        rows: dict[str, DeviceRow] = {}
        for site in fleet.sites:
            for node in _walk(site):
                if node.id == joint_id:
                    rows.update((r.device_id, r) for r in node.devices)
        bolts = {b.position: b for b in reg.joint_bolts(joint_id)}
        positions = (
            range(1, joint.bolt_count + 1) if joint.bolt_count <= _MAX_DRAWN else sorted(bolts)
        )
        marks = []
        for pos in positions:
            bolt = bolts.get(pos)
            angle = bolt.angle_deg if bolt is not None else None
            x, y = _place(joint, pos, angle)
            row = rows.get(bolt.device_id) if bolt is not None else None
            marks.append(_mark(pos, x, y, bolt.device_id if bolt else None, row))
        findings = [a for r in rows.values() for a in r.alerts if a.kind == EventKind.JOINT.value]
        radius = 0.38 * DRAWING if joint.pattern == "circular" else 0.0
        ordered = sorted(rows.values(), key=lambda r: _position_of(bolts, r.device_id))
        outlooks = self.outlook([r.device_id for r in ordered])
        for r in ordered:
            r.outlook = outlooks.get(r.device_id)
        return JointView(joint, structure.name, structure.site, marks, ordered, findings, radius)

    # -- one device -----------------------------------------------------------------------------

    def kind_of(self, device_id: str) -> DeviceKind | None:
        """The device's kind: from the registry, else from the store; None if unknown."""
        kind = self.registry.kind_of(device_id)
        if kind is not None:
            return kind
        with self._lock:
            for rec in self.readings.devices():
                if rec.device_id == device_id:
                    return rec.kind
        return None

    def series(self, device_id: str, kind: DeviceKind, range_name: str) -> Series:
        """The device's numeric fields over ``range_name`` (a key of :data:`RANGES`) back from
        now (or from its newest reading, when it is older than that): raw readings up to a day,
        1-minute means up to a week, hourly means beyond.

        Raises:
            KeyError: Not a range of :data:`RANGES`.
        """
        span = RANGES[range_name]
        now = self.clock()
        with self._lock:
            last = self.readings.last_seen().get(device_id, ("", "", None))[2]
        # A device silent for longer than the range shows its last ``span`` of data, not nothing.
        since = (last if last is not None and last < now - span else now) - span
        names = self.readings.fields(kind)
        marks = self._marks(device_id, since)
        if span <= _RAW_UP_TO_MS:
            with self._lock:
                cols = self.readings.readings(
                    kind, device_id=device_id, since_ms=since, waveforms=False
                )
            ts = (cols.ts_ms / 1000.0).tolist()
            values = {n: _nullable(cols.values[n]) for n in names if n in cols.values}
            return self._with_outlook(Series(device_id, ts, values, "raw", *marks), kind, span)
        resolution: Literal["1m", "1h", "1d"] = (
            "1m" if span <= _MINUTES_UP_TO_MS else "1h" if span <= _HOURS_UP_TO_MS else "1d"
        )
        with self._lock:
            starts, means = self.readings.rollup_means(
                kind, device_id, resolution=resolution, since_ms=since
            )
        out: dict[str, list[float | None]] = {
            n: _nullable(means[n]) if n in means else [None] * starts.size for n in names
        }
        series = Series(device_id, (starts / 1000.0).tolist(), out, resolution, *marks)
        return self._with_outlook(series, kind, span)

    def spectrum(self, device_id: str, kind: DeviceKind) -> Spectrum | None:
        """The Welch spectrum of the device's newest waveform (None: none, or not a kind that
        sends them)."""
        with self._lock:
            return newest_spectrum(self.readings, kind, device_id)

    def _with_outlook(self, series: Series, kind: DeviceKind, span_ms: int) -> Series:
        """A bolt's series with its compensated preload (``preload_comp_kn``) and forecast."""
        if kind is not DeviceKind.CBOLT:
            return series
        o = self.outlook([series.device_id]).get(series.device_id)
        f = series.fields
        if o is None or "preload_kn" not in f or "temp_c" not in f:
            return series
        fields = {**f, "preload_comp_kn": compensate(f["preload_kn"], f["temp_c"], o)}
        last = series.ts_s[-1] if series.ts_s else None
        return Series(
            series.device_id,
            series.ts_s,
            fields,
            series.source,
            series.events,
            series.episodes,
            forecast(o, last, span_ms / 1000.0),
        )

    def _marks(
        self, device_id: str, since_ms: int
    ) -> tuple[list[tuple[float, str]], list[tuple[float, float | None, str, str]]]:
        """The device's events since ``since_ms``, and its alert episodes overlapping it."""
        with self._lock:
            stored = self.readings.events(device_id=device_id, since_ms=since_ms, limit=1000)
        events = [(int(str(e["ts_ms"])) / 1000.0, str(e["type"])) for e in stored]
        episodes = [
            (
                (a.active_ms or a.first_ms) / 1000.0,
                a.cleared_ms / 1000.0 if a.cleared_ms else None,
                a.kind,
                str(a.severity),
            )
            for a in self.alerts.alerts(device_id=device_id, limit=200)
            if not a.cleared_ms or a.cleared_ms >= since_ms
        ]
        return events, episodes

    def tightenings(self, device_id: str) -> list[Tightening]:
        """The bolt's installation records and ``tightened`` events, merged, oldest first."""
        with self._lock:
            events = self.readings.events(device_id=device_id, event_type="tightened", limit=1000)
        reg = self.registry
        return tightenings(reg.bolt(device_id), reg.history(device_id), events)

    def device_alerts(self, device_id: str, limit: int = 50) -> list[Alert]:
        """The device's alerts, newest activity first."""
        return self.alerts.alerts(device_id=device_id, limit=limit)

    # -- alerts ---------------------------------------------------------------------------------

    def alert_list(
        self,
        *,
        state: str | None,
        site: str | None,
        kind: str | None,
        min_severity: Severity | None = None,
        limit: int = 200,
    ) -> list[Alert]:
        """Alerts, newest activity first, filtered (None: any; ``min_severity``: that severity
        or worse)."""
        return self.alerts.alerts(
            state=state, site=site, kind=kind, limit=limit, min_severity=min_severity
        )

    def history(self, alert_id: int) -> list[tuple[int, str, str]]:
        """Who did what to an alert and when: (epoch ms, what, detail)."""
        return self.alerts.history(alert_id)

    # -- data quality ---------------------------------------------------------------------------

    def quality(self, samples: int = 1000) -> Quality:
        """Silent devices, the bolts' batteries and the weakest signals (newest hourly mean of
        the last day), dead letters by reason with a sample each, ingest's rate and backlog."""
        day_ago = self.clock() - 86_400_000
        with self._lock:
            stats = self.readings.stats()
            letters = self.readings.dead_letters(limit=samples, include_replayed=True)
            # Hourly means (ingest rolls them up as it goes): a day of every bolt's raw readings
            # would be millions of rows at every poll of the page.
            hourly = self.readings.rollups(
                DeviceKind.CBOLT, resolution="1h", field="battery_v", since_ms=day_ago
            )
            rssi = [
                r
                for kind in (DeviceKind.CBOLT, DeviceKind.GATEWAY)
                for r in self.readings.rollups(
                    kind, resolution="1h", field="rssi_dbm", since_ms=day_ago
                )
            ]
            seen = [s for _, _, s in self.readings.last_seen().values() if s is not None]
        silent = [
            a
            for a in (s.alert for s in self.alerts.open_alerts())
            if a.kind == EventKind.NO_DATA.value and a.state is AlertState.ACTIVE
        ]
        sample: dict[str, DeadLetter] = {}
        for letter in letters:
            sample.setdefault(reason_key(letter.field), letter)
        dead = {
            reason: (n, sample.get(reason)) for reason, n in stats.dead_letters_by_reason.items()
        }
        flow = self.flow() if self.flow is not None else None
        return Quality(
            stats,
            silent,
            _newest_lowest(hourly),
            dead,
            signals=_newest_lowest(rssi),
            flow=flow,
            rate_per_s=self._rate_of(flow),
            newest_age_s=(self.clock() - max(seen)) / 1000.0 if seen else None,
        )

    def _rate_of(self, flow: IngestTotals | None) -> float | None:
        """Readings stored per second since the previous look at least a second ago."""
        if flow is None:
            return None
        now = self.monotonic()
        last = self._rate
        if last is None or now - last[0] >= 1.0:
            rate = None if last is None else (flow.readings - last[1]) / (now - last[0])
            self._rate = (now, flow.readings, rate)
            return rate
        return last[2]


def _newest_lowest(rows: Sequence[Rollup]) -> list[tuple[str, float]]:
    """Each device's newest finite hourly mean, lowest first."""
    newest: dict[str, tuple[int, float]] = {}
    for r in rows:
        if math.isfinite(r.mean) and r.bucket_ms >= newest.get(r.device_id, (-1, 0.0))[0]:
            newest[r.device_id] = (r.bucket_ms, r.mean)
    return sorted(((d, v) for d, (_, v) in newest.items()), key=lambda kv: kv[1])


@dataclass(slots=True)
class _Rows:
    """Makes the fleet's device rows: state from the alerts, level from the detector, and the
    filters (text in any of the row's names; status)."""

    known: Mapping[str, tuple[str, str, int | None]]
    by_device: Mapping[str, list[Alert]]
    levels: Mapping[str, BoltLevel]
    needle: str
    status: Status | None

    def add(self, node: Node, device_id: str, kind: str, name: str, *context: str) -> None:
        """Put the device's row under ``node``, unless the filters hide it."""
        found = self.by_device.get(device_id)
        alerts = sorted(found, key=lambda a: -alert_status(a).rank) if found else []
        rec = self.known.get(device_id)
        row = DeviceRow(
            device_id,
            kind,
            name,
            status=alert_status(alerts[0]) if alerts else Status.OK,
            alerts=alerts,
            last_seen_ms=rec[2] if rec else None,
            level=self.levels.get(device_id),
        )
        if self.status is not None and row.status is not self.status:
            return
        texts = (device_id, name, *context)
        if self.needle and not any(self.needle in t.lower() for t in texts):
            return
        node.devices.append(row)


def _site_node(reg: Registry, site: Site, rows: _Rows) -> Node:
    """A site's node: structures → joints → bolts, then its machines and gateways (empty
    groups left out)."""
    snode = Node(site.id, site.name, "site")
    for structure in (s for s in reg.structures if s.site == site.id):
        tnode = Node(structure.id, structure.name, "structure")
        for joint in (j for j in reg.joints if j.structure == structure.id):
            jnode = Node(joint.id, joint.name, "joint")
            for bolt in reg.joint_bolts(joint.id):
                context = (joint.id, joint.name, structure.name, site.name)
                rows.add(jnode, bolt.device_id, "cbolt", f"position {bolt.position}", *context)
            if jnode.devices:
                tnode.children.append(jnode)
        if tnode.children:
            snode.children.append(tnode)
    mnode = Node(f"{site.id}-machines", "machines and gateways", "machines")
    for m in (m for m in reg.machines if m.site == site.id):
        rows.add(mnode, m.device_id, m.kind.value, m.name, m.model, site.name)
    for g in (g for g in reg.gateways if g.site == site.id):
        rows.add(mnode, g.device_id, DeviceKind.GATEWAY.value, g.name, site.name)
    if mnode.devices:
        snode.children.append(mnode)
    return snode


def _walk(node: Node) -> Iterator[Node]:
    yield node
    for child in node.children:
        yield from _walk(child)


def _position_of(bolts: Mapping[int, BoltInfo], device_id: str) -> int:
    """The position of a device among a joint's bolts (0 if absent)."""
    return next((p for p, b in bolts.items() if b.device_id == device_id), 0)


def _place(joint: Joint, position: int, angle_deg: float | None) -> tuple[float, float]:
    """Where a position sits in the drawing: on the pitch circle (position 1 at the top,
    clockwise), along a row, or on a square grid."""
    c = DRAWING / 2
    n = joint.bolt_count
    if joint.pattern == "circular":
        a = math.radians(angle_deg if angle_deg is not None else (position - 1) * 360.0 / n)
        r = 0.38 * DRAWING
        return c + r * math.sin(a), c - r * math.cos(a)
    if joint.pattern == "linear":
        step = (DRAWING - 40) / max(1, n - 1)
        return 20 + (position - 1) * step, c
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    step = (DRAWING - 40) / max(1, max(cols, rows) - 1)
    i = position - 1
    return 20 + (i % cols) * step, 20 + (i // cols) * step


def _mark(
    position: int, x: float, y: float, device_id: str | None, row: DeviceRow | None
) -> JointMark:
    if device_id is None:
        return JointMark(position, x, y, None, "none", False, "", Status.OK)
    if row is None:
        return JointMark(position, x, y, device_id, "unknown", False, "", Status.OK)
    level = row.level
    if level is None or not math.isfinite(level.ratio):
        cls = "unknown"
    elif not level.armed:
        cls = "settling"
    elif level.ratio >= 0.9:
        cls = "l90"
    elif level.ratio >= 0.8:
        cls = "l80"
    elif level.ratio >= 0.7:
        cls = "l70"
    else:
        cls = "llow"
    hatched = row.status in (Status.SILENT, Status.FAULT)
    return JointMark(position, x, y, device_id, cls, hatched, row.percent, row.status)


def _nullable(values: np.ndarray) -> list[float | None]:
    return [v if math.isfinite(v) else None for v in values.tolist()]


def _display(kind: str) -> str:
    try:
        return KINDS[DeviceKind(kind)].display_name
    except ValueError:
        return kind
