"""The partitioned log on a real 3-node NATS JetStream cluster (ingest/cluster/jetstream.py).

Records published to partitions come back per partition in order; a second copy of a record (same
id) is dropped by the stream; a record fetched and not acknowledged is delivered again; the stream
(3 replicas) keeps every acknowledged record through the SIGKILL of its leader while publishing
goes on; and misconfiguration is a typed error naming the key.
"""

from __future__ import annotations

import asyncio
import time

import msgspec
import pytest

from ingest.cluster import JetStreamLog, LogError, LogRecord, partition_of
from ingest.settings import ClusterConfig
from tests.integration.natscluster import NatsCluster

pytestmark = pytest.mark.asyncio


def _config(cluster: NatsCluster, **kw: object) -> ClusterConfig:
    base: dict[str, object] = {"urls": cluster.urls, "partitions": 8, "ack_wait_s": 2.0}
    base.update(kw)
    return msgspec.convert(base, ClusterConfig)


def _records(n: int, partitions: int, start: int = 0) -> list[LogRecord]:
    out = []
    for i in range(start, start + n):
        device = f"bolt-{i % 37:03d}"
        out.append(
            LogRecord(partition_of(device, partitions), f"{device}:{i}".encode(), f"r:{device}:{i}")
        )
    return out


async def _drain(log: JetStreamLog, group: str, partition: int, *, ack: bool = True) -> list[bytes]:
    got: list[bytes] = []
    while True:
        batch = await log.fetch(group, partition, 500, timeout_s=1.0)
        if not batch:
            return got
        got.extend(d.data for d in batch)
        if ack:
            await log.ack(batch)


async def _take(log: JetStreamLog, group: str, partition: int, n: int) -> list[bytes]:
    """``n`` records of ``partition`` (acknowledged), waiting up to a generous minute."""
    got: list[bytes] = []
    deadline = time.monotonic() + 60
    while len(got) < n and time.monotonic() < deadline:
        batch = await log.fetch(group, partition, 500, timeout_s=1.0)
        got.extend(d.data for d in batch)
        await log.ack(batch)
    return got


async def test_records_come_back_per_partition_in_order_once(nats_cluster: NatsCluster) -> None:
    config = _config(nats_cluster)
    log = await JetStreamLog.open(config, "test-worker")
    try:
        records = _records(2_000, config.partitions)
        first = await log.publish(records)
        assert (first.stored, first.duplicates) == (2_000, 0)
        # The same records again (an ingest worker that died before its PUBACK): all dropped.
        again = await log.publish(records[500:1_500])
        assert (again.stored, again.duplicates) == (0, 1_000)
        for p in range(config.partitions):
            want = [r.data for r in records if r.partition == p]
            assert await _take(log, "store", p, len(want)) == want, f"partition {p}"
            assert await _drain(log, "store", p) == []  # and nothing more
        # Another group reads the same partitions independently.
        want = [r.data for r in records if r.partition == 3]
        assert await _take(log, "detect", 3, len(want)) == want
    finally:
        await log.close()


async def test_what_was_not_acknowledged_is_delivered_again(nats_cluster: NatsCluster) -> None:
    config = _config(nats_cluster)
    worker_a = await JetStreamLog.open(config, "worker-a")
    worker_b = await JetStreamLog.open(config, "worker-b")
    try:
        records = [r for r in _records(400, config.partitions) if r.partition == 5]
        await worker_a.publish(records)
        taken = await worker_a.fetch("detect", 5, 1_000, timeout_s=2.0)
        assert [d.data for d in taken] == [r.data for r in records]
        assert not any(d.redelivered for d in taken)
        # worker-a dies without acknowledging: after ack_wait_s, worker-b gets them again.
        await worker_a.close()
        deadline = time.monotonic() + 60
        again: list[bytes] = []
        while len(again) < len(records) and time.monotonic() < deadline:
            batch = await worker_b.fetch("detect", 5, 1_000, timeout_s=1.0)
            assert all(d.redelivered for d in batch)
            again.extend(d.data for d in batch)
            await worker_b.ack(batch)
        assert again == [r.data for r in records]
        assert await _drain(worker_b, "detect", 5) == []  # acknowledged: not again
    finally:
        await worker_b.close()


async def test_the_stream_keeps_everything_through_its_leader_s_death(
    nats_cluster: NatsCluster,
) -> None:
    config = _config(nats_cluster, publish_timeout_s=3.0)
    log = await JetStreamLog.open(config, "publisher")
    try:
        info = await log._js.stream_info(config.stream)
        leader = info.cluster.leader if info.cluster else None
        assert leader, "an R3 stream has a leader"
        total, group, published, retries = 6_000, 200, 0, 0
        killed = False
        while published < total:
            batch = _records(group, config.partitions, start=published)
            try:
                await log.publish(batch)
            except LogError:
                retries += 1  # as ingest does: no PUBACK, the broker redelivers, publish again
                assert retries < 100, "the stream never came back"
                await asyncio.sleep(0.2)
                continue
            published += group
            if not killed and published >= total // 3:
                await asyncio.to_thread(nats_cluster.node(leader).kill)
                killed = True
        info = await log._js.stream_info(config.stream)
        assert info.cluster is not None
        assert info.cluster.leader != leader
        # Every record exactly once: none lost with the leader, none twice from the retries.
        assert info.state.messages == total
        want = _records(total, config.partitions)
        for p in range(config.partitions):
            # The partition's consumer is made now, on the survivors (elections may take a while).
            mine = [r.data for r in want if r.partition == p]
            assert await _take(log, "store", p, len(mine)) == mine, f"partition {p}"
    finally:
        await log.close()


async def test_a_stream_keeps_its_partition_count(nats_cluster: NatsCluster) -> None:
    log = await JetStreamLog.open(_config(nats_cluster), "first")
    await log.close()
    with pytest.raises(LogError) as info:
        await JetStreamLog.open(_config(nats_cluster, partitions=16), "second")
    assert info.value.key == "cluster.partitions"
    assert "8 partitions" in info.value.reason
    assert "16" in info.value.reason


async def test_unreachable_nats_names_the_urls() -> None:
    from tests.integration.conftest import free_port

    config = msgspec.convert({"urls": [f"nats://127.0.0.1:{free_port()}"]}, ClusterConfig)
    with pytest.raises(LogError) as info:
        await JetStreamLog.open(config, "lonely")
    assert info.value.key == "cluster.urls"
    assert "no NATS server answered" in info.value.reason


async def test_a_group_forwarded_twice_is_stored_once(nats_cluster: NatsCluster) -> None:
    """An ingest worker that dies after the stream's ack and before its PUBACK gets the group
    again from the broker: publishing it again stores nothing, and says so in its counts."""
    from ingest.cluster import LogForwarder
    from ingest.store import DeadLetter
    from sensors import TelemetryDecoder
    from sensors.examples import T0

    dec = TelemetryDecoder(clock=lambda: T0 / 1000)
    batch = dec.decode_batch(
        [
            (f"boltwatch/v1/s/cbolt/b{i}/telemetry", b'{"ts": %d, "seq": 7, "preload_kn": 50}' % T0)
            for i in range(20)
        ]
        + [("boltwatch/v1/s/cbolt/b1/event", b'{"type": "battery_swap", "ts": %d, "seq": 8}' % T0)]
    )
    dead = [DeadLetter("boltwatch/v1/s/cbolt/b1/telemetry", b"{", "payload", "not JSON", T0)]
    config = _config(nats_cluster)
    log = await JetStreamLog.open(config, "forwarder")
    try:
        forward = LogForwarder(log, lambda d: d)
        first = await forward.write(batch, dead, received_ms=T0)
        assert (first.stored, first.duplicates, first.events) == (20, 0, 1)
        assert first.by_kind == {"cbolt": 20}
        assert first.dead_letters == 1
        second = await forward.write(batch, [], received_ms=T0)
        assert (second.stored, second.duplicates, second.events) == (0, 21, 0)
        assert second.by_kind == {"cbolt": 0}
        info = await log._js.stream_info(config.stream)
        assert info.state.messages == 21
    finally:
        await log.close()


async def test_a_checkpoint_read_while_it_is_replaced_ends(nats_cluster: NatsCluster) -> None:
    """Another worker replaces a multi-chunk checkpoint again and again while this one reads it:
    every read ends (nats-py alone would wait for ever on purged chunks) with one whole version."""
    config = ClusterConfig(urls=nats_cluster.urls, partitions=4)
    writer = await JetStreamLog.open(config, "writer")
    reader = await JetStreamLog.open(config, "reader")
    versions = [bytes([v]) * 400_000 for v in range(6)]  # several 128 KiB chunks each
    try:
        await writer.save_checkpoint(1, versions[0])
        stop = asyncio.Event()

        async def keep_replacing() -> None:
            v = 0
            while not stop.is_set():
                v = (v + 1) % len(versions)
                await writer.save_checkpoint(1, versions[v])
                await asyncio.sleep(0.01)  # a busy owner, not a flood

        replacing = asyncio.create_task(keep_replacing())
        try:
            for _ in range(8):
                async with asyncio.timeout(120):  # generous: three bounded reads at most
                    got = await reader.load_checkpoint(1)
                assert got in versions
        finally:
            stop.set()
            await replacing
        assert await reader.load_checkpoint(2) is None
    finally:
        await writer.close()
        await reader.close()
