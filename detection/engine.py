"""The detection engine: committed batches in, typed events out.

Ingest hands the engine each committed batch (:meth:`Engine.process_batch`): readings per device
kind as column arrays, and device events. The engine maps device ids to slots (a dict lookup per
distinct device of the batch, new devices appended without re-allocating per reading), builds one
:class:`~detection.base.Frame` per kind sorted by ``(slot, time)``, and runs the kind's detector
over it — vectorised over the batch's devices. It returns one typed outcome per batch
(:class:`~detection.events.BatchOutcome`: the events, the alert kinds each reporting device
still shows, the devices seen), which is all the alert pipeline takes.

* The engine knows no kind: what a kind's detector needs besides its readings it declares through
  the detector's hooks (:class:`~detection.base.Detector`): device events read as readings
  (a bolt's ``tightened`` event: re-baseline, nut-factor check), events that mark the device's
  next reading (``battery_swap``), columns filled when absent, registry facts for new devices,
  and events about several devices after each frame (joint analytics).
* **Late readings** — older than the device's newest evaluated reading, or older than
  ``late_after_s`` when they reach the engine (a store-and-forward backlog after an outage) — are
  evaluated like the others, and their events carry ``late=True``.
* **Faults** — a detector that raises on a batch does not stop the engine (the one
  detector-isolation boundary, :meth:`Engine.process_columns`): the frame is evaluated again one
  device at a time, each device it still raises on is marked faulted (its learned state is reset,
  it gets one ``internal_error`` event, and its readings are no longer evaluated until
  :meth:`Engine.clear_fault` or a restart), and the other devices go on. Rows of the good devices
  that the failed attempt had already applied are applied again — the same as a redelivered
  batch, which detectors already take.
* **Snapshots** — :meth:`Engine.save` writes every detector's state arrays and the slot maps to one
  ``.npz`` file (atomically: a failed write leaves the previous snapshot as it was);
  :meth:`Engine.load` continues from it, so a restarted service keeps its baselines and does not
  re-alert. The snapshot also records which devices were faulted when it was written
  (:func:`snapshot_faults` reads them, for ``boltwatch stats``); :meth:`Engine.load` does not
  restore them: a restart evaluates every device again.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import itertools
import json
import logging
import os
import time
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from detection.base import (
    Decisions,
    DetectionError,
    DetectionEvent,
    Detector,
    EventKind,
    Float64,
    Frame,
    Int64,
    Objects,
    Severity,
)
from detection.events import BatchOutcome
from detection.registry import default_detectors, make_detector
from sensors.codec import DecodedBatch, DeviceEvent, ReadingColumns
from sensors.registry import Registry
from sensors.schema import DeviceKind

__all__ = [
    "SNAPSHOT_FILE",
    "Engine",
    "EngineStats",
    "SnapshotFaults",
    "snapshot_faults",
]

log = logging.getLogger(__name__)

_SNAPSHOT_VERSION: Final = 1
_UNREADABLE: Final = (OSError, ValueError, EOFError, zipfile.BadZipFile)
"""What reading a damaged ``.npz`` raises (a truncated zip is a ``BadZipFile``)."""
SNAPSHOT_FILE: Final = "detection-state.npz"
"""File name of the snapshot in the store folder (``run`` writes it, ``stats`` reads it)."""


@dataclass(slots=True)
class EngineStats:
    """Counters since start.

    Attributes:
        readings: Readings evaluated.
        late: Of which late.
        events: Events emitted.
        batches: Batches processed.
        faults: Devices whose detector raised (``internal_error``) since start.
    """

    readings: int = 0
    late: int = 0
    events: int = 0
    batches: int = 0
    faults: int = 0


@dataclass(frozen=True, slots=True)
class SnapshotFaults:
    """The faulted devices a snapshot recorded (:func:`snapshot_faults`).

    Attributes:
        saved_ms: When the snapshot was written (epoch ms UTC); None in snapshots written before
            faults were recorded.
        faulted: Device kind -> ids of the devices whose detector had raised, sorted; kinds
            without faulted devices are left out.
    """

    saved_ms: int | None
    faulted: dict[str, list[str]]


def snapshot_faults(path: Path) -> SnapshotFaults:
    """The faulted devices recorded in the snapshot at ``path``, without loading any state.

    Raises:
        DetectionError: The file is not a readable snapshot.
    """
    meta = _read_meta(path)
    recorded = meta.get("faulted", {})
    saved_ms = meta.get("saved_ms")
    return SnapshotFaults(
        saved_ms=int(saved_ms) if isinstance(saved_ms, int) else None,
        faulted={str(k): sorted(map(str, v)) for k, v in sorted(recorded.items()) if v},
    )


def _read_meta(path: Path) -> dict[str, Any]:
    try:
        with np.load(path, allow_pickle=False) as data:
            raw = data["__meta"] if "__meta" in data.files else None
    except _UNREADABLE as exc:
        raise DetectionError("snapshot", f"{path}: not a readable snapshot ({exc})") from exc
    if raw is None:
        raise DetectionError("snapshot", f"{path}: no metadata")
    try:
        meta = json.loads(raw.tobytes().decode())
    except ValueError as exc:
        raise DetectionError("snapshot", f"{path}: unreadable metadata ({exc})") from exc
    if not isinstance(meta, dict):
        raise DetectionError("snapshot", f"{path}: unreadable metadata")
    return meta


class Engine:
    """Per-kind detectors with per-device state, fed committed batches.

    Args:
        detectors: Detector per device kind; if None, those the registry runs by default
            (:func:`detection.registry.default_detectors`).
        registry: Sites, joints and bolt profiles (joint analytics and the nut-factor check).
        late_after_s: A reading older than this when it arrives is late (backfill).
    """

    def __init__(
        self,
        detectors: Mapping[str, Detector[Any]] | None = None,
        *,
        registry: Registry | None = None,
        late_after_s: float = 600.0,
    ) -> None:
        if detectors is None:
            detectors = {kind: make_detector(name) for kind, name in default_detectors().items()}
        self.detectors: dict[str, Detector[Any]] = dict(detectors)
        for det in self.detectors.values():
            det.attach(registry)
        self.registry = registry
        self.late_after_s = late_after_s
        self.slots: dict[str, dict[str, int]] = {kind: {} for kind in self.detectors}
        self.sites: dict[str, dict[str, str]] = {kind: {} for kind in self.detectors}
        self._newest: dict[str, Float64] = {kind: np.zeros(0) for kind in self.detectors}
        # kind -> value column -> devices whose next reading it marks (Detector.event_marks).
        self._pending: dict[str, dict[str, set[str]]] = {kind: {} for kind in self.detectors}
        # kind -> devices whose detector raised: not evaluated until clear_fault (or a restart).
        self.faulted: dict[str, set[str]] = {kind: set() for kind in self.detectors}
        self._fault_logged: set[tuple[str, type[BaseException]]] = set()
        self.stats = EngineStats()

    def warm_up(self) -> None:
        """Every detector's :meth:`Detector.warm_up` (compiled kernels): seconds the first time
        after an install, well under one after (numba's cache). Safe from a worker thread."""
        for det in self.detectors.values():
            det.warm_up()

    def use_registry(self, registry: Registry | None) -> None:
        """A new registry in force (edited while the service runs): each detector attaches it
        and places again every device it already holds (as after a snapshot load)."""
        self.registry = registry
        for kind, det in self.detectors.items():
            det.attach(registry)
            placed = sorted(self.slots[kind].items(), key=lambda kv: kv[1])
            if placed:
                det.on_new_devices(placed)

    # -- devices ---------------------------------------------------------------------------

    def _slot_array(self, kind: str, device_ids: npt.NDArray[np.object_]) -> Int64:
        table = self.slots[kind]
        uniq, inverse = np.unique(device_ids.astype(str), return_inverse=True)
        mapped = np.empty(uniq.shape[0], np.int64)
        new: list[tuple[str, int]] = []
        for i, dev in enumerate(uniq.tolist()):
            s = table.get(dev)
            if s is None:
                s = len(table)
                table[dev] = s
                new.append((dev, s))
            mapped[i] = s
        newest = self._newest[kind]
        if len(table) > newest.shape[0]:
            grown = np.full(max(len(table), newest.shape[0] + newest.shape[0] // 4, 16), -np.inf)
            grown[: newest.shape[0]] = newest
            self._newest[kind] = grown
        if new:
            self.detectors[kind].on_new_devices(new)
        return mapped[inverse.reshape(-1)].astype(np.int64)

    # -- processing ------------------------------------------------------------------------

    def process_batch(self, batch: DecodedBatch, now_ms: int | None = None) -> BatchOutcome:
        """Evaluate a committed batch: its device events, then its readings per kind."""
        events: list[DetectionEvent] = []
        as_readings: dict[str, list[tuple[DeviceEvent, Mapping[str, float]]]] = {}
        for ev in batch.events:
            kind = str(ev.kind)
            det = self.detectors.get(kind)
            if det is None:
                continue
            mark = det.event_marks.get(_event_type(ev.event))
            if mark is not None:
                self._pending[kind].setdefault(mark, set()).add(ev.device_id)
            row = det.event_reading(ev.event)
            if row is not None:
                as_readings.setdefault(kind, []).append((ev, row))
        active: dict[str, list[str]] = {}
        for cols in [
            *(_event_columns(kind, rows) for kind, rows in as_readings.items()),
            *batch.telemetry.values(),
        ]:
            found, shown = self._evaluate(cols, now_ms)
            events += found
            active.update(shown)
        self.stats.batches += 1
        self.stats.events += len(events)
        seen = frozenset(d for cols in batch.telemetry.values() for d in cols.device_id.tolist())
        return BatchOutcome(events, active, seen)

    def process_columns(
        self, cols: ReadingColumns, now_ms: int | None = None
    ) -> list[DetectionEvent]:
        """Evaluate readings of one device kind (kinds without a detector are ignored); their
        events."""
        events, _ = self._evaluate(cols, now_ms)
        self.stats.events += len(events)
        return events

    def _evaluate(
        self, cols: ReadingColumns, now_ms: int | None
    ) -> tuple[list[DetectionEvent], dict[str, list[str]]]:
        """Events of one kind's readings, and the alert kinds each reporting device shows."""
        kind = str(cols.kind)
        det = self.detectors.get(kind)
        if det is None or len(cols) == 0:
            return [], {}
        faulted = self.faulted[kind]
        if faulted:
            cols = cols.select(
                np.fromiter(
                    (d not in faulted for d in cols.device_id.tolist()), np.bool_, len(cols)
                )
            )
            if len(cols) == 0:
                return [], {}
        slot = self._slot_array(kind, cols.device_id)
        ts = cols.ts_ms.astype(np.float64) / 1000.0
        values = dict(cols.values)
        for name, fill in det.optional_columns.items():
            values.setdefault(name, np.full(len(cols), fill))
        for name in det.event_marks.values():
            values[name] = self._marks(kind, name, cols.device_id)
        frame = Frame(
            slot=slot,
            device_id=cols.device_id,
            ts_s=ts,
            values=values,
            site=cols.site,
            arrays=dict(cols.arrays),
        )
        order = np.lexsort((frame.ts_s, frame.slot)).astype(np.int64)
        frame = frame.take(order)
        newest = self._newest[kind]
        late = frame.ts_s < newest[frame.slot]
        if now_ms is not None:
            late |= frame.ts_s < now_ms / 1000.0 - self.late_after_s
        frame.late = late
        np.maximum.at(newest, frame.slot, frame.ts_s)
        faults: list[DetectionEvent] = []
        try:
            _, decisions = det.process(frame)
        except Exception as exc:  # noqa: BLE001 - the detector-isolation boundary (module doc)
            frame, decisions, faults = self._isolate(kind, det, frame, exc)
        events = [dataclasses.replace(e, device_kind=kind) for e in [*faults, *decisions.events]]
        active: dict[str, list[str]] = {}
        if len(frame):
            last = np.flatnonzero(np.r_[frame.slot[1:] != frame.slot[:-1], True])
            active = {
                str(frame.device_id[i]): [str(decisions.alert[i])] if decisions.alert[i] else []
                for i in last.tolist()
            }
            events += det.batch_events(frame)  # about joints, not one device: no device kind
        self.stats.readings += len(frame)
        self.stats.late += int(late.sum())
        return events, active

    def _isolate(
        self, kind: str, det: Detector[Any], frame: Frame, exc: Exception
    ) -> tuple[Frame, Decisions, list[DetectionEvent]]:
        """After ``det`` raised on ``frame``: each device alone; those it still raises on are
        faulted. Returns the frame of the good devices, their decisions and one
        ``internal_error`` event per faulted device."""
        bounds = np.flatnonzero(np.r_[True, frame.slot[1:] != frame.slot[:-1], True]).tolist()
        keep: list[Int64] = []
        parts: list[Decisions] = []
        faults: list[DetectionEvent] = []
        for start, stop in itertools.pairwise(bounds):
            rows = np.arange(start, stop, dtype=np.int64)
            one = frame.take(rows)
            try:
                _, decided = det.process(one)
            except Exception as again:  # noqa: BLE001 - the same boundary, per device
                faults.append(self._fault(kind, det, one, again))
                continue
            keep.append(rows)
            parts.append(decided)
        if (kind, type(exc)) not in self._fault_logged:
            self._fault_logged.add((kind, type(exc)))
            log.error(
                "detector %s raised %s on %s readings (traceback logged once per kind and type)",
                det.name,
                type(exc).__name__,
                kind,
                exc_info=exc,
            )
        if faults:
            log.error(
                "detector %s faulted on %d %s device(s), no longer evaluated: %s",
                det.name,
                len(faults),
                kind,
                ", ".join(f.device_id for f in faults[:20]) + (" ..." if len(faults) > 20 else ""),
            )
        rows = np.concatenate(keep) if keep else np.zeros(0, np.int64)
        decisions = Decisions.empty(0)
        if parts:
            decisions = Decisions(
                np.concatenate([p.alert for p in parts]),
                np.concatenate([p.severity for p in parts]),
                [e for p in parts for e in p.events],
            )
        return frame.take(rows), decisions, faults

    def _fault(self, kind: str, det: Detector[Any], one: Frame, exc: Exception) -> DetectionEvent:
        """Mark one device's detector faulted; its ``internal_error`` event."""
        device = str(one.device_id[0])
        self.faulted[kind].add(device)
        self.stats.faults += 1
        slot = one.slot[:1]
        if int(slot[0]) < det.state.size:
            det.state.reset(slot)  # half-updated by the failed call: not to be trusted later
        return DetectionEvent(
            device_id=device,
            kind=EventKind.INTERNAL_ERROR,
            severity=Severity.MAJOR,
            ts_ms=round(float(one.ts_s[-1]) * 1000),
            score=0.0,
            explanation=(
                f"detector {det.name} failed on this device ({type(exc).__name__}: "
                f"{str(exc)[:200]}); its readings are stored but no longer evaluated until the "
                "service restarts"
            ),
            detector=det.name,
            site="" if one.site is None else str(one.site[0]),
        )

    def clear_fault(self, kind: str, device_id: str) -> bool:
        """Evaluate a faulted device again (from a fresh state). Returns whether it was faulted."""
        faulted = self.faulted.get(kind, set())
        if device_id not in faulted:
            return False
        faulted.discard(device_id)
        return True

    def _marks(self, kind: str, name: str, device_ids: Objects) -> Float64:
        """Column ``name``: 1 at the first reading of each device an event marked, else 0."""
        out = np.zeros(device_ids.shape[0])
        pending = self._pending[kind].get(name)
        if pending:
            for i, dev in enumerate(device_ids.tolist()):
                if dev in pending:
                    out[i] = 1.0
                    pending.discard(dev)
        return out

    # -- snapshots -------------------------------------------------------------------------

    def save(self, path: Path) -> None:
        """Write every detector's state, the device slots and the faulted devices to ``path``.

        Atomic: the snapshot is written to ``path.tmp``, synced, then renamed over ``path``. A
        write that fails (a full disk) removes the temporary file and leaves ``path`` as it was.

        Raises:
            OSError: The snapshot could not be written (``path`` is unchanged).
        """
        arrays = self._arrays()
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        try:
            with tmp.open("wb") as f:
                np.savez(f, **arrays)  # type: ignore[arg-type]
                f.flush()
                os.fsync(f.fileno())
            tmp.replace(path)
        except BaseException:
            with contextlib.suppress(OSError):  # a partial file holds space a full disk lacks
                tmp.unlink(missing_ok=True)
            raise
        _sync_dir(path.parent)

    def dumps(self) -> bytes:
        """The snapshot of :meth:`save` as bytes (compressed), for a checkpoint kept elsewhere
        (a cluster's object store); :meth:`loads` reads it back."""
        buf = io.BytesIO()
        np.savez_compressed(buf, **self._arrays())  # type: ignore[arg-type]
        return buf.getvalue()

    def _arrays(self) -> dict[str, npt.NDArray[Any]]:
        arrays: dict[str, npt.NDArray[Any]] = {}
        meta: dict[str, Any] = {
            "version": _SNAPSHOT_VERSION,
            "saved_ms": int(time.time() * 1000),
            "faulted": {kind: sorted(devs) for kind, devs in self.faulted.items() if devs},
            "kinds": {},
        }
        for kind, det in self.detectors.items():
            meta["kinds"][kind] = {
                "detector": det.name,
                "slots": self.slots[kind],
                "pending": {col: sorted(d) for col, d in self._pending[kind].items() if d},
            }
            for name, arr in det.snapshot().items():
                arrays[f"{kind}/{name}"] = arr
            arrays[f"{kind}/__newest"] = self._newest[kind][: len(self.slots[kind])]
        arrays["__meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
        return arrays

    def load(self, path: Path) -> None:
        """Continue from a snapshot written by :meth:`save`. Devices it records as faulted are
        not restored as such: a restart evaluates them again (from the fresh state their fault
        left them).

        Raises:
            DetectionError: The file is not a snapshot, or of another detector layout.
        """
        try:
            with np.load(path, allow_pickle=False) as data:
                arrays = {k: data[k] for k in data.files}
        except _UNREADABLE as exc:
            raise DetectionError("snapshot", f"{path}: not a readable snapshot ({exc})") from exc
        self._restore(arrays, str(path))
        log.info("detection state restored from %s", path)

    def loads(self, data: bytes, source: str = "checkpoint") -> None:
        """Continue from :meth:`dumps` bytes (``source`` names them in errors).

        Raises:
            DetectionError: Not a snapshot, or of another detector layout.
        """
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as npz:
                arrays = {k: npz[k] for k in npz.files}
        except _UNREADABLE as exc:
            raise DetectionError("snapshot", f"{source}: not a readable snapshot ({exc})") from exc
        self._restore(arrays, source)

    def _restore(self, arrays: dict[str, npt.NDArray[Any]], path: str) -> None:
        if "__meta" not in arrays:
            raise DetectionError("snapshot", f"{path}: no metadata")
        meta = json.loads(arrays["__meta"].tobytes().decode())
        if meta.get("version") != _SNAPSHOT_VERSION:
            raise DetectionError("snapshot.version", f"unsupported {meta.get('version')!r}")
        for kind, info in meta["kinds"].items():
            det = self.detectors.get(kind)
            if det is None:
                continue
            if info["detector"] != det.name:
                raise DetectionError(
                    f"snapshot.{kind}", f"made by detector {info['detector']!r}, not {det.name!r}"
                )
            prefix = f"{kind}/"
            det.restore(
                {
                    k[len(prefix) :]: v
                    for k, v in arrays.items()
                    if k.startswith(prefix) and not k.endswith("__newest")
                }
            )
            self.slots[kind] = {str(d): int(s) for d, s in info["slots"].items()}
            newest = np.full(max(len(self.slots[kind]), 16), -np.inf)
            saved = arrays.get(f"{kind}/__newest")
            if saved is not None:
                newest[: saved.shape[0]] = saved
            self._newest[kind] = newest
            pending = dict(info.get("pending", {}))
            if "swap_pending" in info:  # written before marks were declared per detector
                pending["battery_swap"] = info["swap_pending"]
            self._pending[kind] = {
                col: set(map(str, devs))
                for col, devs in pending.items()
                if col in det.event_marks.values()
            }
            det.on_new_devices(list(self.slots[kind].items()))


def _event_type(event: object) -> str:
    """The wire tag of a device event (``tightened``, ``battery_swap``...)."""
    tag = getattr(type(event), "__struct_config__", None)
    return str(tag.tag) if tag is not None else ""


def _event_columns(
    kind: str, rows: list[tuple[DeviceEvent, Mapping[str, float]]]
) -> ReadingColumns:
    """Device events a detector reads as readings, as the columns of kind ``kind`` (a value an
    event does not give is NaN)."""
    n = len(rows)
    names = sorted({name for _, row in rows for name in row})
    return ReadingColumns(
        kind=DeviceKind(kind),
        site=np.array([ev.site for ev, _ in rows], dtype=object),
        device_id=np.array([ev.device_id for ev, _ in rows], dtype=object),
        ts_ms=np.array([ev.ts_ms for ev, _ in rows], np.int64),
        seq=np.zeros(n, np.int64),
        values={
            name: np.array([row.get(name, np.nan) for _, row in rows], np.float64) for name in names
        },
    )


def _sync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable (best effort: not every filesystem allows it)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)
