"""What a report shows, gathered for a period ``[from_ms, to_ms)``: a joint's bolts with their
preload history, lines, events, tightenings, alerts (with who acknowledged them) and gaps.

Everything comes through :class:`~dashboards.console.source.ConsoleSource` (registry, alert
store, tightening history, the joint's drawing, the detector's settled baselines), but the
readings: a report reads weeks of them, so it opens a reader connection of its own on the same
store folder for as long as it gathers (WAL lets it read beside the writer) instead of holding
the console's one connection, and its pages, for that long.

A bolt's state is taken at the end of the period: its level is the median preload of its last
hour of readings there, against the settled baseline the detector holds (the console's ``l90``,
``l80``, ``l70``, ``llow`` classes; ``settling`` while the detector has no baseline, ``unknown``
without a reading in the period).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from typing import Final, Literal

import numpy as np
import numpy.typing as npt

from alerts.model import Alert, AlertState, Transition
from dashboards.console.history import Tightening
from dashboards.console.source import BoltLevel, ConsoleSource, JointMark
from dashboards.report.errors import ReportError
from dashboards.report.gaps import Gap, find_gaps
from detection.events import EventKind
from ingest.store import HOUR_MS, Store
from sensors.registry import BoltProfile, Joint, Site, Structure
from sensors.schema import DeviceKind

__all__ = [
    "LINES",
    "STATE_LABELS",
    "AlertRow",
    "BoltData",
    "FleetData",
    "JointData",
    "Scope",
    "below",
    "check_period",
    "gather_fleet",
    "gather_joint",
]

LINES: Final[tuple[tuple[str, float], ...]] = (
    ("settled", 1.0),
    ("80 %", 0.8),
    ("70 %", 0.7),
    ("30 %", 0.3),
)
"""The lines a bolt's preload is read against, as fractions of its settled baseline (the bolt
page's)."""
STATE_LABELS: Final[dict[str, str]] = {
    "l90": "≥ 90 % of settled",
    "l80": "80-90 %",
    "l70": "70-80 %",
    "llow": "< 70 %",
    "settling": "settling (no baseline)",
    "unknown": "no reading",
    "none": "not instrumented",
}
"""The drawing's colour classes (those of the console's joint page), in words."""
_SILENT_KINDS: Final = frozenset(
    {EventKind.NO_DATA.value, EventKind.SENSOR_FAULT.value, EventKind.INTERNAL_ERROR.value}
)
_ALERTS_PER_BOLT: Final = 1000


@dataclass(frozen=True, slots=True)
class AlertRow:
    """An alert of the period with its acknowledgements.

    Attributes:
        alert: The alert as stored now.
        acks: (who, epoch ms) of each acknowledgement, oldest first (also those taken back).
    """

    alert: Alert
    acks: tuple[tuple[str, int], ...]

    @property
    def start_ms(self) -> int:
        """When it became active (or was first raised, if it never did)."""
        return self.alert.active_ms or self.alert.first_ms


@dataclass(frozen=True, slots=True)
class BoltData:
    """One bolt over the period.

    Attributes:
        device_id: The bolt.
        position: Its position in the joint.
        ts_ms: Times of its preload values (epoch ms, sorted).
        preload_kn: Its preload (kN), aligned with ``ts_ms``.
        resolution: ``raw`` readings, or ``1h`` means when the raw ones are gone (retention).
        baseline_kn: The settled baseline the detector holds (kN); NaN while it settles.
        level_kn: Median preload of its last hour of readings in the period (kN); NaN if none.
        state: Its colour class (:data:`STATE_LABELS`).
        hatched: A ``no_data``, ``sensor_fault`` or ``internal_error`` alert was active at the
            end of the period: its level may be stale.
        events: (epoch ms, type) of its stored events in the period.
        tightenings: Its tightening history up to the end of the period, oldest first.
        alerts: Its alerts active at some time of the period, oldest first.
        gaps: Its data-quality gaps in the period.
    """

    device_id: str
    position: int
    ts_ms: npt.NDArray[np.int64]
    preload_kn: npt.NDArray[np.float64]
    resolution: str
    baseline_kn: float
    level_kn: float
    state: str
    hatched: bool
    events: tuple[tuple[int, str], ...]
    tightenings: tuple[Tightening, ...]
    alerts: tuple[AlertRow, ...]
    gaps: tuple[Gap, ...]

    @property
    def ratio(self) -> float:
        """Level / settled baseline (NaN when either is unknown)."""
        if not math.isfinite(self.baseline_kn) or self.baseline_kn <= 0:
            return math.nan
        return self.level_kn / self.baseline_kn

    @property
    def lines(self) -> dict[str, float]:
        """The settled, 80, 70 and 30 % lines (kN); empty while the baseline settles."""
        if not math.isfinite(self.baseline_kn):
            return {}
        return {name: f * self.baseline_kn for name, f in LINES}


@dataclass(frozen=True, slots=True)
class JointData:
    """A joint over the period.

    Attributes:
        joint: The registry's joint.
        structure: Its structure.
        site: Its site (its time zone is the report's).
        profile: The joint's bolt profile (None if the registry lacks it).
        from_ms: Start of the period (epoch ms, included).
        to_ms: End of the period (epoch ms, excluded).
        now_ms: The source's clock when gathered.
        marks: The drawing's positions (the console's geometry; :data:`DRAWING` units).
        pitch_circle: Radius of the pitch circle in drawing units (0: not circular).
        bolts: Its instrumented bolts, by position.
    """

    joint: Joint
    structure: Structure
    site: Site
    profile: BoltProfile | None
    from_ms: int
    to_ms: int
    now_ms: int
    marks: tuple[JointMark, ...]
    pitch_circle: float
    bolts: tuple[BoltData, ...]

    @property
    def zone(self) -> tzinfo:
        """The site's time zone."""
        return self.site.zone()

    def bolt(self, device_id: str) -> BoltData | None:
        """One of its bolts."""
        return next((b for b in self.bolts if b.device_id == device_id), None)


@dataclass(frozen=True, slots=True)
class Scope:
    """What a fleet report covers.

    Attributes:
        level: ``site`` or ``structure``.
        id: The site's or structure's registry id.
    """

    level: Literal["site", "structure"]
    id: str


@dataclass(frozen=True, slots=True)
class FleetData:
    """A site or structure over the period.

    Attributes:
        scope: What was asked for.
        name: The site's or structure's name.
        site: The site (its time zone is the report's).
        from_ms: Start of the period (epoch ms, included).
        to_ms: End of the period (epoch ms, excluded).
        now_ms: The source's clock when gathered.
        joints: Its joints.
    """

    scope: Scope
    name: str
    site: Site
    from_ms: int
    to_ms: int
    now_ms: int
    joints: tuple[JointData, ...]

    @property
    def zone(self) -> tzinfo:
        """The site's time zone."""
        return self.site.zone()

    @property
    def bolts(self) -> list[BoltData]:
        """Every instrumented bolt of its joints."""
        return [b for j in self.joints for b in j.bolts]


def check_period(from_ms: int, to_ms: int) -> None:
    """Refuse an empty or inverted period.

    Raises:
        ReportError: ``from`` is not before ``to`` (key ``from``).
    """
    if from_ms >= to_ms:
        start, end = (datetime.fromtimestamp(ms / 1000, UTC).isoformat() for ms in (from_ms, to_ms))
        raise ReportError("from", f"the period is empty or inverted: {start} is not before {end}")


def gather_joint(source: ConsoleSource, joint_id: str, from_ms: int, to_ms: int) -> JointData:
    """A joint's report data for ``[from_ms, to_ms)``.

    Raises:
        ReportError: No such joint in the registry (key ``joint``), or an empty period.
        StoreError: The store folder cannot be opened.
    """
    check_period(from_ms, to_ms)
    if not any(j.id == joint_id for j in source.registry.joints):
        raise ReportError("joint", f"no joint {joint_id!r} in the registry")
    with _reader(source) as reader:
        return _Gather(source, reader, from_ms, to_ms, source.levels()).joint(joint_id)


def gather_fleet(source: ConsoleSource, scope: Scope, from_ms: int, to_ms: int) -> FleetData:
    """The report data of a site's or a structure's joints for ``[from_ms, to_ms)``.

    Raises:
        ReportError: No such site or structure in the registry (key ``site`` or
            ``structure``), or an empty period.
        StoreError: The store folder cannot be opened.
    """
    check_period(from_ms, to_ms)
    reg = source.registry
    if scope.level == "site":
        site = next((s for s in reg.sites if s.id == scope.id), None)
        if site is None:
            raise ReportError("site", f"no site {scope.id!r} in the registry")
        structures = {s.id for s in reg.structures if s.site == scope.id}
        name = site.name
    else:
        structure = next((s for s in reg.structures if s.id == scope.id), None)
        if structure is None:
            raise ReportError("structure", f"no structure {scope.id!r} in the registry")
        site = next(s for s in reg.sites if s.id == structure.site)
        structures = {structure.id}
        name = structure.name
    levels = source.levels()
    with _reader(source) as reader:
        gather = _Gather(source, reader, from_ms, to_ms, levels)
        joints = tuple(gather.joint(j.id) for j in reg.joints if j.structure in structures)
    return FleetData(scope, name, site, from_ms, to_ms, source.clock(), joints)


@contextmanager
def _reader(source: ConsoleSource) -> Iterator[Store]:
    """A reader connection of the report's own on the source's store folder."""
    store = Store(source.readings.path)
    try:
        yield store
    finally:
        store.close()


@dataclass(frozen=True, slots=True)
class _Gather:
    """Reads one period's data through the source and a reader connection of its own."""

    source: ConsoleSource
    reader: Store
    from_ms: int
    to_ms: int
    levels: Mapping[str, BoltLevel]

    def joint(self, joint_id: str) -> JointData:
        """The joint's data (its bolts by position)."""
        source = self.source
        reg = source.registry
        view = source.joint(joint_id)
        if view is None:  # the registry changed while gathering
            raise ReportError("joint", f"no joint {joint_id!r} in the registry")
        joint = view.joint
        structure = next(s for s in reg.structures if s.id == joint.structure)
        site = next(s for s in reg.sites if s.id == structure.site)
        profile = next((p for p in reg.bolt_profiles if p.id == joint.bolt_profile), None)
        now = source.clock()
        until = max(self.from_ms, min(self.to_ms, now))
        bolts = tuple(
            self.bolt(b.device_id, b.position, until)
            for b in sorted(reg.joint_bolts(joint_id), key=lambda b: b.position)
        )
        return JointData(
            joint,
            structure,
            site,
            profile,
            self.from_ms,
            self.to_ms,
            now,
            tuple(view.marks),
            view.pitch_circle,
            bolts,
        )

    def bolt(self, device_id: str, position: int, until_ms: int) -> BoltData:
        """One bolt's data; ``until_ms``: the end of the period, or now if earlier."""
        from_ms, to_ms = self.from_ms, self.to_ms
        ts, preload, resolution = _preload(self.reader, device_id, from_ms, to_ms)
        level_kn = float(np.median(preload[ts >= ts[-1] - HOUR_MS])) if ts.size else math.nan
        known = self.levels.get(device_id)
        baseline = (
            known.baseline_kn
            if known is not None and known.armed and math.isfinite(known.baseline_kn)
            else math.nan
        )
        history = tuple(t for t in self.source.tightenings(device_id) if t.ts_ms < to_ms)
        alerts = _alerts(self.source, device_id, from_ms, to_ms)
        hatched = any(
            a.alert.kind in _SILENT_KINDS and _active_at(a.alert, until_ms - 1) for a in alerts
        )
        stored = self.reader.events(
            device_id=device_id, since_ms=from_ms, until_ms=to_ms, limit=1000
        )
        events = tuple((int(str(e["ts_ms"])), str(e["type"])) for e in stored)
        installed = history[0].ts_ms if history else None
        expected = None if installed is None else max(from_ms, installed)
        gaps = find_gaps(device_id, ts[ts < until_ms], expected, until_ms)
        return BoltData(
            device_id,
            position,
            ts,
            preload,
            resolution,
            baseline,
            level_kn,
            _state(ts.size > 0, baseline, level_kn),
            hatched,
            events,
            history,
            alerts,
            tuple(gaps),
        )


def _preload(
    reader: Store, device_id: str, from_ms: int, to_ms: int
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64], str]:
    """The bolt's preload in the period: raw readings, else hourly means (raw readings older
    than the store's retention are deleted; the rollups stay)."""
    cols = reader.readings(
        DeviceKind.CBOLT, device_id=device_id, since_ms=from_ms, until_ms=to_ms, waveforms=False
    )
    ts, preload = cols.ts_ms, cols.values["preload_kn"]
    resolution = "raw"
    if ts.size == 0:
        rows = reader.rollups(
            DeviceKind.CBOLT,
            resolution="1h",
            device_id=device_id,
            field="preload_kn",
            since_ms=from_ms,
            until_ms=to_ms,
        )
        ts = np.array([r.bucket_ms for r in rows], dtype=np.int64)
        preload = np.array([r.mean for r in rows], dtype=np.float64)
        resolution = "1h" if rows else "raw"
    keep = np.isfinite(preload)
    return ts[keep], preload[keep], resolution


def _alerts(
    source: ConsoleSource, device_id: str, from_ms: int, to_ms: int
) -> tuple[AlertRow, ...]:
    """The device's alerts active (or pending) at some time of the period, with their
    acknowledgements from the alert's history."""
    rows = []
    for a in source.device_alerts(device_id, limit=_ALERTS_PER_BOLT):
        start = a.active_ms or a.first_ms
        if start >= to_ms or (a.cleared_ms and a.cleared_ms < from_ms):
            continue
        acks = tuple(
            (detail, ms) for ms, what, detail in source.history(a.id) if what == Transition.ACK
        )
        rows.append(AlertRow(a, acks))
    return tuple(sorted(rows, key=lambda r: (r.start_ms, r.alert.id)))


def _active_at(alert: Alert, ms: int) -> bool:
    if not alert.active_ms or alert.active_ms > ms:
        return False
    return alert.state is AlertState.ACTIVE or alert.cleared_ms > ms


def _state(has_readings: bool, baseline_kn: float, level_kn: float) -> str:
    """The console's colour class of a bolt's level."""
    if not has_readings:
        return "unknown"
    if not math.isfinite(baseline_kn):
        return "settling"
    ratio = level_kn / baseline_kn
    if ratio >= 0.9:
        return "l90"
    if ratio >= 0.8:
        return "l80"
    if ratio >= 0.7:
        return "l70"
    return "llow"


def below(bolts: Sequence[BoltData], fraction: float) -> int:
    """How many of the bolts end the period below ``fraction`` of their settled baseline."""
    return sum(1 for b in bolts if math.isfinite(b.ratio) and b.ratio < fraction)
