"""Replay a simulator output folder through the machine detectors and score them per fault.

``boltwatch simulate --scenario fablab --out DIR`` writes one CSV per machine kind
(``timestamp,device_id`` and the kind's reading fields), ``ground_truth.csv`` and ``truth.json``
(every fault interval). :func:`evaluate_machines` replays each kind's CSV through its detector as
one frame (rows sorted by device slot, then time) and reports, per device and fault, whether an
event of a kind that names the fault came inside the fault's interval (extended by the grace
period), how long after the onset, and the device's false alarms: events outside every fault
interval of the device plus the grace period after each fault's end (states with inertia — a
chiller's water, an overheated hotend block — take minutes to relax once a fault clears).
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Final

import numpy as np

from detection.base import DetectionError, DetectionEvent, Detector, EventKind, Frame, sort_frame
from detection.registry import default_detectors, detector_class
from sensors.schema import FIELD_INFO, DeviceKind

__all__ = [
    "EXPECTED_KINDS",
    "GRACE_S",
    "MACHINE_DETECTORS",
    "MachineResult",
    "evaluate_machines",
    "load_machine_csv",
]

MACHINE_DETECTORS: Final[dict[str, type[Detector[Any]]]] = {
    kind: detector_class(name)
    for kind, name in default_detectors().items()
    if kind != DeviceKind.CBOLT
}
"""The detector replayed for each machine kind's CSV."""

EXPECTED_KINDS: Final[dict[str, frozenset[EventKind]]] = {
    "thermistor_detached": frozenset({EventKind.THERMAL_RUNAWAY, EventKind.SENSOR_FAULT}),
    "heater_failure": frozenset({EventKind.HEATER_FAILURE, EventKind.THERMAL_RUNAWAY}),
    "fan_failure": frozenset({EventKind.COOLING_FAILURE}),
    "flow_loss": frozenset({EventKind.COOLING_FAILURE}),
    "chiller_failure": frozenset({EventKind.COOLING_FAILURE}),
    "chatter": frozenset({EventKind.CHATTER, EventKind.VIBRATION}),
    "bearing_outer": frozenset({EventKind.BEARING, EventKind.VIBRATION}),
    "bearing_inner": frozenset({EventKind.BEARING, EventKind.VIBRATION}),
    "tool_wear": frozenset({EventKind.TOOL_WEAR}),
    "blade_wear": frozenset({EventKind.TOOL_WEAR}),
    "motor_stall": frozenset({EventKind.MOTOR}),
    "tension_fault": frozenset({EventKind.MOTOR}),
    "motor_overload": frozenset({EventKind.MOTOR}),
}
"""Event kinds that count as detecting each simulated fault (a CSV-only mill reports vibration
severity, not chatter or bearing, when it has no waveform)."""

GRACE_S: Final = 1800.0
"""Default grace period after a fault's end during which events are not false alarms, s."""


@dataclass(frozen=True, slots=True)
class MachineResult:
    """How a detector did on one fault of one device (or on a healthy device).

    Attributes:
        device_id: The device.
        kind: Its machine kind.
        fault: The fault kind, or ``"none"`` for a device without faults.
        onset_s: Fault start, epoch s (NaN for ``"none"``).
        end_s: Fault end, epoch s (NaN for ``"none"``).
        detected: An event of an expected kind came within [onset, end + grace].
        delay_s: Time from onset to the first such event, s (NaN when not detected).
        event_kind: Kind of that event ("" when not detected).
        severity: Highest severity of the expected-kind events in the window (0 when none).
        false_alarms: Events of the device outside all its fault windows (the same on every row
            of a device).
        events: All events of the device.
    """

    device_id: str
    kind: str
    fault: str
    onset_s: float
    end_s: float
    detected: bool
    delay_s: float
    event_kind: str
    severity: int
    false_alarms: int
    events: int


def _epoch_s(text: str, cache: dict[str, float]) -> float:
    got = cache.get(text)
    if got is None:
        got = cache[text] = datetime.fromisoformat(text).timestamp()
    return got


def load_machine_csv(path: Path, kind: str) -> tuple[Frame, list[str]]:
    """Read a machine CSV (``timestamp,device_id,<fields>``) into one frame.

    Args:
        path: The CSV (timestamps RFC 3339).
        kind: The machine kind; its reading fields are the accepted columns.

    Returns:
        The frame sorted by (slot, time), and the device id of each slot (sorted ids).

    Raises:
        DetectionError: Unknown kind, a missing ``timestamp``/``device_id`` column, a column that
            is not a field of the kind, or an unreadable value (the key names it).
    """
    try:
        fields = {f.name for f in FIELD_INFO[DeviceKind(kind)]}
    except (ValueError, KeyError):
        raise DetectionError("kind", f"unknown machine kind {kind!r}") from None
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh)
        header = next(reader, [])
        rows = list(reader)
    if header[:2] != ["timestamp", "device_id"]:
        raise DetectionError(f"{path.name}:header", "must start with timestamp,device_id")
    for name in header[2:]:
        if name not in fields:
            raise DetectionError(f"{path.name}:{name}", f"not a field of {kind}")
    cols = list(zip(*rows, strict=True)) if rows else [() for _ in header]
    cache: dict[str, float] = {}
    try:
        ts = np.array([_epoch_s(t, cache) for t in cols[0]], dtype=np.float64)
        values = {
            name: np.array([float(x) if x else math.nan for x in col], dtype=np.float64)
            for name, col in zip(header[2:], cols[2:], strict=True)
        }
    except ValueError as exc:
        raise DetectionError(path.name, f"unreadable value: {exc}") from exc
    device_ids = sorted(set(cols[1]))
    index = {d: i for i, d in enumerate(device_ids)}
    ids = np.empty(len(rows), object)
    ids[:] = cols[1]
    slot = np.array([index[d] for d in cols[1]], dtype=np.int64)
    return sort_frame(Frame(slot, ids, ts, values)), device_ids


def _intervals(out_dir: Path) -> dict[str, tuple[str, list[tuple[str, float, float]]]]:
    """Per machine device: (kind, [(fault, start_s, end_s)]) from truth.json or ground_truth.csv."""
    cache: dict[str, float] = {}
    truth: dict[str, tuple[str, list[tuple[str, float, float]]]] = {}
    meta = out_dir / "truth.json"
    if meta.exists():
        for dev in json.loads(meta.read_text(encoding="utf-8"))["devices"]:
            if dev["kind"] not in MACHINE_DETECTORS:
                continue
            truth[dev["device_id"]] = (
                dev["kind"],
                [
                    (iv["kind"], _epoch_s(iv["start"], cache), _epoch_s(iv["end"], cache))
                    for iv in dev.get("intervals", [])
                ],
            )
        return truth
    with (out_dir / "ground_truth.csv").open(newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            if row["kind"] not in MACHINE_DETECTORS:
                continue
            faults = [] if row["fault"] in ("", "none") else row["fault"].split("+")
            # One row per device: every fault gets the device's first onset and last end.
            truth[row["device_id"]] = (
                row["kind"],
                [(f, _epoch_s(row["onset"], cache), _epoch_s(row["end"], cache)) for f in faults],
            )
    return truth


def _score_device(
    device_id: str,
    kind: str,
    faults: list[tuple[str, float, float]],
    events: list[DetectionEvent],
    grace_s: float,
) -> list[MachineResult]:
    ts = np.array([e.ts_ms / 1000.0 for e in events], dtype=np.float64)
    inside = np.zeros(ts.size, np.bool_)
    for _, start, end in faults:
        inside |= (ts >= start) & (ts <= end + grace_s)
    false_alarms = int(np.count_nonzero(~inside))
    if not faults:
        return [
            MachineResult(
                device_id,
                kind,
                "none",
                math.nan,
                math.nan,
                False,
                math.nan,
                "",
                0,
                false_alarms,
                len(events),
            )
        ]
    out: list[MachineResult] = []
    for fault, start, end in faults:
        want = EXPECTED_KINDS.get(fault, frozenset())
        hits = [
            e
            for e, t in zip(events, ts.tolist(), strict=True)
            if start <= t <= end + grace_s and e.kind in want
        ]
        first = hits[0] if hits else None
        out.append(
            MachineResult(
                device_id=device_id,
                kind=kind,
                fault=fault,
                onset_s=start,
                end_s=end,
                detected=first is not None,
                delay_s=math.nan if first is None else first.ts_ms / 1000.0 - start,
                event_kind="" if first is None else first.kind.value,
                severity=max((int(e.severity) for e in hits), default=0),
                false_alarms=false_alarms,
                events=len(events),
            )
        )
    return out


def evaluate_machines(out_dir: Path, *, grace_s: float = GRACE_S) -> list[MachineResult]:
    """Replay every machine CSV of a simulator output folder through its detector and score it.

    Args:
        out_dir: A ``boltwatch simulate`` output folder (machine CSVs and ground truth).
        grace_s: Grace period after each fault's end, s (see the module docs).

    Returns:
        One result per (device, fault), and one ``"none"`` result per device without faults, in
        the order of the ground truth.

    Raises:
        DetectionError: A machine CSV cannot be read (see :func:`load_machine_csv`).
    """
    truth = _intervals(out_dir)
    events: dict[str, list[DetectionEvent]] = {d: [] for d in truth}
    for kind, cls in MACHINE_DETECTORS.items():
        path = out_dir / f"{kind}.csv"
        if not path.exists():
            continue
        frame, _ = load_machine_csv(path, kind)
        _, decisions = cls().process(frame)
        for ev in decisions.events:
            events.setdefault(ev.device_id, []).append(ev)
    results: list[MachineResult] = []
    for device_id, (kind, faults) in truth.items():
        evs = sorted(events.get(device_id, []), key=lambda e: e.ts_ms)
        results += _score_device(device_id, kind, faults, evs, grace_s)
    return results
