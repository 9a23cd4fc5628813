"""The ingest service against a real Mosquitto: ack after store, dead letters, dedup, faults."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from boltwatch.config import Config, parse_config
from ingest.influx import InfluxWriter
from ingest.service import IngestService
from ingest.store import Store
from sensors.schema import DeviceKind
from tests.integration.conftest import Collector, MosquittoServer
from tests.integration.vm import VictoriaMetrics

pytestmark = pytest.mark.integration

T0 = int(time.time() * 1000) - 86_400_000  # yesterday: every test reading is plausible


def config_for(
    mosquitto: MosquittoServer, store: Path, client_id: str = "ingest-test", **ingest: object
) -> Config:
    return parse_config(
        {
            "broker": {"url": mosquitto.url, "client_id": client_id},
            "ingest": {"metrics_listen": "", "batch_max_ms": 20, **ingest},
            "store": {"path": str(store)},
        },
        environ={},
    )


def reading(dev: int, seq: int) -> tuple[str, bytes]:
    topic = f"boltwatch/v1/site-a/cbolt/bolt-{dev:03d}/telemetry"
    payload = json.dumps(
        {"ts": T0 + seq * 1000, "seq": seq, "preload_kn": 60.0 + dev / 100}
    ).encode()
    return topic, payload


async def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:  # noqa: ASYNC109
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.05)


def count(path: Path) -> int:
    with Store(path) as reader:  # a second connection: WAL lets it read while ingest writes
        return reader.stats().readings


async def test_stores_acks_dedups_and_dead_letters(
    mosquitto: MosquittoServer, tmp_path: Path
) -> None:
    store_dir = tmp_path / "store"
    cfg = config_for(mosquitto, store_dir)
    good = [reading(d, s) for d in range(10) for s in range(50)]
    bad = [
        ("boltwatch/v1/site-a/cbolt/bolt-001/telemetry", b"{not json"),
        ("boltwatch/v1/site-a/cbolt/bolt-001/telemetry", b'{"ts": 1, "seq": 1}'),
        (
            "boltwatch/v1/site-a/cbolt/bolt-001/telemetry",
            json.dumps({"ts": T0, "seq": 9999, "device_id": "bolt-002", "preload_kn": 1}).encode(),
        ),
        ("boltwatch/v1/site-a/toaster/t-1/telemetry", b"{}"),
        ("boltwatch/v1/site-a/cbolt/bolt-001/telemetry", b"x" * (300 * 1024)),
    ]
    with Store(store_dir) as store:
        async with IngestService(cfg, store) as svc:
            await svc.wait_subscribed()
            async with Collector(mosquitto.url, ["unused/#"]) as pub:
                for topic, payload in good + bad + good[:20]:  # the last 20 are redeliveries
                    pub.publish(topic, payload)
                await wait_until(
                    lambda: (
                        svc.metrics.messages._value.get() >= len(good) + len(bad) + 20
                        and not svc._queue
                    ),
                    20,
                    "every message committed",
                )
            await asyncio.sleep(0.2)
        stats = store.stats()
        letters = store.dead_letters(limit=100)
    assert stats.readings == 500
    assert stats.devices == 10
    assert sum(stats.dead_letters_by_reason.values()) == len(bad)
    reasons = " | ".join(d.reason for d in letters)
    for words in ("not valid JSON", "preload_kn", "spoofed", "unknown device kind", "-byte limit"):
        assert words in reasons
    assert {d.payload for d in letters} == {p for _, p in bad}, "raw bytes kept as received"
    assert svc.metrics.duplicates._value.get() == 20
    rejected = {
        s.labels["reason"]: s.value
        for m in svc.metrics.registry.collect()
        if m.name == "boltwatch_ingest_rejected"
        for s in m.samples
        if s.name.endswith("_total")
    }
    assert rejected == {"json": 1, "schema": 1, "spoofed": 1, "topic": 1, "oversize": 1}


async def test_survives_a_broker_restart(mosquitto: MosquittoServer, tmp_path: Path) -> None:
    store_dir = tmp_path / "store"
    cfg = config_for(mosquitto, store_dir, client_id="ingest-restart")
    with Store(store_dir) as store:
        async with IngestService(cfg, store) as svc:
            await svc.wait_subscribed()
            async with Collector(
                mosquitto.url, ["unused/#"], client_id="pub-1", clean_session=False
            ) as pub:
                for topic, payload in (reading(1, s) for s in range(300)):
                    pub.publish(topic, payload)
                await wait_until(lambda: count(store_dir) == 300, 20, "the first 300")
                await mosquitto.astop()
                await asyncio.sleep(0.5)
                await mosquitto.astart()
                await svc.wait_subscribed(timeout=30)
                await asyncio.sleep(1.0)  # the publisher reconnects by itself
                for topic, payload in (reading(2, s) for s in range(300)):
                    pub.publish(topic, payload)
                await wait_until(lambda: count(store_dir) == 600, 30, "all 600 after the restart")
    assert count(store_dir) == 600


def _spawn(url: str, store_dir: Path) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "BOLTWATCH_INGEST_METRICS_LISTEN": "",
        "BOLTWATCH_BROKER_CLIENT_ID": "ingest-kill9",
        "BOLTWATCH_INGEST_BATCH_MAX_MESSAGES": "500",
    }
    exe = Path(sys.executable).parent / "boltwatch"
    return subprocess.Popen(
        [str(exe), "run", "--broker", url, "--store", str(store_dir)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


async def test_kill_9_during_a_100k_publish_loses_nothing_stores_nothing_twice(
    mosquitto: MosquittoServer, tmp_path: Path
) -> None:
    store_dir = tmp_path / "store"
    total = 100_000
    proc = _spawn(mosquitto.url, store_dir)
    try:
        await wait_until((store_dir / "boltwatch.sqlite3").exists, 30, "ingest to start")
        await asyncio.sleep(1.0)  # subscribed (persistent session from now on)
        async with Collector(mosquitto.url, ["unused/#"], client_id="pub-kill9") as pub:
            messages = (reading(d, s) for s in range(total // 100) for d in range(100))
            killed = False
            for i, (topic, payload) in enumerate(messages):
                pub.publish(topic, payload)
                if i % 1_000:
                    continue
                await asyncio.sleep(0.02)  # a steady stream, not one burst
                if not killed and count(store_dir) > 10_000:
                    proc.send_signal(signal.SIGKILL)  # at any instant: mid-commit is likely
                    proc.wait(10)
                    killed = True
            if not killed:  # the machine was slow: kill while the broker still delivers
                await wait_until(lambda: count(store_dir) > 10_000, 60, "10,000 stored")
                proc.send_signal(signal.SIGKILL)
                proc.wait(10)
            await asyncio.sleep(2.0)  # let the publisher's last PUBACKs arrive
        stored_at_kill = count(store_dir)
        proc = _spawn(mosquitto.url, store_dir)
        await wait_until(lambda: count(store_dir) >= total, 180, f"all {total} readings")
        await asyncio.sleep(1.0)
        assert count(store_dir) == total  # nothing lost, nothing twice
        assert stored_at_kill < total
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
    assert proc.returncode == 0, proc.stderr.read().decode() if proc.stderr else ""


async def test_influx_outage_spools_then_drains_nothing_lost(
    mosquitto: MosquittoServer, victoria: VictoriaMetrics, tmp_path: Path
) -> None:
    store_dir = tmp_path / "store"
    cfg = config_for(mosquitto, store_dir, client_id="ingest-influx")
    writer = InfluxWriter(
        victoria.url,
        org="o",
        bucket="b",
        spool_dir=tmp_path / "spool",
        max_retries=1,
        backoff_base_s=0.05,
    )

    def points() -> int:
        victoria.flush()
        rows = victoria.export('{__name__="cbolt_preload_kn"}')
        return sum(len(r["values"]) for r in rows)

    with Store(store_dir) as store:
        async with IngestService(cfg, store, influx=writer) as svc:
            await svc.wait_subscribed()
            async with Collector(mosquitto.url, ["unused/#"]) as pub:
                for topic, payload in (reading(d, s) for d in range(5) for s in range(40)):
                    pub.publish(topic, payload)
                await wait_until(lambda: count(store_dir) == 200, 20, "200 stored")
                await wait_until(lambda: points() == 200, 20, "200 points in VictoriaMetrics")
                victoria.stop()
                for topic, payload in (reading(d, s) for d in range(5) for s in range(40, 80)):
                    pub.publish(topic, payload)
                await wait_until(lambda: count(store_dir) == 400, 20, "400 stored while VM is down")
                await wait_until(lambda: writer.backlog() == 200, 30, "200 points in the spool")
                victoria.start()
                await wait_until(lambda: writer.backlog() == 0, 30, "the spool drained")
                await wait_until(lambda: points() == 400, 20, "all 400 points in VictoriaMetrics")
    writer.close()
    assert svc.metrics.influx_backlog._value.get() == 0


async def test_a_flood_of_bad_messages_is_all_dead_lettered_and_good_ones_still_flow(
    mosquitto: MosquittoServer, tmp_path: Path
) -> None:
    store_dir = tmp_path / "store"
    cfg = config_for(mosquitto, store_dir, client_id="ingest-flood")
    bad_kinds = [
        ("boltwatch/v1/s/cbolt/b/telemetry", b"\xff\xfe garbage"),
        ("boltwatch/v1/s/cbolt/b/telemetry", b"x" * (260 * 1024)),
        ("boltwatch/v1/s/cbolt/b/telemetry", b'{"ts": 1, "seq": -1, "preload_kn": "a"}'),
        (
            "boltwatch/v1/s/cbolt/b/telemetry",
            json.dumps({"ts": T0, "seq": 1, "device_id": "x", "preload_kn": 1}).encode(),
        ),
        ("boltwatch/v1/s/../b/telemetry", b"{}"),
        (
            "boltwatch/v1/s/cbolt/b/telemetry",
            json.dumps({"ts": T0 + 10 * 86_400_000, "seq": 2, "preload_kn": 1}).encode(),
        ),
    ]
    flood = [bad_kinds[i % len(bad_kinds)] for i in range(1_200)]
    good = [reading(d, s) for d in range(4) for s in range(100)]
    mixed = [m for pair in zip(flood[:400], good, strict=True) for m in pair] + flood[400:]
    with Store(store_dir) as store:
        async with IngestService(cfg, store) as svc:
            await svc.wait_subscribed()
            async with Collector(mosquitto.url, ["unused/#"]) as pub:
                for topic, payload in mixed:
                    pub.publish(topic, payload)
                await wait_until(
                    lambda: svc.metrics.messages._value.get() >= len(mixed) and not svc._queue,
                    60,
                    "the flood",
                )
            await asyncio.sleep(0.3)
            # The service is unharmed: it still stores what comes next.
            async with Collector(mosquitto.url, ["unused/#"]) as pub:
                topic, payload = reading(9, 1)
                pub.publish(topic, payload)
                await wait_until(lambda: count(store_dir) == 401, 20, "a reading after the flood")
        stats = store.stats()
    assert stats.readings == 401
    assert stats.dead_letters == len(flood)
    rejected = {
        s.labels["reason"]: s.value
        for m in svc.metrics.registry.collect()
        if m.name == "boltwatch_ingest_rejected"
        for s in m.samples
        if s.name.endswith("_total")
    }
    assert rejected == {
        "json": 200,
        "oversize": 200,
        "schema": 200,
        "spoofed": 200,
        "topic": 200,
        "timestamp": 200,
    }


async def test_two_workers_split_a_shared_subscription(
    mosquitto: MosquittoServer, tmp_path: Path
) -> None:
    shared = "$share/ingest/boltwatch/v1/+/+/+/+"
    cfgs = [
        parse_config(
            {
                "broker": {"url": mosquitto.url, "client_id": f"worker-{w}", "topics": [shared]},
                "ingest": {"metrics_listen": "", "batch_max_ms": 20},
                "store": {"path": str(tmp_path / f"store-{w}")},
            },
            environ={},
        )
        for w in (1, 2)
    ]
    with Store(tmp_path / "store-1") as s1, Store(tmp_path / "store-2") as s2:
        async with IngestService(cfgs[0], s1) as w1, IngestService(cfgs[1], s2) as w2:
            await w1.wait_subscribed()
            await w2.wait_subscribed()
            async with Collector(mosquitto.url, ["unused/#"]) as pub:
                for topic, payload in (reading(d, s) for d in range(10) for s in range(100)):
                    pub.publish(topic, payload)
                await wait_until(
                    lambda: count(tmp_path / "store-1") + count(tmp_path / "store-2") == 1_000,
                    30,
                    "1,000 readings between the two workers",
                )
    a, b = count(tmp_path / "store-1"), count(tmp_path / "store-2")
    assert a + b == 1_000
    assert a > 0
    assert b > 0, "each worker takes a share"


async def test_upkeep_rolls_up_and_enforces_retention(
    mosquitto: MosquittoServer, tmp_path: Path
) -> None:
    store_dir = tmp_path / "store"
    cfg = config_for(mosquitto, store_dir, client_id="ingest-upkeep")
    now = [time.time()]
    with Store(store_dir, retention_days=2) as store:  # readings are a day old
        svc = IngestService(cfg, store, clock=lambda: now[0])
        async with svc:
            await svc.wait_subscribed()
            async with Collector(mosquitto.url, ["unused/#"]) as pub:
                for topic, payload in (reading(1, s) for s in range(120)):
                    pub.publish(topic, payload)
                await wait_until(lambda: count(store_dir) == 120, 20, "120 stored")
            loop = asyncio.get_running_loop()
            buckets, deleted = await loop.run_in_executor(svc._db, svc.maintain)
            assert buckets > 0
            assert deleted == 0
            now[0] += 3 * 86_400  # three days later: past the two-day retention
            buckets, deleted = await loop.run_in_executor(svc._db, svc.maintain)
            assert deleted == 120
        assert store.stats().readings == 0
        assert store.rollups(DeviceKind.CBOLT, resolution="1h"), "rollups outlive the raw rows"
