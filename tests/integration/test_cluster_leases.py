"""Partition leases in a JetStream key-value bucket (ingest/cluster/leases.py), on a real 3-node
cluster: one owner at a time, renewal keeps a lease, a dead owner's lease passes to another after
the TTL, a late renewal is refused and the partition is lost, every change is in the lease log.
"""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from ingest.cluster import connect_nats
from ingest.cluster.leases import Leases
from ingest.settings import ClusterConfig
from tests.integration.natscluster import NatsCluster

pytestmark = pytest.mark.asyncio

TTL_S = 2.0


async def _worker(cluster: NatsCluster, name: str) -> Leases:
    nc = await connect_nats(ClusterConfig(urls=cluster.urls), name)
    return await Leases.open(nc, bucket="leases_test", owner=name, ttl_s=TTL_S, replicas=3)


async def _log(leases: Leases) -> list[dict[str, object]]:
    js = leases._js
    info = await js.stream_info("leases_test_log")
    out = []
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        msg = await js.get_msg("leases_test_log", seq)
        assert msg.data is not None
        out.append(json.loads(msg.data))
    return out


async def test_one_owner_at_a_time_and_takeover_after_the_ttl(nats_cluster: NatsCluster) -> None:
    a = await _worker(nats_cluster, "worker-a")
    b = await _worker(nats_cluster, "worker-b")
    assert await a.acquire(3)
    assert not await b.acquire(3)  # held
    assert await b.acquire(4)
    assert (await a.owners()) == {3: "worker-a", 4: "worker-b"}
    # Renewing keeps it past several TTLs.
    deadline = time.monotonic() + 3 * TTL_S
    while time.monotonic() < deadline:
        assert await a.renew() == []
        assert await b.renew() == []
        assert a.valid(3)
        assert not await b.acquire(3)
        await asyncio.sleep(TTL_S / 4)
    # worker-a stops renewing (dies): worker-b gets partition 3 once the TTL has run out,
    # and never before worker-a had let go by its own clock.
    a_gave_up = a.held[3].valid_until
    took = None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert await b.renew() == []  # worker-b lives on
        if await b.acquire(3):
            took = time.monotonic()
            break
        await asyncio.sleep(0.1)
    assert took is not None, "the dead owner's lease never expired"
    assert took >= a_gave_up
    assert not a.valid(3)
    # worker-a comes back and renews: refused, the partition is lost to it.
    assert await a.renew() == [3]
    assert 3 not in a.held
    assert (await b.owners())[3] == "worker-b"
    # Released partitions are free at once.
    await b.release(4)
    assert await a.acquire(4)
    events = [(e["partition"], e["owner"], e["event"]) for e in await _log(a)]
    assert events == [
        (3, "worker-a", "acquired"),
        (4, "worker-b", "acquired"),
        (3, "worker-b", "acquired"),
        (3, "worker-a", "lost"),
        (4, "worker-b", "released"),
        (4, "worker-a", "acquired"),
    ]
    for w in (a, b):
        await w.nc.close()


async def test_many_workers_race_for_each_partition(nats_cluster: NatsCluster) -> None:
    workers = [await _worker(nats_cluster, f"w{i}") for i in range(4)]
    for partition in range(16):
        won = await asyncio.gather(*(w.acquire(partition) for w in workers))
        assert sum(won) == 1, f"partition {partition}: {won}"
    held = [p for w in workers for p in w.held]
    assert sorted(held) == list(range(16))
    for w in workers:
        await w.nc.close()
