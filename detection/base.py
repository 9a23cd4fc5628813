"""The one interface every detector implements, and the frames and events they exchange.

A detector watches one family of devices. Its learned state is a *struct of arrays*: one numpy
array per state variable, indexed by the device's slot (``0..n-1``), so one call updates many
devices at once. Hyper-parameters live apart from the learned state, in a frozen dataclass kept
exactly as passed (``detector.params``).

Two steps, as in river's anomaly detectors:

1. :meth:`Detector.update` learns from a :class:`Frame` and returns :class:`Scores`: an anomaly
   score in [0, 1] per row plus the detector's diagnostics per row. Row ``i`` of a device sees only
   that device's rows up to ``i`` (causal).
2. :meth:`Detector.decide` thresholds the scores: it returns, per row, the alert kind that is
   active at that row ("" when none), and the :class:`DetectionEvent` list — the *edges* (an alert
   starting or escalating, with an explanation in numbers), not one event per row.

Rows of a frame must be sorted by ``(slot, ts_s)``; :func:`steps` cuts such a frame into steps
holding at most one row per device, so a detector's recursion runs over steps while each step is
vectorised over devices.
"""

from __future__ import annotations

import copy
import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Self, TypeVar

import numpy as np
import numpy.typing as npt

from detection.events import DetectionEvent, EventKind, Severity

if TYPE_CHECKING:
    from sensors.registry import Registry

__all__ = [
    "ArrayState",
    "Bool",
    "ConformanceCase",
    "Decisions",
    "DetectionError",
    "DetectionEvent",
    "Detector",
    "EventKind",
    "Float64",
    "Frame",
    "Int64",
    "Objects",
    "Scores",
    "Severity",
    "steps",
]

Float64 = npt.NDArray[np.float64]
Int64 = npt.NDArray[np.int64]
Bool = npt.NDArray[np.bool_]
Objects = npt.NDArray[np.object_]

P = TypeVar("P")


class DetectionError(ValueError):
    """Input a detector cannot use (a missing column, a snapshot of another detector...).

    Attributes:
        key: What is wrong (a column, a parameter, a snapshot field).
        reason: Why, in words.
    """

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"{key}: {reason}")
        self.key = key
        self.reason = reason


@dataclass(slots=True)
class Frame:
    """Readings of many devices, as columns, sorted by ``(slot, ts_s)``.

    Attributes:
        slot: Each row's device slot in the detector's state arrays.
        device_id: Each row's device id (object array of str).
        ts_s: Epoch seconds (float).
        values: One float64 column per field; NaN = not reported.
        late: Rows that arrived late (see :attr:`DetectionEvent.late`).
        site: Each row's site ("" when unknown), or None.
        arrays: Waveform columns (e.g. ``vib_ms2``): per row an array or None.
    """

    slot: Int64
    device_id: Objects
    ts_s: Float64
    values: dict[str, Float64]
    late: Bool | None = None
    site: Objects | None = None
    arrays: dict[str, list[Float64 | None]] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.slot.shape[0])

    def column(self, name: str) -> Float64:
        """A value column, or all-NaN when the frame does not have it."""
        col = self.values.get(name)
        if col is None:
            return np.full(len(self), np.nan)
        return col

    def late_rows(self) -> Bool:
        """The late mask (all False when not given)."""
        return np.zeros(len(self), np.bool_) if self.late is None else self.late

    def take(self, rows: Int64) -> Frame:
        """The given rows, as a new frame."""
        return Frame(
            slot=self.slot[rows],
            device_id=self.device_id[rows],
            ts_s=self.ts_s[rows],
            values={k: v[rows] for k, v in self.values.items()},
            late=None if self.late is None else self.late[rows],
            site=None if self.site is None else self.site[rows],
            arrays={k: [v[int(i)] for i in rows] for k, v in self.arrays.items()},
        )

    @classmethod
    def single(
        cls,
        device_id: str,
        ts_s: npt.NDArray[np.floating[Any]],
        values: dict[str, Float64],
        slot: int = 0,
    ) -> Frame:
        """A frame of one device's series (already in time order)."""
        n = ts_s.shape[0]
        ids = np.empty(n, object)
        ids[:] = device_id
        return cls(np.full(n, slot, np.int64), ids, ts_s.astype(np.float64), values)


def sort_frame(frame: Frame) -> Frame:
    """The frame sorted by ``(slot, ts_s)`` (stable: equal times keep their order)."""
    order = np.lexsort((frame.ts_s, frame.slot))
    if np.all(order[1:] > order[:-1]):
        return frame
    return frame.take(order.astype(np.int64))


def steps(slot: Int64) -> Iterator[Int64]:
    """Cut rows sorted by slot into steps with at most one row per device.

    Step ``r`` holds each device's ``r``-th row, so running a recursion over the steps in order
    visits every device's rows in their order while each step is one vectorised update.

    Args:
        slot: Row slots, sorted ascending (rows of a device contiguous).

    Yields:
        Row indices of each step, ascending.
    """
    n = slot.shape[0]
    if n == 0:
        return
    starts = np.flatnonzero(np.r_[True, slot[1:] != slot[:-1]])
    if starts.shape[0] == n:  # one row per device: a single step
        yield np.arange(n, dtype=np.int64)
        return
    rank = np.arange(n, dtype=np.int64) - np.repeat(starts, np.diff(np.r_[starts, n]))
    order = np.argsort(rank, kind="stable").astype(np.int64)
    bounds = np.searchsorted(rank[order], np.arange(int(rank.max()) + 2))
    for r in range(bounds.shape[0] - 1):
        yield order[bounds[r] : bounds[r + 1]]


@dataclass(slots=True)
class Scores:
    """What :meth:`Detector.update` returns.

    Attributes:
        score: Anomaly score per row, in [0, 1] (NaN is never returned: no evidence is 0).
        extra: Per-row diagnostics the detector's :meth:`Detector.decide` uses (units in keys).
    """

    score: Float64
    extra: dict[str, npt.NDArray[Any]] = field(default_factory=dict)


@dataclass(slots=True)
class Decisions:
    """What :meth:`Detector.decide` returns.

    Attributes:
        alert: Per row, the alert kind active at that row ("" when none).
        severity: Per row, the severity of that alert (0 when none).
        events: Alerts starting or escalating, in row order.
    """

    alert: Objects
    severity: npt.NDArray[np.int8]
    events: list[DetectionEvent] = field(default_factory=list)

    @classmethod
    def empty(cls, n: int) -> Decisions:
        """No alert on any of ``n`` rows."""
        alert = np.empty(n, object)
        alert[:] = ""
        return cls(alert, np.zeros(n, np.int8))


class ArrayState:
    """Learned state as named arrays with a leading device axis, grown by doubling.

    Args:
        spec: Per array: (dtype, fill value for a new device, trailing shape).
    """

    def __init__(self, spec: Mapping[str, tuple[npt.DTypeLike, float, tuple[int, ...]]]) -> None:
        self.spec = dict(spec)
        self.arrays: dict[str, npt.NDArray[Any]] = {
            name: np.full((0, *tail), fill, dtype=dt)
            for name, (dt, fill, tail) in self.spec.items()
        }
        self.size = 0

    def __getitem__(self, name: str) -> npt.NDArray[Any]:
        return self.arrays[name]

    @property
    def capacity(self) -> int:
        """Allocated device rows (>= :attr:`size`)."""
        first = next(iter(self.arrays.values()), None)
        return 0 if first is None else int(first.shape[0])

    def ensure(self, n: int) -> None:
        """Make room for devices ``0..n-1`` (new ones get their fill values)."""
        if n <= self.size:
            return
        if n > self.capacity:
            # x1.25, not x2: at 100,000 bolts doubling left a quarter of the state unused
            cap = max(n, self.capacity + self.capacity // 4, 16)
            for name, (dt, fill, tail) in self.spec.items():
                old = self.arrays[name]
                new = np.full((cap, *tail), fill, dtype=dt)
                new[: old.shape[0]] = old
                self.arrays[name] = new
        self.size = n

    def reset(self, slots: Int64) -> None:
        """Forget what was learned for these devices."""
        for name, (_, fill, _) in self.spec.items():
            self.arrays[name][slots] = fill

    def nbytes_per_device(self) -> int:
        """Bytes of state one device costs."""
        return sum(
            int(np.dtype(dt).itemsize * int(np.prod(tail, dtype=np.int64)))
            for dt, _, tail in self.spec.values()
        )

    def snapshot(self) -> dict[str, npt.NDArray[Any]]:
        """Copies of the used rows of every array."""
        return {name: a[: self.size].copy() for name, a in self.arrays.items()}

    def restore(self, snap: Mapping[str, npt.NDArray[Any]]) -> None:
        """Load a :meth:`snapshot` (arrays the snapshot lacks start at their fill values).

        Raises:
            DetectionError: An array has the wrong trailing shape, or sizes disagree.
        """
        sizes = {int(a.shape[0]) for name, a in snap.items() if name in self.spec}
        if len(sizes) > 1:
            raise DetectionError("snapshot", f"arrays disagree on the number of devices: {sizes}")
        n = sizes.pop() if sizes else 0
        self.__init__(self.spec)  # type: ignore[misc]
        self.ensure(n)
        for name, (_, _, tail) in self.spec.items():
            if name not in snap:
                continue
            a = np.asarray(snap[name])
            if tuple(a.shape[1:]) != tuple(tail):
                raise DetectionError(
                    f"snapshot.{name}", f"shape {a.shape[1:]} is not the expected {tail}"
                )
            self.arrays[name][:n] = a


@dataclass(slots=True)
class ConformanceCase:
    """Data a detector ships for the shared conformance test.

    Attributes:
        normal: A frame of normal behaviour (several devices, in slot/time order).
        anomalous: A frame continuing ``normal`` (same devices, later times) with anomalies.
        anomaly_rows: Rows of ``anomalous`` that are anomalous.
    """

    normal: Frame
    anomalous: Frame
    anomaly_rows: Bool


class Detector(ABC, Generic[P]):
    """A streaming detector over many devices.

    Subclasses set :attr:`name`, :attr:`kinds`, :attr:`params_type`, :attr:`state_spec`, and
    implement :meth:`update`, :meth:`decide` and :meth:`conformance_case`.

    Args:
        params: Hyper-parameters (a frozen dataclass of :attr:`params_type`); defaults if None.
    """

    name: ClassVar[str]
    """Registry name (``bolt_preload``, ``printer3d``, ``univariate``...)."""
    kinds: ClassVar[tuple[str, ...]]
    """Device kinds (or replay kinds) this detector watches."""
    params_type: ClassVar[type[Any]]
    """The frozen dataclass of hyper-parameters."""
    state_spec: ClassVar[Mapping[str, tuple[npt.DTypeLike, float, tuple[int, ...]]]]
    """Learned state: per array (dtype, fill for a new device, trailing shape)."""
    watches_by_default: ClassVar[bool] = True
    """Whether the engine runs this detector on its :attr:`kinds` by default (at most one such
    detector per kind: :func:`detection.registry.default_detectors`)."""
    optional_columns: ClassVar[Mapping[str, float]] = {}
    """Value columns the engine fills with this value when a batch lacks them."""
    event_marks: ClassVar[Mapping[str, str]] = {}
    """Device event type -> value column set to 1 on the device's next reading (e.g. a battery
    swap marks the next reading, which the detector re-baselines on)."""

    def __init__(self, params: P | None = None) -> None:
        self.params: P = self.params_type() if params is None else params
        self.state = ArrayState(self.state_spec)

    @property
    def n_devices(self) -> int:
        """Devices this detector has state for."""
        return self.state.size

    def ensure_devices(self, n: int) -> None:
        """Make room for device slots ``0..n-1``."""
        self.state.ensure(n)

    def clone(self) -> Self:
        """A fresh detector with the same hyper-parameters and nothing learned."""
        return type(self)(copy.deepcopy(self.params))

    def snapshot(self) -> dict[str, npt.NDArray[Any]]:
        """The learned state, as arrays (what the engine saves to disk)."""
        snap = self.state.snapshot()
        snap.update(self._extra_snapshot())
        return snap

    def restore(self, snap: Mapping[str, npt.NDArray[Any]]) -> None:
        """Continue from a :meth:`snapshot` (of a detector with the same state layout)."""
        self.state.restore(snap)
        self._restore_extra(snap)

    def _extra_snapshot(self) -> dict[str, npt.NDArray[Any]]:
        """State kept outside :attr:`state` (e.g. ring buffers of variable use); none by default."""
        return {}

    def _restore_extra(self, snap: Mapping[str, npt.NDArray[Any]]) -> None:
        """Counterpart of :meth:`_extra_snapshot`."""

    # -- engine hooks: what a detector needs besides its readings (none by default) -----------

    def attach(self, registry: Registry | None) -> None:
        """The site registry the engine runs with: before any batch, and again when it changes
        (then :meth:`on_new_devices` follows with every device already held)."""

    def on_new_devices(self, devices: Sequence[tuple[str, int]]) -> None:
        """Devices just given a slot, as ``(device id, slot)`` (also every slot after a load)."""

    def event_reading(self, event: object) -> Mapping[str, float] | None:
        """A device event that the detector evaluates as a reading (a tightening's preload and
        torque): its value columns, or None for events it does not read."""
        return None

    def batch_events(self, frame: Frame) -> list[DetectionEvent]:
        """Events about several devices at once, after each frame (joint analytics)."""
        return []

    def params_dict(self) -> dict[str, Any]:
        """The hyper-parameters as a plain dict."""
        return dataclasses.asdict(self.params)  # type: ignore[call-overload, no-any-return]

    @abstractmethod
    def update(self, frame: Frame) -> Scores:
        """Learn from the frame and score every row (causally, per device)."""

    @abstractmethod
    def decide(self, frame: Frame, scores: Scores) -> Decisions:
        """Threshold the scores of the frame just updated: active alerts and new events."""

    def process(self, frame: Frame) -> tuple[Scores, Decisions]:
        """:meth:`update` then :meth:`decide`; grows the state to fit the frame's slots."""
        if len(frame):
            self.ensure_devices(int(frame.slot.max()) + 1)
        scores = self.update(frame)
        return scores, self.decide(frame, scores)

    def warm_up(self) -> None:
        """Prepare what the first frame would otherwise wait for (a compiled kernel, loaded from
        its cache or compiled); nothing for most detectors. Safe to call from any thread."""

    @classmethod
    @abstractmethod
    def conformance_case(cls, seed: int) -> ConformanceCase:
        """Normal then anomalous data for the shared conformance test."""
