"""A gateway relaying many nodes on one connection (:class:`GatewayUplink`): their readings and
its own health readings in ``{"readings": [...]}`` batches, their births, events and commands."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Sequence

from firmware_sim.firmware.config import FirmwareConfigError, LinkConfig
from firmware_sim.firmware.node import Node, _check_interval
from firmware_sim.firmware.session import (
    _OFFLINE,
    _Chunk,
    _encode_status,
    _json_chunk,
    _Record,
)
from firmware_sim.firmware.uplink import Uplink
from sensors.codec import encode_event
from sensors.errors import TopicError
from sensors.schema import Channel, DeviceKind, GatewayReading, Reading
from sensors.topics import Topic


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
