"""One MQTT connection of the simulated firmware (:class:`Uplink`, the base of the direct and
gateway uplinks): QoS 1 publishing with births and a last will, the store-and-forward buffer and
its replay, reconnects with exponential backoff and jitter, and commands."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import Any, Final

import gmqtt
import msgspec
from gmqtt.mqtt.handler import MQTTConnectError

from firmware_sim.firmware.config import MQTT_V5, BrokerAddress, LinkConfig
from firmware_sim.firmware.node import Node
from firmware_sim.firmware.session import _Chunk, _Client, _InflightStore, _Record, _Sent
from sensors.schema import Command, Reading, SetInterval

# The package's logger, as before the module became a package.
_log = logging.getLogger("firmware_sim.firmware")

_COMMANDS: Final = msgspec.json.Decoder(Command)


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
