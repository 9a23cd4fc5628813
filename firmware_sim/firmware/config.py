"""Parameters of the simulated firmware: the error a bad one raises
(:class:`FirmwareConfigError`), the MQTT protocol versions, where an uplink connects
(:class:`BrokerAddress`) and how it talks MQTT and buffers (:class:`LinkConfig`)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final
from urllib.parse import unquote, urlsplit

from gmqtt.mqtt.constants import MQTTv50, MQTTv311

MQTT_V311: Final[int] = MQTTv311
"""MQTT 3.1.1 (works with every broker, the embedded amqtt included)."""
MQTT_V5: Final[int] = MQTTv50
"""MQTT 5 (the session then lives ``LinkConfig.session_expiry_s`` after a disconnect)."""


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
