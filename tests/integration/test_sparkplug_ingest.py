"""Sparkplug B stored: an edge node speaking Sparkplug B through Mosquitto, ingested by default.

The edge node builds its payloads with pysparkplug and publishes them with gmqtt, as a device
would: NBIRTH, DBIRTH, DDATA, DDEATH, NDEATH, then a rebirth (a new ``bdSeq``) whose session ends
with the broker publishing its will (the NDEATH of that ``bdSeq``). Its readings land in the
same store as JSON ones, births and deaths become the devices' online/offline status, and
``boltwatch stats`` counts them.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gmqtt
import pysparkplug as psp
import pytest

from boltwatch.config import parse_config
from ingest.service import IngestService
from ingest.store import Store
from tests.integration.conftest import Collector, MosquittoServer

pytestmark = pytest.mark.integration

BOLTWATCH = Path(sys.executable).parent / "boltwatch"
T0 = int(time.time() * 1000) - 3_600_000  # an hour ago: plausible readings
GROUP, EDGE, DEVICE = "plant-7", "edge-1", "sp-bolt-1"
_DT = psp.DataType


def _m(name: str, datatype: psp.DataType, value: Any, ts_ms: int | None = None) -> psp.Metric:
    return psp.Metric(timestamp=ts_ms, name=name, datatype=datatype, value=value)


class EdgeNode:
    """A Sparkplug B edge node with one smart bolt: pysparkplug payloads, gmqtt transport.

    Its MQTT will is the NDEATH of the session's ``bdSeq``, as the specification asks.
    """

    def __init__(self, url: str) -> None:
        host, _, port = url.removeprefix("mqtt://").partition(":")
        self.host, self.port = host, int(port)
        self.client: Any = None
        self.bd_seq = -1

    def topic(self, message_type: str, device: str | None = None) -> str:
        return f"spBv1.0/{GROUP}/{message_type}/{EDGE}" + (f"/{device}" if device else "")

    def _ndeath(self) -> bytes:
        death = psp.NDeath(timestamp=None, bd_seq_metric=_m("bdSeq", _DT.INT64, self.bd_seq))
        return bytes(death.encode())

    async def born(self, ts_ms: int, uptime_s: float) -> None:
        """Connect (will: NDEATH) and publish the NBIRTH of a new session."""
        self.bd_seq += 1
        will = gmqtt.Message(self.topic("NDEATH"), self._ndeath(), qos=1)
        self.client = gmqtt.Client(f"{EDGE}-{self.bd_seq}", will_message=will)
        await self.client.connect(self.host, self.port, version=4)
        metrics = (
            _m("bdSeq", _DT.INT64, self.bd_seq),
            _m("Node Control/Rebirth", _DT.BOOLEAN, value=False),
            _m("uptime_s", _DT.DOUBLE, uptime_s, ts_ms),
        )
        birth = psp.NBirth(timestamp=ts_ms, seq=0, metrics=metrics)
        self.client.publish(self.topic("NBIRTH"), bytes(birth.encode(include_dtypes=True)), qos=1)

    def device_born(self, ts_ms: int, preload_kn: float, seq: int) -> None:
        metrics = (
            _m("kind", _DT.STRING, "cbolt"),
            _m("preload_kn", _DT.DOUBLE, preload_kn, ts_ms),
            _m("temp_c", _DT.DOUBLE, 18.5, ts_ms),
            _m("seq", _DT.INT64, seq, ts_ms),
        )
        birth = psp.DBirth(timestamp=ts_ms, seq=1, metrics=metrics)
        payload = bytes(birth.encode(include_dtypes=True))
        self.client.publish(self.topic("DBIRTH", DEVICE), payload, qos=1)

    def data(self, ts_ms: int, preload_kn: float, seq: int) -> None:
        metrics = (
            _m("preload_kn", _DT.DOUBLE, preload_kn, ts_ms),
            _m("seq", _DT.INT64, seq, ts_ms),
        )
        data = psp.DData(timestamp=ts_ms, seq=seq % 256, metrics=metrics)
        payload = bytes(data.encode(include_dtypes=True))
        self.client.publish(self.topic("DDATA", DEVICE), payload, qos=1)

    def device_died(self, ts_ms: int) -> None:
        death = psp.DDeath(timestamp=ts_ms, seq=0)
        self.client.publish(self.topic("DDEATH", DEVICE), bytes(death.encode()), qos=1)

    async def dies_cleanly(self) -> None:
        """A clean end of session: the NDEATH first, then DISCONNECT (no will)."""
        self.client.publish(self.topic("NDEATH"), self._ndeath(), qos=1)
        await asyncio.sleep(0.2)  # the PUBACK before the DISCONNECT
        await self.client.disconnect()

    def connection_lost(self) -> None:
        """The link breaks: no DISCONNECT, so the broker publishes the will (the NDEATH)."""
        self.client.reconnect_retries = -2  # gmqtt: no reconnection
        self.client._connection._transport.abort()


async def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:  # noqa: ASYNC109
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.05)


def states(store_dir: Path) -> dict[str, tuple[str | None, int]]:
    """(status, readings) per device, read through a second connection."""
    with Store(store_dir) as reader:
        return {
            d.device_id: (d.state, len(reader.readings(d.kind, device_id=d.device_id)))
            for d in reader.devices()
        }


async def test_a_sparkplug_edge_node_is_stored_with_its_births_and_deaths(
    mosquitto: MosquittoServer, tmp_path: Path
) -> None:
    store_dir = tmp_path / "store"
    cfg = parse_config(
        {
            "broker": {"url": mosquitto.url, "client_id": "ingest-sparkplug"},
            "ingest": {"metrics_listen": "", "batch_max_ms": 20},
            "store": {"path": str(store_dir)},
        },
        environ={},
    )
    assert "spBv1.0/#" in cfg.broker.topics, "Sparkplug B is subscribed by default"
    node = EdgeNode(mosquitto.url)
    with Store(store_dir) as store:
        async with IngestService(cfg, store) as svc:
            await svc.wait_subscribed()
            # Session 1: births, data, the device's death, the node's death.
            await node.born(T0, uptime_s=10.0)
            node.device_born(T0 + 1_000, 61.0, seq=1)
            for s in range(2, 7):
                node.data(T0 + s * 60_000, 61.0 - s / 10, seq=s)
            await wait_until(
                lambda: (
                    states(store_dir).get(DEVICE) == ("online", 6)
                    and states(store_dir).get(EDGE) == ("online", 1)
                ),
                30,
                "the births and five DDATA stored, both online",
            )
            node.device_died(T0 + 7 * 60_000)
            await wait_until(
                lambda: states(store_dir)[DEVICE][0] == "offline", 30, "DDEATH: device offline"
            )
            assert states(store_dir)[EDGE][0] == "online", "a DDEATH leaves the edge node alone"
            await node.dies_cleanly()
            await wait_until(lambda: states(store_dir)[EDGE][0] == "offline", 30, "NDEATH")
            # Session 2: a rebirth (new bdSeq), then the link breaks: the will is the NDEATH.
            await node.born(T0 + 10 * 60_000, uptime_s=5.0)
            node.device_born(T0 + 10 * 60_000 + 1_000, 60.0, seq=7)
            for s in range(8, 11):
                node.data(T0 + s * 60_000 + 5 * 60_000, 60.0, seq=s)
            await wait_until(
                lambda: (
                    states(store_dir).get(DEVICE) == ("online", 10)
                    and states(store_dir)[EDGE] == ("online", 2)
                ),
                30,
                "the rebirth and its data",
            )
            # JSON readings arrive beside Sparkplug, on the same service.
            async with Collector(mosquitto.url, ["unused/#"]) as pub:
                for seq in (1, 2):
                    payload = {"ts": T0 + seq * 1_000, "seq": seq, "preload_kn": 55.0}
                    pub.publish(
                        f"boltwatch/v1/{GROUP}/cbolt/json-bolt/telemetry",
                        json.dumps(payload).encode(),
                    )
                node.connection_lost()
                await wait_until(
                    lambda: (
                        states(store_dir)[EDGE][0] == "offline"
                        and states(store_dir)[DEVICE][0] == "offline"
                        and states(store_dir).get("json-bolt", (None, 0))[1] == 2
                    ),
                    30,
                    "the will (NDEATH) taking both offline, and the JSON readings",
                )
            # A redelivered DDATA is a duplicate, not a second row.
            await node.born(T0 + 20 * 60_000, uptime_s=1.0)
            node.device_born(T0 + 20 * 60_000 + 1_000, 60.0, seq=11)
            node.data(T0 + 10 * 60_000 + 5 * 60_000, 60.0, seq=10)  # seq 10 again
            await wait_until(
                lambda: states(store_dir)[DEVICE] == ("online", 11), 30, "the third birth"
            )
            await node.dies_cleanly()
        stats = store.stats()
        letters = store.dead_letters(limit=10)
    assert letters == [], [d.reason for d in letters]
    assert svc.metrics.duplicates._value.get() == 1
    assert {k: n for k, n in stats.readings_by_kind.items() if n} == {"cbolt": 13, "gateway": 3}
    cli = await asyncio.to_thread(
        subprocess.run,
        [str(BOLTWATCH), "stats", "--store", str(store_dir), "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    counted = json.loads(cli.stdout)
    assert counted["readings"] == 16
    assert {k: n for k, n in counted["readings_by_kind"].items() if n} == {
        "cbolt": 13,
        "gateway": 3,
    }
    assert counted["devices"] == 3
    assert counted["dead_letters"] == {}
