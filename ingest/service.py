"""The ingest service: MQTT in, decode, validate, dead-letter, group commit, acknowledge.

At-least-once, end to end: a QoS 1 message's PUBACK is sent only after the transaction that
stores its readings (or its dead letter) has committed — gmqtt's
``optimistic_acknowledgement=False`` sends the PUBACK when the async ``on_message`` returns, and
ours returns when the commit of its batch is done. A message in flight when the process dies is
never acknowledged, so the broker (persistent session, MQTT 5) delivers it again; the store's
key (device, ts, seq) makes the second copy a no-op.

With an MQTT 3.1.1 broker (the embedded amqtt) the client cannot delay its PUBACK: ingest works
there the same, but a crash can lose what was in flight. It says so in its log at start.

Messages are committed in groups (up to ``batch_max_messages`` or ``batch_max_ms``, whichever
comes first): one transaction, one fsync, for every message of the group.

What is received and not yet committed is bounded: past a high-water mark (at least the
``broker.receive_maximum`` we announce, which a broker may overrun) ingest stops reading from the
broker's connection until its commits catch up (ingest/flow.py); the broker keeps the backlog.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import logging
import os
import random
import re
import socket
import ssl
import struct
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Protocol
from urllib.parse import urlsplit

import gmqtt
import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from ingest.cluster.log import LogError
from ingest.decoders import DecoderRegistry, default_decoders
from ingest.flow import ReadGate, gmqtt_transport, water_marks
from ingest.influx import InfluxWriter, RejectedBatch
from ingest.isolation import DECODER_ERROR, DecoderError, DecoderGuard
from ingest.settings import ServiceSettings, SettingsError
from ingest.store import DeadLetter, Store, StoreError, WriteResult
from sensors.codec import DecodedBatch
from sensors.errors import PayloadError, TopicError
from sensors.registry import Registry
from sensors.schema import KINDS, DeviceKind

__all__ = [
    "BatchConsumer",
    "BrokerConnectError",
    "Forwarder",
    "IngestMetrics",
    "IngestService",
    "IngestTotals",
    "NoDataEvent",
    "reason_category",
]

_log = logging.getLogger("boltwatch.ingest")
_MQTT_V5: Final = 5
_MQTT_V311: Final = 4

# CONNACK codes that mean "who you are was refused" (MQTT 3.1.1: 4, 5; MQTT 5: 0x86, 0x87).
_AUTH_REFUSED: Final = frozenset({4, 5, 134, 135})
# CONNACK codes that mean "this client id was refused" (MQTT 3.1.1: 2; MQTT 5: 0x85).
_CLIENT_ID_REFUSED: Final = frozenset({2, 133})

# gmqtt reconnects while ``failed_connections <= reconnect_retries`` (-1: forever), so 0 still
# allows one reconnect; any value below -1 allows none. Used until the first CONNACK: a failure
# to start is reported, never retried in the background.
_NO_RECONNECTS: Final = -2
_RECONNECT_FOREVER: Final = -1
# The first connection (TCP, TLS, CONNECT/CONNACK) must be done within max(keepalive, this).
_FIRST_CONNECT_MIN_S: Final = 30.0
# A broker that cannot be reached at start is tried again after these pauses (~3.75 s in all:
# a broker started at the same moment gets its chance; a wrong URL fails fast).
_UNREACHABLE_RETRY_S: Final = (0.25, 0.5, 1.0, 2.0)
# At stop: how long the broker may take to see our DISCONNECT (a frozen or vanished broker must
# not hold the stop up: the connection is closed either way).
_DISCONNECT_S: Final = 2.0
# After the broker closed the first connection, how long a refusing CONNACK that came just before
# may take to surface from gmqtt's connect() (it is a few loop iterations away).
_REFUSAL_GRACE_S: Final = 0.5
_UNREACHABLE_ERRNOS: Final = frozenset(
    {errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH, errno.ETIMEDOUT, errno.EHOSTDOWN}
)
# A commit that failed with a store error that may pass is tried again after this long, doubled
# at each failure up to the maximum.
_STORE_RETRY_MIN_S: Final = 0.25
_STORE_RETRY_MAX_S: Final = 5.0
# SQLite result codes (primary, before the first "_") of failures that can end by themselves:
# a full disk, an I/O error, a lock held too long by another process.
_STORE_TRANSIENT: Final = frozenset({"SQLITE_FULL", "SQLITE_IOERR", "SQLITE_BUSY", "SQLITE_LOCKED"})


class BrokerConnectError(SettingsError):
    """The service could not start because of the broker: TLS verification, authentication, a
    broker that cannot be reached or closed the connection before accepting it. ``key`` names the
    setting to check (``broker.url``, ``broker.tls_ca_file``, ``broker.tls_cert_file``,
    ``broker.password``); the message never contains a secret."""


class Forwarder(Protocol):
    """Where an ingest worker of a cluster puts a group instead of the store (the partitioned
    log, :class:`ingest.cluster.LogForwarder`); the group is acknowledged to the broker once
    ``write`` returns.

    Raises:
        LogError: The log did not take the group (the group is tried again, unacknowledged).
    """

    async def write(
        self, batch: DecodedBatch, dead: Sequence[DeadLetter], *, received_ms: int
    ) -> WriteResult: ...


class BatchConsumer(Protocol):
    """What ingest hands each committed batch to (the detection engine; a no-op until then)."""

    def __call__(self, batch: DecodedBatch, result: WriteResult) -> None: ...


@dataclass(frozen=True, slots=True)
class NoDataEvent:
    """A device was silent longer than its kind's timeout (a dead battery is not a loose bolt)."""

    device_id: str
    kind: DeviceKind
    site: str
    last_seen_ms: int
    at_ms: int


_CATEGORIES: Final = (
    ("-byte limit", "oversize"),
    ("not valid JSON", "json"),
    ("not UTF-8", "json"),
    ("spoofed", "spoofed"),
    ("unknown device", "unknown_device"),
)


def reason_category(error: PayloadError) -> str:
    """A bounded label for ``rejected_total{reason=...}`` (field paths are unbounded)."""
    if isinstance(error, TopicError):
        return "topic"
    if isinstance(error, DecoderError):
        return DECODER_ERROR
    text = error.reason
    category = next((label for words, label in _CATEGORIES if words in text), None)
    if category is not None:
        return category
    if error.field.endswith(".ts") and ("future" in text or "before 2000" in text):
        return "timestamp"
    return "schema"


@dataclass(frozen=True, slots=True)
class IngestTotals:
    """Ingest's counters at one moment (what the console's data-quality page shows).

    Attributes:
        messages: MQTT messages received since the start.
        readings: Readings stored since the start.
        rejected: Messages dead-lettered since the start.
        queue_depth: Messages waiting for their commit now.
        connected: Connected to the broker now.
        read_paused: Reading from the broker is paused now (back-pressure).
    """

    messages: float
    readings: float
    rejected: float
    queue_depth: float
    connected: bool
    read_paused: bool


class IngestMetrics:
    """The counters ingest exports on ``/metrics`` (one registry per service)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.messages = Counter("boltwatch_ingest_messages", "MQTT messages received", registry=r)
        self.readings = Counter(
            "boltwatch_ingest_readings_stored", "Readings stored", ["kind"], registry=r
        )
        self.duplicates = Counter(
            "boltwatch_ingest_duplicates", "Readings already stored (redeliveries)", registry=r
        )
        self.rejected = Counter(
            "boltwatch_ingest_rejected", "Messages dead-lettered", ["reason"], registry=r
        )
        self.commits = Counter("boltwatch_ingest_commits", "Group commits", registry=r)
        self.commit_seconds = Histogram(
            "boltwatch_ingest_commit_seconds",
            "Time to commit one group",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
            registry=r,
        )
        self.queue_depth = Gauge(
            "boltwatch_ingest_queue_depth", "Messages waiting for their commit", registry=r
        )
        self.no_data = Counter(
            "boltwatch_ingest_no_data",
            "Devices found silent past their timeout",
            ["kind"],
            registry=r,
        )
        self.influx_backlog = Gauge(
            "boltwatch_ingest_influx_backlog_points",
            "Points waiting in the InfluxDB spool",
            registry=r,
        )
        self.connected = Gauge(
            "boltwatch_ingest_connected", "1 while connected to the broker", registry=r
        )
        self.read_paused = Gauge(
            "boltwatch_ingest_read_paused",
            "1 while reading from the broker is paused (too many messages wait for their commit)",
            registry=r,
        )
        self.read_pauses = Counter(
            "boltwatch_ingest_read_pauses",
            "Times reading from the broker was paused (back-pressure)",
            registry=r,
        )

    def totals(self) -> IngestTotals:
        """The counters now, labels summed."""

        def total(metric: Counter | Gauge, suffix: str = "") -> float:
            return sum(
                sample.value
                for family in metric.collect()
                for sample in family.samples
                if sample.name == family.name + suffix
            )

        return IngestTotals(
            messages=total(self.messages, "_total"),
            readings=total(self.readings, "_total"),
            rejected=total(self.rejected, "_total"),
            queue_depth=total(self.queue_depth),
            connected=total(self.connected) > 0,
            read_paused=total(self.read_paused) > 0,
        )


@dataclass(slots=True)
class _Pending:
    """A message waiting for its commit; acknowledged through ``done`` (gmqtt's callback
    sends the PUBACK) or, taken from gmqtt's handler (:func:`_take_qos1`), by packet id on the
    connection it came on."""

    topic: str
    payload: bytes
    received_ms: int
    done: asyncio.Future[int] | None = None
    mid: int = 0
    connection: Any = None


_PUBACK_V5: Final = struct.Struct("!BBHBB")
"""PUBACK of MQTT 5: type, remaining length 4, packet id, reason 0 (success), no properties: the
bytes gmqtt builds for one."""


def _take_qos1(client: gmqtt.Client, sink: Callable[[str, bytes, int, Any], None]) -> None:
    """Take QoS 1 PUBLISH packets from gmqtt's handler, before it makes a task and a future per
    message and writes each PUBACK alone (58 µs of CPU per message, most of ingest's in the
    profile): ``sink(topic, payload, packet id, connection)`` queues them, and the committer
    acknowledges a committed group in one write (:func:`_acknowledge`).

    gmqtt has no public hook for it: the handler's ``_handle_qos_1_publish_packet`` (called with
    the packet id once the packet is parsed) is replaced on this client's handler instance; a
    gmqtt without it keeps its own path (``tests/unit/test_ingest_acks.py`` checks it is there).
    """
    handler = client._package_handler
    if not (
        hasattr(handler, "_handle_qos_1_publish_packet")
        and hasattr(type(handler), "current_connection")
    ):
        return

    def take(mid: int, packet: bytes, print_topic: str, properties: object) -> None:
        del properties
        sink(print_topic, packet, mid, handler.current_connection)

    handler._handle_qos_1_publish_packet = take


@dataclass(slots=True)
class _State:
    connected: asyncio.Event = field(default_factory=asyncio.Event)
    subscribed: asyncio.Event = field(default_factory=asyncio.Event)
    reconnects: int = 0
    # Until the first CONNACK, a lost connection ends the start-up instead of being retried.
    ever_connected: bool = False
    lost_at_start: asyncio.Event = field(default_factory=asyncio.Event)


class IngestService:
    """Subscribes to the broker, stores what arrives, acknowledges after the commit.

    Use ``async with IngestService(...) as svc: await svc.wait()`` (or :meth:`run`).
    Cancelling flushes: messages already received are committed and acknowledged, the
    connection is closed cleanly.

    Args:
        config: Validated configuration (``[broker]`` and ``[ingest]`` are used).
        store: Where readings, events, device states and dead letters go; ``None`` with
            ``forward`` (an ingest worker of a cluster keeps no store: no rollups, retention or
            silence watch here, the workers that own the partitions do those).
        consumer: Receives each committed batch (detection).
        influx: Also writes every committed reading to InfluxDB (in its own thread, after the
            acknowledgement: InfluxDB being slow or down never holds up ingest; its spool is
            durable).
        registry: Known devices; with ``ingest.strict_registry`` unknown ones are dead-lettered.
        on_no_data: Called with each device that fell silent, on the event loop.
        metrics: Counters (a fresh registry by default).
        clock: Seconds since the epoch (injected for tests; the demo's simulated clock). Receipt
            times, lateness, timestamp plausibility, silence and retention all read it.
        mqtt_version: 5 (default; ack after store) or 4 (MQTT 3.1.1, for amqtt).
        decoders: Decoder per topic prefix (default: JSON under ``boltwatch/v1/``, Sparkplug B
            under ``spBv1.0/``).
        silence_check_s: Real seconds between two looks for silent devices.
        silence_by_receipt: Judge silence by when each device was last heard from (receipt
            time), up to when any device was last heard from, instead of by its newest reading
            against ``clock``. For simulations faster than real time: there ingest trails the
            data by a fraction of a real second, which is already minutes of simulated time, and
            one busy moment would make every device look silent. A device is then silent when
            the others were heard from without it for its timeout.
        drain_timeout_s: At stop, how long the messages already received may take to be
            committed; past it the rest is left unacknowledged, for the broker to deliver again.
        forward: Put each group there instead of the store (cluster mode, role ``ingest``).
    """

    def __init__(
        self,
        config: ServiceSettings,
        store: Store | None,
        *,
        consumer: BatchConsumer | None = None,
        influx: InfluxWriter | None = None,
        registry: Registry | None = None,
        on_no_data: Callable[[NoDataEvent], None] | None = None,
        metrics: IngestMetrics | None = None,
        clock: Callable[[], float] = time.time,
        mqtt_version: int = _MQTT_V5,
        decoders: DecoderRegistry | None = None,
        silence_check_s: float = 30.0,
        silence_by_receipt: bool = False,
        drain_timeout_s: float = 5.0,
        forward: Forwarder | None = None,
    ) -> None:
        if (store is None) == (forward is None):
            raise ValueError("give a store or a forwarder, one of them")
        if forward is not None and influx is not None:
            raise ValueError("a forwarding ingest worker writes no InfluxDB (the store role does)")
        self.config = config
        self.store = store
        self.forward = forward
        self.consumer = consumer
        self.influx = influx
        self._influx_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ingest-influx")
        self.registry = registry
        self.on_no_data = on_no_data
        self.metrics = metrics or IngestMetrics()
        self.clock = clock
        self.mqtt_version = mqtt_version
        self.decoder = decoders or default_decoders(
            max_payload_bytes=config.ingest.max_payload_bytes, clock=clock
        )
        self.silence_check_s = silence_check_s
        self.silence_by_receipt = silence_by_receipt
        self.drain_timeout_s = drain_timeout_s
        self.decoder_guard = DecoderGuard()
        self._queue: deque[_Pending] = deque()
        self._wake = asyncio.Event()
        # Back-pressure: received and not yet committed stays under a bound (ingest/flow.py).
        high, low = water_marks(config.broker.receive_maximum, config.ingest.batch_max_messages)
        self.read_gate = ReadGate(
            high, low, lambda: gmqtt_transport(self._client), on_change=self._read_paused
        )
        self._state = _State()
        self._client: Any = None
        self._tasks: asyncio.TaskGroup | None = None
        self._silence: asyncio.Task[None] | None = None
        self._drainer: asyncio.Task[None] | None = None
        self._upkeep: asyncio.Task[None] | None = None
        # The store is used from one thread only: every call goes through this executor.
        self._db = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ingest-store")
        self._stopping = False
        # Since when (monotonic s) commits fail with a store error that may pass; None: they work.
        self._store_failing_since: float | None = None
        self._store_retry_s = _STORE_RETRY_MIN_S
        self._silent_reported: set[str] = set()
        self._influx_errors_logged: set[str] = set()
        self.committed_batches = 0
        # Read once, here: secrets files are small, and the event loop must not block on I/O.
        self._password = config.broker.password
        if config.broker.password_file is not None:
            lines = Path(config.broker.password_file).read_text(encoding="utf-8").splitlines()
            self._password = lines[0] if lines else ""

    # -- lifecycle ------------------------------------------------------------------------------

    async def __aenter__(self) -> IngestService:
        self._tasks = asyncio.TaskGroup()
        await self._tasks.__aenter__()
        self._tasks.create_task(self._committer(), name="ingest-committer")
        if self.store is not None:
            self._silence = self._tasks.create_task(self._watch_silence(), name="ingest-no-data")
            self._upkeep = self._tasks.create_task(self._maintain(), name="ingest-rollup-retention")
        self._drainer = (
            self._tasks.create_task(self._drain_influx(), name="ingest-influx-drain")
            if self.influx is not None
            else None
        )
        try:
            await self._connect()
        except BaseException:
            await self.__aexit__(None, None, None)  # stop the tasks and threads started above
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._stopping = True
        if self._client is not None:
            # A broker already gone (or frozen) is fine here: the connection is closed either way.
            with contextlib.suppress(Exception):
                async with asyncio.timeout(_DISCONNECT_S):
                    await self._client.disconnect()
            await _stop_reconnecting(self._client)
        self._wake.set()
        for task in (self._silence, self._drainer, self._upkeep):
            if task is not None:
                task.cancel()
        assert self._tasks is not None  # noqa: S101 - set in __aenter__
        try:
            # The committer ends once what was received is committed; bounded, so a store that
            # stays locked cannot hold the stop up (what is left was never acknowledged).
            async with asyncio.timeout(self.drain_timeout_s):
                await self._tasks.__aexit__(None, None, None)
        except TimeoutError:
            _log.warning(
                "stop: %d messages not committed within %.1f s; left unacknowledged, the "
                "broker delivers them again",
                self.unacknowledged(),
                self.drain_timeout_s,
            )
            # Their handlers are cancelled when the loop ends, and gmqtt's PUBACK callback then
            # meets the cancellation: nothing is sent (the point), which is not an error.
            _quiet_unacknowledged(asyncio.get_running_loop())
        # Off the event loop: a store or InfluxDB call still running finishes in its thread.
        await asyncio.to_thread(self._influx_pool.shutdown, wait=True)
        await asyncio.to_thread(self._db.shutdown, wait=True)

    def unacknowledged(self) -> int:
        """Messages received and not yet acknowledged (waiting or being committed)."""
        return self.read_gate.waiting

    async def run(self) -> None:
        """Run until cancelled (SIGTERM in ``boltwatch run``)."""
        async with self:
            await asyncio.Event().wait()

    async def wait_subscribed(self, timeout: float = 10.0) -> None:  # noqa: ASYNC109 - a bound
        """Wait until the subscription is in place (tests, start-up logs)."""
        async with asyncio.timeout(timeout):
            await self._state.subscribed.wait()

    # -- MQTT -----------------------------------------------------------------------------------

    async def _connect(self) -> None:
        b = self.config.broker
        url = urlsplit(b.url)
        host = url.hostname or "127.0.0.1"
        port = url.port or (8883 if url.scheme == "mqtts" else 1883)
        properties: dict[str, Any] = {}
        if self.mqtt_version == _MQTT_V5:
            properties = {
                "session_expiry_interval": b.session_expiry_s,
                "receive_maximum": b.receive_maximum,
            }
        client = gmqtt.Client(
            b.client_id,
            clean_session=False,
            optimistic_acknowledgement=False,
            **properties,
        )
        if b.username is not None:
            client.set_auth_credentials(b.username, self._password)
        client.on_connect = self._on_connect
        client.on_message = self._on_message
        if self.mqtt_version == _MQTT_V5:
            _take_qos1(client, self._arrived)
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = self._on_subscribe
        # No background reconnects until the first CONNACK (_on_connect allows them forever).
        client.reconnect_retries = _NO_RECONNECTS
        client.reconnect_delay = 1
        self._client = client
        context: ssl.SSLContext | bool = False
        if url.scheme == "mqtts":
            context = ssl.create_default_context(cafile=b.tls_ca_file)
            if b.tls_cert_file is not None:
                context.load_cert_chain(b.tls_cert_file, b.tls_key_file)
        if self.mqtt_version != _MQTT_V5:
            _log.warning(
                "MQTT 3.1.1: acknowledgements cannot wait for the store; a crash may lose the "
                "messages in flight (use an MQTT 5 broker for at-least-once)"
            )
        where = f"{url.scheme}://{host}:{port}"
        limit = max(float(b.keepalive_s), _FIRST_CONNECT_MIN_S)
        try:
            try:
                async with asyncio.timeout(limit):
                    await self._first_connect(client, host, port, context, where)
            except TimeoutError as exc:
                raise BrokerConnectError(
                    "broker.url",
                    f"no answer from {where} within {limit:.0f} s (TCP, TLS and MQTT handshake); "
                    "is it an MQTT broker, and reachable?",
                ) from exc
        except BrokerConnectError as error:
            _log.error("cannot connect to the broker: %s", error)
            self._client = None
            with contextlib.suppress(Exception):  # stop gmqtt; the connection is gone anyway
                await client.disconnect()
            raise
        _log.info("connected to %s:%s as %s", host, port, b.client_id)

    async def _first_connect(
        self,
        client: gmqtt.Client,
        host: str,
        port: int,
        context: ssl.SSLContext | bool,
        where: str,
    ) -> None:
        """Connect once, or raise :class:`BrokerConnectError` (a bound is set by the caller).

        An unreachable broker is tried again a few times (``_UNREACHABLE_RETRY_S``). A broker
        that closes the connection before its CONNACK (with TLS 1.3, how a missing or untrusted
        client certificate is refused) ends the attempt: gmqtt's connect() would wait forever.
        """
        b = self.config.broker
        pauses = iter(_UNREACHABLE_RETRY_S)
        attempts, started = 0, time.monotonic()
        while True:
            attempts += 1
            self._state.lost_at_start.clear()
            connect = asyncio.ensure_future(
                client.connect(
                    host, port, ssl=context, keepalive=b.keepalive_s, version=self.mqtt_version
                )
            )
            lost = asyncio.ensure_future(self._state.lost_at_start.wait())
            try:
                await asyncio.wait({connect, lost}, return_when=asyncio.FIRST_COMPLETED)
                if not connect.done():
                    # A refusing CONNACK comes just before the close: let connect() report it.
                    await asyncio.wait({connect}, timeout=_REFUSAL_GRACE_S)
            finally:
                for task in (connect, lost):
                    task.cancel()
                await asyncio.gather(connect, lost, return_exceptions=True)
            if connect.cancelled():
                raise _closed_at_start(where, tls=context is not False)
            exc = connect.exception()
            if exc is None:
                return
            if _unreachable(exc):
                pause = next(pauses, None)
                if pause is not None:
                    _log.debug("cannot reach %s (%s); trying again in %.2f s", where, exc, pause)
                    await asyncio.sleep(pause)
                    continue
                tried = (
                    f" (tried {attempts} times over {time.monotonic() - started:.1f} s)"
                    if attempts > 1
                    else ""
                )
                raise BrokerConnectError(
                    "broker.url", f"cannot reach {where}: {_os_reason(exc)}{tried}"
                ) from exc
            if isinstance(exc, (ssl.SSLError, gmqtt.MQTTConnectError)):
                error = _refusal(exc, where, b.username)
                if error is not None:
                    raise error from exc
            if isinstance(exc, OSError) and context is not False:
                raise BrokerConnectError(
                    "broker.url",
                    f"the broker did not speak TLS: {where} closed the connection during the TLS "
                    f"handshake ({_os_reason(exc)}); is it a plain MQTT port (then use mqtt://)?",
                ) from exc
            raise exc

    def _on_connect(self, client: gmqtt.Client, flags: int, rc: int, properties: object) -> None:
        del flags, rc, properties
        self._state.ever_connected = True
        self._state.connected.set()
        self.metrics.connected.set(1)
        client.reconnect_retries = _RECONNECT_FOREVER  # from now on, a lost connection is retried
        client.reconnect_delay = 1
        client.subscribe([gmqtt.Subscription(t, qos=1) for t in self.config.broker.topics])

    def _on_subscribe(self, client: object, mid: int, qos: object, properties: object) -> None:
        del client, mid, qos, properties
        self._state.subscribed.set()

    def _on_disconnect(self, client: gmqtt.Client, packet: object, exc: object = None) -> None:
        del packet, exc
        self._state.connected.clear()
        self.metrics.connected.set(0)
        if not self._state.ever_connected:
            # Starting: _first_connect reports it (gmqtt does not retry, so no "retrying" line).
            self._state.lost_at_start.set()
        elif not self._stopping:
            self._state.reconnects += 1
            # Exponential backoff with jitter, so a fleet of ingest workers does not reconnect
            # in lock-step after a broker restart.
            delay = min(2 ** min(self._state.reconnects, 6), 60)
            client.reconnect_delay = delay * random.uniform(0.5, 1.0)  # noqa: S311 - jitter
            _log.warning("broker connection lost; retrying in %.1f s", client.reconnect_delay)

    async def _on_message(
        self, client: object, topic: str, payload: bytes, qos: int, properties: object
    ) -> int:
        """Queue the message and return (PUBACK) only once its commit is done (QoS 1 messages
        of MQTT 5 come through :meth:`_arrived` instead)."""
        del client, qos, properties
        done: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._queue.append(_Pending(topic, bytes(payload), int(self.clock() * 1000), done))
        self._queued()
        return await done

    def _arrived(self, topic: str, payload: bytes, mid: int, connection: object) -> None:
        """A QoS 1 message taken from gmqtt's handler: queued, acknowledged after its commit."""
        self._queue.append(
            _Pending(topic, bytes(payload), int(self.clock() * 1000), None, mid, connection)
        )
        self._queued()

    def _queued(self) -> None:
        self.metrics.messages.inc()
        n = len(self._queue)
        if n >= self.config.ingest.batch_max_messages or n == 1:
            self._wake.set()
        self.read_gate.arrived()

    def _read_paused(self, paused: bool) -> None:
        self.metrics.read_paused.set(int(paused))
        if paused:
            self.metrics.read_pauses.inc()

    # -- group commit ---------------------------------------------------------------------------

    async def _committer(self) -> None:
        window_s = self.config.ingest.batch_max_ms / 1000.0
        limit = self.config.ingest.batch_max_messages
        while True:
            if not self._queue:
                if self._stopping:
                    return
                self.read_gate.idle()
                await self._wake.wait()
                self._wake.clear()
                continue
            # The first message of a group waits at most the window for company.
            if len(self._queue) < limit and not self._stopping:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(window_s):
                        await self._full(limit)
            group = [self._queue.popleft() for _ in range(min(limit, len(self._queue)))]
            self.metrics.queue_depth.set(len(self._queue) + len(group))
            try:
                await self.commit(group)
            except (StoreError, LogError) as exc:
                if isinstance(exc, StoreError) and not _store_may_recover(exc):
                    raise
                # Not acknowledged: the group goes back to the front and is tried again; the
                # broker keeps what is not acknowledged.
                self._queue.extendleft(reversed(group))
                if self._stopping:
                    return  # left unacknowledged: the broker delivers it again after a restart
                await self._store_unwritable(exc)
                continue
            if self._store_failing_since is not None:
                _log.warning(
                    "store writable again after %.0f s: committing and acknowledging again",
                    time.monotonic() - self._store_failing_since,
                )
                self._store_failing_since = None

    async def _store_unwritable(self, exc: StoreError | LogError) -> None:
        """A commit failed in a way that may pass (disk full, I/O error, lock): say why once,
        then wait before the next attempt (doubling up to :data:`_STORE_RETRY_MAX_S`)."""
        if self._store_failing_since is None:
            self._store_failing_since = time.monotonic()
            self._store_retry_s = _STORE_RETRY_MIN_S
            _log.error(
                "cannot write %s (%s): ingest stops acknowledging and tries again every "
                "%.0f s at most; the broker keeps the messages meanwhile",
                "the store" if isinstance(exc, StoreError) else "the cluster's log",
                exc.reason,
                _STORE_RETRY_MAX_S,
            )
        # Interrupted by a stop (the committer is cancelled with its task group).
        await asyncio.sleep(self._store_retry_s)
        self._store_retry_s = min(2 * self._store_retry_s, _STORE_RETRY_MAX_S)

    async def _full(self, limit: int) -> None:
        while len(self._queue) < limit:
            self._wake.clear()
            await self._wake.wait()

    async def commit(self, group: Sequence[_Pending]) -> WriteResult:
        """Decode, store (one transaction, in a worker thread) and acknowledge a group."""
        now_ms = int(self.clock() * 1000)
        messages = [(p.topic, p.payload) for p in group]
        # Decoders are total; should one still raise, only the messages it raises on are lost
        # (to the dead-letter store, as decoder_error), never the service (ingest/isolation.py).
        batch = self.decoder_guard.decode(self.decoder.decode_batch, messages)
        self._check_registry(batch)
        dead = [
            DeadLetter(
                topic=group[i].topic,
                payload=group[i].payload,
                field=error.field,
                reason=error.reason,
                received_ms=group[i].received_ms,
            )
            for i, error in batch.errors
        ]
        started = time.perf_counter()
        if self.forward is not None:
            result = await self.forward.write(batch, dead, received_ms=now_ms)
        else:
            loop = asyncio.get_running_loop()
            result = await loop.run_in_executor(
                self._db, functools.partial(self._stored().write, batch, dead, received_ms=now_ms)
            )
        self.metrics.commit_seconds.observe(time.perf_counter() - started)
        self.metrics.commits.inc()
        for kind, n in result.by_kind.items():
            self.metrics.readings.labels(kind=kind).inc(n)
        self.metrics.duplicates.inc(result.duplicates)
        for _, error in batch.errors:
            self.metrics.rejected.labels(reason=reason_category(error)).inc()
        _acknowledge(group)
        self.read_gate.settled(len(group))
        self.metrics.queue_depth.set(len(self._queue))
        self.committed_batches += 1
        if self.consumer is not None:
            self.consumer(batch, result)
        if self.influx is not None and batch.telemetry:
            columns = list(batch.telemetry.values())
            points = sum(len(c) for c in columns)
            try:
                job = self._influx_pool.submit(self._to_influx, columns, asyncio.get_running_loop())
            except RuntimeError:  # the pool is shut down: stopping
                self._influx_lost(points, "the InfluxDB writer has stopped")
            else:
                job.add_done_callback(lambda f: self._influx_done(f, points, "write"))
        for cols in batch.telemetry.values():
            self._silent_reported.difference_update(cols.device_id.tolist())
        return result

    def _check_registry(self, batch: DecodedBatch) -> None:
        """With a strict registry, messages naming unknown devices are dead-lettered."""
        if self.registry is None or not self.config.ingest.strict_registry:
            return
        known = set(self.registry.devices())
        bad: dict[int, PayloadError] = {}
        for cols in batch.telemetry.values():
            for dev, msg in zip(cols.device_id.tolist(), cols.message.tolist(), strict=True):
                if dev not in known and msg not in bad:
                    bad[msg] = PayloadError(
                        "device_id", f"unknown device {dev!r} (strict registry)"
                    )
        for ev in batch.events:
            if ev.device_id not in known and ev.message not in bad:
                bad[ev.message] = PayloadError(
                    "device_id", f"unknown device {ev.device_id!r} (strict registry)"
                )
        if not bad:
            return
        rejected = np.fromiter(bad, np.int64, len(bad))
        for kind, cols in list(batch.telemetry.items()):
            keep = ~np.isin(cols.message, rejected)
            if not keep.all():
                batch.telemetry[kind] = cols.select(keep)
        batch.telemetry = {k: c for k, c in batch.telemetry.items() if len(c)}
        batch.events = [e for e in batch.events if e.message not in bad]
        batch.statuses = [s for s in batch.statuses if s.message not in bad]
        batch.errors = sorted([*batch.errors, *bad.items()], key=lambda e: e[0])

    # -- InfluxDB -------------------------------------------------------------------------------

    def _to_influx(self, columns: list[Any], loop: asyncio.AbstractEventLoop) -> None:
        """In the InfluxDB thread: write; a batch InfluxDB refuses (4xx) becomes a dead letter."""
        assert self.influx is not None  # noqa: S101 - only scheduled with a writer
        outcome = self.influx.write(columns)
        self.metrics.influx_backlog.set(self.influx.backlog())
        self._dead_letter_influx(outcome.rejected)
        del loop

    def _dead_letter_influx(self, rejected: Sequence[RejectedBatch]) -> None:
        """Batches InfluxDB refused (4xx) become dead letters with the server's answer."""
        if not rejected:
            return
        now_ms = int(self.clock() * 1000)
        dead = [
            DeadLetter(
                topic=f"influx:{self.config.influx.bucket}",
                payload=r.lines,
                field="influx",
                reason=f"InfluxDB refused the batch ({r.status}): {r.body[:500]}",
                received_ms=now_ms,
            )
            for r in rejected
        ]
        for r in rejected:
            self.metrics.rejected.labels(reason="influx").inc(r.points)
        points = sum(r.points for r in rejected)
        try:
            job = self._db.submit(self._stored().write, DecodedBatch(), dead, received_ms=now_ms)
        except RuntimeError:  # the store's thread is shut down: stopping
            self._influx_lost(points, "the store has closed")
        else:
            job.add_done_callback(lambda f: self._influx_done(f, points, "dead-letter"))

    def _influx_done(self, job: Future[Any], points: int, what: str) -> None:
        """A write to InfluxDB (or the dead letter of a refused one) ended: count a failure."""
        exc = job.exception() if not job.cancelled() else None
        if job.cancelled() or exc is not None:
            self._influx_lost(points, f"{what} failed: {exc!r}" if exc else f"{what} cancelled")

    def _influx_lost(self, points: int, why: str) -> None:
        """Readings stored here that InfluxDB will not get (the store still has them)."""
        self.metrics.rejected.labels(reason="influx_lost").inc(points)
        key = why.split(":", 1)[0]  # once per kind of failure, not per exception text
        if key not in self._influx_errors_logged:
            self._influx_errors_logged.add(key)
            _log.error("InfluxDB: %d readings not sent (%s); the store keeps them", points, why)

    async def _drain_influx(self, period_s: float = 5.0) -> None:
        assert self.influx is not None  # noqa: S101 - only started with a writer
        loop = asyncio.get_running_loop()
        # Ended by cancellation at stop.
        while not self._stopping:
            await asyncio.sleep(period_s)
            if self.influx.backlog():
                await loop.run_in_executor(self._influx_pool, self.influx.drain_once)
                self.metrics.influx_backlog.set(self.influx.backlog())
                # Spooled batches the server refused when they were finally sent.
                self._dead_letter_influx(self.influx.take_rejected())

    # -- upkeep: rollups and retention ----------------------------------------------------------

    async def _maintain(self, period_s: float = 60.0) -> None:
        loop = asyncio.get_running_loop()
        while not self._stopping:  # ended by cancellation at stop
            await asyncio.sleep(period_s)
            try:
                await loop.run_in_executor(self._db, self.maintain)
            except StoreError as exc:
                if not _store_may_recover(exc):
                    raise
                _log.warning("rollups and retention skipped this time: %s", exc.reason)

    def maintain(self) -> tuple[int, int]:
        """Recompute the 1-minute / 1-hour rollups touched since last time, seal the days older
        than the store's tail into compressed chunks (a bounded step each time) and drop raw
        readings past retention (in the store's thread). Returns (buckets written, rows
        deleted)."""
        now_ms = int(self.clock() * 1000)
        store = self._stored()
        buckets = store.rollup(now_ms=now_ms)
        sealed = store.seal(now_ms=now_ms)
        if sealed.readings:
            _log.info(
                "sealed %d readings into %d chunks%s",
                sealed.readings,
                sealed.chunks,
                "" if sealed.done else " (more next time)",
            )
        deleted = store.enforce_retention(now_ms=now_ms)
        if deleted:
            _log.info(
                "retention: %d raw readings older than %d days dropped",
                deleted,
                store.retention_days,
            )
        return buckets, deleted

    def _stored(self) -> Store:
        """The store (a forwarding worker has none, and never reaches here)."""
        if self.store is None:
            raise RuntimeError("this ingest service forwards to the cluster's log: no store")
        return self.store

    # -- device state ---------------------------------------------------------------------------

    async def _watch_silence(self) -> None:
        while not self._stopping:
            await asyncio.sleep(self.silence_check_s)
            try:
                await self.check_silence()
            except StoreError as exc:
                _log.warning("no_data check skipped: %s", exc)

    async def check_silence(self) -> list[NoDataEvent]:
        """Report devices silent past their kind's timeout (once each until they speak again).

        The store is read in its own thread; the result is judged, and ``on_no_data`` called,
        here on the event loop (the alert pipeline's state is the loop's alone).

        Returns:
            The devices found silent now.

        Raises:
            StoreError: The store could not be read.
        """
        devices = await asyncio.get_running_loop().run_in_executor(self._db, self._stored().devices)
        now_ms = int(self.clock() * 1000)
        if self.silence_by_receipt:
            newest = max((d.updated_ms or 0 for d in devices), default=0)
            now_ms = min(now_ms, newest) if newest else now_ms
        found: list[NoDataEvent] = []
        for dev in devices:
            if dev.last_seen_ms is None or dev.device_id in self._silent_reported:
                continue
            heard_ms = dev.updated_ms if self.silence_by_receipt else dev.last_seen_ms
            spec = KINDS.get(dev.kind)
            if spec is None:
                continue
            kind = spec.kind
            limit_s = spec.silent_after_s
            if heard_ms is None or now_ms - heard_ms <= limit_s * 1000:
                continue
            event = NoDataEvent(dev.device_id, kind, dev.site, dev.last_seen_ms, now_ms)
            self._silent_reported.add(dev.device_id)
            self.metrics.no_data.labels(kind=kind.value).inc()
            found.append(event)
            if self.on_no_data is not None:
                self.on_no_data(event)
        return found


def _acknowledge(group: Sequence[_Pending]) -> None:
    """PUBACK a committed group: futures resolved; packets taken from gmqtt acknowledged in
    one write per connection (none when that connection is gone: the broker delivers them
    again on the next, and the store drops them as duplicates)."""
    by_connection: dict[int, tuple[Any, list[int]]] = {}
    for p in group:
        if p.done is not None:
            if not p.done.done():
                p.done.set_result(0)  # PUBACK, success
        elif p.connection is not None:
            by_connection.setdefault(id(p.connection), (p.connection, []))[1].append(p.mid)
    for connection, mids in by_connection.values():
        if not connection.is_closing():
            connection.send_package(b"".join(_PUBACK_V5.pack(0x40, 4, m, 0, 0) for m in mids))


def _quiet_unacknowledged(loop: asyncio.AbstractEventLoop) -> None:
    """From now on, drop the loop's reports of gmqtt PUBACK callbacks that met a cancellation
    (messages left unacknowledged at stop); every other report goes where it went."""
    previous = loop.get_exception_handler()

    def handler(lp: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        cancelled = isinstance(context.get("exception"), asyncio.CancelledError)
        if cancelled and "publish_callback" in repr(context.get("handle")):
            return
        if previous is not None:
            previous(lp, context)
        else:
            lp.default_exception_handler(context)

    loop.set_exception_handler(handler)


def _store_may_recover(exc: StoreError) -> bool:
    """Whether a failed store write may succeed later (disk full, I/O error, busy or locked)."""
    name = str(getattr(exc.__cause__, "sqlite_errorname", ""))
    return "_".join(name.split("_")[:2]) in _STORE_TRANSIENT


async def _stop_reconnecting(client: gmqtt.Client) -> None:
    """End gmqtt's reconnection attempt still waiting out its delay after a lost connection.

    gmqtt starts it as a task of its own, which nothing ends before its delay (up to a minute):
    cancelled at the loop's end instead, its done-callback logs the cancellation as an error with
    a traceback. gmqtt offers no handle on it, so it is found among the loop's tasks.
    """
    waiting = [
        t
        for t in asyncio.all_tasks()
        if getattr(t.get_coro(), "__qualname__", "") == "Client.reconnect"
        and getattr(getattr(t.get_coro(), "cr_frame", None), "f_locals", {}).get("self") is client
    ]
    for task in waiting:
        for callback, _ in getattr(task, "_callbacks", None) or ():
            if "_handle_exception_in_future" in repr(callback):
                task.remove_done_callback(callback)
        task.cancel()
    await asyncio.gather(*waiting, return_exceptions=True)


def _refusal(
    exc: ssl.SSLError | gmqtt.MQTTConnectError, where: str, username: str | None
) -> BrokerConnectError | None:
    """The typed error for a TLS or authentication failure at connect (None: something else)."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return BrokerConnectError(
            "broker.tls_ca_file",
            f"TLS: the certificate of {where} did not verify ({exc.verify_message}); check that "
            "broker.tls_ca_file holds the CA that signed it and that it names this host",
        )
    if isinstance(exc, ssl.SSLError):
        reason = str(exc.reason or exc)
        about_us = "CERTIFICATE" in reason or "UNKNOWN_CA" in reason  # the broker's alert
        if about_us:
            return BrokerConnectError(
                "broker.tls_cert_file", f"TLS handshake with {where} failed ({reason})"
            )
        if isinstance(exc, ssl.SSLEOFError) or "WRONG_VERSION_NUMBER" in reason:
            return BrokerConnectError(
                "broker.url",
                f"the broker did not speak TLS: TLS handshake with {where} failed ({reason}); "
                "is it a plain MQTT port (then use mqtt://)?",
            )
        return BrokerConnectError("broker.url", f"TLS handshake with {where} failed ({reason})")
    return _connack_refusal(exc, where, username)


def _connack_refusal(
    exc: gmqtt.MQTTConnectError, where: str, username: str | None
) -> BrokerConnectError | None:
    """The typed error for a refusing CONNACK (None: not a CONNACK)."""
    code = getattr(exc, "_code", None)
    if code in _CLIENT_ID_REFUSED:
        return BrokerConnectError(
            "broker.client_id",
            f"{where} refused the client id (CONNACK {code:#x}: {getattr(exc, 'message', exc)})",
        )
    if code in _AUTH_REFUSED:
        who = f"user {username!r}" if username is not None else "an anonymous client"
        return BrokerConnectError(
            "broker.password",
            f"authentication failed: {where} refused {who} (CONNACK {code:#x}: "
            f"{getattr(exc, 'message', exc)}); check broker.username and broker.password "
            "(or password_file / BOLTWATCH_BROKER_PASSWORD)",
        )
    if code is not None:
        return BrokerConnectError(
            "broker.url", f"{where} refused the connection (CONNACK {code:#x}: {exc})"
        )
    return None


def _closed_at_start(where: str, *, tls: bool) -> BrokerConnectError:
    """The broker closed the first connection before its CONNACK."""
    if tls:
        # TLS 1.3: the broker checks the client certificate after the handshake, then drops us.
        return BrokerConnectError(
            "broker.tls_cert_file",
            f"the broker at {where} closed the connection during the TLS/MQTT handshake: is the "
            "client certificate missing or not trusted by the broker?",
        )
    return BrokerConnectError(
        "broker.url",
        f"the broker at {where} closed the connection before accepting us: is it a TLS port "
        "(then use mqtts://), or an MQTT 3.1.1-only broker (then --mqtt311)?",
    )


def _unreachable(exc: BaseException) -> bool:
    """Connection refused, host or network unreachable, name not resolved, TCP timeout."""
    if isinstance(exc, ssl.SSLError):
        return False
    if isinstance(exc, (socket.gaierror, ConnectionRefusedError, TimeoutError)):
        return True
    if isinstance(exc, OSError):
        if exc.errno in _UNREACHABLE_ERRNOS:
            return True
        # Several addresses (e.g. localhost: ::1 and 127.0.0.1), all failed: "Multiple exceptions".
        return exc.errno is None and str(exc).startswith("Multiple exceptions")
    return False


def _os_reason(exc: BaseException) -> str:
    """A short reason for an OS-level connection error ("connection refused")."""
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve the host name ({exc.strerror})"
    code = exc.errno if isinstance(exc, OSError) else None
    if code is None:
        # asyncio's "Multiple exceptions: [Errno 111] ..., [Errno 111] ..." (one per address).
        codes = {int(c) for c in re.findall(r"\[Errno (\d+)\]", str(exc))}
        code = codes.pop() if len(codes) == 1 else None
    if code is not None:
        text = os.strerror(code)
        return text[0].lower() + text[1:]
    if isinstance(exc, TimeoutError):
        return "timed out"
    return str(exc) or type(exc).__name__
