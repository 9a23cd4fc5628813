"""A device's firmware between two radio wake-ups (:class:`Node`): sensor sampling, sequence
numbers and boot ids, the adaptive rate, the battery (:class:`BatteryModel`) and the stored
installation record; and :func:`steady_bolt`, the sensor of a healthy bolt.

A node holds no network state and knows nothing of asyncio: an uplink
(:mod:`firmware_sim.firmware.uplink`) carries what it produces.
"""

from __future__ import annotations

import bisect
import math
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from firmware_sim.firmware.config import FirmwareConfigError
from sensors.errors import TopicError
from sensors.schema import READING_TYPES, Channel, DeviceKind, Reading, TightenedEvent
from sensors.topics import Topic

SampleFn = Callable[[int], Mapping[str, float] | None]
"""A node's sensor: given the simulated time (epoch ms), the kind's reading fields (names of
:mod:`sensors.schema`; NaN or missing = not reported), or None when the sensor gives nothing now
(a dropout: no reading, no ``seq`` used)."""

_DEFAULT_WATCH: Final[dict[DeviceKind, str]] = {DeviceKind.CBOLT: "preload_kn"}


# State of charge -> terminal voltage of a lithium-thionyl chloride (Li-SOCl2) cell: flat near
# 3.6 V for most of its life, then a knee below ~10 % and a steep fall at the end.
_SOC_POINTS: Final = (0.0, 0.02, 0.05, 0.10, 0.20, 0.50, 1.0)
_SOC_VOLTS: Final = (2.0, 2.9, 3.3, 3.48, 3.56, 3.60, 3.67)


@dataclass(slots=True)
class BatteryModel:
    """A primary cell drained by sleep current, sampling and radio transmissions.

    The defaults (an AA Li-SOCl2 cell, 10 µA asleep, 15 mA·s per measurement, 75 mA·s per
    transmission) give about five years at one report every 30 minutes.

    Attributes:
        capacity_mah: Usable capacity, mAh.
        sample_mas: Charge per measurement, mA·s (ultrasonic or strain-gauge front end awake).
        tx_mas: Charge per transmitted reading, mA·s (radio on).
        sleep_ua: Sleep current between wake-ups, µA.
        used_mas: Charge drawn so far, mA·s.
    """

    capacity_mah: float = 2_600.0
    sample_mas: float = 15.0
    tx_mas: float = 75.0
    sleep_ua: float = 10.0
    used_mas: float = 0.0

    def __post_init__(self) -> None:
        if not self.capacity_mah > 0:
            raise FirmwareConfigError("capacity_mah", f"must be > 0, got {self.capacity_mah}")
        for key in ("sample_mas", "tx_mas", "sleep_ua", "used_mas"):
            if not getattr(self, key) >= 0:
                raise FirmwareConfigError(key, f"must be >= 0, got {getattr(self, key)}")

    @property
    def soc(self) -> float:
        """State of charge, 0..1."""
        return max(0.0, 1.0 - self.used_mas / (self.capacity_mah * 3_600.0))

    @property
    def depleted(self) -> bool:
        """Whether the cell is empty (the node can no longer wake up)."""
        return self.soc <= 0.0

    @property
    def voltage_v(self) -> float:
        """Terminal voltage at the present state of charge, V."""
        soc = self.soc
        j = bisect.bisect_right(_SOC_POINTS, soc)
        if j >= len(_SOC_POINTS):
            return _SOC_VOLTS[-1]
        lo_s, hi_s = _SOC_POINTS[j - 1], _SOC_POINTS[j]
        lo_v, hi_v = _SOC_VOLTS[j - 1], _SOC_VOLTS[j]
        return lo_v + (hi_v - lo_v) * (soc - lo_s) / (hi_s - lo_s)

    def drain(self, *, asleep_s: float, samples: int = 0, transmissions: int = 0) -> None:
        """Account for ``asleep_s`` seconds of sleep, ``samples`` measurements and
        ``transmissions`` radio transmissions."""
        self.used_mas += (
            max(asleep_s, 0.0) * self.sleep_ua / 1_000.0
            + samples * self.sample_mas
            + transmissions * self.tx_mas
        )


@dataclass(slots=True, frozen=True)
class InstallationRecord:
    """What the installer's tool recorded when the bolt was tightened.

    Attributes:
        torque_nm: Torque applied, N·m.
        preload_kn: Preload measured at the end of tightening, kN.
        ts_ms: When (epoch ms UTC); None = the time the record is published.
        tool: Tool identifier.
        operator: Who tightened it.
        tightening_pass: Pass number (1 = installation).
    """

    torque_nm: float
    preload_kn: float
    ts_ms: int | None = None
    tool: str | None = None
    operator: str | None = None
    tightening_pass: int | None = None


@dataclass(slots=True)
class NodeStats:
    """Counters of one node.

    Attributes:
        samples: Wake-ups (measurements attempted).
        readings: Readings produced (each with its own ``seq``).
        dropouts: Wake-ups where the sensor gave nothing.
        events: Events produced (``tightened``).
        fast_samples: Readings taken at the fast (adaptive) rate.
        reboots: Reboots (``seq`` restarted, new ``boot_id``).
    """

    samples: int = 0
    readings: int = 0
    dropouts: int = 0
    events: int = 0
    fast_samples: int = 0
    reboots: int = 0


class Node:
    """One logical device: sensor sampling, sequence numbers, adaptive rate, battery.

    Args:
        kind: Device kind (its reading schema and topic segment).
        site: Site id.
        device_id: Device id (``[A-Za-z0-9_-]{1,64}``).
        sample_fn: The sensor (see :data:`SampleFn`).
        interval_s: Base reporting interval, simulated seconds.
        fast_interval_s: Interval while the watched field is changing; default a tenth of
            ``interval_s``.
        watch_field: Reading field whose change speeds sampling up; default ``preload_kn`` for a
            ``cbolt``, none (no adaptation) for other kinds.
        change_threshold_pct: Change of the watched field, in percent of its reference value,
            that switches to the fast rate. The reference is the last report at least one base
            interval old (in base mode simply the last report), so a steady change keeps the fast
            rate and sensor noise is not amplified by the shorter interval.
        settle_intervals: Whole base intervals without such a change before going back to the
            base rate.
        battery: Battery model; None for a mains-powered device.
        report_battery: Add ``battery_v`` to the readings (``cbolt`` only, with a battery).
        clock_offset_ms: Added to every timestamp the node stamps (a clock fault).
        installation: Stored installation record, published as a ``tightened`` event on request.
        fw_version: Firmware version announced in the birth message.
        phase_s: First sample this many simulated seconds after the fleet's start; default a
            random phase within one interval.
        rng: Random source for the boot id (default seeded from the device id: deterministic).

    Raises:
        FirmwareConfigError: A parameter is invalid (names it).
    """

    def __init__(
        self,
        kind: DeviceKind | str,
        site: str,
        device_id: str,
        sample_fn: SampleFn,
        *,
        interval_s: float = 600.0,
        fast_interval_s: float | None = None,
        watch_field: str | None = None,
        change_threshold_pct: float = 2.0,
        settle_intervals: int = 1,
        battery: BatteryModel | None = None,
        report_battery: bool = True,
        clock_offset_ms: int = 0,
        installation: InstallationRecord | None = None,
        fw_version: str = "sim-0.1.0",
        phase_s: float | None = None,
        rng: random.Random | None = None,
    ) -> None:
        try:
            self.kind = DeviceKind(kind)
        except ValueError:
            raise FirmwareConfigError("kind", f"unknown device kind {kind!r}") from None
        try:
            Topic.build(site, self.kind, device_id, Channel.TELEMETRY)
        except TopicError as exc:
            raise FirmwareConfigError("site/device_id", exc.reason) from None
        self.site = site
        self.device_id = device_id
        self.sample_fn = sample_fn
        self._cls: type[Reading] = READING_TYPES[self.kind]
        self._fields = frozenset(self._cls.__struct_fields__) - {"ts", "seq", "device_id"}
        _check_interval("interval_s", interval_s)
        self.interval_s = float(interval_s)
        if fast_interval_s is not None:
            _check_interval("fast_interval_s", fast_interval_s)
        self.fast_interval_s = (
            float(fast_interval_s) if fast_interval_s is not None else interval_s / 10.0
        )
        self.watch_field = watch_field if watch_field is not None else _DEFAULT_WATCH.get(self.kind)
        if self.watch_field is not None and self.watch_field not in self._fields:
            raise FirmwareConfigError(
                "watch_field", f"{self.watch_field!r} is not a {self.kind} reading field"
            )
        if not change_threshold_pct > 0:
            raise FirmwareConfigError("change_threshold_pct", "must be > 0")
        self.change_threshold_pct = float(change_threshold_pct)
        if settle_intervals < 1:
            raise FirmwareConfigError("settle_intervals", "must be >= 1")
        self.settle_intervals = settle_intervals
        self.battery = battery
        self.report_battery = (
            report_battery and battery is not None and self.kind is DeviceKind.CBOLT
        )
        self.clock_offset_ms = int(clock_offset_ms)
        self.installation = installation
        self.fw_version = fw_version
        self.phase_s = phase_s
        self._rng = rng if rng is not None else random.Random(f"{site}/{device_id}")  # noqa: S311 - simulation, not cryptography
        self.relayed = False
        """Set by a gateway: readings and events then carry ``kind`` and ``device_id``."""
        self.on_reschedule: Callable[[Node], None] | None = None
        """Called when :attr:`next_sample_ms` moves outside :meth:`sample` (set by the fleet)."""
        self.stats = NodeStats()
        self.alive = True
        self.boot_id = self._new_boot_id()
        self.seq = 0
        self.next_sample_ms: int | None = None
        self.last_sample_ms: int | None = None
        self.fast = False
        self._ref_value: float | None = None
        self._ref_ms = 0
        self._calm = 0

    def __repr__(self) -> str:
        return f"Node({self.kind.value}, {self.site}/{self.device_id}, seq={self.seq})"

    @property
    def current_interval_s(self) -> float:
        """The interval in force now (fast while the watched field changes)."""
        return min(self.fast_interval_s, self.interval_s) if self.fast else self.interval_s

    def schedule_first(self, start_ms: int, rng: random.Random | None = None) -> int:
        """Set the first sample time: ``start_ms`` plus :attr:`phase_s` (or a random phase)."""
        phase_s = self.phase_s
        if phase_s is None:
            phase_s = (rng or self._rng).uniform(0.0, self.interval_s)
        self.next_sample_ms = start_ms + round(phase_s * 1000.0)
        return self.next_sample_ms

    def sample(self, t_ms: int) -> Reading | None:
        """Wake up at simulated time ``t_ms``: measure, and make a reading.

        Also drains the battery, adapts the rate and sets :attr:`next_sample_ms`.

        Returns:
            The reading, or None (sensor dropout, or the battery is empty: :attr:`alive` is then
            False and the node never wakes again).

        Raises:
            FirmwareConfigError: The sample function returned a field the kind does not have.
        """
        if not self.alive:
            return None
        battery = self.battery
        if battery is not None:
            last = self.last_sample_ms
            battery.drain(asleep_s=0.0 if last is None else (t_ms - last) / 1000.0, samples=1)
        self.last_sample_ms = t_ms
        self.stats.samples += 1
        if battery is not None and battery.depleted:
            self.alive = False
            self.next_sample_ms = None
            return None
        values = self.sample_fn(t_ms)
        if values is None:
            self.stats.dropouts += 1
            self.next_sample_ms = t_ms + round(self.current_interval_s * 1000.0)
            return None
        fields = {k: v for k, v in values.items() if not (isinstance(v, float) and math.isnan(v))}
        unknown = fields.keys() - self._fields
        if unknown:
            raise FirmwareConfigError(
                "sample_fn", f"{sorted(unknown)} are not {self.kind} reading fields"
            )
        if self.report_battery and battery is not None:
            fields["battery_v"] = round(battery.voltage_v, 3)
            battery.drain(asleep_s=0.0, transmissions=1)
        elif battery is not None:
            battery.drain(asleep_s=0.0, transmissions=1)
        reading = self._cls(
            ts=t_ms + self.clock_offset_ms,
            seq=self.seq,
            device_id=self.device_id if self.relayed else None,
            **fields,
        )
        self.seq += 1
        self.stats.readings += 1
        if self.fast:
            self.stats.fast_samples += 1
        watched = fields.get(self.watch_field) if self.watch_field is not None else None
        if isinstance(watched, int | float):
            self._adapt(t_ms, float(watched))
        self.next_sample_ms = t_ms + round(self.current_interval_s * 1000.0)
        return reading

    def _adapt(self, t_ms: int, value: float) -> None:
        ref = self._ref_value
        if ref is None:
            self._ref_value, self._ref_ms = value, t_ms
            return
        change_pct = abs(value - ref) / max(abs(ref), 1e-9) * 100.0
        if change_pct > self.change_threshold_pct:
            self.fast = True
            self._calm = 0
            self._ref_value, self._ref_ms = value, t_ms
        elif t_ms - self._ref_ms >= round(self.interval_s * 1000.0):
            # A whole base interval without a significant change.
            if self.fast:
                self._calm += 1
                if self._calm >= self.settle_intervals:
                    self.fast = False
                    self._calm = 0
            self._ref_value, self._ref_ms = value, t_ms

    def set_interval(self, interval_s: float, now_ms: int) -> None:
        """Change the base interval from now on (the ``set_interval`` command).

        The next sample comes one new interval after the last one (not before ``now_ms``).

        Raises:
            FirmwareConfigError: ``interval_s`` is not a positive finite number.
        """
        _check_interval("interval_s", interval_s)
        self.interval_s = float(interval_s)
        if not self.alive or self.next_sample_ms is None:
            return
        base = self.last_sample_ms if self.last_sample_ms is not None else now_ms
        self.next_sample_ms = max(now_ms, base + round(self.current_interval_s * 1000.0))
        if self.on_reschedule is not None:
            self.on_reschedule(self)

    def tightened_event(self, now_ms: int) -> TightenedEvent | None:
        """The installation record as a ``tightened`` event (uses a ``seq``), or None if the node
        has no record."""
        rec = self.installation
        if rec is None:
            return None
        event = TightenedEvent(
            ts=(rec.ts_ms if rec.ts_ms is not None else now_ms) + self.clock_offset_ms,
            seq=self.seq,
            device_id=self.device_id if self.relayed else None,
            kind=self.kind if self.relayed else None,
            torque_nm=rec.torque_nm,
            preload_kn=rec.preload_kn,
            tool=rec.tool,
            operator=rec.operator,
            tightening_pass=rec.tightening_pass,
        )
        self.seq += 1
        self.stats.events += 1
        return event

    def birth(self) -> dict[str, Any]:
        """The retained birth message's content."""
        return {
            "state": "online",
            "boot_id": self.boot_id,
            "fw_version": self.fw_version,
            "interval_s": self.interval_s,
        }

    def reboot(self) -> None:
        """Restart the firmware: ``seq`` from 0, a new ``boot_id``, base rate."""
        self.boot_id = self._new_boot_id()
        self.seq = 0
        self.fast = False
        self._ref_value = None
        self._calm = 0
        self.stats.reboots += 1

    def topic(self, channel: Channel) -> str:
        """This device's own topic on ``channel``."""
        return f"boltwatch/v1/{self.site}/{self.kind.value}/{self.device_id}/{channel.value}"

    def _new_boot_id(self) -> str:
        return f"{self._rng.getrandbits(48):012x}"


def _check_interval(key: str, value: float) -> None:
    if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
        raise FirmwareConfigError(key, f"must be a positive number of seconds, got {value!r}")


def steady_bolt(
    preload_kn: float = 60.0,
    *,
    noise_pct: float = 0.3,
    temp_c: float = 15.0,
    temp_swing_c: float = 6.0,
    rng: random.Random | None = None,
) -> SampleFn:
    """A healthy smart bolt: constant preload with sensor noise, and a daily temperature cycle.

    Args:
        preload_kn: Settled preload, kN.
        noise_pct: Standard deviation of the preload noise, percent of ``preload_kn``.
        temp_c: Mean temperature, °C.
        temp_swing_c: Amplitude of the daily temperature cycle, °C.
        rng: Random source (default: a fixed seed).
    """
    source = rng if rng is not None else random.Random(0)  # noqa: S311 - simulation
    sigma = preload_kn * noise_pct / 100.0
    day_ms = 86_400_000.0

    def sample(t_ms: int) -> Mapping[str, float]:
        phase = 2.0 * math.pi * (t_ms % day_ms) / day_ms
        return {
            "preload_kn": round(preload_kn + source.gauss(0.0, sigma), 3),
            "temp_c": round(temp_c + temp_swing_c * math.sin(phase), 2),
        }

    return sample
