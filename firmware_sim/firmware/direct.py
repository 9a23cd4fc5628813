"""One device on its own connection and topics (:class:`DirectUplink`): a smart bolt with its
own modem, or a machine adapter speaking JSON or Sparkplug B."""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterable, Sequence
from typing import Final

from firmware_sim.firmware.config import FirmwareConfigError, LinkConfig
from firmware_sim.firmware.node import Node
from firmware_sim.firmware.session import (
    _OFFLINE,
    _Chunk,
    _encode_status,
    _json_chunk,
    _Record,
)
from firmware_sim.firmware.uplink import Uplink
from sensors.codec import encode_event, encode_reading, to_epoch_ms
from sensors.errors import TopicError
from sensors.schema import Channel, DeviceKind, Reading
from sensors.sparkplug import NAMESPACE, encode_dbirth, encode_ddata, encode_nbirth, encode_ndeath
from sensors.topics import Topic


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
