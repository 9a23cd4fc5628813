"""Simulated device firmware on the wire: smart-bolt and machine nodes, and their MQTT uplinks.

A :class:`Node` is one logical device (kind, site, device id). It does what the firmware of a real
battery node does between two radio wake-ups: it asks its sensor for a measurement (a
:data:`SampleFn`), numbers the reading (``seq``, restarting at every boot, with a new ``boot_id``),
stamps it with its own clock (which may be off: a sensor fault), drains its battery, and adapts its
sampling rate (faster while the watched field — a bolt's preload — is changing). It holds no
network state and knows nothing of asyncio: something else (the :class:`~firmware_sim.fleet.Fleet`
scheduler, a test) calls :meth:`Node.sample` at the times :attr:`Node.next_sample_ms` asks for.

An :class:`Uplink` is one MQTT connection (gmqtt, QoS 1, persistent session):

* :class:`DirectUplink` carries one device on its own topics (JSON, or Sparkplug B for machines);
* :class:`GatewayUplink` carries many nodes: ``{"readings": [...]}`` batches on the gateway's own
  topic, each reading with its ``kind`` and ``device_id``, plus the gateway's health readings.

Both publish a retained birth (``{"state": "online", "boot_id", "fw_version", "interval_s"}``) on
the status channel at every connect and leave a retained ``{"state": "offline"}`` last will; both
store and forward: while the connection is down (or the broker's in-flight window is full),
readings wait in a bounded "flash" buffer that drops its oldest entry when full, and are replayed
in order, as batches, after the reconnect (exponential backoff with jitter). Messages already
handed to the broker but not acknowledged are resent by gmqtt when the broker kept the session;
when it did not, they go back to the front of the flash buffer. Duplicates and out-of-order
delivery are therefore possible, as with real devices; ``(device_id, seq)`` identifies a reading.

Commands (``cmd`` channel): ``set_interval`` changes a node's base interval (and republishes its
birth, which carries the interval); ``request_tightening_record`` publishes the node's stored
installation record as a ``tightened`` event. Bad commands are counted and ignored.

Units: simulated time in epoch milliseconds (``*_ms``), intervals in simulated seconds
(``*_s``); reconnect delays and timeouts in real seconds.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import math
import random
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Final, NamedTuple
from urllib.parse import unquote, urlsplit

import gmqtt
import msgspec
from gmqtt.mqtt.constants import MQTTv50, MQTTv311
from gmqtt.mqtt.handler import MQTTConnectError

from sensors.codec import encode_event, encode_reading, to_epoch_ms
from sensors.errors import TopicError
from sensors.schema import (
    READING_TYPES,
    AnyEvent,
    Channel,
    Command,
    DeviceKind,
    GatewayReading,
    Reading,
    SetInterval,
    TightenedEvent,
)
from sensors.sparkplug import NAMESPACE, encode_dbirth, encode_ddata, encode_nbirth, encode_ndeath
from sensors.topics import Topic

__all__ = [
    "MQTT_V5",
    "MQTT_V311",
    "BatteryModel",
    "BrokerAddress",
    "DirectUplink",
    "FirmwareConfigError",
    "GatewayUplink",
    "InstallationRecord",
    "LinkConfig",
    "Node",
    "NodeStats",
    "SampleFn",
    "Uplink",
    "UplinkStats",
    "steady_bolt",
]

_log = logging.getLogger(__name__)

SampleFn = Callable[[int], Mapping[str, float] | None]
"""A node's sensor: given the simulated time (epoch ms), the kind's reading fields (names of
:mod:`sensors.schema`; NaN or missing = not reported), or None when the sensor gives nothing now
(a dropout: no reading, no ``seq`` used)."""

MQTT_V311: Final[int] = MQTTv311
"""MQTT 3.1.1 (works with every broker, the embedded amqtt included)."""
MQTT_V5: Final[int] = MQTTv50
"""MQTT 5 (the session then lives ``LinkConfig.session_expiry_s`` after a disconnect)."""

_OFFLINE: Final = b'{"state":"offline"}'
_JSON: Final = msgspec.json.Encoder()
_COMMANDS: Final = msgspec.json.Decoder(Command)
_BATCH_HEAD: Final = b'{"readings":['
_BATCH_TAIL: Final = b"]}"
_DEFAULT_WATCH: Final[dict[DeviceKind, str]] = {DeviceKind.CBOLT: "preload_kn"}


class FirmwareConfigError(ValueError):
    """A node or uplink parameter is invalid.

    Attributes:
        key: The parameter, e.g. ``"fast_interval_s"``.
        reason: What is wrong with it.
    """

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"{key}: {reason}")
        self.key = key
        self.reason = reason

    def __reduce__(self) -> tuple[type[FirmwareConfigError], tuple[str, str]]:
        return (type(self), (self.key, self.reason))


# ---------------------------------------------------------------------------------------------
# Node: battery, installation record, adaptive sampling.

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


# ---------------------------------------------------------------------------------------------
# Uplinks: one MQTT connection each.


@dataclass(slots=True, frozen=True)
class BrokerAddress:
    """Where an uplink connects, parsed from ``mqtt://[user[:password]@]host[:port]``
    (``mqtts://`` for TLS)."""

    host: str
    port: int
    tls: bool = False
    username: str | None = None
    password: str | None = None

    @classmethod
    def parse(cls, url: str) -> BrokerAddress:
        """Parse a broker URL.

        Raises:
            FirmwareConfigError: Not an ``mqtt://`` or ``mqtts://`` URL with a host.
        """
        parts = urlsplit(url)
        if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
            raise FirmwareConfigError("url", f"{url!r} is not mqtt://host[:port] or mqtts://...")
        tls = parts.scheme == "mqtts"
        try:
            port = parts.port or (8883 if tls else 1883)
        except ValueError as exc:
            raise FirmwareConfigError("url", f"bad port in {url!r}") from exc
        return cls(
            host=parts.hostname,
            port=port,
            tls=tls,
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
        )


@dataclass(slots=True, frozen=True)
class LinkConfig:
    """How an uplink talks MQTT and buffers.

    Attributes:
        mqtt_version: :data:`MQTT_V311` (default; every broker) or :data:`MQTT_V5`.
        keepalive_s: MQTT keepalive, real seconds.
        session_expiry_s: MQTT 5 session expiry (the session, its subscriptions and queued
            messages survive a disconnect this long). MQTT 3.1.1 sessions do not expire.
        flash_capacity: Entries (readings and events) the store-and-forward buffer holds; when
            full the oldest is dropped (and counted).
        max_batch: Most readings per ``{"readings": [...]}`` message.
        max_batch_bytes: Most bytes per batch message (the contract allows 256 KiB).
        batch_window_s: A gateway publishes its batch at the latest this many simulated seconds
            after its first reading.
        max_inflight: QoS 1 messages awaiting their PUBACK at once (keep it below the broker's
            receive maximum: Mosquitto's is 20); further messages wait in the buffer.
        reconnect_min_s: First reconnect delay, real seconds (doubles per failure).
        reconnect_max_s: Longest reconnect delay, real seconds.
        reconnect_jitter: Random reduction of each delay, as a fraction (0 = none, 1 = full
            jitter).
        connect_timeout_s: Give a connection attempt up after this long, real seconds.
        stop_timeout_s: On a clean stop, wait at most this long (real seconds) for the buffer to
            drain before disconnecting.
    """

    mqtt_version: int = MQTT_V311
    keepalive_s: int = 60
    session_expiry_s: int = 86_400
    flash_capacity: int = 10_000
    max_batch: int = 100
    max_batch_bytes: int = 200 * 1024
    batch_window_s: float = 5.0
    max_inflight: int = 10
    reconnect_min_s: float = 1.0
    reconnect_max_s: float = 60.0
    reconnect_jitter: float = 0.5
    connect_timeout_s: float = 10.0
    stop_timeout_s: float = 10.0

    def __post_init__(self) -> None:
        if self.mqtt_version not in (MQTT_V311, MQTT_V5):
            raise FirmwareConfigError("mqtt_version", f"must be {MQTT_V311} or {MQTT_V5}")
        for key in (
            "keepalive_s",
            "flash_capacity",
            "max_batch",
            "max_batch_bytes",
            "max_inflight",
        ):
            value = getattr(self, key)
            if not (isinstance(value, int) and value >= 1):
                raise FirmwareConfigError(key, f"must be an integer >= 1, got {value!r}")
        if not 0 <= self.session_expiry_s <= 0xFFFFFFFF:
            raise FirmwareConfigError("session_expiry_s", "must be within 0..4294967295")
        for key in ("batch_window_s", "reconnect_min_s", "connect_timeout_s", "stop_timeout_s"):
            value = getattr(self, key)
            if not (math.isfinite(value) and value > 0):
                raise FirmwareConfigError(key, f"must be > 0, got {value!r}")
        if not self.reconnect_max_s >= self.reconnect_min_s:
            raise FirmwareConfigError("reconnect_max_s", "must be >= reconnect_min_s")
        if not 0.0 <= self.reconnect_jitter <= 1.0:
            raise FirmwareConfigError("reconnect_jitter", "must be within 0..1")


@dataclass(slots=True)
class UplinkStats:
    """Counters of one uplink (readings and events count one each; ``messages`` counts
    MQTT PUBLISH packets of telemetry and events).

    Attributes:
        published: Readings and events handed to the broker (replays and resends included).
        acked: Readings and events whose PUBACK arrived.
        messages: Telemetry and event messages published.
        buffered: Readings and events that went to the flash buffer (offline, or the in-flight
            window was full).
        dropped_full: Entries dropped because the flash buffer was full (the oldest first).
        replayed: Entries published from the flash buffer.
        requeued: Entries of unacknowledged messages put back in the buffer because the broker
            had lost the session.
        reconnects: Successful connections after the first.
        connect_failures: Connection attempts that failed.
        commands: Commands carried out.
        bad_commands: Commands ignored (malformed, unknown, or not applicable).
    """

    published: int = 0
    acked: int = 0
    messages: int = 0
    buffered: int = 0
    dropped_full: int = 0
    replayed: int = 0
    requeued: int = 0
    reconnects: int = 0
    connect_failures: int = 0
    commands: int = 0
    bad_commands: int = 0


_Item = Reading | AnyEvent
# A buffered entry: the node it comes from (None: the gateway's own) and the reading or event.
_Record = tuple[Node | None, _Item]


class _Chunk(NamedTuple):
    """One message made of the first ``n`` entries of a sequence of records."""

    topic: str
    payload: bytes
    n: int


@dataclass(slots=True)
class _Sent:
    """What an in-flight message carries (to count its PUBACK, or requeue it)."""

    records: list[_Record]


class _InflightStore:
    """gmqtt's persistent-storage interface for the QoS 1 messages awaiting their PUBACK.

    Like gmqtt's own store, it keeps the raw packets for gmqtt to resend when the broker kept
    the session. It also remembers what each message carried, so that PUBACKs are counted and,
    when the broker lost the session (gmqtt then clears the store), the entries go back to the
    flash buffer instead of being lost.
    """

    def __init__(
        self, on_ack: Callable[[_Sent], None], on_lost: Callable[[list[int], list[_Sent]], None]
    ) -> None:
        self._messages: OrderedDict[int, bytes] = OrderedDict()
        self._sent: dict[int, _Sent] = {}
        self._waiters: list[tuple[set[int], asyncio.Future[None]]] = []
        self._on_ack = on_ack
        self._on_lost = on_lost
        self.pending: _Sent | None = None

    def __len__(self) -> int:
        return len(self._messages)

    def __bool__(self) -> bool:
        # gmqtt takes `persistent_storage or PersistentStorage()`: an empty store must not be
        # mistaken for "no store given".
        return True

    def push_message(self, mid: int, raw_package: bytes) -> None:
        self._messages[mid] = raw_package
        if self.pending is not None:
            self._sent[mid] = self.pending
            self.pending = None

    def remove_message_by_mid(self, mid: int) -> None:
        if self._messages.pop(mid, None) is None:
            return
        sent = self._sent.pop(mid, None)
        self._wake(mid)
        if sent is not None:
            self._on_ack(sent)

    @property
    def is_empty(self) -> bool:
        return not self._messages

    async def wait_empty(self) -> None:
        # gmqtt waits here, after a reconnect, for the messages it resent: wait for those only,
        # not for every message published since (a busy uplink is never empty).
        if not self._messages:
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (set(self._messages), waiter)
        self._waiters.append(entry)
        try:
            await waiter
        finally:
            if entry in self._waiters:
                self._waiters.remove(entry)

    def clear(self) -> None:
        mids = list(self._messages)
        lost = [self._sent[mid] for mid in mids if mid in self._sent]
        self._messages.clear()
        self._sent.clear()
        for mids_left, waiter in self._waiters:
            mids_left.clear()
            if not waiter.done():
                waiter.set_result(None)
        self._waiters.clear()
        if mids:
            self._on_lost(mids, lost)

    def get_all(self) -> list[tuple[int, bytes]]:
        return list(self._messages.items())

    def _wake(self, mid: int) -> None:
        for mids_left, waiter in self._waiters:
            mids_left.discard(mid)
            if not mids_left and not waiter.done():
                waiter.set_result(None)


class _Client(gmqtt.Client):  # type: ignore[misc]  # gmqtt ships no type information
    """gmqtt's client without its own reconnect loop (fixed delay, no backoff): the uplink
    reconnects, with exponential backoff and jitter."""

    async def reconnect(self, delay: bool = False) -> None:
        return


class Uplink:
    """One MQTT connection of the simulated firmware (base of the direct and gateway uplinks).

    Lifecycle: :meth:`start` (connects in the background, reconnecting with backoff), then
    :meth:`submit` readings as nodes produce them, then :meth:`stop` (drains the buffer,
    sends DISCONNECT: no last will) or :meth:`crash` (the connection dies without DISCONNECT:
    the broker publishes the last will).

    Args:
        url: Broker URL, ``mqtt://host:port``.
        client_id: MQTT client id (stable: the broker keeps the session under it).
        config: MQTT and buffering parameters.
        rng: Random source for the reconnect jitter (default seeded from ``client_id``).
        clock: Simulated time in epoch ms, for births and events (the fleet binds its clock).
        credentials: ``(username, password)`` of this connection, instead of those of ``url``
            (a device logging in as itself: ``boltwatch broker config``).
    """

    def __init__(
        self,
        url: str,
        *,
        client_id: str,
        config: LinkConfig | None = None,
        rng: random.Random | None = None,
        clock: Callable[[], int] | None = None,
        credentials: tuple[str, str] | None = None,
    ) -> None:
        self.address = BrokerAddress.parse(url)
        if credentials is not None:
            user, password = credentials
            self.address = replace(self.address, username=user, password=password)
        self.client_id = client_id
        self.config = config or LinkConfig()
        self.stats = UplinkStats()
        self._rng = rng if rng is not None else random.Random(client_id)  # noqa: S311 - jitter
        self._clock: Callable[[], int] = clock or _wall_ms
        self._flash: deque[_Record] = deque()
        self._control: deque[tuple[str, bytes, bool]] = deque()
        self._store = _InflightStore(self._acked, self._session_lost)
        self._client: Any = None
        self._will: Any = None
        self._supervisor: asyncio.Task[None] | None = None
        self._online = False
        self._up = asyncio.Event()
        self._lost = asyncio.Event()
        self._stopping = False
        self._connected_once = False
        self._subscribed = False
        self._sub_acked = asyncio.Event()
        self._pumping = False
        self._cmd_nodes: dict[str, Node] = {}

    # -- to be provided by the kinds of uplink --------------------------------------------------

    @property
    def nodes(self) -> tuple[Node, ...]:
        """The devices this uplink carries."""
        raise NotImplementedError

    def _will_message(self) -> tuple[str, bytes]:
        raise NotImplementedError

    def _births(self) -> list[tuple[str, bytes, bool]]:
        """Messages to publish first at every connect: ``(topic, payload, retain)``."""
        raise NotImplementedError

    def _birth_of(self, node: Node) -> tuple[str, bytes, bool] | None:
        """The birth to republish when ``node``'s interval changes."""
        raise NotImplementedError

    def _chunk(self, records: Iterable[_Record]) -> _Chunk:
        """One message made of the first entries of ``records`` (at least one)."""
        raise NotImplementedError

    def _live(self, record: _Record) -> tuple[str, bytes]:
        """One message for one fresh entry (not from the buffer)."""
        raise NotImplementedError

    # -- public ---------------------------------------------------------------------------------

    @property
    def online(self) -> bool:
        """Whether the connection is up (CONNACK received, not lost since)."""
        return self._online

    @property
    def backlog(self) -> int:
        """Entries waiting to be published (flash buffer and unsent batch)."""
        return len(self._flash)

    @property
    def inflight(self) -> int:
        """Messages published and not yet acknowledged."""
        return len(self._store)

    def bind_clock(self, clock: Callable[[], int]) -> None:
        """Use ``clock`` (simulated epoch ms) for births and events."""
        self._clock = clock

    def boot(self, now_ms: int) -> None:
        """The device powers up at simulated time ``now_ms`` (a gateway's uptime starts)."""

    def tick(self, now_ms: int) -> None:
        """Time-driven work at simulated time ``now_ms`` (a gateway's batches and health)."""

    def next_deadline_ms(self) -> int | None:
        """When :meth:`tick` next has something to do (simulated ms), or None."""
        return None

    def flush(self) -> None:
        """Publish (or buffer) whatever waits for a batch to fill."""

    async def start(self, limiter: asyncio.Semaphore | None = None) -> None:
        """Start connecting in the background (returns at once; see :meth:`wait_online`).

        Args:
            limiter: Bounds how many uplinks connect at the same moment (a fleet's).
        """
        if self._supervisor is not None and not self._supervisor.done():
            return
        if self._client is None:
            self._client = self._make_client()
        self._stopping = False
        self._supervisor = asyncio.create_task(
            self._supervise(limiter), name=f"uplink:{self.client_id}"
        )
        self._supervisor.add_done_callback(self._supervisor_done)

    def _supervisor_done(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            _log.error(
                "%s: connection supervisor failed", self.client_id, exc_info=task.exception()
            )

    async def wait_online(self, timeout: float | None = None) -> None:  # noqa: ASYNC109 - mirrors asyncio.wait_for
        """Wait until the uplink is connected.

        Raises:
            TimeoutError: Not connected within ``timeout`` real seconds.
        """
        async with asyncio.timeout(timeout):
            await self._up.wait()

    async def wait_subscribed(self, timeout: float | None = None) -> None:  # noqa: ASYNC109 - mirrors asyncio.wait_for
        """Wait until the broker has acknowledged the subscription to the ``cmd`` topics (after
        that, a command published is one the device receives).

        Raises:
            TimeoutError: Not within ``timeout`` real seconds.
        """
        async with asyncio.timeout(timeout):
            await self._sub_acked.wait()

    def submit(self, node: Node | None, reading: Reading) -> None:
        """Hand over a reading of ``node`` (None: the uplink's own) to publish or buffer."""
        self._submit_now((node, reading))

    def publish_installation(self, node: Node) -> bool:
        """Publish ``node``'s installation record as a ``tightened`` event (buffered if offline).

        Returns:
            False if the node has no installation record.
        """
        event = node.tightened_event(self._clock())
        if event is None:
            return False
        self._submit_now((node, event))
        return True

    async def stop(self, timeout: float | None = None) -> None:  # noqa: ASYNC109 - a drain bound
        """Stop cleanly: publish what is buffered (within ``timeout`` real seconds, default
        ``config.stop_timeout_s``), then DISCONNECT (the broker does not publish the will)."""
        if self._supervisor is None:
            return
        self.flush()
        deadline = asyncio.get_running_loop().time() + (
            self.config.stop_timeout_s if timeout is None else timeout
        )
        while not self._idle() and asyncio.get_running_loop().time() < deadline:
            self._pump()
            await asyncio.sleep(0.01)
        self._stopping = True
        await self._cancel_supervisor()
        client = self._client
        if self._online and client is not None:
            self._online = False
            self._up.clear()
            await client.disconnect()
        elif client is not None:
            self._abort_transport()
        self._online = False
        self._up.clear()

    async def crash(self) -> None:
        """Let the connection die without DISCONNECT (power loss, firmware crash): the broker
        publishes the last will. The buffer and the session stay; :meth:`start` reconnects."""
        self._stopping = True
        self._online = False
        self._up.clear()
        await self._cancel_supervisor()
        self._abort_transport()
        await asyncio.sleep(0)

    # -- buffering ------------------------------------------------------------------------------

    def _submit_now(self, record: _Record) -> None:
        """Publish one entry now if the link allows, else buffer it."""
        if self._online and not self._flash and len(self._store) < self.config.max_inflight:
            topic, payload = self._live(record)
            if self._send(topic, payload, [record]):
                return
        self._buffer([record])

    def _buffer(self, records: Iterable[_Record]) -> None:
        flash = self._flash
        capacity = self.config.flash_capacity
        stats = self.stats
        for record in records:
            if len(flash) >= capacity:
                flash.popleft()
                stats.dropped_full += 1
            flash.append(record)
            stats.buffered += 1
        if self._online:
            self._pump()

    def _idle(self) -> bool:
        return not self._flash and not self._control and self._store.is_empty

    def _send(
        self,
        topic: str,
        payload: bytes,
        records: list[_Record],
        *,
        retain: bool = False,
    ) -> bool:
        """Publish one QoS 1 message; False if gmqtt has no packet id left (try again later)."""
        self._store.pending = _Sent(records) if records else None
        try:
            self._client.publish(gmqtt.Message(topic, payload, qos=1, retain=retain))
        except OverflowError:  # every packet id is in flight (the broker's receive maximum)
            self._store.pending = None
            return False
        self._store.pending = None
        if records:
            self.stats.published += len(records)
            self.stats.messages += 1
        return True

    def _pump(self) -> None:
        """Publish births, then the flash buffer, as far as the in-flight window allows."""
        if not self._online or self._pumping:
            return
        self._pumping = True
        try:
            window = self.config.max_inflight
            store = self._store
            control = self._control
            flash = self._flash
            while len(store) < window:
                if control:
                    topic, payload, retain = control[0]
                    if not self._send(topic, payload, [], retain=retain):
                        break
                    control.popleft()
                    continue
                if not flash:
                    break
                chunk = self._chunk(flash)
                records = [flash[i] for i in range(chunk.n)]
                if not self._send(chunk.topic, chunk.payload, records):
                    break
                for _ in range(chunk.n):
                    flash.popleft()
                self.stats.replayed += chunk.n
        finally:
            self._pumping = False

    def _acked(self, sent: _Sent) -> None:
        self.stats.acked += len(sent.records)
        if self._flash or self._control:
            self._pump()

    def _session_lost(self, mids: list[int], lost: list[_Sent]) -> None:
        # The broker did not keep the session: gmqtt drops its unacknowledged messages. Put
        # their entries back in front of the buffer (they are older than what it holds), and
        # free their packet ids, which gmqtt would otherwise keep as used forever.
        records = [r for sent in lost for r in sent.records]
        if records:
            self.stats.requeued += len(records)
            kept = deque(records[-self.config.flash_capacity :])
            self.stats.dropped_full += len(records) - len(kept)
            while kept and len(kept) + len(self._flash) > self.config.flash_capacity:
                kept.popleft()
                self.stats.dropped_full += 1
            self._flash.extendleft(reversed(kept))
        ids = getattr(getattr(self._client, "_package_handler", None), "id_generator", None)
        if ids is not None:
            for mid in mids:
                ids.free_id(mid)

    # -- connection -----------------------------------------------------------------------------

    def _make_client(self) -> _Client:
        cfg = self.config
        topic, payload = self._will_message()
        self._will = gmqtt.Message(topic, payload, qos=1, retain=True)
        kwargs: dict[str, Any] = {}
        if cfg.mqtt_version == MQTT_V5:
            kwargs["session_expiry_interval"] = cfg.session_expiry_s
        client = _Client(
            self.client_id,
            clean_session=False,
            will_message=self._will,
            persistent_storage=self._store,
            logger=logging.getLogger("firmware_sim.mqtt"),
            **kwargs,
        )
        if self.address.username is not None:
            client.set_auth_credentials(self.address.username, self.address.password)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_subscribe = self._on_subscribe
        return client

    def _backoff_s(self, failures: int) -> float:
        cfg = self.config
        base = min(cfg.reconnect_max_s, cfg.reconnect_min_s * 2.0 ** min(failures - 1, 30))
        return base * (1.0 - cfg.reconnect_jitter * self._rng.random())

    async def _supervise(self, limiter: asyncio.Semaphore | None) -> None:
        """Connect, wait for the connection to be lost, reconnect with backoff; until stopped."""
        failures = 0
        addr = self.address
        while not self._stopping:
            if failures:
                await asyncio.sleep(self._backoff_s(failures))
            self._before_connect()
            try:
                if limiter is None:
                    await self._connect()
                else:
                    async with limiter:
                        await self._connect()
            except (OSError, TimeoutError, MQTTConnectError) as exc:
                failures += 1
                self.stats.connect_failures += 1
                self._abort_transport()
                _log.debug(
                    "%s: connecting to %s:%s failed: %s", self.client_id, addr.host, addr.port, exc
                )
                continue
            if self._online:
                await self._lost.wait()
            # Wait before reconnecting after a loss: the broker may be restarting.
            failures = 1

    async def _connect(self) -> None:
        addr = self.address
        cfg = self.config
        async with asyncio.timeout(cfg.connect_timeout_s):
            await self._client.connect(
                addr.host,
                addr.port,
                ssl=addr.tls,
                keepalive=cfg.keepalive_s,
                version=cfg.mqtt_version,
            )

    def _before_connect(self) -> None:
        """Hook run before every connection attempt (Sparkplug sets its will there)."""

    def _abort_transport(self) -> None:
        client = self._client
        connection = getattr(client, "_connection", None) if client is not None else None
        transport = getattr(connection, "_transport", None)
        if transport is not None:
            transport.abort()

    async def _cancel_supervisor(self) -> None:
        task = self._supervisor
        self._supervisor = None
        if task is None or task.done():
            return
        task.cancel()
        # wait() does not raise the task's CancelledError; a cancellation of our own still does.
        await asyncio.wait([task])
        failure = None if task.cancelled() else task.exception()
        if failure is not None:
            raise failure  # a bug in the supervisor: surface it, do not hide it

    def _on_connect(self, client: object, flags: int, rc: int, properties: object) -> None:
        if self._stopping:
            return
        session_present = bool(flags)
        if self._connected_once:
            self.stats.reconnects += 1
        self._connected_once = True
        self._online = True
        self._lost.clear()
        self._up.set()
        topics = list(self._cmd_nodes)
        if topics and (not self._subscribed or not session_present):
            self._sub_acked.clear()
            self._client.subscriptions = []
            self._client.subscribe([gmqtt.Subscription(t, qos=1) for t in topics])
            self._subscribed = True
        self._control = deque(self._births())
        self._pump()

    def _on_subscribe(self, client: object, mid: int, qos: object, properties: object) -> None:
        self._sub_acked.set()

    def _on_disconnect(self, client: object, packet: object, exc: object = None) -> None:
        self._online = False
        self._up.clear()
        self._control.clear()
        self._went_offline()
        self._lost.set()

    def _went_offline(self) -> None:
        """Hook: the connection is gone (a gateway moves its open batch to the buffer)."""

    def _on_message(
        self, client: object, topic: str, payload: bytes, qos: int, properties: object
    ) -> int:
        node = self._cmd_nodes.get(topic)
        if node is None:
            self.stats.bad_commands += 1
            _log.warning("%s: message on unexpected topic %s", self.client_id, topic)
            return 0
        try:
            command = _COMMANDS.decode(payload)
        except msgspec.MsgspecError as exc:
            self.stats.bad_commands += 1
            _log.warning("%s: ignoring bad command on %s: %s", self.client_id, topic, exc)
            return 0
        if isinstance(command, SetInterval):
            node.set_interval(command.interval_s, self._clock())
            birth = self._birth_of(node)
            if birth is not None and self._online:
                self._control.append(birth)
                self._pump()
        elif not self.publish_installation(node):
            self.stats.bad_commands += 1
            _log.warning("%s: %s has no installation record", self.client_id, node.device_id)
            return 0
        self.stats.commands += 1
        return 0


def _wall_ms() -> int:
    return int(time.time() * 1000)


def _encode_status(status: Mapping[str, Any]) -> bytes:
    return _JSON.encode(status)


def _json_chunk(
    records: Iterable[_Record],
    *,
    telemetry_topic: str,
    event_topic: str,
    with_kind: bool,
    max_batch: int,
    max_bytes: int,
) -> _Chunk:
    """A ``{"readings": [...]}`` batch of the leading readings (or the leading event alone)."""
    it = iter(records)
    first = next(it)
    item = first[1]
    if not isinstance(item, Reading):
        return _Chunk(event_topic, encode_event(item), 1)
    parts = [encode_reading(item, with_kind=with_kind)]
    size = len(_BATCH_HEAD) + len(_BATCH_TAIL) + len(parts[0])
    for _, nxt in it:
        if len(parts) >= max_batch or not isinstance(nxt, Reading):
            break
        encoded = encode_reading(nxt, with_kind=with_kind)
        if size + len(encoded) + 1 > max_bytes:
            break
        parts.append(encoded)
        size += len(encoded) + 1
    return _Chunk(telemetry_topic, _BATCH_HEAD + b",".join(parts) + _BATCH_TAIL, len(parts))


class DirectUplink(Uplink):
    """One device on its own connection and topics (a smart bolt with its own modem, a machine
    adapter).

    Live readings go out one per message; replays after an outage as ``{"readings": [...]}``
    batches. With ``sparkplug=True`` (machines) the device speaks Sparkplug B instead: NBIRTH of
    its edge node and DBIRTH at every connect, one DDATA per reading (``seq`` as a metric), and
    NDEATH as the last will; commands still arrive on the JSON ``cmd`` topic and events go to
    the JSON ``event`` topic (Sparkplug B has no mapping for them in the contract).

    Args:
        node: The device.
        url: Broker URL.
        config: MQTT and buffering parameters.
        client_id: MQTT client id; default ``{site}-{device_id}``.
        sparkplug: Speak Sparkplug B instead of JSON.
        edge_node_id: Sparkplug edge node id; default ``{device_id}-edge``.
        rng: Random source for the reconnect jitter.
        clock: Simulated epoch ms (the fleet binds its clock).
        credentials: ``(username, password)`` of the connection (default: those of ``url``).
    """

    def __init__(
        self,
        node: Node,
        url: str,
        *,
        config: LinkConfig | None = None,
        client_id: str | None = None,
        sparkplug: bool = False,
        edge_node_id: str | None = None,
        rng: random.Random | None = None,
        clock: Callable[[], int] | None = None,
        credentials: tuple[str, str] | None = None,
    ) -> None:
        super().__init__(
            url,
            client_id=client_id or f"{node.site}-{node.device_id}",
            config=config,
            rng=rng,
            clock=clock,
            credentials=credentials,
        )
        self.node = node
        self.sparkplug = sparkplug
        self.edge_node_id = edge_node_id or f"{node.device_id}-edge"[:64]
        if sparkplug:
            try:
                Topic.build(node.site, DeviceKind.GATEWAY, self.edge_node_id, Channel.STATUS)
            except TopicError as exc:
                raise FirmwareConfigError("edge_node_id", exc.reason) from None
        self.bd_seq = 0
        self._telemetry_topic = node.topic(Channel.TELEMETRY)
        self._event_topic = node.topic(Channel.EVENT)
        self._status_topic = node.topic(Channel.STATUS)
        spb = f"{NAMESPACE}/{node.site}"
        self._ddata_topic = f"{spb}/DDATA/{self.edge_node_id}/{node.device_id}"
        self._dbirth_topic = f"{spb}/DBIRTH/{self.edge_node_id}/{node.device_id}"
        self._nbirth_topic = f"{spb}/NBIRTH/{self.edge_node_id}"
        self._ndeath_topic = f"{spb}/NDEATH/{self.edge_node_id}"
        self._cmd_nodes = {node.topic(Channel.CMD): node}

    @property
    def nodes(self) -> tuple[Node, ...]:
        return (self.node,)

    def _will_message(self) -> tuple[str, bytes]:
        if self.sparkplug:
            return self._ndeath_topic, encode_ndeath(self.bd_seq)
        return self._status_topic, _OFFLINE

    def _before_connect(self) -> None:
        if self.sparkplug and self._will is not None:
            # Every MQTT session has its own bdSeq; the NDEATH will carries the NBIRTH's.
            if self._connected_once:
                self.bd_seq = (self.bd_seq + 1) % 256
            payload = encode_ndeath(self.bd_seq)
            self._will.payload = payload
            self._will.payload_size = len(payload)

    def _births(self) -> list[tuple[str, bytes, bool]]:
        now = self._clock()
        if self.sparkplug:
            # Sparkplug births are not retained (the specification says so).
            return [
                (self._nbirth_topic, encode_nbirth({}, now, bd_seq=self.bd_seq), False),
                (self._dbirth_topic, encode_dbirth(self.node.kind, {}, now), False),
            ]
        return [(self._status_topic, _encode_status(self.node.birth()), True)]

    def _birth_of(self, node: Node) -> tuple[str, bytes, bool] | None:
        if self.sparkplug:
            return None
        return self._status_topic, _encode_status(node.birth()), True

    def _live(self, record: _Record) -> tuple[str, bytes]:
        item = record[1]
        if not isinstance(item, Reading):
            return self._event_topic, encode_event(item)
        if self.sparkplug:
            return self._ddata_topic, _ddata(item)
        return self._telemetry_topic, encode_reading(item)

    def _chunk(self, records: Iterable[_Record]) -> _Chunk:
        if self.sparkplug:
            first = next(iter(records))
            topic, payload = self._live(first)
            return _Chunk(topic, payload, 1)
        cfg = self.config
        return _json_chunk(
            records,
            telemetry_topic=self._telemetry_topic,
            event_topic=self._event_topic,
            with_kind=False,
            max_batch=cfg.max_batch,
            max_bytes=cfg.max_batch_bytes,
        )


_SKIP_METRICS: Final = frozenset({"ts", "seq", "device_id"})


def _ddata(reading: Reading) -> bytes:
    metrics: dict[str, float | Sequence[float]] = {}
    for name in reading.__struct_fields__:
        if name in _SKIP_METRICS:
            continue
        value = getattr(reading, name)
        if value is None or (isinstance(value, float) and math.isnan(value)):
            continue
        metrics[name] = value
    return encode_ddata(metrics, to_epoch_ms(reading.ts), reading.seq)


class GatewayUplink(Uplink):
    """A gateway carrying many nodes on one connection.

    Readings of its nodes (and its own health readings: ``rssi_dbm``, ``backlog_readings``,
    ``connected_devices``, ``uptime_s``) go out as ``{"readings": [...]}`` batches on
    ``boltwatch/v1/{site}/gateway/{gateway_id}/telemetry``, each reading with its ``kind`` and
    ``device_id``: a batch is published when it holds ``max_batch`` readings or
    ``batch_window_s`` simulated seconds after its first reading. At every connect the gateway
    publishes its own retained birth and one for each of its live nodes; its last will is its
    own ``offline``. It subscribes to the ``cmd`` topic of each of its nodes; events (a
    ``tightened`` record) go to its own ``event`` topic with the node's ``kind`` and
    ``device_id``.

    Args:
        gateway_id: The gateway's device id.
        site: Site of the gateway and of all its nodes.
        nodes: The nodes it carries (same site).
        url: Broker URL.
        config: MQTT and buffering parameters.
        health_interval_s: Simulated seconds between two health readings of the gateway.
        fw_version: Gateway firmware version (its birth).
        client_id: MQTT client id; default ``{site}-{gateway_id}``.
        rng: Random source (reconnect jitter, radio signal strength, boot id).
        clock: Simulated epoch ms (the fleet binds its clock).
        credentials: ``(username, password)`` of the connection (default: those of ``url``).
    """

    def __init__(
        self,
        gateway_id: str,
        site: str,
        nodes: Sequence[Node],
        url: str,
        *,
        config: LinkConfig | None = None,
        health_interval_s: float = 60.0,
        fw_version: str = "sim-gw-0.1.0",
        client_id: str | None = None,
        rng: random.Random | None = None,
        clock: Callable[[], int] | None = None,
        credentials: tuple[str, str] | None = None,
    ) -> None:
        super().__init__(
            url,
            client_id=client_id or f"{site}-{gateway_id}",
            config=config,
            rng=rng,
            clock=clock,
            credentials=credentials,
        )
        try:
            Topic.build(site, DeviceKind.GATEWAY, gateway_id, Channel.TELEMETRY)
        except TopicError as exc:
            raise FirmwareConfigError("gateway_id", exc.reason) from None
        _check_interval("health_interval_s", health_interval_s)
        self.gateway_id = gateway_id
        self.site = site
        self.health_interval_s = float(health_interval_s)
        self.fw_version = fw_version
        self.boot_id = f"{self._rng.getrandbits(48):012x}"
        self.seq = 0
        self.rssi_dbm = -70.0 - 15.0 * self._rng.random()
        self._nodes: tuple[Node, ...] = tuple(nodes)
        seen: set[str] = set()
        for node in self._nodes:
            if node.site != site:
                raise FirmwareConfigError(
                    "nodes", f"{node.device_id} is on site {node.site!r}, not {site!r}"
                )
            if node.device_id in seen:
                raise FirmwareConfigError("nodes", f"{node.device_id} is listed twice")
            seen.add(node.device_id)
            node.relayed = True
        prefix = f"boltwatch/v1/{site}/gateway/{gateway_id}"
        self._telemetry_topic = f"{prefix}/telemetry"
        self._event_topic = f"{prefix}/event"
        self._status_topic = f"{prefix}/status"
        self._cmd_nodes = {n.topic(Channel.CMD): n for n in self._nodes}
        self._batch: list[_Record] = []
        self._batch_t0 = 0
        self._boot_ms: int | None = None
        self._next_health_ms: int | None = None

    @property
    def nodes(self) -> tuple[Node, ...]:
        return self._nodes

    @property
    def backlog(self) -> int:
        return len(self._flash) + len(self._batch)

    def _will_message(self) -> tuple[str, bytes]:
        return self._status_topic, _OFFLINE

    def _births(self) -> list[tuple[str, bytes, bool]]:
        own = {
            "state": "online",
            "boot_id": self.boot_id,
            "fw_version": self.fw_version,
            "interval_s": self.health_interval_s,
        }
        births = [(self._status_topic, _encode_status(own), True)]
        births += [
            (n.topic(Channel.STATUS), _encode_status(n.birth()), True)
            for n in self._nodes
            if n.alive
        ]
        return births

    def _birth_of(self, node: Node) -> tuple[str, bytes, bool] | None:
        return node.topic(Channel.STATUS), _encode_status(node.birth()), True

    def _live(self, record: _Record) -> tuple[str, bytes]:
        item = record[1]
        if isinstance(item, Reading):
            return self._chunk([record])[:2]
        return self._event_topic, encode_event(item)

    def _chunk(self, records: Iterable[_Record]) -> _Chunk:
        cfg = self.config
        return _json_chunk(
            records,
            telemetry_topic=self._telemetry_topic,
            event_topic=self._event_topic,
            with_kind=True,
            max_batch=cfg.max_batch,
            max_bytes=cfg.max_batch_bytes,
        )

    def submit(self, node: Node | None, reading: Reading) -> None:
        record = (node, reading)
        if not self._online or self._flash:
            self._buffer([record])
            return
        if not self._batch:
            self._batch_t0 = self._clock()
        self._batch.append(record)
        if len(self._batch) >= self.config.max_batch:
            self.flush()

    def flush(self) -> None:
        batch = self._batch
        if not batch:
            return
        self._batch = []
        start = 0
        while start < len(batch) and self._online and not self._flash:
            if len(self._store) >= self.config.max_inflight:
                break
            chunk = self._chunk(batch[start:])
            records = batch[start : start + chunk.n]
            if not self._send(chunk.topic, chunk.payload, records):
                break
            start += chunk.n
        if start < len(batch):
            self._buffer(batch[start:])

    def _went_offline(self) -> None:
        if self._batch:
            batch, self._batch = self._batch, []
            self._buffer(batch)

    def boot(self, now_ms: int) -> None:
        self._boot_ms = now_ms
        self._next_health_ms = now_ms

    def tick(self, now_ms: int) -> None:
        due = self._next_health_ms
        if due is None:
            self.boot(now_ms)
            due = now_ms
        step = round(self.health_interval_s * 1000.0)
        while due <= now_ms:
            self._next_health_ms = due + step
            self.submit(None, self._health(due))
            due += step
        if self._batch and now_ms - self._batch_t0 >= self.config.batch_window_s * 1000.0:
            self.flush()

    def next_deadline_ms(self) -> int | None:
        deadline = self._next_health_ms
        if self._batch:
            flush_at = self._batch_t0 + round(self.config.batch_window_s * 1000.0)
            deadline = flush_at if deadline is None else min(deadline, flush_at)
        return deadline

    def _health(self, t_ms: int) -> GatewayReading:
        # The signal wanders slowly around where the gateway was installed.
        self.rssi_dbm = min(-40.0, max(-120.0, self.rssi_dbm + self._rng.gauss(0.0, 0.5)))
        boot = self._boot_ms if self._boot_ms is not None else t_ms
        reading = GatewayReading(
            ts=t_ms,
            seq=self.seq,
            rssi_dbm=round(self.rssi_dbm, 1),
            backlog_readings=float(self.backlog),
            connected_devices=float(sum(1 for n in self._nodes if n.alive)),
            uptime_s=max(0.0, (t_ms - boot) / 1000.0),
        )
        self.seq += 1
        return reading
