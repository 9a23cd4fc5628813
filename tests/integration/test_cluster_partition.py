"""A network partition of one NATS node, healed: nothing lost, nothing twice.

Node ``n2`` of a real 3-node JetStream cluster runs in a network namespace of its own; the readings
stream (R3) is given to it as leader, then its link is cut while records are published through the
other two nodes, and joined again. The two nodes that keep the majority elect a new leader and
take the publishes (those in flight at the cut fail and are published again, as an ingest worker
does); after the heal ``n2`` catches up. Every record is in the stream exactly once, every
partition reads back in order, and all three replicas are current.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

import msgspec
import nats.errors
import pytest

from ingest.cluster import JetStreamLog, LogError, LogRecord, partition_of
from ingest.settings import ClusterConfig
from tests.integration.natscluster import NatsCluster, NetworkSplit

pytestmark = pytest.mark.asyncio

PARTITIONS = 8


def _records(n: int, start: int = 0) -> list[LogRecord]:
    return [
        LogRecord(
            partition_of(f"bolt-{i % 37:03d}", PARTITIONS),
            f"bolt-{i % 37:03d}:{i}".encode(),
            f"r:bolt-{i % 37:03d}:{i}",
        )
        for i in range(start, start + n)
    ]


async def _lead_on(log: JetStreamLog, stream: str, node: str) -> None:
    """Step the stream's leader down until ``node`` leads it (a random pick each time)."""
    for _ in range(30):
        info = await log._js.stream_info(stream)
        if info.cluster is not None and info.cluster.leader == node:
            return
        # An election in progress may not answer: ask again on the next round.
        with contextlib.suppress(nats.errors.Error, TimeoutError):
            await log.nats.request(f"$JS.API.STREAM.LEADER.STEPDOWN.{stream}", b"", timeout=5)
        await asyncio.sleep(1.0)
    pytest.fail(f"{node} never became the leader of {stream}")


async def _all_current(log: JetStreamLog, stream: str, total: int) -> bool:
    info = await log._js.stream_info(stream)
    replicas = info.cluster.replicas if info.cluster is not None else None
    return (
        info.state.messages == total
        and bool(replicas)
        and all(r.current and not r.offline and not r.lag for r in replicas or [])
    )


async def test_a_partitioned_node_heals_without_loss(
    nats_split_cluster: tuple[NatsCluster, NetworkSplit],
) -> None:
    cluster, split = nats_split_cluster
    full = msgspec.convert(
        {"urls": cluster.urls, "partitions": PARTITIONS, "publish_timeout_s": 3.0},
        ClusterConfig,
    )
    # The publisher talks to the two nodes that keep the majority (a client on the cut node
    # would wait for its pings to notice); the stream is made through all three.
    majority = msgspec.structs.replace(full, urls=cluster.urls[:2])
    admin = await JetStreamLog.open(full, "admin")
    log = await JetStreamLog.open(majority, "publisher")
    try:
        await _lead_on(admin, full.stream, "n2")
        total, group, published, retries = 6_000, 200, 0, 0
        cut_at = healed = None
        while published < total:
            try:
                await log.publish(_records(group, start=published))
            except LogError:
                retries += 1  # no PUBACK: the broker redelivers, the group is published again
                assert retries < 200, "the stream never came back"
                await asyncio.sleep(0.2)
                continue
            published += group
            if cut_at is None and published >= total // 3:
                split.cut()
                cut_at = time.monotonic()
            if cut_at is not None and healed is None and published >= 2 * total // 3:
                split.heal()
                healed = time.monotonic()
        assert cut_at is not None
        assert healed is not None
        assert retries > 0, "the cut did not touch the publishes: was n2 leading?"
        info = await log._js.stream_info(full.stream)
        assert info.cluster is not None
        assert info.cluster.leader in ("n0", "n1"), "the majority elected a leader of its own"
        assert info.state.messages == total  # none lost, none twice
        deadline = time.monotonic() + 120
        while not await _all_current(log, full.stream, total):
            assert time.monotonic() < deadline, "n2 did not catch up after the heal"
            await asyncio.sleep(0.5)
        # The stream itself, record by record in its order (a consumer would add its own
        # redeliveries after an election to what is being checked).
        want = _records(total)
        got: dict[int, list[bytes]] = {}
        info = await log._js.stream_info(full.stream)
        for seq in range(info.state.first_seq, info.state.last_seq + 1):
            for attempt in range(60):
                try:
                    msg = await log._js.get_msg(full.stream, seq)
                    break
                except nats.errors.Error:  # an election after the heal: ask again
                    assert attempt < 59, f"sequence {seq} unreadable"
                    await asyncio.sleep(0.5)
            assert msg.subject is not None
            assert msg.data is not None
            got.setdefault(int(msg.subject.rpartition(".")[2]), []).append(msg.data)
        for p in range(PARTITIONS):
            mine = [r.data for r in want if r.partition == p]
            assert got.get(p, []) == mine, f"partition {p}"
    finally:
        await log.close()
        await admin.close()
