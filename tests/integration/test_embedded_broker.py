"""The embedded amqtt broker of ``boltwatch demo``: pub/sub, retained, clean stop, ingest on it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
from collections.abc import Callable
from pathlib import Path

import gmqtt
import pytest
from gmqtt.mqtt.constants import MQTTv311

from boltwatch.broker import BrokerStartError, EmbeddedBroker
from boltwatch.config import parse_config
from ingest.service import IngestService
from ingest.store import Store
from tests.integration.conftest import Collector

pytestmark = pytest.mark.integration

T0 = int(time.time() * 1000) - 3_600_000  # an hour ago: plausible for ingest


async def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:  # noqa: ASYNC109
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.02)


def amqtt_tasks() -> list[asyncio.Task[object]]:
    """Unfinished tasks running amqtt code."""
    return [
        t
        for t in asyncio.all_tasks()
        if not t.done() and "/amqtt/" in getattr(t.get_coro(), "cr_code").co_filename  # noqa: B009
    ]


def count(path: Path) -> int:
    with Store(path) as reader:  # a second connection: the service's is used from its thread
        return reader.stats().readings


def refuses(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return False
    except OSError:
        return True


async def test_1000_qos1_messages_arrive_in_order_and_retained_reaches_a_late_subscriber() -> None:
    async with EmbeddedBroker() as broker:
        assert broker.port > 0
        assert broker.url == f"mqtt://127.0.0.1:{broker.port}"
        async with (
            Collector(broker.url, ["boltwatch/v1/#"], version=MQTTv311) as sub,
            Collector(broker.url, ["unused/#"], version=MQTTv311) as pub,
        ):
            topic = "boltwatch/v1/site-1/cbolt/b1/telemetry"
            for i in range(1_000):
                pub.publish(topic, str(i).encode(), qos=1)
            await sub.wait_for(lambda m: len(m) >= 1_000, 30, "1,000 messages")
            assert [int(m.payload) for m in sub.messages] == list(range(1_000))
            assert {m.topic for m in sub.messages} == {topic}
            assert {m.qos for m in sub.messages} == {1}

            status = "boltwatch/v1/site-1/cbolt/b1/status"
            pub.publish(status, b'{"state": "online"}', qos=1, retain=True)
            await sub.wait_for(lambda m: len(m) >= 1_001, 10, "the live status message")
            async with Collector(broker.url, ["boltwatch/v1/+/+/+/status"]) as late:
                await late.wait_for(lambda m: len(m) >= 1, 10, "the retained status")
                assert late.messages[0].topic == status
                assert late.messages[0].payload == b'{"state": "online"}'
                assert late.messages[0].retain


async def test_stop_is_clean_quick_and_idempotent() -> None:
    broker = EmbeddedBroker()
    await broker.stop()  # never started: nothing to do
    await broker.start()
    port = broker.port
    client = gmqtt.Client("still-connected")
    # The broker goes away under this client: one immediate reconnect attempt, refused, then
    # gmqtt gives up (so the client leaves no task behind either).
    client.reconnect_retries = 0
    client.reconnect_delay = 0
    await client.connect("127.0.0.1", port, version=MQTTv311)
    async with Collector(broker.url, ["boltwatch/v1/#"]) as sub:
        client.publish("boltwatch/v1/x", b"1", qos=1)
        await sub.wait_for(lambda m: len(m) == 1, 10, "one message")
    assert amqtt_tasks(), "sanity: the running broker has tasks"

    started = time.monotonic()
    await broker.stop()  # with a client still connected
    assert time.monotonic() - started < 1.0
    assert not broker.running
    assert amqtt_tasks() == [], "the broker left no task behind"
    assert refuses(port), "the listener is closed"
    await broker.stop()  # a second stop is harmless
    assert not broker.running
    with contextlib.suppress(Exception):  # the connection is gone already
        await client.disconnect()
    current = asyncio.current_task()
    await wait_until(lambda: asyncio.all_tasks() == {current}, 5, "no task but this test's")


async def test_two_brokers_get_different_ports_and_a_taken_port_is_a_clear_error() -> None:
    async with EmbeddedBroker() as one, EmbeddedBroker() as two:
        assert one.port != two.port
        async with (
            Collector(one.url, ["t/#"]) as sub_one,
            Collector(two.url, ["t/#"]) as sub_two,
        ):
            sub_one.publish("t/one", b"1")
            sub_two.publish("t/two", b"2")
            await sub_one.wait_for(lambda m: len(m) == 1, 10)
            await sub_two.wait_for(lambda m: len(m) == 1, 10)
            assert [m.topic for m in sub_one.messages] == ["t/one"]
            assert [m.topic for m in sub_two.messages] == ["t/two"]
        taken = EmbeddedBroker(port=one.port)
        with pytest.raises(BrokerStartError, match=rf"127\.0\.0\.1:{one.port}.*in use"):
            await taken.start()
        assert not taken.running
        await taken.stop()
        assert isinstance(BrokerStartError("x"), RuntimeError)
    # Stopping the first broker left the second one's tasks alone (and vice versa): all gone now.
    assert amqtt_tasks() == []


async def test_ingest_stores_200_readings_from_the_embedded_broker(tmp_path: Path) -> None:
    store_dir = tmp_path / "store"
    async with EmbeddedBroker() as broker:
        cfg = parse_config(
            {
                "broker": {"url": broker.url, "client_id": "ingest-embedded"},
                "ingest": {"metrics_listen": "", "batch_max_ms": 20},
                "store": {"path": str(store_dir)},
            },
            environ={},
        )
        with Store(store_dir) as store:
            async with IngestService(cfg, store, mqtt_version=4) as svc:
                await svc.wait_subscribed()
                async with Collector(broker.url, ["unused/#"]) as pub:
                    for n in range(200):
                        payload = {"ts": T0 + n * 1000, "seq": n, "preload_kn": 50.0}
                        pub.publish(
                            "boltwatch/v1/site-1/cbolt/b1/telemetry", json.dumps(payload).encode()
                        )
                    await wait_until(
                        lambda: count(store_dir) == 200 and not svc._queue,
                        20,
                        "200 readings stored",
                    )
            stats = store.stats()
    assert stats.readings == 200
    assert stats.devices == 1
    assert stats.dead_letters == 0
