"""The ``mqtt`` channel: publish each alert's state to a broker, retained (gmqtt).

One message per alert of the notification, on
``{topic_prefix}/{site}/alerts/{device_id}/{kind}`` (``boltwatch/v1/windfarm-north/alerts/
wtg03-f1-b004/loosening``), QoS 1 and retained by default: a dashboard that subscribes later gets
every alert's current state at once, and a cleared alert replaces its active state (still
retained, with ``"state": "cleared"``). The payload is the alert's JSON
(:meth:`Alert.as_dict`) plus ``notification_id`` and ``notification_status``.

:meth:`MqttChannel.send` returns once the broker acknowledged every message (PUBACK for QoS 1,
PUBCOMP for QoS 2). The connection is made at the first send and kept; when it is lost, the next
send connects again (a send during the outage fails, retryable, and the outbox retries it).
An alert without a site is published under the site ``unknown``; characters that MQTT gives a
meaning in topics (``/ + #``) are replaced by ``_``.

Failures: connection errors, timeouts and a missing acknowledgement -> retryable; the broker
refusing the credentials, or a certificate that does not verify -> not retryable.
"""

from __future__ import annotations

import asyncio
import re
import ssl
import uuid
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Final, Self
from urllib.parse import urlsplit

import gmqtt
import msgspec
from gmqtt.mqtt.constants import MQTTv50, MQTTv311

from alerts.channels._options import check_url, parse_options, redact_url, resolve_secret
from alerts.errors import RuleError
from alerts.model import ChannelError, Notification

__all__ = ["MqttChannel", "MqttOptions", "alert_topic"]

_TOPIC_UNSAFE: Final = re.compile(r"[/+#\x00]")
# CONNACK codes that say the credentials are wrong (MQTT 3.1.1: 4, 5; MQTT 5: 0x86, 0x87).
_AUTH_REFUSED: Final = frozenset({4, 5, 0x86, 0x87})


def _segment(text: str, default: str) -> str:
    return _TOPIC_UNSAFE.sub("_", text) if text else default


def alert_topic(prefix: str, alert: Mapping[str, Any]) -> str:
    """The topic of an alert: ``{prefix}/{site}/alerts/{device_id}/{kind}``."""
    site = _segment(str(alert.get("site", "")), "unknown")
    device = _segment(str(alert.get("device_id", "")), "unknown")
    kind = _segment(str(alert.get("kind", "")), "unknown")
    return f"{prefix}/{site}/alerts/{device}/{kind}"


@dataclass(frozen=True, slots=True)
class MqttOptions:
    """Options of an ``mqtt`` receiver.

    Attributes:
        url: Broker, ``mqtt://host:port`` (default port 1883) or ``mqtts://host:port`` (8883).
        client_id: MQTT client id; default ``boltwatch-alerts-<random>``.
        username: User name, if the broker wants one.
        password: Its password (inline; prefer the two forms below).
        password_file: File holding the password.
        password_env: Environment variable holding the password.
        ca_file: CA bundle (PEM) that signed the broker's certificate (``mqtts://``); default the
            system's.
        cert_file: Client certificate (PEM) for brokers that require mutual TLS (``mqtts://``).
        key_file: Its private key (PEM), when not in ``cert_file``.
        qos: 0, 1 or 2.
        retain: Publish retained.
        topic_prefix: Topics start with it.
        mqtt_version: 5 (MQTT 5) or 4 (MQTT 3.1.1, e.g. the embedded amqtt broker).
        keepalive_s: MQTT keep-alive, seconds.
        timeout_s: How long to wait for the connection and for the acknowledgements, seconds.
    """

    url: str
    client_id: str | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    password_file: str | None = None
    password_env: str | None = None
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    qos: int = 1
    retain: bool = True
    topic_prefix: str = "boltwatch/v1"
    mqtt_version: int = 5
    keepalive_s: int = 60
    timeout_s: float = 10.0


class _AckStore:
    """gmqtt's persistent-storage interface, which also resolves a future per packet id when the
    broker acknowledges it (gmqtt has no publish callback)."""

    def __init__(self) -> None:
        self._messages: OrderedDict[int, bytes] = OrderedDict()
        self._acks: dict[int, asyncio.Future[None]] = {}
        self._new: list[asyncio.Future[None]] = []

    def __bool__(self) -> bool:
        # gmqtt takes `persistent_storage or PersistentStorage()`: an empty store is still one.
        return True

    def take_new(self) -> list[asyncio.Future[None]]:
        """The acknowledgement futures of the messages stored since the last call."""
        new, self._new = self._new, []
        return new

    def push_message(self, mid: int, raw_package: bytes) -> None:
        self._messages[mid] = raw_package
        # QoS 2 stores the PUBREL under the same id later: one future per message, not per packet.
        if mid not in self._acks:
            future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._acks[mid] = future
            self._new.append(future)

    def remove_message_by_mid(self, mid: int) -> None:
        self._messages.pop(mid, None)
        future = self._acks.pop(mid, None)
        if future is not None and not future.done():
            future.set_result(None)

    @property
    def is_empty(self) -> bool:
        return not self._messages

    async def wait_empty(self) -> None:
        # Called by gmqtt after a reconnect; this channel never resumes a session.
        return

    def clear(self) -> None:
        self._messages.clear()
        self.fail_all()

    def fail_all(self) -> None:
        """Fail every pending acknowledgement (the connection is gone)."""
        for future in self._acks.values():
            if not future.done():
                future.set_exception(ConnectionError("connection lost before the acknowledgement"))
        self._acks.clear()

    def get_all(self) -> list[tuple[int, bytes]]:
        return list(self._messages.items())


class _Client(gmqtt.Client):  # type: ignore[misc]  # gmqtt ships no type information
    """gmqtt's client without its background reconnect loop: the channel reconnects at the next
    send, so a broker outage cannot leave a task retrying forever behind a closed channel."""

    async def reconnect(self, delay: bool = False) -> None:
        return


class MqttChannel:
    """Publish each alert of a notification, retained, to an MQTT broker.

    Args:
        options: Validated options.
        password: The resolved password (None: no login).
    """

    kind: ClassVar[str] = "mqtt"

    def __init__(self, options: MqttOptions, password: str | None = None) -> None:
        self.options = options
        self._password = password
        self._client_id = options.client_id or f"boltwatch-alerts-{uuid.uuid4().hex[:12]}"
        self._client: Any = None
        self._store = _AckStore()
        self._lock = asyncio.Lock()

    @classmethod
    def from_options(cls, options: Mapping[str, Any], key: str) -> Self:
        """Validate a receiver's options and build the channel (it connects at the first send).

        Raises:
            RuleError: A bad option, named ``{key}.{option}``.
        """
        opts = parse_options(MqttOptions, options, key)
        check_url(opts.url, ("mqtt", "mqtts"), f"{key}.url")
        if opts.qos not in (0, 1, 2):
            raise RuleError(f"{key}.qos", "must be 0, 1 or 2")
        if opts.mqtt_version not in (MQTTv50, MQTTv311):
            raise RuleError(f"{key}.mqtt_version", "must be 5 (MQTT 5) or 4 (MQTT 3.1.1)")
        prefix = opts.topic_prefix
        if not prefix or prefix[0] == "/" or prefix[-1] == "/" or any(c in prefix for c in "+#"):
            raise RuleError(
                f"{key}.topic_prefix", "must be a topic without wildcards or a leading or "
                "trailing / (e.g. boltwatch/v1)"
            )  # fmt: skip
        for name in ("ca_file", "cert_file", "key_file"):
            if getattr(opts, name) is not None and not opts.url.startswith("mqtts://"):
                raise RuleError(f"{key}.{name}", "only for an mqtts:// url")
        if opts.key_file is not None and opts.cert_file is None:
            raise RuleError(f"{key}.key_file", "give cert_file too")
        if opts.keepalive_s <= 0 or opts.timeout_s <= 0:
            name = "keepalive_s" if opts.keepalive_s <= 0 else "timeout_s"
            raise RuleError(f"{key}.{name}", "must be > 0 seconds")
        password = resolve_secret(
            "password",
            inline=opts.password,
            file=opts.password_file,
            env=opts.password_env,
            key=key,
        )
        if password is not None and opts.username is None:
            raise RuleError(f"{key}.username", "a password is given but no username")
        return cls(opts, password)

    def messages(self, notification: Notification) -> list[tuple[str, bytes]]:
        """(topic, payload) of each alert of the notification."""
        out = []
        for alert in notification.alerts:
            payload = dict(alert)
            payload["notification_id"] = notification.id
            payload["notification_status"] = notification.status
            out.append(
                (alert_topic(self.options.topic_prefix, alert), msgspec.json.encode(payload))
            )
        return out

    async def _connect(self) -> Any:  # noqa: ANN401 - gmqtt.Client is untyped
        o = self.options
        url = urlsplit(o.url)
        host = url.hostname or "127.0.0.1"
        port = url.port or (8883 if url.scheme == "mqtts" else 1883)
        context: ssl.SSLContext | bool = False
        if url.scheme == "mqtts":
            context = ssl.create_default_context(cafile=o.ca_file)
            if o.cert_file is not None:
                try:
                    context.load_cert_chain(o.cert_file, o.key_file)
                except (OSError, ssl.SSLError) as exc:
                    raise ChannelError(
                        f"MQTT {redact_url(o.url)}: cannot load cert_file/key_file ({exc})",
                        retryable=False,
                    ) from exc
        store = _AckStore()
        client = _Client(self._client_id, clean_session=True, persistent_storage=store)
        if o.username is not None:
            client.set_auth_credentials(o.username, self._password)

        def on_disconnect(lost: object, packet: object, exc: object = None) -> None:
            del packet, exc
            store.fail_all()
            if lost is self._client:
                self._client = None

        client.on_disconnect = on_disconnect
        where = f"MQTT {redact_url(o.url)}"
        try:
            async with asyncio.timeout(o.timeout_s):
                await client.connect(
                    host, port, ssl=context, keepalive=o.keepalive_s, version=o.mqtt_version
                )
        except ssl.SSLCertVerificationError as exc:
            raise ChannelError(
                f"{where}: the broker's certificate did not verify ({exc.verify_message}); "
                "check ca_file and the host name",
                retryable=False,
            ) from exc
        except gmqtt.MQTTConnectError as exc:
            await self._drop(client)
            code = getattr(exc, "_code", None)
            raise ChannelError(
                f"{where}: connection refused ({exc})", retryable=code not in _AUTH_REFUSED
            ) from exc
        except TimeoutError as exc:
            await self._drop(client)
            raise ChannelError(
                f"{where}: not connected within {o.timeout_s:g} s", retryable=True
            ) from exc
        except OSError as exc:  # refused, unreachable, TLS handshake failures
            raise ChannelError(f"{where}: cannot connect ({exc})", retryable=True) from exc
        self._store = store
        return client

    @staticmethod
    async def _drop(client: Any) -> None:  # noqa: ANN401 - gmqtt.Client is untyped
        try:
            async with asyncio.timeout(5.0):
                await client.disconnect()
        except (OSError, RuntimeError, AttributeError, TimeoutError):
            # Half-open or dead connection: nothing more to close.
            return

    async def send(self, notification: Notification) -> None:
        """Publish every alert of the notification and wait for the broker's acknowledgements.

        Raises:
            ChannelError: Not (all) acknowledged; see the module's docstring for what is
                retryable. Retained messages are idempotent: a retry republishes the same state.
        """
        o = self.options
        async with self._lock:
            if self._client is None or not self._client.is_connected:
                if self._client is not None:
                    await self._drop(self._client)
                    self._client = None
                self._client = await self._connect()
            client = self._client
            self._store.take_new()
            try:
                for topic, payload in self.messages(notification):
                    client.publish(gmqtt.Message(topic, payload, qos=o.qos, retain=o.retain))
            except (OSError, AttributeError, OverflowError) as exc:
                # A transport that closed under us, or every packet id in flight.
                for future in self._store.take_new():
                    future.cancel()
                raise ChannelError(
                    f"MQTT {redact_url(o.url)}: publish failed ({type(exc).__name__})",
                    retryable=True,
                ) from exc
            acks = self._store.take_new()
            if not acks:
                return
            try:
                async with asyncio.timeout(o.timeout_s):
                    results = await asyncio.gather(*acks, return_exceptions=True)
            except TimeoutError as exc:
                await self._drop(client)
                self._client = None
                raise ChannelError(
                    f"MQTT {redact_url(o.url)}: no acknowledgement within {o.timeout_s:g} s",
                    retryable=True,
                ) from exc
            lost = [r for r in results if isinstance(r, BaseException)]
            if lost:
                raise ChannelError(
                    f"MQTT {redact_url(o.url)}: connection lost before {len(lost)} of "
                    f"{len(acks)} messages were acknowledged",
                    retryable=True,
                ) from lost[0]

    async def aclose(self) -> None:
        """Disconnect from the broker (if connected)."""
        async with self._lock:
            client, self._client = self._client, None
            if client is not None:
                await self._drop(client)
            self._store.fail_all()
